"""API.md §3, ``af.cancel`` of actor calls and of running plain-def tasks (issues 13, 14): a
queued call is dropped, a running async one gets CancelledError, a running plain-def method a
flag (``is_cancelled()``) while its caller is answered at once, a running plain-def task an
exception in its thread; ``recursive`` reaches what the cancelled call submitted. On one shared
cluster with real worker processes; markers are files, since the code runs elsewhere."""

from __future__ import annotations

import asyncio
import os
import queue
import random
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import cloudpickle
import pytest
import pytest_asyncio
from cl_support import pid_alive, until, within

import actorflow as af
from actorflow.cluster.calls import CallState, Interrupted, interrupt, run_guarded
from actorflow.cluster.threads import Outcome, run_one

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 3}

#: Long enough never to end by itself within a test.
LONG_S = 60.0
#: What "at once" allows a cancel to take (a round trip to the actor's process, on a busy VM).
AT_ONCE_S = 5.0


def _spin(seconds: float) -> bool:
    """Sleep in short steps until ``seconds`` pass or the call is cancelled; True if it was."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if af.get_runtime_context().is_cancelled():
            return True
        time.sleep(0.01)
    return False


@af.remote(max_concurrency=1)
class Serial:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def spin(self, started: str, saw: str, seconds: float = LONG_S) -> str:
        Path(started).write_text(str(os.getpid()))
        if _spin(seconds):
            Path(saw).touch()
            return "saw the cancel"  # its caller gets TaskCancelledError all the same
        return "not cancelled"

    def record(self, i: int) -> int:
        self.seen.append(i)
        return i

    def all(self) -> list[int]:
        return self.seen

    async def wait(self, started: str, cancelled: str) -> str:
        Path(started).touch()  # noqa: ASYNC240 - an empty marker file
        try:
            await asyncio.sleep(LONG_S)
        except asyncio.CancelledError:
            Path(cancelled).touch()  # noqa: ASYNC240 - an empty marker file
            raise
        return "not cancelled"

    async def wait_swallowing(self, started: str) -> str:
        Path(started).touch()  # noqa: ASYNC240 - an empty marker file
        try:
            await asyncio.sleep(LONG_S)
        except asyncio.CancelledError:
            return "swallowed"  # its caller gets TaskCancelledError all the same
        return "not cancelled"

    async def parent_of_task(self, started: str, cancelled: str, seconds: float) -> str:
        return await child_task.remote(started, cancelled, seconds)

    def parent_of_call(self, other: af.ActorHandle, started: str, saw: str) -> str:
        ref = other.spin.remote(started, saw)
        while not af.get_runtime_context().is_cancelled():
            time.sleep(0.01)
        del ref
        return "cancelled"


@af.remote
class Concurrent:
    async def wait(self, started: str, cancelled: str) -> str:
        Path(started).touch()  # noqa: ASYNC240 - an empty marker file
        try:
            await asyncio.sleep(LONG_S)
        except asyncio.CancelledError:
            Path(cancelled).touch()  # noqa: ASYNC240 - an empty marker file
            raise
        return "not cancelled"

    async def echo(self, x: int) -> int:
        return x


@af.remote
async def child_task(started: str, cancelled: str, seconds: float) -> str:
    Path(started).touch()  # noqa: ASYNC240 - an empty marker file
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        Path(cancelled).touch()  # noqa: ASYNC240 - an empty marker file
        raise
    Path(started + ".done").touch()  # noqa: ASYNC240 - an empty marker file
    return "finished"


@af.remote
def spin_task(started: str, interrupted: str, seconds: float = LONG_S) -> str:
    Path(started).write_text(str(os.getpid()))
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except af.TaskCancelledError:  # raised in this thread by the cancel
        Path(interrupted).touch()
        raise
    return "finished"


@af.remote
def plain_parent(started: str, cancelled: str) -> str:
    child = child_task.remote(started, cancelled, LONG_S)
    try:
        deadline = time.monotonic() + LONG_S  # the cancel ends it long before
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return "not cancelled"
    finally:
        del child


@af.remote
def briefly(i: int) -> int:
    time.sleep(0.003)  # long enough to run on the task thread (see threads.INLINE_MAX_S)
    return i


@pytest_asyncio.fixture(loop_scope="module")
async def serial(shared_cluster: af.Runtime) -> AsyncIterator[af.ActorHandle]:
    actor = Serial.remote()
    assert await within(actor.record.remote(-1)) == -1
    yield actor
    await within(af.kill(actor))


async def _cancel_at_once(ref: af.ObjectRef) -> float:
    """Cancel ``ref``; how long until it raised TaskCancelledError."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    await af.cancel(ref)
    with pytest.raises(af.TaskCancelledError):
        await within(ref, AT_ONCE_S)
    return loop.time() - start


# -- actor calls ---------------------------------------------------------------------------------


async def test_a_running_plain_call_sees_the_flag_and_its_caller_is_answered_at_once(
        serial: af.ActorHandle, tmp_path: Path) -> None:
    started, saw = tmp_path / "started", tmp_path / "saw"
    ref = serial.spin.remote(str(started), str(saw))
    await until(started.exists, what="the call to start")
    assert await _cancel_at_once(ref) < AT_ONCE_S
    await until(saw.exists, what="the method to see is_cancelled()")
    assert await within(serial.record.remote(1)) == 1  # the actor carries on


@pytest.mark.parametrize("together", [False, True], ids=["in-the-mailbox", "in-one-batch"])
async def test_queued_calls_are_dropped_and_the_rest_keep_their_order(
        serial: af.ActorHandle, tmp_path: Path, together: bool) -> None:
    started, saw = tmp_path / "started", tmp_path / "saw"
    before = await within(serial.all.remote())
    blocker = serial.spin.remote(str(started), str(saw))
    if not together:  # the others wait in the actor's mailbox while the first one runs
        await until(started.exists, what="the first call to start")
    # (else they reach the actor with it, and are handed to its thread behind it)
    refs = [serial.record.remote(i) for i in range(6)]
    await until(started.exists, what="the first call to start")
    await af.cancel(refs[1])
    await af.cancel(refs[4])
    await af.cancel(blocker)
    for i, ref in enumerate(refs):
        if i in (1, 4):
            with pytest.raises(af.TaskCancelledError):
                await within(ref)
        else:
            assert await within(ref) == i
    with pytest.raises(af.TaskCancelledError):
        await within(blocker)
    assert (await within(serial.all.remote()))[len(before):] == [0, 2, 3, 5]


async def test_a_call_not_sent_yet_is_dropped_by_its_caller(
        shared_cluster: af.Runtime, tmp_path: Path) -> None:
    actor = Serial.remote()  # being created: its calls wait in the caller's client
    try:
        ref = actor.record.remote(7)
        await af.cancel(ref)
        with pytest.raises(af.TaskCancelledError):
            await within(ref)
        assert await within(actor.record.remote(8)) == 8
        assert await within(actor.all.remote()) == [8]
    finally:
        await within(af.kill(actor))


@pytest.mark.parametrize("cls", [Serial, Concurrent], ids=["serial", "concurrent"])
async def test_a_running_async_call_gets_cancelled_error_inside(
        shared_cluster: af.Runtime, tmp_path: Path, cls: af.ActorClass) -> None:
    actor = cls.remote()
    try:
        started, cancelled = tmp_path / "started", tmp_path / "cancelled"
        ref = actor.wait.remote(str(started), str(cancelled))
        await until(started.exists, what="the call to start")
        assert await _cancel_at_once(ref) < AT_ONCE_S
        await until(cancelled.exists, what="CancelledError inside the method")
        # the actor (its loop, its task) carries on, and a second cancel works the same
        started2, cancelled2 = tmp_path / "started2", tmp_path / "cancelled2"
        again = actor.wait.remote(str(started2), str(cancelled2))
        await until(started2.exists, what="the second call to start")
        await _cancel_at_once(again)
        await until(cancelled2.exists, what="CancelledError inside the second call")
        if cls is Serial:
            assert await within(actor.record.remote(3)) == 3
        else:
            assert await within(actor.echo.remote(3)) == 3
    finally:
        await within(af.kill(actor))


async def test_a_method_that_swallows_the_cancel_still_ends_cancelled(
        serial: af.ActorHandle, tmp_path: Path) -> None:
    started = tmp_path / "started"
    ref = serial.wait_swallowing.remote(str(started))
    await until(started.exists, what="the call to start")
    await _cancel_at_once(ref)
    # its task took the cancel back: later awaits in the actor are not cancelled
    started2, cancelled2 = tmp_path / "started2", tmp_path / "cancelled2"
    later = serial.wait.remote(str(started2), str(cancelled2))
    await until(started2.exists, what="the next call to start")
    await asyncio.sleep(0.2)
    assert not cancelled2.exists()
    await _cancel_at_once(later)


async def test_cancel_of_a_finished_call_keeps_its_value(serial: af.ActorHandle) -> None:
    ref = serial.record.remote(5)
    assert await within(ref) == 5
    await af.cancel(ref)
    assert await within(ref) == 5
    await asyncio.sleep(0.1)
    assert await within(ref) == 5


async def test_force_cannot_cancel_an_actor_call(serial: af.ActorHandle, tmp_path: Path) -> None:
    started, saw = tmp_path / "started", tmp_path / "saw"
    ref = serial.spin.remote(str(started), str(saw))
    with pytest.raises(ValueError):
        await af.cancel(ref, force=True)
    await _cancel_at_once(ref)


async def test_is_cancelled_is_false_outside_a_cancelled_call(serial: af.ActorHandle) -> None:
    assert af.get_runtime_context().is_cancelled() is False


async def test_cancelling_an_actor_call_cancels_the_task_it_waits_on(
        serial: af.ActorHandle, tmp_path: Path) -> None:
    started, cancelled = tmp_path / "child", tmp_path / "child-cancelled"
    ref = serial.parent_of_task.remote(str(started), str(cancelled), LONG_S)
    await until(started.exists, what="the child task to start")
    await _cancel_at_once(ref)
    await until(cancelled.exists, what="the child task to be cancelled")


async def test_a_cancel_that_is_not_recursive_leaves_the_child_running(
        serial: af.ActorHandle, tmp_path: Path) -> None:
    started, cancelled = tmp_path / "child", tmp_path / "child-cancelled"
    ref = serial.parent_of_task.remote(str(started), str(cancelled), 1.0)
    await until(started.exists, what="the child task to start")
    await af.cancel(ref, recursive=False)
    with pytest.raises(af.TaskCancelledError):
        await within(ref)
    await until(Path(str(started) + ".done").exists, what="the child task to finish")
    assert not cancelled.exists()


async def test_cancelling_an_actor_call_cancels_the_actor_call_it_made(
        serial: af.ActorHandle, tmp_path: Path) -> None:
    other = Serial.remote()
    try:
        started, saw = tmp_path / "started", tmp_path / "saw"
        ref = serial.parent_of_call.remote(other, str(started), str(saw))
        await until(started.exists, what="the nested call to start")
        await _cancel_at_once(ref)
        await until(saw.exists, what="the nested call to see its cancel")
    finally:
        await within(af.kill(other))


# -- plain-def tasks -----------------------------------------------------------------------------


async def test_a_running_plain_task_is_interrupted_in_its_thread(
        shared_cluster: af.Runtime, tmp_path: Path) -> None:
    started, interrupted = tmp_path / "started", tmp_path / "interrupted"
    ref = spin_task.remote(str(started), str(interrupted))
    await until(lambda: started.exists() and started.read_text() != "", what="the task to start")
    pid = int(started.read_text())
    assert await _cancel_at_once(ref) < AT_ONCE_S
    assert interrupted.exists()  # it saw TaskCancelledError raised inside
    assert pid_alive(pid)  # the worker was not ended: it runs tasks again
    assert await within(af.get([briefly.remote(i) for i in range(10)])) == list(range(10))


async def test_cancelling_a_plain_task_cancels_what_it_submitted(
        shared_cluster: af.Runtime, tmp_path: Path) -> None:
    started, cancelled = tmp_path / "child", tmp_path / "child-cancelled"
    ref = plain_parent.remote(str(started), str(cancelled))
    await until(started.exists, what="the child task to start")
    await _cancel_at_once(ref)
    await until(cancelled.exists, what="the child task to be cancelled")


async def test_cancels_that_cross_the_end_of_a_task_never_reach_the_worker(
        shared_cluster: af.Runtime) -> None:
    """An interrupt sent as a task ends must not land in the worker's own code: every task
    ends with its value or TaskCancelledError, and the workers go on running tasks."""
    rng = random.Random(1234)
    assert await within(af.get([briefly.remote(i) for i in range(20)])) == list(range(20))
    outcomes = {"value": 0, "cancelled": 0}
    for i in range(80):
        ref = briefly.remote(i)
        await asyncio.sleep(rng.uniform(0.0, 0.006))
        await af.cancel(ref)
        try:
            assert await within(ref) == i
            outcomes["value"] += 1
        except af.TaskCancelledError:
            outcomes["cancelled"] += 1
    assert sum(outcomes.values()) == 80
    assert await within(af.get([briefly.remote(i) for i in range(40)])) == list(range(40))


# -- the interrupt's guard, in this process ------------------------------------------------------


def _busy(seconds: float) -> int:
    """Python code (so an async exception can land in it) for about ``seconds``."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


async def test_an_interrupt_lands_in_the_guarded_call_or_nowhere() -> None:
    """``run_guarded`` on a real thread, interrupted at random moments around the end of its
    call, with threads switching every 10 us: the exception is the call's outcome or is taken
    back, and never reaches the code that runs the calls (a stray one would stop that loop)."""
    await asyncio.wait_for(asyncio.to_thread(_interrupt_at_random), 120)


def _interrupt_at_random() -> None:
    stray: list[BaseException] = []
    jobs: queue.SimpleQueue[tuple[CallState, float] | None] = queue.SimpleQueue()
    done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()

    def runner() -> None:  # what SyncRunner's thread does, with a check of its own code
        while True:
            try:
                job = jobs.get()
                if job is None:
                    return
                state, seconds = job
                outcome = run_one(None, run_guarded, (state, _busy, (seconds,), {}), {})
                _busy(0.0002)  # the runner's own code after a call
                done.put(outcome)
            except BaseException as exc:  # only a stray interrupt gets here
                stray.append(exc)
                done.put((False, exc, 0.0))

    rng = random.Random(99)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    kinds = {"value": 0, "interrupted": 0, "not begun": 0}
    try:
        for _ in range(400):
            state = CallState(interruptible=True)
            state.lock = threading.Lock()
            jobs.put((state, rng.uniform(0.0, 0.0003)))
            time.sleep(rng.uniform(0.0, 0.0004))
            interrupt(state)
            ok, value, _ = done.get(timeout=10)
            if ok:
                kinds["value"] += 1
            elif isinstance(value, Interrupted):
                kinds["interrupted"] += 1
            else:
                assert isinstance(value, af.TaskCancelledError), value
                kinds["not begun"] += 1
    finally:
        jobs.put(None)
        thread.join(10)
        sys.setswitchinterval(interval)
    assert stray == []
    assert kinds["interrupted"] > 0 and kinds["value"] > 0, kinds
