#!/usr/bin/env python3
"""actorflow's own cluster workloads (``many_actors``, ``cross_node``, ``generator``) on Ray Core.

Usage (with Ray's interpreter, never the project's: Ray is not a dependency of actorflow)::

    /work/rayenv/bin/python benchmarks/ray_extra.py [--only NAMES] [--quick] [--reps N]
        [--num-cpus N] [--bench-dir DIR] [--list]

Prints one JSON record per workload on stdout, in the peer scripts' format (``WORKLOADS.md``,
``framework: "ray"``); everything else goes to stderr. It reuses ``bench_common.py`` and
``ray_bench.py``'s ``init_ray`` from the peer benchmark folder (``--bench-dir``, else the folder
of ``$AF_BENCH_RAY_SCRIPT``, else ``<checkout>/../shared/bench``, else ``/work/shared/bench``).
The sizes come from ``benchmarks/spec.py`` (this script puts the checkout on its path; that
module and ``benchmarks/_common.py`` need nothing but the standard library). The actorflow side
is in ``benchmarks/many_actors.py`` and ``benchmarks/cross_node.py``; the definitions:

- ``many_actors`` (actors/s at 100, 300 and 1,000 actors; quick 10 and 30), as ours: for each
  size k in turn, k actors of a plain class (Ray's defaults: 1 CPU to place, 0 held), one
  ``ping(i)`` (``return i``) each; ``actors_per_s_<k>`` = k / (time from the first creation to
  the last call's result), results checked; a size unfinished after ``many_actors_timeout(k)``
  stops there (``timed_out``, ``completed``). Then, untimed, the idle actors' memory from
  ``/proc/PID/smaps_rollup``: ``pss_per_actor_mib_<k>`` (the k actor processes' PSS / k),
  ``marginal_pss_per_actor_mib_<k>`` (the PSS of the driver's process tree, which holds every
  Ray process of a local instance, now minus before the k, / k), ``uss_per_actor_mib_<k>``;
  then every actor is killed and its process awaited gone. A size that would not fit in this
  machine's memory (k x the previous size's marginal PSS x 1.25, plus 2 GiB to spare, over
  what is available) is skipped, with the larger ones: ``memory_limited`` says so, and the
  record's ``value`` and ``n`` are the largest size that ran.
- ``cross_node`` (tasks/s; n = 10,000, quick 1,000): two nodes on this machine, the head
  (1 CPU; the driver's node) and a second node (1 CPU, resource ``{"far": 1}``), started with
  ``ray.cluster_utils.Cluster`` (object store 512 MiB each, so the 100 MiB array never
  spills). value: n no-op tasks pinned to the far node (``resources={"far": 0.001}``),
  submitted then gathered, n / time. Extras: ``transfer_100MiB_s``, a task on the far node
  that returns the 100 MiB array, from submission to the checked array in the driver
  (``transfer_GBps`` = 104,857,600 B / that); ``produce_s``, the same task returning only the
  array's last element (everything but the move); ``move_s`` = transfer - produce and
  ``move_GBps``. ``cpu_*`` cover the task part only; ``transfer_cpu_s`` the transfer.
- ``generator`` (values/s; n = 10,000, quick 1,000): one task that yields ``range(n)`` (a
  streaming generator: Ray's default for a generator function), read by the driver ref by
  ref as the task runs (``ray.get`` of each; ours ``async for`` and ``await``); value: n /
  (time from the submission to the last value read), the sum checked.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any

if not __package__:  # run as a script (Ray's interpreter): the checkout on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import collect_tree, memory_fits, pss_of
from benchmarks.spec import (
    LARGE_BYTES,
    RAY_EXTRA_WORKLOADS,
    SPEC,
    many_actors_sizes,
    many_actors_timeout,
)

#: name -> (unit, n, quick n): ``benchmarks.spec``'s
WORKLOADS: dict[str, tuple[str, int, int]] = {w: SPEC[w] for w in RAY_EXTRA_WORKLOADS}
FRAMEWORK = "ray"
GONE_TIMEOUT_S = 60.0  # for killed actors' processes to exit (plus 50 ms per actor)
SETTLE_S = 1.0  # between the last answer and the memory reading
OBJECT_STORE_BYTES = 512 * 1024 * 1024
FAR = {"far": 0.001}


def bench_dir(given: str | None = None) -> str:
    """The peer benchmark folder (bench_common.py, ray_bench.py)."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [given] if given else []
    script = os.environ.get("AF_BENCH_RAY_SCRIPT")
    if script:
        candidates.append(os.path.dirname(os.path.abspath(script)))
    candidates += [os.path.normpath(os.path.join(here, "..", "..", "shared", "bench")),
                   "/work/shared/bench"]
    for path in candidates:
        if path and os.path.exists(os.path.join(path, "bench_common.py")):
            return path
    raise SystemExit(f"bench_common.py not found in any of {candidates}; pass --bench-dir")


def _log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def wait_gone(pids: list[int], timeout: float = GONE_TIMEOUT_S) -> list[int]:
    """Wait (bounded) until none of ``pids`` is a live process; the ones left."""
    import psutil

    def live(pid: int) -> bool:
        try:
            return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    left = [p for p in pids if live(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if live(p)]
    return left


# -- the workloads: each returns its list of per-repetition dicts ------------------------------


def _tree_pss() -> float:
    return pss_of(p.pid for p in collect_tree())["pss_mib"]


def _one_size(ray: Any, cls: Any, k: int, meter: Any) -> dict[str, Any]:
    tree_before = _tree_pss()
    before = meter.snap()
    t0 = time.perf_counter()
    handles = [cls.remote() for _ in range(k)]
    refs = [h.ping.remote(i) for i, h in enumerate(handles)]
    try:
        res = ray.get(refs, timeout=many_actors_timeout(k))
        timed_out = False
    except ray.exceptions.GetTimeoutError:
        timed_out = True
    dt = time.perf_counter() - t0
    after = meter.snap()
    if timed_out:
        ready, _ = ray.wait(refs, num_returns=k, timeout=0)
        done = set(ready)
        idx = [i for i, ref in enumerate(refs) if ref in done]
        assert sorted(ray.get([refs[i] for i in idx])) == idx
        _log(f"[many_actors] {k} actors: TIMED OUT after {dt:.1f} s, {len(idx)}/{k} answered")
    else:
        assert res == list(range(k)), "wrong results"
        idx = list(range(k))
    rec: dict[str, Any] = {"value": len(idx) / dt, "total_s": dt, "completed": len(idx),
                           "timed_out": int(timed_out)}
    meter.add(rec, before, after, k)
    # untimed: the idle actors' memory, then kill every actor and wait for the answered ones'
    # processes to exit (Ray may still be starting the others: take the pids that come back in
    # time, kill them all anyway)
    gone_timeout = GONE_TIMEOUT_S + 0.05 * k
    pid_refs = [handles[i].pid.remote() for i in idx]
    got, _ = ray.wait(pid_refs, num_returns=len(pid_refs), timeout=gone_timeout)
    pids = ray.get(got)
    time.sleep(SETTLE_S)
    workers = pss_of(pids)
    n = max(1, workers["nprocs"])
    rec["pss_per_actor_mib"] = workers["pss_mib"] / n
    rec["marginal_pss_per_actor_mib"] = (_tree_pss() - tree_before) / n
    rec["uss_per_actor_mib"] = workers["uss_mib"] / n
    for h in handles:
        ray.kill(h)
    left = wait_gone(pids, gone_timeout)
    if left:
        _log(f"[many_actors] {len(left)} actor processes still alive after "
             f"{gone_timeout:.0f} s: {left[:10]}")
    del handles, refs
    return rec


def run_many_actors(ray: Any, sizes: tuple[int, ...], reps: int, meter: Any
                    ) -> tuple[list[dict[str, Any]], int, str]:
    """The repetitions over ``sizes`` (those that fit in memory, judged in the first); the
    per-repetition dicts, the largest size run, and why larger ones were not ('' if none)."""
    @ray.remote
    class Pinger:
        def ping(self, i):  # type: ignore[no-untyped-def]
            return i

        def pid(self) -> int:
            return os.getpid()

    # warm-up: one actor through its whole life (class export, first actor worker)
    a = Pinger.remote()
    assert ray.get(a.ping.remote(7)) == 7
    pid = ray.get(a.pid.remote())
    ray.kill(a)
    wait_gone([pid])

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
                _log(f"[many_actors] {why}")
                limited = why
                run_sizes = run_sizes[:j]
                break
            rec = last = _one_size(ray, Pinger, k, meter)
            per_actor = max(rec["marginal_pss_per_actor_mib"], rec["pss_per_actor_mib"])
            timed_out += rec["timed_out"]
            _log(f"[many_actors] rep {r + 1}/{reps}, {k} actors: {rec['value']:.4g} actors/s; "
                 f"idle PSS {rec['pss_per_actor_mib']:.2f} MiB/actor (marginal "
                 f"{rec['marginal_pss_per_actor_mib']:.2f})")
            run[f"actors_per_s_{k}"] = rec["value"]
            for key in ("pss_per_actor_mib", "marginal_pss_per_actor_mib", "uss_per_actor_mib"):
                run[f"{key}_{k}"] = rec[key]
        run = {**last, **run}
        run["timed_out"] = timed_out
        marginal = run.get("marginal_pss_per_actor_mib", 0.0)
        run["actors_per_gib"] = 1024 / marginal if marginal > 0 else 0.0
        if limited:
            run["memory_limited"] = limited
        runs.append(run)
    return runs, run_sizes[-1], limited


def run_cross_node(ray: Any, n: int, reps: int, cpu_meter_cls: Any, label: Any,
                   session_name: Any) -> list[dict[str, Any]]:
    import numpy as np
    from ray.cluster_utils import Cluster

    node_args = {"num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES,
                 "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True,
                      head_node_args={**node_args, "include_dashboard": False})
    try:
        cluster.add_node(**node_args, resources={"far": 1})
        ray.init(address=cluster.address, log_to_driver=False, _node_ip_address="127.0.0.1")
        try:
            cluster.wait_for_nodes()
            return _cross_node_reps(ray, np, n, reps, cpu_meter_cls(session_name(), label))
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()


def _cross_node_reps(ray: Any, np: Any, n: int, reps: int, meter: Any) -> list[dict[str, Any]]:
    @ray.remote
    def noop(i):  # type: ignore[no-untyped-def]
        return i

    @ray.remote
    def where() -> str:
        return str(ray.get_runtime_context().get_node_id())

    @ray.remote
    def big():  # type: ignore[no-untyped-def]
        import numpy as np

        return np.random.default_rng(0).random(LARGE_BYTES // 8)

    @ray.remote
    def big_last() -> float:
        import numpy as np

        return float(np.random.default_rng(0).random(LARGE_BYTES // 8)[-1])

    far_noop, far_where = noop.options(resources=FAR), where.options(resources=FAR)
    far_big, far_big_last = big.options(resources=FAR), big_last.options(resources=FAR)
    local = np.random.default_rng(0).random(LARGE_BYTES // 8)
    shape, last = local.shape, float(local[-1])
    del local

    far = [nd["NodeID"] for nd in ray.nodes() if nd["Alive"] and "far" in nd["Resources"]]
    assert len(far) == 1, ray.nodes()
    here = ray.get_runtime_context().get_node_id()
    assert ray.get(far_where.remote()) == far[0] != here, "the far tasks did not run far"
    # warm-up: tasks on the far node, one big transfer (first touch of both object stores)
    assert sum(ray.get([far_noop.remote(i) for i in range(200)])) == 200 * 199 // 2
    out = ray.get(far_big.remote())
    assert out.shape == shape and out[-1] == last
    del out
    assert ray.get(far_big_last.remote()) == last

    runs = []
    for r in range(reps):
        before = meter.snap()
        t0 = time.perf_counter()
        refs = [far_noop.remote(i) for i in range(n)]
        t1 = time.perf_counter()
        res = ray.get(refs)
        t2 = time.perf_counter()
        after = meter.snap()
        assert sum(res) == n * (n - 1) // 2
        del refs, res
        rec: dict[str, Any] = {"value": n / (t2 - t0), "submit_s": t1 - t0, "total_s": t2 - t0}
        meter.add(rec, before, after, n)

        t3 = time.perf_counter()
        assert ray.get(far_big_last.remote()) == last
        t4 = time.perf_counter()
        before = meter.snap()
        t5 = time.perf_counter()
        out = ray.get(far_big.remote())
        t6 = time.perf_counter()
        after = meter.snap()
        assert out.shape == shape and out[-1] == last
        del out
        transfer, produce = t6 - t5, t4 - t3
        move = max(transfer - produce, 1e-9)
        rec.update({
            "transfer_100MiB_s": transfer,
            "transfer_GBps": LARGE_BYTES / transfer / 1e9,
            "produce_s": produce,
            "move_s": move,
            "move_GBps": LARGE_BYTES / move / 1e9,
            "transfer_cpu_s": sum(t - before.get(pid, ("", 0.0))[1]
                                  for pid, (_, t) in after.items()),
        })
        runs.append(rec)
        _log(f"[cross_node] rep {r + 1}/{reps}: {rec['value']:.4g} tasks/s; 100 MiB far->driver "
             f"{transfer:.3f} s ({rec['transfer_GBps']:.3g} GB/s; produce {produce:.3f} s)")
    return runs


def run_generator(ray: Any, n: int, reps: int, meter: Any) -> list[dict[str, Any]]:
    @ray.remote
    def produce(n):  # type: ignore[no-untyped-def]
        for i in range(n):  # noqa: UP028  (Ray's generators need send(): no yield from)
            yield i

    assert [ray.get(r) for r in produce.remote(10)] == list(range(10))  # warm-up
    runs = []
    for r in range(reps):
        before = meter.snap()
        t0 = time.perf_counter()
        total = count = 0
        for ref in produce.remote(n):
            total += ray.get(ref)
            count += 1
        dt = time.perf_counter() - t0
        after = meter.snap()
        assert (count, total) == (n, n * (n - 1) // 2), (count, total)
        rec: dict[str, Any] = {"value": n / dt, "total_s": dt}
        meter.add(rec, before, after, n)
        runs.append(rec)
        _log(f"[generator] rep {r + 1}/{reps}: {rec['value']:.4g} values/s")
    return runs


# -- driver ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated workload names")
    ap.add_argument("--quick", action="store_true", help="small n, 1 repetition (smoke test)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2,
                    help="many_actors' single node (cross_node's nodes have 1 CPU each)")
    ap.add_argument("--bench-dir", default=None, help="the folder of bench_common.py")
    ap.add_argument("--list", action="store_true", help="list workload names and exit")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(WORKLOADS))
        return 0
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(WORKLOADS)
    unknown = [s for s in names if s not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s): {unknown}; known: {list(WORKLOADS)}")
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    if reps < 1:
        ap.error("--reps must be >= 1")

    sys.path.insert(0, bench_dir(args.bench_dir))
    # Loopback only, as ray_bench.py's ``_node_ip_address="127.0.0.1"``: without this, Ray
    # rewrites a 127.0.0.1 cluster address to the machine's own IP, where a GCS started with
    # node_ip_address=127.0.0.1 does not listen. It is read when ray is imported, and inherited
    # by the node processes the Cluster starts.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from bench_common import CpuMeter, claim_stdout, emit, summarize
    from ray_bench import init_ray, ray_label, session_name

    claim_stdout()  # stdout carries JSON records only
    meta = {
        "version": ray.__version__,
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
        "num_cpus": args.num_cpus,
        "quick": bool(args.quick),
    }
    for name in [w for w in WORKLOADS if w in names]:  # one Ray instance at a time
        unit, n_full, n_quick = WORKLOADS[name]
        n = n_quick if args.quick else n_full
        _log(f"[{name}] n={n}, reps={reps}")
        if name == "many_actors":
            init_ray(args.num_cpus)
            try:
                runs, n, _ = run_many_actors(ray, many_actors_sizes(args.quick), reps,
                                             CpuMeter(session_name(), ray_label))
            finally:
                ray.shutdown()
            emit(summarize(name, FRAMEWORK, unit, n, runs, meta))
        elif name == "generator":
            init_ray(args.num_cpus)
            try:
                runs = run_generator(ray, n, reps, CpuMeter(session_name(), ray_label))
            finally:
                ray.shutdown()
            emit(summarize(name, FRAMEWORK, unit, n, runs, meta))
        else:
            runs = run_cross_node(ray, n, reps, CpuMeter, ray_label, session_name)
            emit(summarize(name, FRAMEWORK, unit, n, runs, {**meta, "num_cpus": 1, "nodes": 2}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
