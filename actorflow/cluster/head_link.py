"""Living through a restart of the head: nodes rejoin it, callers wait for it.

A head started by ``actorflow start --head`` keeps its directory on disk
(:mod:`actorflow.cluster.head_store`) and takes its system's uid back when it is started again
on the same port, so every ref to its actors that other processes hold reaches the new head once
a link to the address is up again (the transport redials it by itself).

- :class:`HeadLink` (a node's process): when the link to the head is lost, the node keeps its
  workers and actors, and tries the head's address again with backoff (0.1 s doubling to 2 s)
  for :data:`HEAD_GRACE_S` seconds; once it answers, the node registers again, naming the
  actors it runs (their records are ALIVE again at the head, where they run), and tells the
  placement what is free on it. A head that does not come back within the grace period (a
  head of another cluster, whose uid is new, never does) stops the node, as before; so does a head
  that was stopped on purpose (SIGTERM, ``actorflow stop``: its actor ends normally, before its
  link closes), at once.
- :func:`ask_head` (``af.get_actor``, ``af.watch``) and :func:`retry_while_head_away` (an
  actor handle's lookups): a caller whose ask to the head failed because the link was
  lost tries again later, while the grace period allows; then it gets a
  :class:`HeadUnreachableError` naming the head.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actorflow._errors import (
    ActorDiedError,
    GetTimeoutError,
    NodeDiedError,
    PeerUnreachableError,
)
from actorflow.cluster.protocol import GetClusterInfo, NodeInfo, RegisterNode
from actorflow.placement.messages import NodeLoad, placement_of
from actorflow.placement.resources import Resources
from actorflow.runtime import ActorRef, ExitReason, OwnedTasks, Terminated

if TYPE_CHECKING:
    from actorflow.cluster.bootstrap import ClusterProcess

__all__ = [
    "HEAD_GRACE_S",
    "HeadLink",
    "HeadUnreachableError",
    "WaitClock",
    "ask_head",
    "head_answered",
    "retry_while_head_away",
]

log = logging.getLogger("actorflow.head_link")

#: Seconds a node (and a caller waiting on the head) waits for a lost head to come back
#: (``$ACTORFLOW_HEAD_GRACE_S`` changes it).
HEAD_GRACE_S = float(os.environ.get("ACTORFLOW_HEAD_GRACE_S") or 60.0)


class HeadUnreachableError(PeerUnreachableError):
    """The cluster's head could not be reached for ``waited_s`` seconds (``address``)."""

    def __init__(self, address: str | None, waited_s: float) -> None:
        super().__init__(f"the cluster head at {address} could not be reached for "
                         f"{waited_s:.0f} s (it is down, or restarting)")
        self.address = address
        self.waited_s = waited_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (HeadUnreachableError, (self.address, self.waited_s))


def _head_address(head: ActorRef) -> str | None:
    return head.slot.system.address


class HeadLink:
    """A node process's link to its head (see the module docstring). ``on_gone`` is called
    (once) when the head is given up on."""

    def __init__(self, proc: ClusterProcess, on_gone: Callable[[], None],
                 grace_s: float = HEAD_GRACE_S) -> None:
        self.proc = proc
        self.on_gone = on_gone
        self.grace_s = grace_s
        self._tasks = OwnedTasks("the node's link to its head", log)
        self._reconnecting = False
        self._closed = False
        self.rejoined = 0  # times the node registered again (for tests and logs)

    def start(self) -> None:
        self.proc.system.on_terminated(self.proc.head, self._lost)

    def _lost(self, notice: Terminated) -> None:
        if self._closed or self._reconnecting:
            return
        if notice.reason is not ExitReason.PEER_LOST:  # it was stopped (SIGTERM, `actorflow
            self.on_gone()  # stop`): the cluster is over, and the node stops with it
            return
        log.warning("the link to the head at %s is lost (%s): waiting up to %.0f s for it to "
                    "come back", self.proc.head.slot.system.address, notice.reason.value,
                    self.grace_s)
        self._reconnecting = True
        self._tasks.spawn(self._reconnect(), name="reconnect to the head")

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        delay = 0.1
        proc = self.proc
        last: BaseException | None = None
        while loop.time() < deadline:
            try:
                await self._rejoin(min(5.0, max(0.5, deadline - loop.time())))
            except NodeDiedError as exc:  # the head declared this node dead meanwhile (a
                # long partition): its actors were restarted elsewhere, so it must not run on
                log.error("the head refused this node back (%s): it stops", exc)
                self._reconnecting = False
                self.on_gone()
                return
            except (PeerUnreachableError, ActorDiedError, GetTimeoutError, TimeoutError,
                    ConnectionError) as exc:
                last = exc
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                delay = min(2.0, delay * 2)
                continue
            self._reconnecting = False
            self.rejoined += 1
            log.warning("node %s registered again with the head at %s", proc.node_id,
                        proc.head.slot.system.address)
            self.start()
            return
        log.error("the head at %s did not come back within %.0f s (%s): this node stops",
                  proc.head.slot.system.address, self.grace_s, last)
        self._reconnecting = False
        self.on_gone()

    async def _rejoin(self, timeout: float) -> None:
        proc = self.proc
        assert proc.node is not None and proc.node_id is not None
        await proc.head.ask(GetClusterInfo(), timeout=timeout)
        info: dict[str, Any] = await proc.node.ask(NodeInfo(), timeout=timeout)
        resources = Resources.of(info["resources"])
        await proc.head.ask(RegisterNode(
            proc.node_id, proc.node, proc.system.address, resources, rejoin=True,
            actors=tuple(tuple(a) for a in info.get("actor_list", ()))), timeout=timeout)
        placement = placement_of(proc.head)
        placement.tell_nowait(NodeLoad(proc.node_id, Resources.of(info["available"]),
                                       int(info.get("pending_leases", 0))))

    async def aclose(self) -> None:
        self._closed = True
        await self._tasks.close()


class WaitClock:
    """A key of :func:`retry_while_head_away` for a caller with more than one kind of wait."""


#: caller -> when its asks to the head began failing (monotonic seconds)
_failing_since: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def retry_while_head_away(caller: Any, head: ActorRef, exc: BaseException,
                          again: Callable[[], None]) -> BaseException | None:
    """An ask of ``caller`` to ``head`` failed with ``exc``. When the link to the head was
    lost and the grace period since the first such failure is not over, ``again`` is called
    soon (0.5 s) and None returned: the caller waits. Otherwise the error to fail with: ``exc``,
    or a :class:`HeadUnreachableError` once the grace period is over."""
    if not isinstance(exc, PeerUnreachableError) or isinstance(exc, HeadUnreachableError):
        _failing_since.pop(caller, None)
        return exc
    now = time.monotonic()
    since = _failing_since.setdefault(caller, now)
    if now - since >= HEAD_GRACE_S:
        _failing_since.pop(caller, None)
        error = HeadUnreachableError(_head_address(head), now - since)
        error.__cause__ = exc
        return error
    asyncio.get_running_loop().call_later(0.5, again)
    return None


async def ask_head(head: ActorRef, message: Any, grace_s: float | None = None) -> Any:
    """``head.ask(message)``; while the link to the head is lost (it is restarting), asked
    again every 0.5 s for up to ``grace_s`` (:data:`HEAD_GRACE_S`), then
    :class:`HeadUnreachableError`. For asks that may be repeated (lookups, waits)."""
    grace = HEAD_GRACE_S if grace_s is None else grace_s
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        try:
            return await head.ask(message)
        except HeadUnreachableError:
            raise
        except PeerUnreachableError as exc:
            waited = loop.time() - start
            if waited >= grace:
                raise HeadUnreachableError(_head_address(head), waited) from exc
            await asyncio.sleep(0.5)


def head_answered(caller: Any) -> None:
    """``caller``'s ask to the head succeeded: its grace period starts afresh next time."""
    _failing_since.pop(caller, None)
