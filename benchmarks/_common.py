"""Helpers shared by the benchmark groups: records, statistics, event loops, CPU and memory
accounting, fresh child processes, process hygiene.

The record format is the peer benchmarks' (``WORKLOADS.md`` in the steering repo): one JSON
object per workload, ``value`` the median over the repetitions' values, ``min``/``max`` of
them, every other numeric field the median over the repetitions, dict/str fields from the last
one. Standard library and ``benchmarks.spec`` only (actorflow and numpy are imported where
used); ``psutil`` (a test dependency) is optional: it adds the CPU fields, and the memory of a
process tree (``idle_memory``) needs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from benchmarks.spec import LARGE_BYTES

__all__ = [
    "FRAMEWORK",
    "LOOPS",
    "CpuMeter",
    "alatency_loop",
    "attach_baseline",
    "check_sum",
    "child_env",
    "claim_stdout",
    "collect_tree",
    "emit",
    "have_uvloop",
    "large_array",
    "latency_stats",
    "log",
    "loop_kind",
    "measure_tree",
    "memory_fits",
    "meta",
    "pss_of",
    "reap_tagged",
    "run_child",
    "run_on",
    "save_jsonl",
    "sig",
    "smaps_rollup",
    "summarize",
    "tag_processes",
    "tagged_pids",
]

T = TypeVar("T")

FRAMEWORK = "actorflow"
LOOPS = ("asyncio", "uvloop")  # "asyncio": the default event loop
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout


def log(*parts: object) -> None:
    """Progress and notes go to stderr; stdout carries records only."""
    print(*parts, file=sys.stderr, flush=True)


def sig(x: Any, digits: int = 6) -> Any:
    """Round a float to ``digits`` significant digits (keeps the JSON short)."""
    if isinstance(x, float):
        return float(f"{x:.{digits}g}")
    return x


# -- event loops ------------------------------------------------------------------------------


def have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loop_kind() -> str:
    """The loop the cluster workloads run on: uvloop where installed (what ``af.run`` uses)."""
    return "uvloop" if have_uvloop() else "asyncio"


def run_on(kind: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` to completion on a fresh loop of ``kind`` (``asyncio`` or ``uvloop``)."""
    if kind == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    if kind != "asyncio":
        raise ValueError(f"unknown loop {kind!r}; use one of {LOOPS}")
    with asyncio.Runner() as runner:
        return runner.run(main())


# -- latency ----------------------------------------------------------------------------------


def _pct(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(p / 100.0 * (len(sorted_vals) - 1))))
    return sorted_vals[k]


def latency_stats(lat_s: list[float], total_s: float) -> dict[str, float]:
    """Per-call latencies (seconds) -> the standard latency record (value = mean in us)."""
    lat = sorted(lat_s)
    n = len(lat)
    return {
        "value": total_s / n * 1e6,
        "per_s": n / total_s,
        "p50_us": _pct(lat, 50) * 1e6,
        "p99_us": _pct(lat, 99) * 1e6,
    }


async def alatency_loop(acall: Callable[[int], Awaitable[Any]], n: int) -> dict[str, float]:
    """``await acall(i)`` n times in sequence; the standard latency record."""
    lat = []
    clock = time.perf_counter
    t0 = clock()
    for i in range(n):
        t = clock()
        await acall(i)
        lat.append(clock() - t)
    return latency_stats(lat, clock() - t0)


# -- workload data and checks -----------------------------------------------------------------


def large_array() -> Any:
    """The 100 MiB array of the large-object workloads (numpy, imported here)."""
    import numpy as np

    return np.random.default_rng(0).random(LARGE_BYTES // 8)


def check_sum(res: list[int], n: int) -> None:
    """The results of ``noop(i)`` for i < n, in any order."""
    assert sum(res) == n * (n - 1) // 2, (sum(res), n)


# -- records ----------------------------------------------------------------------------------


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("uvloop", "aiohttp", "cloudpickle", "orjson", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def meta(quick: bool) -> dict[str, Any]:
    """Provenance keys of every record."""
    import actorflow

    return {
        "version": actorflow.__version__,
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
        "quick": bool(quick),
        "deps": _versions(),
    }


def summarize(
    name: str, unit: str, n: int, runs: list[dict[str, Any]], provenance: dict[str, Any]
) -> dict[str, Any]:
    """Median / min / max of ``runs[i]["value"]`` plus the median of every other numeric
    field; dict- and str-valued fields are taken from the last run."""
    vals = [r["value"] for r in runs]
    out: dict[str, Any] = {
        "workload": name,
        "framework": FRAMEWORK,
        "unit": unit,
        "value": sig(statistics.median(vals)),
        "min": sig(min(vals)),
        "max": sig(max(vals)),
        "n": n,
        "reps": len(runs),
        "runs": [sig(v, 5) for v in vals],
    }
    for key, v in runs[0].items():
        if key == "value":
            continue
        if isinstance(v, bool):
            out[key] = runs[-1][key]
        elif isinstance(v, int | float):
            out[key] = sig(statistics.median(float(r[key]) for r in runs))
        elif isinstance(v, dict | str):
            out[key] = runs[-1][key]
    out.update(provenance)
    return out


def attach_baseline(
    rec: dict[str, Any], baseline: str, op: str, factor: float, *, prefix: str = ""
) -> None:
    """Add ``baseline``/``ratio``/``target``/``target_met`` to a summarized record whose
    ``{prefix}baseline_value`` was measured in the same run. ``op`` is ``>=`` (throughput: the
    value must reach ``factor`` x baseline) or ``<=`` (latency: at most ``factor`` x)."""
    base = rec.get(f"{prefix}baseline_value")
    value = rec.get(f"{prefix}value")
    if not base or value is None:
        return
    ratio = value / base
    if not prefix:
        rec["baseline"] = baseline
        rec["target"] = f"ratio {op} {factor:g}"
    rec[f"{prefix}ratio"] = sig(ratio, 4)
    rec[f"{prefix}target_met"] = ratio >= factor if op == ">=" else ratio <= factor


# -- output -----------------------------------------------------------------------------------

_OUT: TextIO | None = None


def claim_stdout() -> TextIO:
    """Keep the real stdout for records only: later writes to fd 1 / ``sys.stdout`` (by this
    process or a child it starts) go to stderr instead."""
    global _OUT
    if _OUT is None:
        sys.stdout.flush()
        _OUT = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    return _OUT


def emit(record: dict[str, Any]) -> None:
    out = _OUT or sys.stdout
    out.write(json.dumps(record) + "\n")
    out.flush()


def save_jsonl(directory: str, records: list[dict[str, Any]],
               ray_records: list[dict[str, Any]] | None = None,
               floor_records: list[dict[str, Any]] | None = None) -> None:
    """``actorflow.jsonl`` in ``directory``, plus ``ray.jsonl`` / ``floor.jsonl`` when those
    have records; one JSON record per line."""
    os.makedirs(directory, exist_ok=True)
    for fname, recs in (("actorflow.jsonl", records), ("ray.jsonl", ray_records),
                        ("floor.jsonl", floor_records)):
        if recs or fname == "actorflow.jsonl":
            path = os.path.join(directory, fname)
            with open(path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in recs or ())
            log(f"[save] {path}: {len(recs or ())} records")


# -- CPU accounting ---------------------------------------------------------------------------


def _label(proc: Any, driver_pid: int) -> str:
    """'driver', the executable name, or for Python helpers the script / ``-m`` module
    (``python -c`` for code given inline)."""
    if proc.pid == driver_pid:
        return "driver"
    name: str = proc.name()
    if name.startswith("python"):
        cmd = proc.cmdline()
        for j, arg in enumerate(cmd[1:], 1):
            if arg.endswith(".py"):
                return os.path.basename(str(arg))
            if arg == "-m" and j + 1 < len(cmd):
                return str(cmd[j + 1])
            if arg == "-c":
                return "python -c"
    return name


def _machine_jiffies() -> tuple[int, int, int] | None:
    """(busy, steal, all) clock ticks of the whole machine so far (``/proc/stat``), or None
    where there is no such file."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


class CpuMeter:
    """User+system CPU seconds of this process and every process it started (recursively),
    between two snapshots taken outside the timed region. Without psutil it records nothing.

    It also records what the rest of the machine did meanwhile (``/proc/stat``), so that a
    slow figure can be told from a busy or starved machine: ``machine_others_cpu_s`` (CPU
    that no process of ours used: anything else running) and ``machine_steal_pct`` (the share
    of the vCPUs' time the hypervisor gave to someone else). Both count in 10 ms ticks."""

    def __init__(self) -> None:
        self._machine: list[tuple[int, int, int] | None] = [None, None]
        try:
            import psutil
        except ImportError:
            self._me = None
            log("psutil is not installed: records carry no cpu_s / cpu_us_per_op")
        else:
            self._me = psutil.Process()

    def snap(self, *, end: bool = False) -> dict[int, tuple[str, float]]:
        """CPU seconds by pid. Take the opening snapshot with ``snap()`` and the closing one
        with ``snap(end=True)``, so the walk of the process tree falls outside both."""
        if self._me is None:
            return {}
        if end:
            self._machine[1] = _machine_jiffies()
        driver_end = time.process_time() if end else 0.0
        out: dict[int, tuple[str, float]] = {}
        procs: Iterable[Any] = self._me.children(recursive=True)
        for proc in procs:
            try:
                ct = proc.cpu_times()
                out[proc.pid] = (_label(proc, self._me.pid), ct.user + ct.system)
            except Exception:  # vanished between listing and reading: it simply isn't counted
                continue
        # the driver's own clock is finer than the 10 ms ticks psutil reads from /proc
        out[self._me.pid] = ("driver", driver_end if end else time.process_time())
        if not end:
            self._machine[0] = _machine_jiffies()
        return out

    def add(
        self,
        record: dict[str, Any],
        before: dict[int, tuple[str, float]],
        after: dict[int, tuple[str, float]],
        ops: int,
    ) -> dict[str, Any]:
        """Add ``cpu_s``, ``cpu_us_per_op`` and ``cpu_s_by_name`` to ``record``. A process that
        appeared in between counts from zero; one that exited in between is lost."""
        if self._me is None:
            return record
        by: dict[str, float] = {}
        for pid, (label, t) in after.items():
            t0 = before[pid][1] if pid in before else 0.0
            by[label] = by.get(label, 0.0) + max(0.0, t - t0)
        total = sum(by.values())
        record["cpu_s"] = total
        record["cpu_us_per_op"] = total / max(1, ops) * 1e6
        record["cpu_s_by_name"] = {k: round(v, 3) for k, v in sorted(by.items()) if v >= 0.005}
        start, end = self._machine
        if start is not None and end is not None and end[2] > start[2]:
            record["machine_others_cpu_s"] = max(0.0, (end[0] - start[0]) * _TICK_S - total)
            record["machine_steal_pct"] = 100.0 * (end[1] - start[1]) / (end[2] - start[2])
        return record


# -- memory of a process tree -----------------------------------------------------------------


def collect_tree() -> list[Any]:
    """This process, every process it started (recursively), and any process of this user
    created after it whose parent is already counted (a re-parented grandchild)."""
    import psutil

    me = psutil.Process()
    procs = {me.pid: me}
    for p in me.children(recursive=True):
        procs[p.pid] = p
    my_start, my_user = me.create_time(), me.username()
    changed = True
    while changed:
        changed = False
        for p in psutil.process_iter(["pid", "ppid", "create_time", "username"]):
            info = p.info
            if info["pid"] in procs or info["username"] != my_user:
                continue
            if (info["create_time"] or 0) < my_start - 1:
                continue
            if info["ppid"] in procs:
                procs[info["pid"]] = p
                changed = True
    return list(procs.values())


def measure_tree(procs: list[Any]) -> dict[str, Any]:
    """Memory of ``procs``: RSS, PSS and USS summed in MiB, the number counted, and RSS by
    process label (a process that vanished, or is not ours to read, is not counted)."""
    rss = pss = uss = 0
    by_name: dict[str, int] = {}
    counted = 0
    me = os.getpid()
    for p in procs:
        try:
            mi = p.memory_full_info()
            label = _label(p, me)
        except Exception:  # vanished, or not ours to read
            continue
        counted += 1
        rss += mi.rss
        pss += getattr(mi, "pss", 0)
        uss += mi.uss
        by_name[label] = by_name.get(label, 0) + mi.rss
    mib = 2**20
    return {
        "rss_mib": rss / mib,
        "pss_mib": pss / mib,
        "uss_mib": uss / mib,
        "nprocs": counted,
        "rss_by_name_mib": {k: round(v / mib, 1) for k, v in sorted(by_name.items())},
    }


def smaps_rollup(pid: int) -> dict[str, int] | None:
    """The kB fields of ``/proc/PID/smaps_rollup`` (``Rss``, ``Pss``, ``Private_Dirty``, ...),
    or None where the process is gone or not ours to read. PSS counts each page once across
    every process mapping it (a page shared by k processes adds 1/k to each), so PSS summed
    over a set of processes is what the set costs, shared pages (a fork server's imports, the
    object store's segments) included, as ``smem`` reports it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            lines = f.read().splitlines()[1:]  # the first line names the address range
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in lines:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0])
    return out


def pss_of(pids: Iterable[int]) -> dict[str, float]:
    """PSS, USS (private pages) and RSS summed over ``pids``, in MiB, and how many could be
    read (``nprocs``). Blocking (one file per process): run it in a thread from a loop."""
    pss = uss = rss = 0
    counted = 0
    for pid in pids:
        m = smaps_rollup(pid)
        if m is None:
            continue
        counted += 1
        pss += m.get("Pss", 0)
        rss += m.get("Rss", 0)
        uss += m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)
    return {"pss_mib": pss / 1024, "uss_mib": uss / 1024, "rss_mib": rss / 1024,
            "nprocs": counted}


def memory_fits(k: int, per_actor_mib: float, spare_bytes: int = 2 * 2**30) -> str | None:
    """None where k more actors of ``per_actor_mib`` each (x 1.25) fit in the memory available
    with ``spare_bytes`` left over, else a sentence saying why not (psutil needed)."""
    import psutil

    need = k * per_actor_mib * 2**20 * 1.25 + spare_bytes
    avail = psutil.virtual_memory().available
    if need <= avail:
        return None
    return (f"{k} actors not run: ~{need / 2**30:.1f} GiB needed ({spare_bytes / 2**30:g} GiB "
            f"to spare), {avail / 2**30:.1f} GiB available")


# -- fresh child processes ----------------------------------------------------------------------


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a benchmark's child process: never joined to a cluster of the
    caller's, the checkout on its path."""
    env = dict(os.environ)
    for key in ("ACTORFLOW_ADDRESS", "ACTORFLOW_TOKEN", "AF_BENCH_COMPARE"):
        env.pop(key, None)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def run_child(name: str, args: list[str] | None = None, env: dict[str, str] | None = None,
              timeout: float | None = None, quiet: bool = True) -> tuple[float, Any]:
    """``python -m benchmarks.cluster --child NAME ARGS``: its wall time and the last JSON
    line it printed. ``quiet``: its stderr is kept (shown on failure) rather than passed on."""
    cmd = [sys.executable, "-m", "benchmarks.cluster", "--child", name, *(args or [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE if quiet else None, text=True,
                          env=child_env(env), cwd=ROOT, timeout=timeout)
    wall = time.perf_counter() - t0
    err = proc.stderr[-3000:] if quiet else "(its stderr is above)"
    if proc.returncode != 0:
        raise RuntimeError(f"child {name} failed (rc={proc.returncode}): {err}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("{", "["))]
    if not lines:
        raise RuntimeError(f"child {name} printed no record: {err}")
    return wall, json.loads(lines[-1])


class CliNodes:
    """``python -m actorflow start ... --block`` processes sharing one state folder
    (``state_dir``), by name. Each is started in a session of its own, so it and its workers
    form one process group: :meth:`stop` ends every one of them. ``extra_args`` go on every
    start; ``env`` adds to :func:`child_env`; logs go to ``log_dir`` (``<name>.log``)."""

    def __init__(self, state_dir: Path, *, log_dir: Path | None = None,
                 env: dict[str, str] | None = None, extra_args: Sequence[str] = (),
                 label: str = "nodes") -> None:
        self.state_dir = state_dir
        self.log_dir = log_dir or state_dir
        self.env = child_env({"PYTHONUNBUFFERED": "1", "ACTORFLOW_STATE_DIR": str(state_dir),
                              **(env or {})})
        self.extra_args = list(extra_args)
        self.label = label
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[Any] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        logf = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(logf)
        proc = subprocess.Popen(
            [sys.executable, "-m", "actorflow", "start", *args, *self.extra_args, "--block"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=self.env,
            cwd=ROOT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str) -> str:
        try:
            return (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        """Blocking: until ``name`` has marked itself ready in the state folder."""
        proc = self.procs[name]
        entry = self.state_dir / "procs" / f"{proc.pid}.json"
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"actorflow start ({name}) exited with {proc.returncode}:\n"
                                   f"{self.log_tail(name)}")
            try:
                if json.loads(entry.read_text()).get("ready"):
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"actorflow start ({name}) not ready after {timeout:.0f} s:"
                                   f"\n{self.log_tail(name)}")
            time.sleep(0.05)

    def head_info(self) -> tuple[str, str]:
        """The head's address and token, from the state folder."""
        info = json.loads((self.state_dir / "cluster.json").read_text())
        return info["address"], Path(info["token_file"]).read_text().strip()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the nodes, then the head; a bounded wait; SIGKILL every process group."""
        order = sorted(self.procs.items(), key=lambda item: item[0] == "head")
        for _, proc in order:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for name, proc in order:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"[{self.label}] {name} (pid {proc.pid}) ignored SIGTERM: killed")
        for _, proc in order:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # a lingering leader, or workers left
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for logf in self._logs:
            logf.close()


# -- process hygiene --------------------------------------------------------------------------

TAG_VAR = "AF_BENCH_TAG"


def tag_processes() -> str:
    """Give this process a fresh tag in its environment (``AF_BENCH_TAG``), inherited by every
    process it starts from now on, and theirs: :func:`reap_tagged` finds them by it, even once
    re-parented. A tag inherited from a parent is replaced, so a parent is never found."""
    import uuid

    tag = uuid.uuid4().hex
    os.environ[TAG_VAR] = tag
    return tag


def tagged_pids(tag: str) -> list[int]:
    """Live processes of this user (this one excepted) started with ``AF_BENCH_TAG=tag``."""
    needle = f"{TAG_VAR}={tag}".encode()
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:  # gone, or not ours
            continue
        if needle in env and state != b"Z":
            out.append(int(entry))
    return out


def reap_tagged(tag: str, grace: float = 10.0, what: str = "benchmark") -> list[int]:
    """Wait up to ``grace`` seconds for the processes tagged ``tag`` to exit, then SIGKILL
    those left (noted on stderr); their pids."""
    import signal

    if not os.path.isdir("/proc"):
        return []
    deadline = time.monotonic() + grace
    left = tagged_pids(tag)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = tagged_pids(tag)
    if left:
        log(f"[{what}] {len(left)} process(es) still alive {grace:g} s after the end: killing "
            f"{left[:20]}")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return left
