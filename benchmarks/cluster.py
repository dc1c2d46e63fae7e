"""Group ``cluster``: the embedded cluster (tasks, actor calls, objects, startup, idle memory)
as the peer workloads define them (``WORKLOADS.md`` in the steering repo's ``bench/``).

Names, n (quick n), units and JSON keys are the peer benchmarks'; ``framework`` is
``actorflow``. The driver is a coroutine on uvloop (what ``af.run`` uses), inside
``async with af.init(num_cpus=nproc, log_to_driver=False)``; every workload warms up with the
same remote functions/actors before its timed repetitions, checks its results, and records
``cpu_s`` / ``cpu_us_per_op`` / ``cpu_s_by_name`` over the driver and every process it started.
``startup`` and ``idle_memory`` run in a fresh child process per repetition
(``python -m benchmarks.cluster --child NAME``), before the in-process workloads.

Comparison with Ray (same machine, same sitting): ``python -m benchmarks.cluster --compare ray``
(or ``AF_BENCH_COMPARE=ray python -m benchmarks cluster``) runs this group, then the peer
script ``ray_bench.py`` with Ray's own interpreter (one after the other, never at once), adds
``baseline``/``baseline_value``/``ratio``/``target``/``target_met`` to each record that has a
target, and prints the table workload | actorflow | Ray | ratio | target | met.

Ray is never a dependency of the project: it is run as a separate program. Where it lives:
``--ray-python`` / ``AF_BENCH_RAY_PYTHON`` (default ``/work/rayenv/bin/python``) and
``--ray-script`` / ``AF_BENCH_RAY_SCRIPT`` (default ``/work/shared/bench/ray_bench.py``).
"""

from __future__ import annotations

import time

T_PROC0 = time.perf_counter()  # before importing actorflow: lets the startup child time it

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any  # noqa: E402

import actorflow as af  # noqa: E402

T_IMPORTED = time.perf_counter()

from benchmarks._common import (  # noqa: E402
    CpuMeter,
    alatency_loop,
    attach_baseline,
    claim_stdout,
    emit,
    have_uvloop,
    log,
    meta,
    run_on,
    sig,
    summarize,
)

LARGE_BYTES = 100 * 1024 * 1024  # the 100 MiB array: 13,107,200 float64

# name -> (unit, n, quick n); in the peer scripts' order
_SPEC: dict[str, tuple[str, int, int]] = {
    "startup": ("s", 1, 1),
    "idle_memory": ("MiB", 1, 1),
    "tasks_async": ("tasks/s", 10_000, 1_000),
    "tasks_sync": ("us", 1_000, 200),
    "actor_calls_async": ("calls/s", 10_000, 1_000),
    "actor_calls_sync": ("us", 1_000, 200),
    "async_actor_calls": ("calls/s", 10_000, 1_000),
    "actor_calls_asyncio": ("calls/s", 10_000, 1_000),
    "n_n_actor_calls": ("calls/s", 10_000, 1_000),
    "put_get_small": ("ops/s", 10_000, 1_000),
    "put_get_large": ("GB/s", 5, 2),
    "large_arg_task": ("s", 5, 2),
    "large_arg_actor": ("s", 5, 2),
    "task_chain": ("tasks/s", 1_000, 100),
    "tree_reduce": ("s", 1_024, 128),
}
WORKLOADS = tuple(_SPEC)
_CHILD_WORKLOADS = ("startup", "idle_memory")

#: The issue's targets against Ray, as (key compared, op, factor):
#: startup <= 0.2 x Ray; every task and actor throughput >= 5 x Ray; every latency <= 0.25 x
#: Ray; idle memory (PSS) <= 0.25 x Ray. ``put_get_large`` (a bandwidth) has none.
TARGETS: dict[str, tuple[str, str, float]] = {
    "startup": ("value", "<=", 0.2),
    "idle_memory": ("pss_mib", "<=", 0.25),
    "tasks_async": ("value", ">=", 5.0),
    "tasks_sync": ("value", "<=", 0.25),
    "actor_calls_async": ("value", ">=", 5.0),
    "actor_calls_sync": ("value", "<=", 0.25),
    "async_actor_calls": ("value", ">=", 5.0),
    "actor_calls_asyncio": ("value", ">=", 5.0),
    "n_n_actor_calls": ("value", ">=", 5.0),
    "put_get_small": ("value", ">=", 5.0),
    "large_arg_task": ("value", "<=", 0.25),
    "large_arg_actor": ("value", "<=", 0.25),
    "task_chain": ("value", ">=", 5.0),
    "tree_reduce": ("value", "<=", 0.2),  # seconds for 2L-1 tasks: >= 5 x tasks_per_s
}
#: Extras compared too (rows of their own in the comparison table).
EXTRA_TARGETS: dict[str, tuple[str, str, float]] = {
    "actor_calls_asyncio": ("seq_await_us", "<=", 0.25),
    "large_arg_task": ("ref_arg_s", "<=", 0.25),
}

DEFAULT_RAY_PYTHON = "/work/rayenv/bin/python"
DEFAULT_RAY_SCRIPT = "/work/shared/bench/ray_bench.py"


def _loop_kind() -> str:
    return "uvloop" if have_uvloop() else "asyncio"


def _num_cpus() -> int:
    return os.cpu_count() or 1


def _init() -> Any:
    return af.init(num_cpus=_num_cpus(), log_to_driver=False)


# -- remote functions and actors -------------------------------------------------------------------
# Pickled by value (as the peer scripts' functions in ``__main__`` are), so workers do not import
# this module (see the end of the module).


@af.remote
def noop(i):  # type: ignore[no-untyped-def]
    return i


@af.remote
def inc(x):  # type: ignore[no-untyped-def]
    return x + 1


@af.remote
def leaf(i):  # type: ignore[no-untyped-def]
    return i


@af.remote
def add(a, b):  # type: ignore[no-untyped-def]
    return a + b


@af.remote
def array_sum(a):  # type: ignore[no-untyped-def]
    return float(a.sum())


@af.remote
class Echo:
    def ready(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()

    def noop(self, i):  # type: ignore[no-untyped-def]
        return i

    def array_sum(self, a):  # type: ignore[no-untyped-def]
        return float(a.sum())


@af.remote
class AsyncEcho:
    async def ready(self) -> bool:
        return True

    async def noop(self, i):  # type: ignore[no-untyped-def]
        return i


@af.remote
class Caller:
    """Makes m calls round-robin over its callees, all at once, and returns their sum."""

    def __init__(self, callees):  # type: ignore[no-untyped-def]
        self.callees = callees

    def ready(self) -> bool:
        return True

    async def run(self, m: int) -> int:
        k = len(self.callees)
        refs = [self.callees[i % k].noop.remote(i) for i in range(m)]
        return sum(await af.get(refs))


def _large_array() -> Any:
    import numpy as np

    return np.random.default_rng(0).random(LARGE_BYTES // 8)


# -- in-process workloads -------------------------------------------------------------------
# Each: ``async def wl(n) -> (rep, teardown)``; ``await rep()`` is one repetition's record
# (``value`` + extras, ``ops`` when the CPU per op is not per n); ``teardown`` may be None.

Rep = Callable[[], Awaitable[dict[str, Any]]]
Teardown = Callable[[], Awaitable[None]] | None


def _check_sum(res: list[int], n: int) -> None:
    assert sum(res) == n * (n - 1) // 2, (sum(res), n)


async def _actor(cls: Any) -> Any:
    a = cls.remote()
    assert await a.ready.remote() is True
    return a


def _killer(*handles: Any) -> Teardown:
    async def teardown() -> None:
        for h in handles:
            await af.kill(h)

    return teardown


async def tasks_async(n: int) -> tuple[Rep, Teardown]:
    _check_sum(await af.get([noop.remote(i) for i in range(200)]), 200)

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        refs = [noop.remote(i) for i in range(n)]
        t1 = time.perf_counter()
        res = await af.get(refs)
        t2 = time.perf_counter()
        _check_sum(res, n)
        return {"value": n / (t2 - t0), "submit_s": t1 - t0, "total_s": t2 - t0}

    return rep, None


async def tasks_sync(n: int) -> tuple[Rep, Teardown]:
    _check_sum(await af.get([noop.remote(i) for i in range(50)]), 50)

    async def call(i: int) -> None:
        assert await noop.remote(i) == i

    for i in range(50):
        await call(i)

    async def rep() -> dict[str, Any]:
        return await alatency_loop(call, n)

    return rep, None


async def actor_calls_async(n: int) -> tuple[Rep, Teardown]:
    a = await _actor(Echo)
    _check_sum(await af.get([a.noop.remote(i) for i in range(200)]), 200)

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        refs = [a.noop.remote(i) for i in range(n)]
        t1 = time.perf_counter()
        res = await af.get(refs)
        t2 = time.perf_counter()
        _check_sum(res, n)
        return {"value": n / (t2 - t0), "submit_s": t1 - t0, "total_s": t2 - t0}

    return rep, _killer(a)


async def actor_calls_sync(n: int) -> tuple[Rep, Teardown]:
    a = await _actor(Echo)
    noop_m = a.noop

    async def call(i: int) -> None:
        assert await noop_m.remote(i) == i

    for i in range(50):
        await call(i)

    async def rep() -> dict[str, Any]:
        return await alatency_loop(call, n)

    return rep, _killer(a)


async def async_actor_calls(n: int) -> tuple[Rep, Teardown]:
    a = await _actor(AsyncEcho)
    _check_sum(await af.get([a.noop.remote(i) for i in range(200)]), 200)

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        res = await af.get([a.noop.remote(i) for i in range(n)])
        dt = time.perf_counter() - t0
        _check_sum(res, n)
        return {"value": n / dt, "total_s": dt}

    return rep, _killer(a)


async def actor_calls_asyncio(n: int) -> tuple[Rep, Teardown]:
    a = await _actor(Echo)
    n_seq = max(100, n // 10)

    async def gather_calls(k: int) -> list[int]:
        return list(await asyncio.gather(*[a.noop.remote(i) for i in range(k)]))

    async def seq_calls(k: int) -> None:
        for i in range(k):
            assert await a.noop.remote(i) == i

    _check_sum(await gather_calls(200), 200)
    await seq_calls(50)

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        res = await gather_calls(n)
        dt = time.perf_counter() - t0
        _check_sum(res, n)
        t1 = time.perf_counter()
        await seq_calls(n_seq)
        dts = time.perf_counter() - t1
        return {"value": n / dt, "total_s": dt, "seq_await_us": dts / n_seq * 1e6,
                "ops": n + n_seq}

    return rep, _killer(a)


async def n_n_actor_calls(n: int) -> tuple[Rep, Teardown]:
    per = n // 2
    callees = [Echo.remote() for _ in range(2)]
    callers = [Caller.remote(callees) for _ in range(2)]
    assert await af.get([c.ready.remote() for c in callees + callers]) == [True] * 4
    assert await af.get([c.run.remote(200) for c in callers]) == [200 * 199 // 2] * 2

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        res = await af.get([c.run.remote(per) for c in callers])
        dt = time.perf_counter() - t0
        assert res == [per * (per - 1) // 2] * 2, res
        return {"value": 2 * per / dt, "total_s": dt}

    return rep, _killer(*callers, *callees)


async def put_get_small(n: int) -> tuple[Rep, Teardown]:
    put, get = af.put, af.get
    for i in range(100):
        assert await get(put(i)) == i

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        for i in range(n):
            assert await get(put(i)) == i
        dt = time.perf_counter() - t0
        return {"value": n / dt, "mean_us": dt / n * 1e6}

    return rep, None


async def put_get_large(n: int) -> tuple[Rep, Teardown]:
    arr = _large_array()
    out = await af.get(af.put(arr))  # warm-up: first touch of shared memory
    del out

    async def rep() -> dict[str, Any]:
        put_t = get_t = 0.0
        for _ in range(n):
            t0 = time.perf_counter()
            ref = af.put(arr)
            t1 = time.perf_counter()
            out = await af.get(ref)
            t2 = time.perf_counter()
            assert out.shape == arr.shape and out[-1] == arr[-1]
            put_t += t1 - t0
            get_t += t2 - t1
            del out, ref
        gb = LARGE_BYTES * n / 1e9
        return {
            "value": gb / (put_t + get_t),
            "put_GBps": gb / put_t,
            "get_GBps": gb / get_t,
            "put_ms": put_t / n * 1e3,
            "get_ms": get_t / n * 1e3,
        }

    return rep, None


async def large_arg_task(n: int) -> tuple[Rep, Teardown]:
    arr = _large_array()
    expect = float(arr.sum())
    await array_sum.remote(arr)

    def close(s: float) -> bool:
        return abs(s - expect) < 1e-6 * abs(expect)

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        for _ in range(n):
            assert close(await array_sum.remote(arr))
        dt = (time.perf_counter() - t0) / n
        ref = af.put(arr)
        t1 = time.perf_counter()
        for _ in range(n):
            assert close(await array_sum.remote(ref))
        dtr = (time.perf_counter() - t1) / n
        del ref
        return {"value": dt, "ref_arg_s": dtr, "ops": 2 * n}

    return rep, None


async def large_arg_actor(n: int) -> tuple[Rep, Teardown]:
    arr = _large_array()
    expect = float(arr.sum())
    a = await _actor(Echo)
    await a.array_sum.remote(arr)

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        for _ in range(n):
            s = await a.array_sum.remote(arr)
            assert abs(s - expect) < 1e-6 * abs(expect)
        return {"value": (time.perf_counter() - t0) / n}

    return rep, _killer(a)


async def task_chain(n: int) -> tuple[Rep, Teardown]:
    assert await inc.remote(inc.remote(0)) == 2

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        x = inc.remote(0)
        for _ in range(n - 1):
            x = inc.remote(x)
        r = await x
        dt = time.perf_counter() - t0
        assert r == n, r
        return {"value": n / dt, "total_s": dt}

    return rep, None


async def tree_reduce(n: int) -> tuple[Rep, Teardown]:
    assert n & (n - 1) == 0, "the leaf count must be a power of two"
    assert await add.remote(leaf.remote(1), leaf.remote(2)) == 3

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        refs = [leaf.remote(i) for i in range(n)]
        while len(refs) > 1:
            refs = [add.remote(refs[i], refs[i + 1]) for i in range(0, len(refs), 2)]
        r = await refs[0]
        dt = time.perf_counter() - t0
        assert r == n * (n - 1) // 2, r
        return {"value": dt, "tasks_per_s": (2 * n - 1) / dt, "ops": 2 * n - 1}

    return rep, None


_IN_PROCESS: dict[str, Callable[[int], Awaitable[tuple[Rep, Teardown]]]] = {
    "tasks_async": tasks_async,
    "tasks_sync": tasks_sync,
    "actor_calls_async": actor_calls_async,
    "actor_calls_sync": actor_calls_sync,
    "async_actor_calls": async_actor_calls,
    "actor_calls_asyncio": actor_calls_asyncio,
    "n_n_actor_calls": n_n_actor_calls,
    "put_get_small": put_get_small,
    "put_get_large": put_get_large,
    "large_arg_task": large_arg_task,
    "large_arg_actor": large_arg_actor,
    "task_chain": task_chain,
    "tree_reduce": tree_reduce,
}


async def _in_process(names: list[str], quick: bool, reps: int,
                      provenance: dict[str, Any]) -> list[dict[str, Any]]:
    meter = CpuMeter()
    records = []
    async with _init():
        for name in names:
            unit, n_full, n_quick = _SPEC[name]
            n = n_quick if quick else n_full
            rep, teardown = await _IN_PROCESS[name](n)
            runs = []
            try:
                for r in range(reps):
                    before = meter.snap()
                    rec = await rep()
                    after = meter.snap(end=True)
                    runs.append(meter.add(rec, before, after, rec.pop("ops", n)))
                    log(f"[{name}] rep {r + 1}/{reps}: {rec['value']:.4g} {unit}")
            finally:
                if teardown is not None:
                    await teardown()
            records.append(summarize(name, unit, n, runs, provenance))
    return records


# -- fresh-process workloads ----------------------------------------------------------------


def _collect_tree() -> list[Any]:
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


def _proc_label(p: Any, driver_pid: int) -> str:
    if p.pid == driver_pid:
        return "driver"
    name: str = p.name()
    if name.startswith("python"):
        cmd = p.cmdline()
        for j, arg in enumerate(cmd[1:], 1):
            if arg.endswith(".py"):
                return os.path.basename(str(arg))
            if arg == "-m" and j + 1 < len(cmd):
                return str(cmd[j + 1])
            if arg == "-c":
                return "python -c"
    return name


def _measure_tree(procs: list[Any]) -> dict[str, Any]:
    rss = pss = uss = 0
    by_name: dict[str, int] = {}
    counted = 0
    me = os.getpid()
    for p in procs:
        try:
            mi = p.memory_full_info()
            label = _proc_label(p, me)
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


def _child_startup() -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        t0 = time.perf_counter()
        await _init()
        t1 = time.perf_counter()
        assert await noop.remote(1) == 1
        t2 = time.perf_counter()
        await af.shutdown()
        t3 = time.perf_counter()
        return {
            "import_s": T_IMPORTED - T_PROC0,
            "init_s": t1 - t0,
            "first_task_s": t2 - t1,
            "ttfr_s": t2 - t0,
            "shutdown_s": t3 - t2,
        }

    return run_on(_loop_kind(), main)


def _child_idle_memory() -> dict[str, Any]:
    import psutil

    async def main() -> dict[str, Any]:
        async with _init():
            await asyncio.sleep(3.0)
            m = _measure_tree(_collect_tree())
            # extra: the memory of one idle actor's own worker process
            a = await _actor(Echo)
            pid = await a.pid.remote()
            await asyncio.sleep(1.0)
            mi = psutil.Process(pid).memory_full_info()
            m["per_actor_rss_mib"] = mi.rss / 2**20
            m["per_actor_uss_mib"] = mi.uss / 2**20
            await af.kill(a)
        return m

    return run_on(_loop_kind(), main)


def _run_child(name: str) -> tuple[float, dict[str, Any]]:
    cmd = [sys.executable, "-m", "benchmarks.cluster", "--child", name]
    env = dict(os.environ)
    for key in ("ACTORFLOW_ADDRESS", "AF_BENCH_COMPARE"):
        env.pop(key, None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child {name} failed (rc={proc.returncode}): {proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"child {name} printed no record: {proc.stderr[-3000:]}")
    return wall, json.loads(lines[-1])


def _fresh_process(name: str, reps: int, provenance: dict[str, Any]) -> dict[str, Any]:
    unit = _SPEC[name][0]
    runs = []
    for r in range(reps):
        wall, inner = _run_child(name)
        rec = {"value": wall, **inner} if name == "startup" else {"value": inner["rss_mib"],
                                                                  **inner}
        runs.append(rec)
        log(f"[{name}] rep {r + 1}/{reps}: {rec['value']:.4g} {unit}")
    return summarize(name, unit, 1, runs, provenance)


# -- the group's entry point ---------------------------------------------------------------------


def run(quick: bool, reps: int, only: set[str] | None = None,
        compare: str | None = None) -> list[dict[str, Any]]:
    """Run the selected cluster workloads (all by default); one summarized record each.
    With ``compare="ray"`` (or ``AF_BENCH_COMPARE=ray``), Ray's peer script runs afterwards
    and the records get Ray as their baseline."""
    if compare is None:
        compare = os.environ.get("AF_BENCH_COMPARE") or None
    names = [w for w in WORKLOADS if only is None or w in only]
    provenance = {**meta(quick), "num_cpus": _num_cpus(), "loop": _loop_kind()}
    records = [_fresh_process(w, reps, provenance) for w in names if w in _CHILD_WORKLOADS]
    in_proc = [w for w in names if w not in _CHILD_WORKLOADS]
    if in_proc:
        records += run_on(_loop_kind(), lambda: _in_process(in_proc, quick, reps, provenance))
    if compare:
        if compare != "ray":
            raise ValueError(f"--compare knows only 'ray', not {compare!r}")
        attach_ray(records, run_ray(names, quick, reps))
    return records


# -- comparison with Ray ---------------------------------------------------------------------------


def run_ray(names: list[str], quick: bool, reps: int, python: str | None = None,
            script: str | None = None) -> list[dict[str, Any]]:
    """Run the peer script ``ray_bench.py`` with Ray's interpreter (a separate program, after
    ours has finished); its records."""
    python = python or os.environ.get("AF_BENCH_RAY_PYTHON") or DEFAULT_RAY_PYTHON
    script = script or os.environ.get("AF_BENCH_RAY_SCRIPT") or DEFAULT_RAY_SCRIPT
    for path in (python, script):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} does not exist: install Ray in its own virtualenv "
                "(python3 -m venv /work/rayenv && /work/rayenv/bin/pip install 'ray[default]' "
                "numpy psutil) and point AF_BENCH_RAY_PYTHON / AF_BENCH_RAY_SCRIPT at it"
            )
    cmd = [python, script, "--only", ",".join(names), "--reps", str(reps),
           "--num-cpus", str(_num_cpus())]
    if quick:
        cmd.append("--quick")
    log(f"[ray] running {' '.join(cmd)}")
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"ray_bench.py failed (rc={proc.returncode})")
    return [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]


def attach_ray(records: list[dict[str, Any]], ray_records: list[dict[str, Any]]) -> None:
    """Give each record Ray's figure of the same run as ``baseline_value`` (plus ``ratio``,
    ``target``, ``target_met`` where the issue sets a target); extras compared get
    ``<extra>_baseline_value`` / ``<extra>_ratio`` / ``<extra>_target_met``."""
    by_name = {r["workload"]: r for r in ray_records}
    for rec in records:
        ray = by_name.get(rec["workload"])
        if ray is None:
            continue
        rec["baseline"] = "ray"
        rec["baseline_value"] = ray["value"]
        rec["baseline_version"] = ray.get("version")
        key, op, factor = TARGETS.get(rec["workload"], ("value", "", 0.0))
        if key == "value" and op:
            attach_baseline(rec, "ray", op, factor)
        else:
            rec["ratio"] = sig(rec["value"] / ray["value"], 4)
        if key != "value" and key in rec and ray.get(key):
            # the target is on an extra (idle_memory: PSS)
            rec[f"{key}_baseline_value"] = ray[key]
            ratio = rec[key] / ray[key]
            rec[f"{key}_ratio"] = sig(ratio, 4)
            rec["target"] = f"{key} ratio {op} {factor:g}"
            rec["target_met"] = ratio >= factor if op == ">=" else ratio <= factor
        extra = EXTRA_TARGETS.get(rec["workload"])
        if extra and extra[0] in rec and ray.get(extra[0]):
            k, op, factor = extra
            ratio = rec[k] / ray[k]
            rec[f"{k}_baseline_value"] = ray[k]
            rec[f"{k}_ratio"] = sig(ratio, 4)
            rec[f"{k}_target"] = f"ratio {op} {factor:g}"
            rec[f"{k}_target_met"] = ratio >= factor if op == ">=" else ratio <= factor


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def _span(rec: dict[str, Any], key: str) -> str:
    if key == "value" and "min" in rec:
        return f"{_fmt(rec['value'])} ({_fmt(rec['min'])}-{_fmt(rec['max'])})"
    return _fmt(rec.get(key))


def compare_table(records: list[dict[str, Any]], ray_records: list[dict[str, Any]]) -> str:
    """Markdown: workload | unit | actorflow | Ray | ratio | target | met (medians, min-max)."""
    by_name = {r["workload"]: r for r in ray_records}
    rows = [("workload", "unit", "actorflow", "Ray", "ratio (af/Ray)", "target", "met")]

    def row(label: str, unit: str, rec: dict[str, Any], ray: dict[str, Any] | None, key: str,
            target: tuple[str, str, float] | None) -> None:
        ours = rec.get(key)
        theirs = ray.get(key) if ray else None
        ratio = ours / theirs if ours is not None and theirs else None
        met = "-"
        if target is not None and ratio is not None:
            _, op, factor = target
            met = "yes" if (ratio >= factor if op == ">=" else ratio <= factor) else "**NO**"
        rows.append((label, unit, _span(rec, key), _span(ray, key) if ray else "-",
                     f"{ratio:.3g}" if ratio is not None else "-",
                     f"{target[1]} {target[2]:g}" if target else "-", met))

    for rec in records:
        name, unit = rec["workload"], rec["unit"]
        ray = by_name.get(name)
        target = TARGETS.get(name)
        if name == "idle_memory":
            row("idle_memory (RSS)", "MiB", rec, ray, "value", None)
            row("idle_memory (PSS)", "MiB", rec, ray, "pss_mib", target)
            row("idle_memory (USS)", "MiB", rec, ray, "uss_mib", None)
            continue
        row(name, unit, rec, ray, "value", target)
        if name == "startup":
            row("startup: ttfr_s", "s", rec, ray, "ttfr_s", None)
        extra = EXTRA_TARGETS.get(name)
        if extra:
            row(f"{name}: {extra[0]}", "us" if extra[0].endswith("_us") else "s", rec, ray,
                extra[0], extra)
        if name in ("tasks_sync", "actor_calls_sync"):
            row(f"{name}: p99_us", "us", rec, ray, "p99_us", None)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def cpu_table(records: list[dict[str, Any]], ray_records: list[dict[str, Any]]) -> str:
    """Markdown: CPU microseconds per operation, both frameworks, all processes."""
    by_name = {r["workload"]: r for r in ray_records}
    lines = ["| workload | actorflow cpu_us_per_op | Ray cpu_us_per_op "
             "| actorflow cpu_s by process |",
             "| --- | --- | --- | --- |"]
    for rec in records:
        if "cpu_us_per_op" not in rec:
            continue
        ray = by_name.get(rec["workload"], {})
        lines.append(f"| {rec['workload']} | {_fmt(rec['cpu_us_per_op'])} | "
                     f"{_fmt(ray.get('cpu_us_per_op'))} | {rec.get('cpu_s_by_name', {})} |")
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster",
        description="The cluster benchmark group, optionally beside Ray run in the same sitting.")
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"workloads (default all): {', '.join(WORKLOADS)}")
    ap.add_argument("--json", action="store_true", help="one JSON record per line on stdout")
    ap.add_argument("--quick", action="store_true", help="quick n, 1 rep: a smoke test")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    ap.add_argument("--compare", choices=["ray"], default=None,
                    help="then run the peer ray_bench.py (Ray's interpreter) and compare")
    ap.add_argument("--ray-python", default=None, help=f"default {DEFAULT_RAY_PYTHON}")
    ap.add_argument("--ray-script", default=None, help=f"default {DEFAULT_RAY_SCRIPT}")
    ap.add_argument("--save", default=None, metavar="DIR",
                    help="also write actorflow.jsonl (and ray.jsonl) into DIR")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        out = _child_startup() if args.child == "startup" else _child_idle_memory()
        print(json.dumps(out), flush=True)
        return 0
    unknown = [n for n in args.names if n not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; known: {list(WORKLOADS)}")
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    names = [w for w in WORKLOADS if not args.names or w in args.names]
    if args.json:
        claim_stdout()
    records = run(args.quick, reps, only=set(names), compare="")  # Ray: below, once
    ray_records: list[dict[str, Any]] = []
    if (args.compare or os.environ.get("AF_BENCH_COMPARE")) == "ray":
        ray_records = run_ray(names, args.quick, reps, args.ray_python, args.ray_script)
        attach_ray(records, ray_records)
    if args.save:
        os.makedirs(args.save, exist_ok=True)
        with open(os.path.join(args.save, "actorflow.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        if ray_records:
            with open(os.path.join(args.save, "ray.jsonl"), "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in ray_records)
    if args.json:
        for rec in records:
            emit(rec)
    if ray_records:
        text = compare_table(records, ray_records) + "\n\n" + cpu_table(records, ray_records)
        (sys.stderr if args.json else sys.stdout).write(text + "\n")
    elif not args.json:
        from benchmarks.__main__ import _table

        print(_table(records))
    return 0


# Workers must not need this module: pickle its remote functions and classes by value.
if __name__ != "__main__":
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
