"""The upkeep of a process's own segments (``objects/store.py``'s callbacks): spare segments
made ahead on a low-priority thread, idle pooled segments trimmed, pinned mappings relaxed
once nothing here uses them. One per :class:`~actorflow.cluster.core.Core`; the store calls
back from any thread, and everything here runs on the Core's loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING

from actorflow.objects import shm
from actorflow.objects import store as store_mod
from actorflow.runtime import OwnedTasks

if TYPE_CHECKING:
    from actorflow.cluster.core import Core

__all__ = ["SegmentUpkeep"]

log = logging.getLogger("actorflow.cluster")


def _lowest_priority() -> None:
    """(On the thread that makes spare segments.) Let any other work run first: making a spare
    is filling fresh pages, which a VM may make slow for every vCPU it runs on."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class SegmentUpkeep:
    """Spares, pool trimming and relaxing of one Core's store (see the module docstring)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._trim_timer: asyncio.TimerHandle | None = None
        self._relax_timer: asyncio.TimerHandle | None = None
        self._spares = OwnedTasks("the spare-segment maker", log)
        self._spare_thread: concurrent.futures.ThreadPoolExecutor | None = None

    # -- the store's callbacks (any thread) ---------------------------------------------------

    def make_spare(self, name: str, capacity: int) -> None:
        """The store wants a spare segment (see store.py): make it on a thread."""
        self.core.on_loop_thread(self._start_spare, name, capacity)

    def on_pooled(self) -> None:
        """The store's pool has a segment again: see that idle ones go in time."""
        self.core.on_loop_thread(self._arm_trim, store_mod.POOL_IDLE_S)

    def on_pinned(self) -> None:
        """The store pinned a mapping (a reader maps it: the node does not spill it); see
        that it is unpinned soon after nothing here uses it."""
        self.core.on_loop_thread(self._arm_relax, store_mod.HOLD_S)

    # -- on the loop ----------------------------------------------------------------------------

    def _start_spare(self, name: str, capacity: int) -> None:
        if self.core.closed:
            self.core.store.spare_failed(capacity)
            return
        self._spares.spawn(self._spare(name, capacity), f"actorflow spare {name}")

    async def _spare(self, name: str, capacity: int) -> None:
        store = self.core.store
        if self._spare_thread is None:
            self._spare_thread = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="actorflow-spares", initializer=_lowest_priority)
        try:
            mapping = await self.core.loop.run_in_executor(
                self._spare_thread, shm.blank_segment, name, capacity)
        except OSError as exc:  # no room, most likely: values go into fresh pages, as before
            log.debug("no spare segment of %d bytes: %s", capacity, exc)
            store.spare_failed(capacity)
            return
        except BaseException:  # (cancelled, or a bug): the store must not wait for it
            store.spare_failed(capacity)
            raise
        store.add_spare(name, capacity, mapping)

    def _arm_trim(self, delay: float) -> None:
        loop = self.core.loop
        if self.core.closed:
            return
        if self._trim_timer is not None:
            if self._trim_timer.when() <= loop.time() + delay:
                return  # it comes soon enough
            self._trim_timer.cancel()
        self._trim_timer = loop.call_later(delay, self._trim_pool)

    def _arm_relax(self, delay: float) -> None:
        if self._relax_timer is None and not self.core.closed:
            self._relax_timer = self.core.loop.call_later(delay, self._relax)

    def _relax(self) -> None:
        self._relax_timer = None
        wait = self.core.store.relax()
        if wait is not None:
            self._arm_relax(wait)

    def _trim_pool(self) -> None:
        self._trim_timer = None
        wait = self.core.store.trim_idle()
        if wait is not None:
            self._arm_trim(wait)

    async def close(self) -> None:
        """(The Core is closing.) A spare's thread cannot be stopped: let it end; then no
        timer is left."""
        await self._spares.close(cancel=False)
        if self._spare_thread is not None:
            self._spare_thread.shutdown(wait=False)  # (idle: its work was awaited above)
        for timer in (self._trim_timer, self._relax_timer):
            if timer is not None:
                timer.cancel()
        self._trim_timer = self._relax_timer = None
