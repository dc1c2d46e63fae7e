"""Group ``kernel``: the in-process actor kernel (``actorflow.runtime``) against plain asyncio.

Each workload is measured beside its floor in the same process and the same repetition, first
on the default asyncio loop (``value``, ``baseline_value``) and then on uvloop
(``uvloop_value``, ``uvloop_baseline_value``); every repetition starts a fresh loop and a fresh
ActorSystem and warms both sides up before timing.

- ``kernel_tell`` (msgs/s): a producer actor ``await ref.tell(i)``s n ints to a consumer actor
  (default mailbox, 1024); timed from the driver's go to the consumer having received the n-th
  message, whose running sum is checked. Floor ``queue_asyncio``: one producer coroutine
  ``await q.put(i)`` into ``asyncio.Queue(maxsize=1024)``, one consumer ``await q.get()``, up to
  an end marker (as the peer floor benchmark). Target: value >= 0.5 x baseline.
- ``kernel_ask`` (us): n sequential ``await ref.ask(i)`` to an echo actor; value = mean round
  trip. Floor ``asyncio_rpc``: a server coroutine ``msg, fut = await q.get();
  fut.set_result(msg)``, the client ``q.put_nowait((i, fut)); await fut``. Both sides are timed
  by the same per-call loop (extras ``per_s``, ``p50_us``, ``p99_us``). Target: value <= 3 x
  baseline. Extra ``ask_nowait_us``: the same loop over ``await ref.ask_nowait(i)`` (the
  non-awaiting submission path that ``.remote()`` uses).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from actorflow.runtime import Actor, ActorRef, ActorSystem
from benchmarks._common import (
    CpuMeter,
    alatency_loop,
    attach_baseline,
    have_uvloop,
    log,
    meta,
    run_on,
    summarize,
)

WORKLOADS = ("kernel_tell", "kernel_ask")

# name: (unit, n, quick n, floor name, target op, target factor)
_SPEC: dict[str, tuple[str, int, int, str, str, float]] = {
    "kernel_tell": ("msgs/s", 200_000, 20_000, "queue_asyncio", ">=", 0.5),
    "kernel_ask": ("us", 20_000, 2_000, "asyncio_rpc", "<=", 3.0),
}
_QUEUE_SIZE = 1024  # the floor's bound; also actorflow's default mailbox size


# -- kernel_tell ----------------------------------------------------------------------------------


class _Consumer(Actor):
    """Sums the ints it is told; resolves ``done`` with the sum at the ``expect``-th one.
    Armed by an ask of ``(expect, done)``."""

    def __init__(self) -> None:
        self.expect = 0
        self.count = 0
        self.total = 0
        self.done: asyncio.Future[int] | None = None

    async def receive(self, message: Any) -> Any:
        if message.__class__ is int:
            self.total += message
            self.count += 1
            if self.count == self.expect and self.done is not None:
                self.done.set_result(self.total)
            return None
        self.expect, self.done = message
        self.count = self.total = 0
        return None


class _Producer(Actor):
    """Told n, tells 0..n-1 to its target, one ``await tell`` each."""

    def __init__(self, target: ActorRef) -> None:
        self.target = target

    async def receive(self, message: Any) -> Any:
        tell = self.target.tell
        for i in range(message):
            await tell(i)
        return None


async def _queue_floor(n: int) -> float:
    """The peer floor ``queue_asyncio``: seconds to move n ints through a bounded Queue."""
    q: asyncio.Queue[int | None] = asyncio.Queue(maxsize=_QUEUE_SIZE)

    async def producer() -> None:
        for i in range(n):
            await q.put(i)
        await q.put(None)

    async def consumer() -> int:
        s = 0
        while True:
            x = await q.get()
            if x is None:
                return s
            s += x

    t0 = time.perf_counter()
    _, s = await asyncio.gather(producer(), consumer())
    dt = time.perf_counter() - t0
    assert s == n * (n - 1) // 2, s
    return dt


async def _tell_once(consumer: ActorRef, producer: ActorRef, n: int) -> float:
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    await consumer.ask((n, done))
    t0 = time.perf_counter()
    await producer.tell(n)
    s = await asyncio.wait_for(done, 120)
    dt = time.perf_counter() - t0
    assert s == n * (n - 1) // 2, s
    return dt


def _tell_pass(kind: str, n: int, meter: CpuMeter | None) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        warm = max(1_000, n // 10)
        await _queue_floor(warm)
        floor_s = await _queue_floor(n)
        async with ActorSystem("bench") as system:
            consumer = await system.spawn(_Consumer)
            producer = await system.spawn(_Producer, consumer)
            await _tell_once(consumer, producer, warm)
            before = meter.snap() if meter is not None else {}
            af_s = await _tell_once(consumer, producer, n)
            after = meter.snap(end=True) if meter is not None else {}
        out = {"value": n / af_s, "baseline_value": n / floor_s}
        if meter is not None:
            meter.add(out, before, after, n)
        return out

    return run_on(kind, main)


# -- kernel_ask ----------------------------------------------------------------------------------


class _Echo(Actor):
    async def receive(self, message: Any) -> Any:
        return message


async def _rpc_floor(n: int, warm: int) -> dict[str, float]:
    """The minimal asyncio request/response: a server task answering futures from a Queue."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue()

    async def server() -> None:
        while True:
            msg, fut = await q.get()
            fut.set_result(msg)

    async def call(i: int) -> None:
        fut: asyncio.Future[int] = loop.create_future()
        q.put_nowait((i, fut))
        assert await fut == i

    task = loop.create_task(server())
    try:
        for i in range(warm):
            await call(i)
        return await alatency_loop(call, n)
    finally:
        task.cancel()
        await asyncio.wait([task])


def _ask_pass(kind: str, n: int, meter: CpuMeter | None) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        warm = max(200, n // 10)
        floor = await _rpc_floor(n, warm)
        async with ActorSystem("bench") as system:
            echo = await system.spawn(_Echo)
            ask = echo.ask

            async def call(i: int) -> None:
                assert await ask(i) == i

            for i in range(warm):
                await call(i)
            before = meter.snap() if meter is not None else {}
            out: dict[str, Any] = await alatency_loop(call, n)
            after = meter.snap(end=True) if meter is not None else {}
            if meter is not None:  # extras: on the default-loop pass only
                ask_nowait = echo.ask_nowait  # the submission path of .remote(): no await

                async def call_nowait(i: int) -> None:
                    assert await ask_nowait(i) == i

                for i in range(warm):
                    await call_nowait(i)
                out["ask_nowait_us"] = (await alatency_loop(call_nowait, n))["value"]
        out["baseline_value"] = floor["value"]
        out["baseline_p50_us"] = floor["p50_us"]
        out["baseline_p99_us"] = floor["p99_us"]
        if meter is not None:
            meter.add(out, before, after, n)
        return out

    return run_on(kind, main)


# -- the group's entry point ---------------------------------------------------------------------

# A pass: (loop kind, n, meter) -> one repetition's record on a fresh loop. The meter is given on
# the default-loop pass, which records the extras; the uvloop pass (meter None) records only
# ``value`` and ``baseline_value``.

_PASSES = {"kernel_tell": _tell_pass, "kernel_ask": _ask_pass}


def run(quick: bool, reps: int, only: set[str] | None = None) -> list[dict[str, Any]]:
    """Run the selected kernel workloads (all by default); one summarized record each."""
    provenance = meta(quick)
    loops = ("asyncio", "uvloop") if have_uvloop() else ("asyncio",)
    if len(loops) == 1:
        log("[kernel] uvloop is not installed: no uvloop_* extras")
    meter = CpuMeter()
    records = []
    for name in WORKLOADS:
        if only is not None and name not in only:
            continue
        unit, n_full, n_quick, floor, op, factor = _SPEC[name]
        n = n_quick if quick else n_full
        one_pass = _PASSES[name]
        runs = []
        for r in range(reps):
            rep = one_pass("asyncio", n, meter)
            if "uvloop" in loops:
                uv = one_pass("uvloop", n, None)
                rep["uvloop_value"] = uv["value"]
                rep["uvloop_baseline_value"] = uv["baseline_value"]
            runs.append(rep)
            log(
                f"[{name}] rep {r + 1}/{reps}: {rep['value']:.4g} {unit} "
                f"(floor {floor} {rep['baseline_value']:.4g})"
                + (f"; uvloop {rep['uvloop_value']:.4g} (floor {rep['uvloop_baseline_value']:.4g})"
                   if "uvloop_value" in rep else "")
            )
        rec = summarize(name, unit, n, runs, {**provenance, "loop": "asyncio"})
        attach_baseline(rec, floor, op, factor)
        attach_baseline(rec, floor, op, factor, prefix="uvloop_")
        records.append(rec)
    return records
