"""The cluster group's ``many_actors`` workload (``python -m benchmarks many_actors``): how fast
actors come up, and what an idle one costs.

Each repetition takes the sizes of ``benchmarks.spec`` in turn (100, 300 and 1,000 actors;
quick 10 and 30). For a size k:

- timed: k actors of a plain class (``def ping(self, i): return i``) created with the defaults
  (1 CPU to place, 0 held), one ``ping(i)`` each; ``actors_per_s_<k>`` = k / (time from the
  first ``.remote()`` creation to the last call's result), results checked. The CPU snapshots
  bound this part only. A size still unfinished after ``many_actors_timeout(k)`` stops there:
  it counts the calls answered (``completed``) and adds one to ``timed_out``.
- untimed, the k actors idle (1 s after their answers): their memory, as PSS from
  ``/proc/PID/smaps_rollup`` (a page shared by j processes counts 1/j in each, so the sum over
  a set of processes is what the set costs, as ``smem`` reports it):
  ``pss_per_actor_mib_<k>`` = (PSS of the k actors' worker processes + the zygote's) / k: the
  workers' private pages plus every page they share with the fork server and each other;
  ``marginal_pss_per_actor_mib_<k>`` = (PSS of the driver's whole process tree now - just
  before the k were created) / k: everything k more idle actors cost, the driver's and the
  node's books on them included; ``uss_per_actor_mib_<k>`` = the mean private pages of one
  actor's process.
- untimed: every actor ``af.kill``ed and its process awaited gone.

The record's ``value``, ``n``, ``total_s``, ``completed`` and the CPU fields are those of the
largest size; the unsuffixed ``pss_per_actor_mib``, ``marginal_pss_per_actor_mib``,
``uss_per_actor_mib`` too, and ``actors_per_gib`` = 1024 / ``marginal_pss_per_actor_mib``.
Ray's side is ``benchmarks/ray_extra.py``. The remote class travels by value (see the end of
the module).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import cloudpickle

import actorflow as af
from benchmarks._common import CpuMeter, collect_tree, log, memory_fits, pss_of
from benchmarks.spec import many_actors_timeout

_GONE_TIMEOUT_S = 60.0  # for killed actors' processes to exit (plus 50 ms per actor)
_SETTLE_S = 1.0  # between the last answer and the memory reading
_ZYGOTE = "actorflow.cluster.zygote"  # the fork server's command line names it


@af.remote
class Pinger:
    """The actor; ``pid`` is only called after the timed region."""

    def ping(self, i):  # type: ignore[no-untyped-def]
        return i

    def pid(self) -> int:
        return os.getpid()


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


async def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait (bounded) until none of ``pids`` is alive; the ones left."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left


def _tree() -> tuple[list[int], list[int]]:
    """The pids of the driver's process tree, and those of its fork servers among them."""
    procs = collect_tree()
    zygotes = []
    for p in procs:
        try:
            if _ZYGOTE in " ".join(p.cmdline()):
                zygotes.append(p.pid)
        except Exception:  # gone, or not ours to read
            continue
    return [p.pid for p in procs], zygotes


async def _tree_pss() -> float:
    def read() -> float:
        return pss_of(_tree()[0])["pss_mib"]

    return await asyncio.to_thread(read)


async def _idle_memory(pids: list[int], tree_before: float) -> dict[str, float]:
    """The memory fields of ``pids`` (idle actors' processes), per actor."""
    await asyncio.sleep(_SETTLE_S)

    def read() -> dict[str, float]:
        tree, zygotes = _tree()
        workers = pss_of(pids)
        zygote = pss_of(zygotes)
        k = max(1, workers["nprocs"])
        return {
            "pss_per_actor_mib": (workers["pss_mib"] + zygote["pss_mib"]) / k,
            "marginal_pss_per_actor_mib": (pss_of(tree)["pss_mib"] - tree_before) / k,
            "uss_per_actor_mib": workers["uss_mib"] / k,
        }

    return await asyncio.to_thread(read)


async def _one_size(k: int, meter: CpuMeter) -> dict[str, Any]:
    """Create k actors, one call each (timed), read their memory, kill them (untimed)."""
    tree_before = await _tree_pss()
    before = meter.snap()
    t0 = time.perf_counter()
    handles = [Pinger.remote() for _ in range(k)]
    refs = [h.ping.remote(i) for i, h in enumerate(handles)]
    timeout = many_actors_timeout(k)
    try:
        res = await af.get(refs, timeout=timeout)
        timed_out = False
    except af.GetTimeoutError:
        timed_out = True
    dt = time.perf_counter() - t0
    after = meter.snap(end=True)
    if timed_out:
        ready, _ = await af.wait(refs, num_returns=k, timeout=0)
        done = set(ready)
        answered = [i for i, ref in enumerate(refs) if ref in done]
        assert sorted(await af.get([refs[i] for i in answered])) == answered
        log(f"[many_actors] {k} actors: TIMED OUT after {dt:.1f} s: {len(answered)}/{k} "
            "answered")
    else:
        assert res == list(range(k)), "wrong results"
        answered = list(range(k))
    rec: dict[str, Any] = {"value": len(answered) / dt, "total_s": dt,
                           "completed": len(answered), "timed_out": int(timed_out)}
    meter.add(rec, before, after, k)

    gone_timeout = _GONE_TIMEOUT_S + 0.05 * k
    pids = await af.get([handles[i].pid.remote() for i in answered], timeout=gone_timeout)
    rec.update(await _idle_memory(pids, tree_before))
    for h in handles:
        await af.kill(h)
    left = await _wait_gone(pids, gone_timeout)
    if left:
        log(f"[many_actors] {len(left)} actor processes still alive {gone_timeout:.0f} s "
            f"after af.kill: {left[:10]}")
    return rec


async def measure(sizes: tuple[int, ...], reps: int, meter: CpuMeter
                  ) -> tuple[list[dict[str, Any]], int]:
    """In a running cluster: the repetitions, each over every size in turn; one dict each,
    for ``summarize`` (the largest size's fields unsuffixed, every size's suffixed), and the
    largest size run. A size that would not fit in the memory available (judged in the first
    repetition from the previous size's figure) is skipped with the larger ones, and
    ``memory_limited`` says so, as on Ray's side."""
    # warm-up: one actor through its whole life (class export, first actor worker)
    a = Pinger.remote()
    assert await a.ping.remote(7) == 7
    pid = await a.pid.remote()
    await af.kill(a)
    await _wait_gone([pid], _GONE_TIMEOUT_S)

    runs = []
    run_sizes = list(sizes)
    limited = ""
    for r in range(reps):
        run: dict[str, Any] = {}
        last: dict[str, Any] = {}  # the largest size's record
        timed_out = 0
        per_actor = 0.0
        for j, k in enumerate(run_sizes):
            if r == 0 and j > 0 and (why := memory_fits(k, per_actor)) is not None:
                log(f"[many_actors] {why}")
                limited = why
                run_sizes = run_sizes[:j]
                break
            rec = last = await _one_size(k, meter)
            per_actor = max(rec["marginal_pss_per_actor_mib"], rec["pss_per_actor_mib"])
            timed_out += rec["timed_out"]
            log(f"[many_actors] rep {r + 1}/{reps}, {k} actors: {rec['value']:.4g} actors/s; "
                f"idle PSS {rec['pss_per_actor_mib']:.2f} MiB/actor (marginal "
                f"{rec['marginal_pss_per_actor_mib']:.2f}), USS "
                f"{rec['uss_per_actor_mib']:.2f}")
            run[f"actors_per_s_{k}"] = rec["value"]
            for key in ("pss_per_actor_mib", "marginal_pss_per_actor_mib", "uss_per_actor_mib"):
                run[f"{key}_{k}"] = rec[key]
        run = {**last, **run}
        run["timed_out"] = timed_out
        marginal = run["marginal_pss_per_actor_mib"]
        run["actors_per_gib"] = 1024 / marginal if marginal > 0 else 0.0
        if limited:
            run["memory_limited"] = limited
        runs.append(run)
    return runs, run_sizes[-1]


# Workers must not need this module: pickle its remote class by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
