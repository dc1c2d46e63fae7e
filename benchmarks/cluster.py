"""Group ``cluster``: the embedded cluster (tasks, actor calls, objects, startup, idle memory)
as the peer workloads define them (``WORKLOADS.md`` in the steering repo's ``bench/``), plus
workloads of our own (``cross_node``, ``many_actors``, ``generator``).

Names, n (quick n), units and JSON keys are the peer benchmarks' (``benchmarks/spec.py`` holds
them, and the targets); ``framework`` is
``actorflow``. The driver is a coroutine on uvloop (what ``af.run`` uses), inside
``async with af.init(num_cpus=nproc, log_to_driver=False)``; every workload warms up with the
same remote functions/actors before its timed repetitions, checks its results, and records
``cpu_s`` / ``cpu_us_per_op`` / ``cpu_s_by_name`` over the driver and every process it started.
``startup`` and ``idle_memory`` run in a fresh child process per repetition
(``python -m benchmarks.cluster --child NAME``), before the in-process workloads.

Our own workloads (their Ray side is ``benchmarks/ray_extra.py``):

- ``many_actors`` (actors/s at 100, 300 and 1,000 actors; quick 10 and 30): k actors of a
  plain class created, one call each, the rate to the last answer; then the memory of the k
  idle actors (PSS). It runs after the other in-process workloads, in the same cluster.
  Defined in ``benchmarks/many_actors.py``.
- ``cross_node`` (tasks/s; n = 10,000, quick 1,000): n no-op tasks pinned to the far one of two
  nodes started as real processes through the CLI, plus a 100 MiB transfer; it runs last, in a
  fresh child process (``--child cross_node``). Defined in ``benchmarks/cross_node.py``.
- ``generator`` (values/s; n = 10,000, quick 1,000): one task yields ``range(n)``; the driver
  reads each value (``async for ref in gen: await ref``) as the task runs; n / the time from
  the submission to the last value.

Comparison with Ray and the floor (same machine, same sitting): ``python -m benchmarks.cluster
--compare ray`` (this group; also ``AF_BENCH_COMPARE=ray``) or ``python -m benchmarks --compare
ray`` (every group) runs our workloads, then Ray's scripts and the floor, and prints one table;
the targets, the scripts' whereabouts and the tables are in ``benchmarks/compare.py``.
"""

from __future__ import annotations

import time

T_PROC0 = time.perf_counter()  # before importing actorflow: lets the startup child time it

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any  # noqa: E402

import actorflow as af  # noqa: E402

T_IMPORTED = time.perf_counter()

from benchmarks import cross_node, many_actors  # noqa: E402
from benchmarks._common import (  # noqa: E402
    CpuMeter,
    alatency_loop,
    check_sum,
    claim_stdout,
    collect_tree,
    emit,
    large_array,
    log,
    loop_kind,
    measure_tree,
    meta,
    reap_tagged,
    run_child,
    run_on,
    save_jsonl,
    summarize,
    tag_processes,
)
from benchmarks.compare import (  # noqa: E402
    DEFAULT_FLOOR_SCRIPT,
    DEFAULT_RAY_PYTHON,
    DEFAULT_RAY_SCRIPT,
    attach_abs,
    compare_with_ray,
    comparison_text,
    records_table,
)
from benchmarks.spec import (  # noqa: E402
    CHILD_WORKLOADS,
    LARGE_BYTES,
    SPEC,
    WORKLOADS,
    many_actors_sizes,
    num_cpus,
)


def _init() -> Any:
    return af.init(num_cpus=num_cpus(), log_to_driver=False)


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


# -- in-process workloads -------------------------------------------------------------------
# Each: ``async def wl(n) -> (rep, teardown)``; ``await rep()`` is one repetition's record
# (``value`` + extras, ``ops`` when the CPU per op is not per n); ``teardown`` may be None.

Rep = Callable[[], Awaitable[dict[str, Any]]]
Teardown = Callable[[], Awaitable[None]] | None


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
    check_sum(await af.get([noop.remote(i) for i in range(200)]), 200)

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        refs = [noop.remote(i) for i in range(n)]
        t1 = time.perf_counter()
        res = await af.get(refs)
        t2 = time.perf_counter()
        check_sum(res, n)
        return {"value": n / (t2 - t0), "submit_s": t1 - t0, "total_s": t2 - t0}

    return rep, None


async def tasks_sync(n: int) -> tuple[Rep, Teardown]:
    check_sum(await af.get([noop.remote(i) for i in range(50)]), 50)

    async def call(i: int) -> None:
        assert await noop.remote(i) == i

    for i in range(50):
        await call(i)

    async def rep() -> dict[str, Any]:
        return await alatency_loop(call, n)

    return rep, None


async def actor_calls_async(n: int) -> tuple[Rep, Teardown]:
    a = await _actor(Echo)
    check_sum(await af.get([a.noop.remote(i) for i in range(200)]), 200)

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        refs = [a.noop.remote(i) for i in range(n)]
        t1 = time.perf_counter()
        res = await af.get(refs)
        t2 = time.perf_counter()
        check_sum(res, n)
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
    check_sum(await af.get([a.noop.remote(i) for i in range(200)]), 200)

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        res = await af.get([a.noop.remote(i) for i in range(n)])
        dt = time.perf_counter() - t0
        check_sum(res, n)
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

    check_sum(await gather_calls(200), 200)
    await seq_calls(50)

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        res = await gather_calls(n)
        dt = time.perf_counter() - t0
        check_sum(res, n)
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
    arr = large_array()
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
    arr = large_array()
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
    arr = large_array()
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


@af.remote
def produce(n: int):  # type: ignore[no-untyped-def]
    for i in range(n):  # noqa: UP028  (as Ray's side: benchmarks/ray_extra.py)
        yield i


async def generator(n: int) -> tuple[Rep, Teardown]:
    assert [await r async for r in produce.remote(10)] == list(range(10))

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        total = count = 0
        async for ref in produce.remote(n):
            total += await ref
            count += 1
        dt = time.perf_counter() - t0
        assert (count, total) == (n, n * (n - 1) // 2), (count, total)
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
    "generator": generator,
}


async def _in_process(names: list[str], quick: bool, reps: int,
                      provenance: dict[str, Any]) -> list[dict[str, Any]]:
    """The in-process workloads among ``names``, in one cluster, ``many_actors`` last."""
    meter = CpuMeter()
    records = []
    async with _init():
        for name in names:
            if name not in _IN_PROCESS:
                continue
            unit, n_full, n_quick = SPEC[name]
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
        if "many_actors" in names:
            runs, n = await many_actors.measure(many_actors_sizes(quick), reps, meter)
            records.append(summarize("many_actors", SPEC["many_actors"][0], n, runs, provenance))
    return records


# -- fresh-process workloads ----------------------------------------------------------------


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

    return run_on(loop_kind(), main)


def _child_idle_memory() -> dict[str, Any]:
    import psutil

    async def main() -> dict[str, Any]:
        async with _init():
            await asyncio.sleep(3.0)
            m = measure_tree(collect_tree())
            # extra: the memory of one idle actor's own worker process
            a = await _actor(Echo)
            pid = await a.pid.remote()
            await asyncio.sleep(1.0)
            mi = psutil.Process(pid).memory_full_info()
            m["per_actor_rss_mib"] = mi.rss / 2**20
            m["per_actor_uss_mib"] = mi.uss / 2**20
            await af.kill(a)
        return m

    return run_on(loop_kind(), main)


def _fresh_process(name: str, reps: int, provenance: dict[str, Any]) -> dict[str, Any]:
    unit = SPEC[name][0]
    runs = []
    for r in range(reps):
        wall, inner = run_child(name)
        rec = {"value": wall, **inner} if name == "startup" else {"value": inner["rss_mib"],
                                                                  **inner}
        runs.append(rec)
        log(f"[{name}] rep {r + 1}/{reps}: {rec['value']:.4g} {unit}")
    return summarize(name, unit, 1, runs, provenance)


# -- the group's entry point ---------------------------------------------------------------------


def run(quick: bool, reps: int, only: set[str] | None = None,
        compare: str | None = None) -> list[dict[str, Any]]:
    """Run the selected cluster workloads (all by default); one summarized record each.
    With ``compare="ray"`` (or ``AF_BENCH_COMPARE=ray``), Ray's scripts and the floor run
    afterwards (:func:`compare_with_ray`) and the records get their baselines."""
    if compare is None:
        compare = os.environ.get("AF_BENCH_COMPARE") or None
    if compare and compare != "ray":
        raise ValueError(f"--compare knows only 'ray', not {compare!r}")
    names = [w for w in WORKLOADS if only is None or w in only]
    provenance = {**meta(quick), "num_cpus": num_cpus(), "loop": loop_kind()}
    records = [_fresh_process(w, reps, provenance) for w in names if w in CHILD_WORKLOADS]
    in_proc = [w for w in names if w in _IN_PROCESS or w == "many_actors"]
    if in_proc:
        records += run_on(loop_kind(), lambda: _in_process(in_proc, quick, reps, provenance))
    if "cross_node" in names:
        records.append(cross_node.measure(quick, reps, provenance))
    records.sort(key=lambda rec: WORKLOADS.index(rec["workload"]))
    attach_abs(records)
    if compare:
        compare_with_ray(records, quick, reps)
    return records


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
                    help="then run ray_bench.py and ray_extra.py (Ray's interpreter) and "
                         "floor_bench.py, and compare")
    ap.add_argument("--ray-python", default=None, help=f"default {DEFAULT_RAY_PYTHON}")
    ap.add_argument("--ray-script", default=None, help=f"default {DEFAULT_RAY_SCRIPT}")
    ap.add_argument("--floor-script", default=None, help=f"default {DEFAULT_FLOOR_SCRIPT}")
    ap.add_argument("--save", default=None, metavar="DIR",
                    help="also write actorflow.jsonl (and ray.jsonl, floor.jsonl) into DIR")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        if args.child == "cross_node":
            out: Any = cross_node.child_main(args.n, args.reps or 1)
        elif args.child == "startup":
            out = _child_startup()
        else:
            out = _child_idle_memory()
        print(json.dumps(out), flush=True)
        return 0
    unknown = [n for n in args.names if n not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; known: {list(WORKLOADS)}")
    if args.reps is not None and args.reps < 1:
        ap.error("--reps must be >= 1")
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    names = [w for w in WORKLOADS if not args.names or w in args.names]
    if args.json:
        claim_stdout()
    tag = tag_processes()
    try:
        return _main(args, names, reps)
    finally:
        reap_tagged(tag)


def _main(args: argparse.Namespace, names: list[str], reps: int) -> int:
    records = run(args.quick, reps, only=set(names), compare="")  # Ray: below, once
    ray_records: list[dict[str, Any]] = []
    floor_records: list[dict[str, Any]] = []
    failed: list[str] = []
    compare = (args.compare or os.environ.get("AF_BENCH_COMPARE")) == "ray"
    if compare:
        ray_records, floor_records, failed = compare_with_ray(
            records, args.quick, reps, ray_python=args.ray_python, ray_script=args.ray_script,
            floor_script=args.floor_script)
    if args.save:
        save_jsonl(args.save, records, ray_records, floor_records)
    if args.json:
        for rec in records:
            emit(rec)
    if compare:
        text = comparison_text(records, ray_records, floor_records)
        (sys.stderr if args.json else sys.stdout).write(text)
    elif not args.json:
        print(records_table(records))
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


# Workers must not need this module: pickle its remote functions and classes by value (as
# benchmarks/cross_node.py does its own).
if __name__ != "__main__":
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
