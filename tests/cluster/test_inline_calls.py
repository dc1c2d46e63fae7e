"""Where plain-``def`` code runs: on the worker's loop once it has proved short, else on the
worker's thread (``actorflow/cluster/threads.py``), and the quick wire forms of tasks, calls
and replies (``actorflow/cluster/protocol.py``).

The policy is checked twice: as a pure rule on a real SyncRunner, and end to end in real worker
processes, where the code under test reports the thread it ran on.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import threading
import time

import cloudpickle
import pytest
from cl_support import within

import actorflow as af
from actorflow.cluster.protocol import (
    QUICK_RUN_S,
    ActorCall,
    Failed,
    ResolvedArg,
    TaskReply,
    TaskSpec,
    call_from_quick,
    quick_call,
    quick_reply,
    quick_task,
    reply_returns,
    task_from_quick,
)
from actorflow.cluster.threads import INLINE_MAX_S, PROBE_RUNS, SyncRunner
from actorflow.objects.serialization import deserialize, is_plain, serialize

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 1}


# -- the policy, on a real runner -------------------------------------------------------------


async def test_runner_inlines_a_callable_only_after_short_probe_runs() -> None:
    runner = SyncRunner("test-runner")
    try:
        assert not runner.inline("f")
        for _ in range(PROBE_RUNS - 1):
            runner.record("f", INLINE_MAX_S / 10)
            assert not runner.inline("f")
        runner.record("f", INLINE_MAX_S / 10)
        assert runner.inline("f")
        # one long run, wherever it ran, sends it back to the thread for good
        runner.record("f", INLINE_MAX_S * 2)
        assert not runner.inline("f")
        for _ in range(10):
            runner.record("f", 0.0)
        assert not runner.inline("f")
        # a callable that is long from the start never runs on the loop
        runner.record("g", 1.0)
        runner.record("g", 0.0)
        runner.record("g", 0.0)
        assert not runner.inline("g")
    finally:
        runner.close()


async def test_runner_thread_reports_outcomes_and_times() -> None:
    runner = SyncRunner("test-runner")
    try:
        import contextvars

        ctx = contextvars.copy_context()
        ok, value, run_s = await asyncio.wait_for(runner.run(ctx, lambda x: x + 1, (1,), {}), 5)
        assert (ok, value) == (True, 2) and run_s >= 0

        def boom() -> None:
            raise ValueError("boom")

        ok, value, _ = await asyncio.wait_for(runner.run(ctx, boom, (), {}), 5)
        assert not ok and isinstance(value, ValueError)
        outcomes = await asyncio.wait_for(runner.run_many(
            [(ctx.copy(), threading.current_thread, (), {}), (ctx.copy(), boom, (), {})]), 5)
        assert outcomes[0][0] and outcomes[0][1].name == "test-runner"
        assert not outcomes[1][0]
    finally:
        runner.close()


# -- the quick forms ----------------------------------------------------------------------------


async def test_quick_task_round_trip_and_when_it_applies() -> None:
    spec = TaskSpec("t1", "noop", "f1", None, b"args", (), 1, "job")
    data = quick_task(spec)
    assert type(data) is bytes
    back = task_from_quick(data)
    assert (back.task_id, back.name, back.fn_id, back.fn_blob, back.args, back.resolved,
            back.num_returns, back.job_id, back.gpu_ids) == (
        "t1", "noop", "f1", None, b"args", (), 1, "job", ())
    # the function's first trip, GPUs, resolved arguments: the full record
    assert quick_task(TaskSpec("t", "n", "f", b"fn", b"a", (), 1, "j")) is None
    assert quick_task(TaskSpec("t", "n", "f", None, b"a", (), 1, "j", (0,))) is None
    assert quick_task(TaskSpec("t", "n", "f", None, b"a", (b"v",), 1, "j")) is None


async def test_ref_placeholders_keep_arguments_on_the_c_pickler() -> None:
    """A call's top-level ObjectRefs become ResolvedArg placeholders; those arguments still
    count as plain (one C pickle, no cloudpickle pass per call), and read back the same."""
    args = ((ResolvedArg(0), ResolvedArg(1), 3), {"k": ResolvedArg(2)})
    assert is_plain(args)
    ser = serialize(args)
    assert ser.meta == pickle.dumps(args, protocol=5) and not ser.buffers
    assert deserialize(ser.meta) == deserialize(cloudpickle.dumps(args, protocol=5)) == args
    assert not is_plain(((ResolvedArg(0), object()), {}))


async def test_quick_call_and_reply_forms() -> None:
    call = call_from_quick(quick_call("m", b"args", 2))
    assert call == ActorCall("m", b"args", (), 2)
    assert quick_reply((b"value",), QUICK_RUN_S / 2) == b"value"
    assert reply_returns(b"value") == ((b"value",), 0.0)
    slow = quick_reply((b"value",), QUICK_RUN_S * 2)
    assert isinstance(slow, TaskReply) and slow.run_s == QUICK_RUN_S * 2
    two = quick_reply((b"a", b"b"), 0.0)
    assert isinstance(two, TaskReply) and reply_returns(two) == ((b"a", b"b"), 0.0)
    failed = quick_reply((Failed(ValueError("x")),), 0.0)
    assert isinstance(failed, TaskReply)


# -- end to end, in real worker processes -----------------------------------------------------


@af.remote
def where(i: int) -> tuple[int, str]:
    return i, threading.current_thread().name


@af.remote
def sleepy(s: float) -> str:
    if s:
        time.sleep(s)
    return threading.current_thread().name


@af.remote
class Placed:
    def __init__(self) -> None:
        self.init_thread = threading.current_thread().name

    def where(self) -> str:
        return threading.current_thread().name

    def slow(self, s: float) -> str:
        if s:  # (no sleep(0): giving up the GIL may cost a switch interval, which is not short)
            time.sleep(s)
        return threading.current_thread().name

    def init(self) -> str:
        return self.init_thread


async def test_short_task_runs_on_the_loop_after_probing(shared_cluster: af.Runtime) -> None:
    names = [(await within(where.remote(i)))[1] for i in range(PROBE_RUNS + 3)]
    assert names[:PROBE_RUNS] == ["af-task"] * PROBE_RUNS  # probed on the thread
    assert names[-1] == "MainThread"  # then on the worker's loop
    # a batch of queued short tasks, results in order
    out = await within(af.get([where.remote(i) for i in range(300)]))
    assert [i for i, _ in out] == list(range(300))


async def test_long_task_keeps_its_thread_and_the_loop_stays_free(
        shared_cluster: af.Runtime) -> None:
    # long from the first run: never on the loop
    assert await within(sleepy.remote(0.05)) == "af-task"
    assert await within(sleepy.remote(0.0)) == "af-task"
    assert await within(sleepy.remote(0.0)) == "af-task"
    assert await within(sleepy.remote(0.0)) == "af-task"


async def test_actor_method_that_turns_long_goes_back_to_the_thread(
        shared_cluster: af.Runtime) -> None:
    a = Placed.remote()
    names = [await within(a.where.remote()) for _ in range(PROBE_RUNS + 2)]
    assert names[-1] == "MainThread"
    assert await within(a.init.remote()) == "MainThread"  # __init__ ran on the loop thread
    # 'slow' is short at first, then takes long once: from then on it keeps the thread
    for _ in range(PROBE_RUNS + 1):
        await within(a.slow.remote(0.0))
    assert await within(a.slow.remote(0.0)) == "MainThread"
    assert await within(a.slow.remote(INLINE_MAX_S * 20)) == "MainThread"  # ran long inline
    assert await within(a.slow.remote(0.0)) == "af-actor"
    # other methods keep their own standing
    assert await within(a.where.remote()) == "MainThread"
    await within(af.kill(a))
