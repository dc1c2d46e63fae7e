"""The zygote of a node's worker pool, kept running: started, restarted when it dies, given up on.

The pool forks its workers through a zygote (:mod:`actorflow.cluster.zygote`) when there is
one. The keeper starts it (or takes one started earlier, so that its imports overlapped the
node's start-up), starts another when it dies (it was running, and it has not died more than
:data:`ZYGOTE_RESTARTS_PER_MIN` times in a minute), and otherwise gives up on it: workers are
plain processes from then on. A worker's start waits for a zygote that is starting
(:meth:`ZygoteKeeper.ready`, within the pool's start timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time

from actorflow.cluster import zygote as _zygote
from actorflow.cluster.zygote import Zygote
from actorflow.supervision import add_restart

__all__ = ["ZYGOTE_RESTARTS_PER_MIN", "ZygoteKeeper"]

log = logging.getLogger("actorflow.pool")

#: How many times a minute the pool starts a zygote again after it died, before it gives up
#: (workers are then plain processes for the pool's life).
ZYGOTE_RESTARTS_PER_MIN = 5


class ZygoteKeeper:
    """The zygote of node ``node_id``'s pool (see the module docstring). Made inside the
    node's running loop; it takes ``first`` or starts its own at once when
    :func:`actorflow.cluster.zygote.enabled`."""

    def __init__(self, node_id: str, log_to_driver: bool, start_timeout_s: float,
                 first: Zygote | None = None) -> None:
        self.node_id = node_id
        self.log_to_driver = log_to_driver
        self.start_timeout_s = start_timeout_s
        loop = asyncio.get_running_loop()
        #: the zygote that forks workers now; while it (re)starts, a pending future; None
        #: when workers are plain processes
        self._slot: asyncio.Future[Zygote | None] = loop.create_future()
        self._task: asyncio.Task[None] | None = None
        if first is not None or _zygote.enabled():
            self._task = loop.create_task(self._supervise(first))
        else:
            self._slot.set_result(None)

    @property
    def current(self) -> Zygote | None:
        """The zygote forking workers now (None while none is running)."""
        z = self._slot.result() if self._slot.done() else None
        return z if z is not None and not z.lost else None

    async def ready(self) -> Zygote | None:
        """The zygote to fork the next worker: waits while one starts (within the start
        timeout); None when workers are to be plain processes now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout_s
        while True:
            slot = self._slot
            if not slot.done():
                await asyncio.wait([slot], timeout=max(0.0, deadline - loop.time()))
                if not slot.done():
                    return None
            zygote = slot.result()
            if zygote is None:
                return None
            if await zygote.wait_ready(max(0.0, deadline - loop.time())):
                return zygote
            if self._slot is slot:  # it is not ready in time (and still the pool's)
                return None
            # it died: the next slot waits for the one started in its place

    def _lost(self, zygote: Zygote) -> None:
        """``zygote`` is gone (called by it, at once): starts wait for the next one."""
        slot = self._slot
        if slot.done() and slot.result() is zygote:
            self._slot = asyncio.get_running_loop().create_future()

    def _give_up(self) -> None:
        """Workers are plain processes from now on."""
        if self._slot.done():
            self._slot = asyncio.get_running_loop().create_future()
        self._slot.set_result(None)

    async def _supervise(self, first: Zygote | None) -> None:
        node_id = self.node_id
        restarts: tuple[float, ...] = ()
        while True:
            try:
                zygote = first or await Zygote.launch(log_to_driver=self.log_to_driver)
            except Exception as exc:
                log.warning("node %s: cannot start a zygote (%s); workers start as plain "
                            "processes", node_id, exc)
                self._give_up()
                return
            first = None
            try:
                zygote.on_lost = self._lost
                self._slot.set_result(zygote)
                if zygote.lost:  # it died before it was handed over
                    self._lost(zygote)
                await zygote.wait_ready(self.start_timeout_s)
                ran = zygote.ready.done() and zygote.ready.result()
                if ran:
                    await asyncio.wait([zygote.exited])
            finally:
                await zygote.aclose()
            if not ran:
                log.warning("node %s: the zygote (pid %d) did not start%s; workers start as "
                            "plain processes", node_id, zygote.pid,
                            f":\n{zygote.error}" if zygote.error else "")
                self._give_up()
                return
            code = zygote.exited.result()
            restarts, exceeded = add_restart(restarts, time.monotonic(),
                                             ZYGOTE_RESTARTS_PER_MIN, 60.0)
            if exceeded:
                log.error("node %s: the zygote keeps dying (pid %d exited with code %s); "
                          "workers start as plain processes from now on",
                          node_id, zygote.pid, code)
                self._give_up()
                return
            log.warning("node %s: the zygote (pid %d) exited with code %s; starting another",
                        node_id, zygote.pid, code)

    async def close(self) -> None:
        """Stop keeping it: the zygote closes (the supervising task's ``finally``)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if not self._slot.done():
            self._slot.set_result(None)
