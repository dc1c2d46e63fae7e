"""Waiting for objects without a future per object: the owner's table hands a payload to its
waiters the moment it is resolved (``ObjectTable.when_ready``), and replies settle their
callers in place (``CallbackReply``). Checked here: a cancelled waiter does not disturb the
others, a long chain of failed dependencies settles without deepening the stack, and a reply
callback's bug is logged rather than passed back to whoever answered.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import cloudpickle
import pytest
from cl_support import within

import actorflow as af
from actorflow.runtime import CallbackReply

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 1}


@af.remote
def inc(x: int) -> int:
    return x + 1


@af.remote
def fail() -> int:
    raise ValueError("the root failed")


@af.remote
async def slow(x: int, gate: float) -> int:
    await asyncio.sleep(gate)
    return x


async def test_cancelled_get_leaves_other_waiters_alone(shared_cluster: af.Runtime) -> None:
    ref = slow.remote(7, 0.3)
    first = asyncio.ensure_future(af.get(ref))
    second = asyncio.ensure_future(af.get([ref, ref]))
    await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await within(second) == [7, 7]
    assert await within(ref) == 7


async def test_get_timeout_then_the_value(shared_cluster: af.Runtime) -> None:
    ref = slow.remote(3, 0.3)
    with pytest.raises(af.GetTimeoutError):
        await af.get(ref, timeout=0.01)
    assert await within(af.get(ref)) == 3


async def test_a_failed_root_fails_a_long_chain_without_deep_stacks(
        shared_cluster: af.Runtime) -> None:
    # every link waits on the previous one in the owner; the root's failure settles them all
    # in one resolve (far more links than Python's recursion limit allows frames)
    n = sys.getrecursionlimit() * 2
    x = fail.remote()
    refs = [x]
    for _ in range(n):
        x = inc.remote(x)
        refs.append(x)
    for ref in (refs[1], refs[n // 2], refs[-1]):
        with pytest.raises(ValueError, match="the root failed"):
            await within(ref)


async def test_a_good_chain_settles_in_order(shared_cluster: af.Runtime) -> None:
    x = inc.remote(0)
    for _ in range(499):
        x = inc.remote(x)
    assert await within(x) == 500


async def test_callback_reply_settles_once_and_logs_callback_bugs(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[object, object]] = []

    def on_answer(tag: str, value: object, error: BaseException | None) -> None:
        seen.append((tag, value if error is None else error))
        if value == "bad":
            raise RuntimeError("a bug in the callback")

    reply = CallbackReply(on_answer, "a")
    assert not reply.done()
    reply.set_result(1)
    reply.set_result(2)  # a second answer is ignored
    reply.set_exception(ValueError("late"))
    assert reply.done() and seen == [("a", 1)]
    failing = CallbackReply(on_answer, "b")
    error = KeyError("x")
    failing.set_exception(error)
    assert seen[-1] == ("b", error)
    with caplog.at_level(logging.ERROR, logger="actorflow.runtime"):
        CallbackReply(on_answer, "c").set_result("bad")  # must not raise here
    assert "a bug in the callback" in caplog.text
