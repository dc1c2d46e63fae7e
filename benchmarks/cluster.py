"""Group ``cluster``: the embedded cluster (tasks, actor calls, objects, startup, idle memory)
as the peer workloads define them (``WORKLOADS.md`` in the steering repo's ``bench/``), plus two
workloads of our own (``cross_node``, ``many_actors``).

Names, n (quick n), units and JSON keys are the peer benchmarks'; ``framework`` is
``actorflow``. The driver is a coroutine on uvloop (what ``af.run`` uses), inside
``async with af.init(num_cpus=nproc, log_to_driver=False)``; every workload warms up with the
same remote functions/actors before its timed repetitions, checks its results, and records
``cpu_s`` / ``cpu_us_per_op`` / ``cpu_s_by_name`` over the driver and every process it started.
``startup`` and ``idle_memory`` run in a fresh child process per repetition
(``python -m benchmarks.cluster --child NAME``), before the in-process workloads.

Our own workloads (defined here and in ``benchmarks/ray_extra.py``, their Ray side):

- ``many_actors`` (actors/s; n = 200, quick 20): n actors of a plain class (``def ping(self,
  i): return i``) created with the defaults (1 CPU to place, 0 held), one ``ping(i)`` each;
  value = n / (time from the first ``.remote()`` creation to the last call's result), results
  checked. After each repetition (untimed, outside the CPU snapshots) every actor is
  ``af.kill``ed and its worker process awaited gone. A repetition still unfinished after 180 s
  stops there: ``timed_out`` = 1, ``completed`` = calls answered, value = completed / elapsed.
- ``cross_node`` (tasks/s; n = 10,000, quick 1,000): two nodes on this machine started as real
  processes through the CLI (``actorflow start --head --port 0 --num-cpus 1`` and
  ``actorflow start --address ... --num-cpus 1 --resources '{"far": 1}'``, with a private
  ``ACTORFLOW_STATE_DIR``), the driver joined with ``af.init(address=..., token=...)``, all in
  a fresh child process (``--child cross_node``). value: n no-op tasks pinned to the far node
  (``resources={"far": 0.001}``), submitted then gathered. Extras: ``transfer_100MiB_s`` (a
  task on the far node returning the 100 MiB array, from submission to the checked array in
  the driver, whose node is the head) and ``transfer_GBps``; ``produce_s`` (the same task
  returning only the last element: all but the move), ``move_s`` = transfer - produce,
  ``move_GBps``; ``transfer_cpu_s``. The ``cpu_*`` fields cover the task part only.

Comparison with Ray (same machine, same sitting): ``python -m benchmarks --compare ray`` (every
group) or ``python -m benchmarks.cluster --compare ray`` (this group; also
``AF_BENCH_COMPARE=ray``) runs our workloads, then the peer script ``ray_bench.py`` and
``benchmarks/ray_extra.py`` with Ray's own interpreter, then the peer ``floor_bench.py`` for the
floors that apply (one program at a time, never at once); adds
``baseline``/``baseline_value``/``ratio``/``target``/``target_met`` (Ray) and
``floor``/``floor_value``/``floor_ratio``/``floor_target``/``floor_target_met`` to the records,
and prints the table workload | unit | actorflow | Ray | ratio | target | met | floor, then the
CPU per operation of both (:func:`compare_with_ray`, :func:`compare_table`, :func:`cpu_table`).

Ray is never a dependency of the project: it is run as a separate program. Where it lives:
``--ray-python`` / ``AF_BENCH_RAY_PYTHON`` (default ``/work/rayenv/bin/python``) and
``--ray-script`` / ``AF_BENCH_RAY_SCRIPT`` (default ``<checkout>/../shared/bench/ray_bench.py``
where it exists, else ``/work/shared/bench/ray_bench.py``); the floor script likewise
(``--floor-script`` / ``AF_BENCH_FLOOR_SCRIPT``, ``floor_bench.py``), run with this interpreter.
"""

from __future__ import annotations

import time

T_PROC0 = time.perf_counter()  # before importing actorflow: lets the startup child time it

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Awaitable, Callable, Iterable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import actorflow as af  # noqa: E402

T_IMPORTED = time.perf_counter()

from benchmarks._common import (  # noqa: E402
    TAG_VAR,
    CpuMeter,
    alatency_loop,
    attach_baseline,
    claim_stdout,
    emit,
    have_uvloop,
    log,
    meta,
    reap_tagged,
    run_on,
    save_jsonl,
    sig,
    summarize,
    tag_processes,
)

LARGE_BYTES = 100 * 1024 * 1024  # the 100 MiB array: 13,107,200 float64

# name -> (unit, n, quick n); in the peer scripts' order, then our own workloads
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
    "cross_node": ("tasks/s", 10_000, 1_000),  # ours: two CLI-started nodes
    "many_actors": ("actors/s", 200, 20),  # ours
}
WORKLOADS = tuple(_SPEC)
_CHILD_WORKLOADS = ("startup", "idle_memory")
#: Workloads of our own: their Ray side is ``benchmarks/ray_extra.py``, not ``ray_bench.py``.
RAY_EXTRA_WORKLOADS = ("cross_node", "many_actors")

#: Targets against Ray, as (key compared, op, factor) on the ratio actorflow / Ray of one
#: sitting. From the issue: startup <= 0.2 x Ray (and <= 1 s: ABS_TARGETS); the throughputs
#: tasks_async, actor_calls_async, async_actor_calls, n_n_actor_calls, put_get_small and
#: task_chain >= 10 x Ray (actor_calls_asyncio keeps >= 5); tree_reduce (seconds) <= 0.1 x;
#: put_get_large (a bandwidth) >= 2 x; large_arg_task <= 1 x; the other latencies <= 0.25 x;
#: idle memory (PSS) <= 0.2 x. ``many_actors`` and ``cross_node`` are our own workloads, so
#: their ">= 5 x Ray" is a proposal, not the issue's.
TARGETS: dict[str, tuple[str, str, float]] = {
    "startup": ("value", "<=", 0.2),
    "idle_memory": ("pss_mib", "<=", 0.2),
    "tasks_async": ("value", ">=", 10.0),
    "tasks_sync": ("value", "<=", 0.25),
    "actor_calls_async": ("value", ">=", 10.0),
    "actor_calls_sync": ("value", "<=", 0.25),
    "async_actor_calls": ("value", ">=", 10.0),
    "actor_calls_asyncio": ("value", ">=", 5.0),
    "n_n_actor_calls": ("value", ">=", 10.0),
    "put_get_small": ("value", ">=", 10.0),
    "put_get_large": ("value", ">=", 2.0),
    "large_arg_task": ("value", "<=", 1.0),
    "large_arg_actor": ("value", "<=", 0.25),
    "task_chain": ("value", ">=", 10.0),
    "tree_reduce": ("value", "<=", 0.1),  # seconds for 2L-1 tasks: >= 10 x tasks_per_s
    "cross_node": ("value", ">=", 5.0),  # proposal (our own workload)
    "many_actors": ("value", ">=", 5.0),  # proposal (our own workload)
}
#: Extras compared too (rows of their own in the comparison table).
EXTRA_TARGETS: dict[str, tuple[str, str, float]] = {
    "actor_calls_asyncio": ("seq_await_us", "<=", 0.25),
    "large_arg_task": ("ref_arg_s", "<=", 0.25),
}
#: Absolute targets (no Ray needed), as (key, op, limit in the record's unit).
ABS_TARGETS: dict[str, tuple[str, str, float]] = {
    "startup": ("value", "<=", 1.0),
}
#: Targets against the peer floor (``floor_bench.py``, same sitting), as (floor workload, op,
#: factor) on the ratio actorflow / floor: a sequential round trip at most twice the smallest
#: honest websocket RPC's; pipelined actor calls at least a third of the coalescing RPC's.
FLOOR_TARGETS: dict[str, tuple[str, str, float]] = {
    "tasks_sync": ("ws_rpc_sync", "<=", 2.0),
    "actor_calls_sync": ("ws_rpc_sync", "<=", 2.0),
    "actor_calls_async": ("ws_rpc_async_coalesced", ">=", 1 / 3),
}
#: Extras shown as rows of their own in the comparison table (no target).
INFO_EXTRAS: dict[str, tuple[str, ...]] = {
    "startup": ("ttfr_s",),
    "tasks_sync": ("p99_us",),
    "actor_calls_sync": ("p99_us",),
    "cross_node": ("transfer_100MiB_s", "transfer_GBps", "move_GBps"),
}

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)


def _shared_bench(script: str) -> str:
    """``<checkout>/../shared/bench/SCRIPT`` where it exists, else ``/work/shared/bench/``."""
    local = os.path.normpath(os.path.join(_ROOT, "..", "shared", "bench", script))
    return local if os.path.exists(local) else os.path.join("/work/shared/bench", script)


DEFAULT_RAY_PYTHON = "/work/rayenv/bin/python"
DEFAULT_RAY_SCRIPT = _shared_bench("ray_bench.py")
DEFAULT_FLOOR_SCRIPT = _shared_bench("floor_bench.py")
RAY_EXTRA_SCRIPT = os.path.join(_HERE, "ray_extra.py")


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


@af.remote
class Pinger:
    """``many_actors``' actor; ``pid`` is only called after the timed region."""

    def ping(self, i):  # type: ignore[no-untyped-def]
        return i

    def pid(self) -> int:
        return os.getpid()


@af.remote
def where() -> str:
    return af.get_runtime_context().node_id


@af.remote
def big():  # type: ignore[no-untyped-def]
    import numpy as np

    return np.random.default_rng(0).random(LARGE_BYTES // 8)


@af.remote
def big_last() -> float:
    import numpy as np

    return float(np.random.default_rng(0).random(LARGE_BYTES // 8)[-1])


def _large_array() -> Any:
    import numpy as np

    return np.random.default_rng(0).random(LARGE_BYTES // 8)


# -- in-process workloads -------------------------------------------------------------------
# Each: ``async def wl(n) -> (rep, teardown)``; ``await rep()`` is one repetition's record
# (``value`` + extras, ``ops`` when the CPU per op is not per n, ``cleanup``: a coroutine
# function awaited after the repetition's CPU snapshot); ``teardown`` may be None.

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


MANY_ACTORS_TIMEOUT_S = 180.0  # per repetition
_GONE_TIMEOUT_S = 60.0  # for killed actors' processes to exit


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        import psutil
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def _wait_gone(pids: Iterable[int], timeout: float = _GONE_TIMEOUT_S) -> list[int]:
    """Wait (bounded) until none of ``pids`` is alive; the ones left."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left


async def many_actors(n: int) -> tuple[Rep, Teardown]:
    # warm-up: one actor through its whole life (class export, first actor worker)
    a = Pinger.remote()
    assert await a.ping.remote(7) == 7
    pid = await a.pid.remote()
    await af.kill(a)
    await _wait_gone([pid])

    async def rep() -> dict[str, Any]:
        t0 = time.perf_counter()
        handles = [Pinger.remote() for _ in range(n)]
        refs = [h.ping.remote(i) for i, h in enumerate(handles)]
        try:
            res = await af.get(refs, timeout=MANY_ACTORS_TIMEOUT_S)
            timed_out = False
        except af.GetTimeoutError:
            timed_out = True
        dt = time.perf_counter() - t0
        if timed_out:
            ready, _ = await af.wait(refs, num_returns=n, timeout=0)
            done = set(ready)
            answered = [i for i, ref in enumerate(refs) if ref in done]
            assert sorted(await af.get([refs[i] for i in answered])) == answered
            log(f"[many_actors] TIMED OUT after {dt:.1f} s: {len(answered)}/{n} answered")
        else:
            assert res == list(range(n)), "wrong results"
            answered = list(range(n))

        async def cleanup() -> None:
            pids = await af.get([handles[i].pid.remote() for i in answered],
                                timeout=_GONE_TIMEOUT_S)
            for h in handles:
                await af.kill(h)
            left = await _wait_gone(pids)
            if left:
                log(f"[many_actors] {len(left)} actor processes still alive "
                    f"{_GONE_TIMEOUT_S:.0f} s after af.kill: {left[:10]}")

        return {"value": len(answered) / dt, "total_s": dt, "completed": len(answered),
                "timed_out": int(timed_out), "cleanup": cleanup}

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
    "many_actors": many_actors,
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
                    cleanup = rec.pop("cleanup", None)
                    runs.append(meter.add(rec, before, after, rec.pop("ops", n)))
                    log(f"[{name}] rep {r + 1}/{reps}: {rec['value']:.4g} {unit}")
                    if cleanup is not None:
                        await cleanup()
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


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("ACTORFLOW_ADDRESS", "ACTORFLOW_TOKEN", "AF_BENCH_COMPARE"):
        env.pop(key, None)
    env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def _run_child(name: str, args: list[str] | None = None, env: dict[str, str] | None = None,
               timeout: float | None = None, quiet: bool = True) -> tuple[float, Any]:
    """``python -m benchmarks.cluster --child NAME ARGS``: its wall time and the last JSON
    line it printed. ``quiet``: its stderr is kept (shown on failure) rather than passed on."""
    cmd = [sys.executable, "-m", "benchmarks.cluster", "--child", name, *(args or [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE if quiet else None, text=True,
                          env=_child_env(env), cwd=_ROOT, timeout=timeout)
    wall = time.perf_counter() - t0
    err = proc.stderr[-3000:] if quiet else "(its stderr is above)"
    if proc.returncode != 0:
        raise RuntimeError(f"child {name} failed (rc={proc.returncode}): {err}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("{", "["))]
    if not lines:
        raise RuntimeError(f"child {name} printed no record: {err}")
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


# -- cross_node: two nodes started through the CLI ------------------------------------------------

_FAR = {"far": 0.001}
_CROSS_NODE_TIMEOUT_S = 1200.0  # the whole child, all repetitions


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _CliNodes:
    """``python -m actorflow start ... --block`` processes sharing the private state folder
    ``$ACTORFLOW_STATE_DIR`` (set by the parent). Each is started in a session of its own, so
    it and its workers form one process group: :meth:`stop` ends every one of them."""

    def __init__(self) -> None:
        self.state_dir = Path(os.environ["ACTORFLOW_STATE_DIR"])
        self.env = _child_env({"PYTHONUNBUFFERED": "1"})
        self.started: list[tuple[str, subprocess.Popen[bytes], Any]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        logf = open(self.state_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            [sys.executable, "-m", "actorflow", "start", *args, "--block"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=self.env,
            cwd=_ROOT, start_new_session=True)
        self.started.append((name, proc, logf))
        return proc

    def _log_tail(self, name: str) -> str:
        try:
            return (self.state_dir / f"{name}.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
        name = next(n for n, p, _ in self.started if p is proc)
        entry = self.state_dir / "procs" / f"{proc.pid}.json"
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"actorflow start ({name}) exited with {proc.returncode}:\n"
                                   f"{self._log_tail(name)}")
            try:
                if json.loads(entry.read_text()).get("ready"):
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"actorflow start ({name}) not ready after {timeout:.0f} s:"
                                   f"\n{self._log_tail(name)}")
            time.sleep(0.05)

    def head_info(self) -> tuple[str, str]:
        info = json.loads((self.state_dir / "cluster.json").read_text())
        return info["address"], Path(info["token_file"]).read_text().strip()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the nodes, then the head; a bounded wait; SIGKILL each process group."""
        for _, proc, _ in reversed(self.started):
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for name, proc, _ in reversed(self.started):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"[cross_node] {name} (pid {proc.pid}) ignored SIGTERM: killed")
        for _, proc, logf in self.started:
            _kill_group(proc.pid)  # the leader if it lingers, and any worker left behind
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            logf.close()


def _kill_leftovers(state_dir: str) -> None:
    """Parent side: end the process groups of ``actorflow start`` processes the child left in
    ``state_dir`` (it ends them itself unless it was killed)."""
    for entry in Path(state_dir, "procs").glob("*.json"):
        try:
            pid = int(json.loads(entry.read_text())["pid"])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, KeyError):
            continue
        if b"actorflow" in cmdline:
            log(f"[cross_node] killing leftover actorflow process group {pid}")
            _kill_group(pid)


def _snap_delta(before: dict[int, tuple[str, float]],
                after: dict[int, tuple[str, float]]) -> float:
    return sum(max(0.0, t - before.get(pid, ("", 0.0))[1]) for pid, (_, t) in after.items())


async def _cross_node_driver(address: str, token: str, n: int, reps: int
                             ) -> list[dict[str, Any]]:
    import numpy as np

    meter = CpuMeter()
    rt = await af.init(address=address, token=token, log_to_driver=False)
    try:
        deadline = time.monotonic() + 30.0
        while True:
            views = [v for v in await af.nodes() if v.get("alive")]
            far = [v["node_id"] for v in views if "far" in v.get("resources", {})]
            if len(views) == 2 and len(far) == 1:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"expected 2 live nodes, one with 'far': {views}")
            await asyncio.sleep(0.1)
        far_noop, far_where = noop.options(resources=_FAR), where.options(resources=_FAR)
        far_big, far_big_last = big.options(resources=_FAR), big_last.options(resources=_FAR)
        local = _large_array()
        shape, last = local.shape, float(local[-1])
        del local
        assert await far_where.remote() == far[0] != rt.node_id, "far tasks did not run far"
        # warm-up: tasks on the far node, one big transfer (first touch of shared memory)
        _check_sum(await af.get([far_noop.remote(i) for i in range(200)]), 200)
        out = await far_big.remote()
        assert isinstance(out, np.ndarray) and out.shape == shape and out[-1] == last
        del out
        assert await far_big_last.remote() == last

        runs = []
        for r in range(reps):
            before = meter.snap()
            t0 = time.perf_counter()
            refs = [far_noop.remote(i) for i in range(n)]
            t1 = time.perf_counter()
            res = await af.get(refs)
            t2 = time.perf_counter()
            after = meter.snap(end=True)
            _check_sum(res, n)
            del refs, res
            rec: dict[str, Any] = {"value": n / (t2 - t0), "submit_s": t1 - t0,
                                   "total_s": t2 - t0}
            meter.add(rec, before, after, n)

            t3 = time.perf_counter()
            assert await far_big_last.remote() == last
            t4 = time.perf_counter()
            before = meter.snap()
            t5 = time.perf_counter()
            out = await far_big.remote()
            t6 = time.perf_counter()
            after = meter.snap(end=True)
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
                "transfer_cpu_s": _snap_delta(before, after),
            })
            runs.append(rec)
            log(f"[cross_node] rep {r + 1}/{reps}: {rec['value']:.4g} tasks/s; 100 MiB "
                f"far->driver {transfer:.3f} s ({rec['transfer_GBps']:.3g} GB/s; produce "
                f"{produce:.3f} s)")
        return runs
    finally:
        await af.shutdown()


def _child_cross_node(n: int, reps: int) -> list[dict[str, Any]]:
    nodes = _CliNodes()
    try:
        head = nodes.start("head", ["--head", "--port", "0", "--host", "127.0.0.1",
                                    "--num-cpus", "1"])
        nodes.wait_ready(head)
        address, token = nodes.head_info()
        far = nodes.start("far", ["--address", address, "--num-cpus", "1",
                                  "--resources", json.dumps({"far": 1})])
        nodes.wait_ready(far)
        return run_on(_loop_kind(), lambda: _cross_node_driver(address, token, n, reps))
    finally:
        nodes.stop()


def _cross_node(quick: bool, reps: int, provenance: dict[str, Any]) -> dict[str, Any]:
    unit, n_full, n_quick = _SPEC["cross_node"]
    n = n_quick if quick else n_full
    state_dir = tempfile.mkdtemp(prefix="af-bench-cross-node-")
    tag = uuid.uuid4().hex  # the child's, its nodes' and their workers'
    try:
        _, runs = _run_child("cross_node", ["--n", str(n), "--reps", str(reps)],
                             env={"ACTORFLOW_STATE_DIR": state_dir, TAG_VAR: tag},
                             timeout=_CROSS_NODE_TIMEOUT_S, quiet=False)
    finally:
        _kill_leftovers(state_dir)
        reap_tagged(tag, what="cross_node")
        shutil.rmtree(state_dir, ignore_errors=True)
    return summarize("cross_node", unit, n, runs, {**provenance, "num_cpus": 1, "nodes": 2})


# -- the group's entry point ---------------------------------------------------------------------


def _meets(x: float, op: str, limit: float) -> bool:
    return x >= limit if op == ">=" else x <= limit


def attach_abs(records: list[dict[str, Any]]) -> None:
    """``abs_target`` / ``abs_target_met`` for the workloads with an absolute target."""
    for rec in records:
        spec = ABS_TARGETS.get(rec["workload"])
        if spec is None or rec.get(spec[0]) is None:
            continue
        key, op, limit = spec
        rec["abs_target"] = f"{key} {op} {limit:g} {rec['unit']}"
        rec["abs_target_met"] = _meets(rec[key], op, limit)


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
    provenance = {**meta(quick), "num_cpus": _num_cpus(), "loop": _loop_kind()}
    records = [_fresh_process(w, reps, provenance) for w in names if w in _CHILD_WORKLOADS]
    in_proc = [w for w in names if w in _IN_PROCESS]
    if in_proc:
        records += run_on(_loop_kind(), lambda: _in_process(in_proc, quick, reps, provenance))
    if "cross_node" in names:
        records.append(_cross_node(quick, reps, provenance))
    records.sort(key=lambda rec: WORKLOADS.index(rec["workload"]))
    attach_abs(records)
    if compare:
        compare_with_ray(records, quick, reps)
    return records


# -- comparison with Ray and the floor -------------------------------------------------------------


def _run_script(label: str, cmd: list[str], timeout: float) -> list[dict[str, Any]]:
    """Run one peer script to completion (its stderr passed on); the JSON records it printed.
    Past ``timeout`` it gets SIGINT (Ray then stops what it started), then SIGKILL."""
    log(f"[{label}] running {' '.join(cmd)}")
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise RuntimeError(f"{label} ran past {timeout:.0f} s and was stopped") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed (rc={proc.returncode})")
    return [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]


def _common_args(quick: bool, reps: int) -> list[str]:
    return ["--reps", str(reps), *(["--quick"] if quick else [])]


def _script_timeout(quick: bool) -> float:
    return 900.0 if quick else 3600.0


def _ray_paths(python: str | None, script: str | None) -> tuple[str, str]:
    python = python or os.environ.get("AF_BENCH_RAY_PYTHON") or DEFAULT_RAY_PYTHON
    script = script or os.environ.get("AF_BENCH_RAY_SCRIPT") or DEFAULT_RAY_SCRIPT
    for path in (python, script):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} does not exist: install Ray in its own virtualenv "
                "(python3 -m venv /work/rayenv && /work/rayenv/bin/pip install 'ray[default]' "
                "numpy psutil) and point AF_BENCH_RAY_PYTHON / AF_BENCH_RAY_SCRIPT at it"
            )
    return python, script


def run_ray_peer(names: Iterable[str], quick: bool, reps: int, python: str | None = None,
                 script: str | None = None) -> list[dict[str, Any]]:
    """The peer script ``ray_bench.py`` (Ray's interpreter) on the peer workloads among
    ``names``; its records."""
    peer = [w for w in names if w in _SPEC and w not in RAY_EXTRA_WORKLOADS]
    if not peer:
        return []
    python, script = _ray_paths(python, script)
    cmd = [python, script, "--only", ",".join(peer), *_common_args(quick, reps),
           "--num-cpus", str(_num_cpus())]
    return _run_script("ray_bench.py", cmd, _script_timeout(quick))


def run_ray_extra(names: Iterable[str], quick: bool, reps: int, python: str | None = None,
                  script: str | None = None) -> list[dict[str, Any]]:
    """``benchmarks/ray_extra.py`` (Ray's interpreter) on our own workloads among ``names``;
    it finds ``bench_common.py`` next to ``script`` (ray_bench.py)."""
    extra = [w for w in names if w in RAY_EXTRA_WORKLOADS]
    if not extra:
        return []
    python, script = _ray_paths(python, script)
    cmd = [python, RAY_EXTRA_SCRIPT, "--only", ",".join(extra), *_common_args(quick, reps),
           "--num-cpus", str(_num_cpus()), "--bench-dir", os.path.dirname(script)]
    return _run_script("ray_extra.py", cmd, _script_timeout(quick))


def run_ray(names: Iterable[str], quick: bool, reps: int, python: str | None = None,
            script: str | None = None) -> list[dict[str, Any]]:
    """Ray's side of ``names``: ``ray_bench.py``, then ``ray_extra.py`` (one at a time, after
    ours has finished); their records. Raises if either fails."""
    names = list(names)
    return (run_ray_peer(names, quick, reps, python, script)
            + run_ray_extra(names, quick, reps, python, script))


def floor_workloads(names: Iterable[str]) -> list[str]:
    """The floor workloads that the targets of ``names`` need, each once."""
    out: list[str] = []
    for w in names:
        spec = FLOOR_TARGETS.get(w)
        if spec is not None and spec[0] not in out:
            out.append(spec[0])
    return out


def run_floor(names: Iterable[str], quick: bool, reps: int,
              script: str | None = None) -> list[dict[str, Any]]:
    """The peer ``floor_bench.py`` (this interpreter) on the floors ``names`` need."""
    wanted = floor_workloads(names)
    if not wanted:
        return []
    script = script or os.environ.get("AF_BENCH_FLOOR_SCRIPT") or DEFAULT_FLOOR_SCRIPT
    if not os.path.exists(script):
        raise FileNotFoundError(f"{script} does not exist: point AF_BENCH_FLOOR_SCRIPT at "
                                "the peer floor_bench.py")
    cmd = [sys.executable, script, "--only", ",".join(wanted), *_common_args(quick, reps)]
    return _run_script("floor_bench.py", cmd, _script_timeout(quick))


def compare_with_ray(
    records: list[dict[str, Any]], quick: bool, reps: int, *, ray_python: str | None = None,
    ray_script: str | None = None, floor_script: str | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """For the cluster workloads among ``records``: run ``ray_bench.py``, ``ray_extra.py`` and
    ``floor_bench.py`` one after the other, and attach Ray's and the floor's figures to the
    records. Returns (Ray's records, the floor's records, the scripts that failed); a failed
    script is reported on stderr and the others still run."""
    names = [r["workload"] for r in records if r.get("workload") in _SPEC]
    ray_records: list[dict[str, Any]] = []
    floor_records: list[dict[str, Any]] = []
    failed: list[str] = []
    stages: list[tuple[str, Callable[[], list[dict[str, Any]]], list[dict[str, Any]]]] = [
        ("ray_bench.py", lambda: run_ray_peer(names, quick, reps, ray_python, ray_script),
         ray_records),
        ("ray_extra.py", lambda: run_ray_extra(names, quick, reps, ray_python, ray_script),
         ray_records),
        ("floor_bench.py", lambda: run_floor(names, quick, reps, floor_script), floor_records),
    ]
    for label, fn, into in stages:
        try:
            into.extend(fn())
        except Exception as exc:
            log(f"[compare] {label} failed: {exc}")
            failed.append(label)
    attach_ray(records, ray_records)
    attach_floor(records, floor_records)
    return ray_records, floor_records, failed


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
        if ray.get("timed_out"):
            rec["baseline_timed_out"] = True
        key, op, factor = TARGETS.get(rec["workload"], ("value", "", 0.0))
        if key == "value" and op:
            attach_baseline(rec, "ray", op, factor)
        elif ray["value"]:
            rec["ratio"] = sig(rec["value"] / ray["value"], 4)
        if key != "value" and key in rec and ray.get(key):
            # the target is on an extra (idle_memory: PSS)
            rec[f"{key}_baseline_value"] = ray[key]
            ratio = rec[key] / ray[key]
            rec[f"{key}_ratio"] = sig(ratio, 4)
            rec["target"] = f"{key} ratio {op} {factor:g}"
            rec["target_met"] = _meets(ratio, op, factor)
        extra = EXTRA_TARGETS.get(rec["workload"])
        if extra and extra[0] in rec and ray.get(extra[0]):
            k, op, factor = extra
            ratio = rec[k] / ray[k]
            rec[f"{k}_baseline_value"] = ray[k]
            rec[f"{k}_ratio"] = sig(ratio, 4)
            rec[f"{k}_target"] = f"ratio {op} {factor:g}"
            rec[f"{k}_target_met"] = _meets(ratio, op, factor)


def attach_floor(records: list[dict[str, Any]], floor_records: list[dict[str, Any]]) -> None:
    """``floor``, ``floor_value``, ``floor_ratio`` (value / floor's), ``floor_target`` and
    ``floor_target_met`` for the records with a target against the floor (FLOOR_TARGETS)."""
    by_name = {r["workload"]: r for r in floor_records}
    for rec in records:
        spec = FLOOR_TARGETS.get(rec["workload"])
        floor = by_name.get(spec[0]) if spec else None
        if spec is None or floor is None or not floor.get("value") or rec.get("value") is None:
            continue
        name, op, factor = spec
        ratio = rec["value"] / floor["value"]
        rec["floor"] = name
        rec["floor_value"] = floor["value"]
        rec["floor_ratio"] = sig(ratio, 4)
        rec["floor_target"] = f"floor_ratio {op} {factor:.3g}"
        rec["floor_target_met"] = _meets(ratio, op, factor)


# -- the tables -----------------------------------------------------------------------------------


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
    if key == "value" and "min" in rec and rec.get("reps", 1) > 1:
        return f"{_fmt(rec['value'])} ({_fmt(rec['min'])}-{_fmt(rec['max'])})"
    return _fmt(rec.get(key))


def _unit_of(key: str, default: str) -> str:
    if key.endswith("_us"):
        return "us"
    if key.endswith("_s"):
        return "s"
    if key.endswith("GBps"):
        return "GB/s"
    if key.endswith("_mib"):
        return "MiB"
    return default


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _count(x: Any) -> str:
    return str(round(x)) if _num(x) else "?"


def _met_cell(checks: list[bool | None]) -> str:
    known = [m for m in checks if m is not None]
    if not known:
        return "-"
    if not all(known):
        return "**NO**"
    return "yes" if len(known) == len(checks) else "yes (part)"


def _floor_cell(rec: dict[str, Any], by_floor: dict[str, dict[str, Any]]) -> str:
    """The floor column: a cluster workload's floor target, or a kernel/transport record's
    own floor (its ``baseline``)."""
    spec = FLOOR_TARGETS.get(rec["workload"])
    if spec is not None:
        name, op, factor = spec
        floor = by_floor.get(name)
        if floor is None or not floor.get("value") or not _num(rec.get("value")):
            return f"{name}: not run"
        ratio = rec["value"] / floor["value"]
        met = "yes" if _meets(ratio, op, factor) else "**NO**"
        return (f"{name} {_fmt(floor['value'])} {floor.get('unit', '')} (x{ratio:.3g}; "
                f"{op} {factor:.3g}: {met})")
    base = rec.get("baseline")
    if base and base != "ray" and _num(rec.get("baseline_value")):
        ratio = rec.get("ratio")
        return f"{base} {_fmt(rec['baseline_value'])}" + (
            f" (x{ratio:.3g})" if _num(ratio) else "")
    return "-"


def compare_table(records: list[dict[str, Any]], ray_records: list[dict[str, Any]],
                  floor_records: list[dict[str, Any]] | None = None) -> str:
    """Markdown: workload | unit | actorflow (median, min-max) | Ray | ratio af/Ray | target |
    met | floor. Cluster workloads are judged against Ray (TARGETS, EXTRA_TARGETS, plus
    ABS_TARGETS) and, where one applies, the floor (in the floor cell); records of other
    groups (kernel, transport, placement) show their own target and floor."""
    by_ray = {r["workload"]: r for r in ray_records}
    by_floor = {r["workload"]: r for r in floor_records or ()}
    rows = [("workload", "unit", "actorflow (median, min-max)", "Ray", "ratio af/Ray",
             "target", "met", "floor")]

    def row(label: str, unit: str, rec: dict[str, Any], ray: dict[str, Any] | None, key: str,
            target: tuple[str, str, float] | None, floor: str = "-",
            absolute: tuple[str, str, float] | None = None) -> None:
        ours = rec.get(key)
        theirs = ray.get(key) if ray else None
        ratio = ours / theirs if _num(ours) and _num(theirs) and theirs else None
        texts: list[str] = []
        checks: list[bool | None] = []
        if target is not None:
            texts.append(f"{target[1]} {target[2]:g} x Ray")
            checks.append(None if ratio is None else _meets(ratio, target[1], target[2]))
        if absolute is not None:
            texts.append(f"{absolute[1]} {absolute[2]:g} {unit}")
            checks.append(_meets(float(ours), absolute[1], absolute[2]) if _num(ours) else None)
        ray_cell = _span(ray, key) if ray else "-"
        if ray and key == "value" and ray.get("timed_out"):
            ray_cell += f" (timed out: {_count(ray.get('completed'))}/{ray.get('n')})"
        ours_cell = _span(rec, key)
        if key == "value" and rec.get("timed_out"):
            ours_cell += f" (timed out: {_count(rec.get('completed'))}/{rec.get('n')})"
        rows.append((label, unit, ours_cell, ray_cell,
                     f"{ratio:.3g}" if ratio is not None else "-",
                     "; ".join(texts) or "-", _met_cell(checks), floor))

    for rec in records:
        name, unit = rec["workload"], rec.get("unit", "")
        if name not in _SPEC:  # another group's record: its own target and floor
            met = rec.get("target_met")
            rows.append((name, unit, _span(rec, "value"), "-", "-", str(rec.get("target", "-")),
                         "-" if met is None else ("yes" if met else "**NO**"),
                         _floor_cell(rec, by_floor)))
            continue
        ray = by_ray.get(name)
        target = TARGETS.get(name)
        if name == "idle_memory":
            row("idle_memory (RSS)", "MiB", rec, ray, "value", None)
            row("idle_memory (PSS)", "MiB", rec, ray, "pss_mib", target)
            row("idle_memory (USS)", "MiB", rec, ray, "uss_mib", None)
            continue
        row(name, unit, rec, ray, "value", target if target and target[0] == "value" else None,
            _floor_cell(rec, by_floor), ABS_TARGETS.get(name))
        extra = EXTRA_TARGETS.get(name)
        if extra:
            row(f"{name}: {extra[0]}", _unit_of(extra[0], unit), rec, ray, extra[0], extra)
        for key in INFO_EXTRAS.get(name, ()):
            if key in rec or (ray and key in ray):
                row(f"{name}: {key}", _unit_of(key, unit), rec, ray, key, None)
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


def comparison_text(records: list[dict[str, Any]], ray_records: list[dict[str, Any]],
                    floor_records: list[dict[str, Any]]) -> str:
    return (compare_table(records, ray_records, floor_records) + "\n\n"
            + cpu_table(records, ray_records) + "\n")


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
            out: Any = _child_cross_node(args.n, args.reps or 1)
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
        from benchmarks.__main__ import _table

        print(_table(records))
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


# Workers must not need this module: pickle its remote functions and classes by value.
if __name__ != "__main__":
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
