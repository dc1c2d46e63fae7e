"""Which worker processes a node starts, and when.

:class:`Workers` decides for one :class:`~actorflow.cluster.node.Node` (whose
:class:`~actorflow.cluster.pool.WorkerPool` starts and reaps the processes): a worker when a
lease request waits and none is idle or starting (one start at a time); a worker of a runtime
environment when a request of that environment waits (one start at a time per environment; when
the node has all the workers it may, an idle one of another environment makes room, since
workers of different environments never share a process); and replacements that keep
``prestart`` workers available for tasks. A replacement for a worker that exited counts
against a restart intensity (at most ``10 * prestart`` in 10 s, :func:`add_restart`); one for a
worker that an actor took does not.

How many processes the node may have (:meth:`Workers.cap`): ``max_workers`` for tasks, one per
actor, and one more per task blocked waiting for others (its children need a worker while it
holds one: without it a tree of waits deeper than the cap deadlocks, as Ray avoids the same
way), the extra ones bounded by ``4 * max_workers``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from actorflow._errors import WorkerCrashedError
from actorflow.cluster import runtime_env
from actorflow.cluster.pool import WorkerState
from actorflow.supervision import add_restart

if TYPE_CHECKING:
    from actorflow.cluster.node import Node

__all__ = ["Workers"]

log = logging.getLogger("actorflow.node")


class Workers:
    """See the module docstring."""

    def __init__(self, node: Node, *, prestart: int, max_workers: int) -> None:
        self.node = node
        self.prestart = prestart
        self.max_workers = max_workers
        self.env_folders: dict[str, dict[str, Any]] = {}  # runtime env key -> its folders
        self.env_starting: dict[str, int] = {}  # runtime env key -> a worker is starting
        self._replacements: tuple[float, ...] = ()

    def cap(self) -> int:
        """How many worker processes the node may have now (see the module docstring)."""
        extra = min(self.node.leases.blocked, 4 * self.max_workers)
        return self.max_workers + len(self.node.actors) + extra

    async def prepare_env(self, env: Any) -> None:
        """Make runtime environment ``env``'s packages ready on this machine (once)."""
        if env.key not in self.env_folders:
            node = self.node
            jobs = runtime_env.head_service(node.head, node.system, "jobs")
            self.env_folders[env.key] = await runtime_env.ensure_local(env, jobs, node.system)

    def wanted(self, worker: bool, envs: dict[str, Any]) -> None:
        """Lease requests wait for an idle worker (``worker``: one of no runtime environment;
        ``envs``: ones of these environments, by key): start what may start."""
        pool = self.node.pool
        assert pool is not None
        if worker and pool.count(WorkerState.STARTING) == 0 and pool.size < self.cap():
            self.spawn()
        for key, env in envs.items():
            self._env_worker(key, env)

    def spawn(self) -> None:
        assert self.node.pool is not None
        self.node.background(self._start())

    def _env_worker(self, key: str, env: Any) -> None:
        """Start a worker of runtime environment ``env`` (one at a time per environment);
        when the node has all the workers it may, an idle one of another environment makes
        room (workers of different environments never share a process)."""
        pool = self.node.pool
        assert pool is not None
        if self.env_starting.get(key):
            return
        if pool.size >= self.cap():
            other = pool.idle_other(key)
            if other is None:
                return  # every worker is busy: one of them will be idle or gone
            pool.set_state(other, WorkerState.DEAD)  # its exit is handled when it is reaped
            pool.kill(other)
        self.env_starting[key] = 1
        self.node.background(self._start(env))

    async def _start(self, env: Any = None) -> None:
        node = self.node
        pool = node.pool
        assert pool is not None
        try:
            if env is None:
                await pool.start()
            else:
                try:
                    await pool.start(env, self.env_folders[env.key])
                except Exception as exc:
                    if not pool.closing:  # what waits for this environment fails
                        self._fail_env(env.key, exc)
                    raise
                finally:
                    self.env_starting.pop(env.key, None)
        except Exception as exc:
            if pool.closing:
                return  # shutting down: a worker still starting was stopped on purpose
            log.error("node %s could not start a worker: %s", node.node_id, exc)
            if not pool.count(WorkerState.IDLE, WorkerState.STARTING):
                node.leases.fail_waiting(f"no worker process could start: {exc}")
            return
        node.leases.grant()

    def _fail_env(self, key: str, exc: BaseException) -> None:
        for waiting in self.node.leases.waiting:
            if waiting.env is not None and waiting.env.key == key and not waiting.fut.done():
                waiting.fut.set_exception(WorkerCrashedError(
                    f"no worker process of runtime environment {key} could start: {exc}"))

    def replenish(self, *, restart: bool = True) -> None:
        """Keep ``prestart`` workers available for tasks. A replacement for a worker that
        exited counts against the restart intensity (``restart``); one for a worker that an
        actor took does not (with forked workers, creating actors is fast enough to exceed
        it)."""
        pool = self.node.pool
        if pool is None:
            return
        usable = pool.count(WorkerState.IDLE, WorkerState.STARTING, WorkerState.LEASED)
        if usable < self.prestart and pool.size < self.cap():
            if restart:
                self._replacements, exceeded = add_restart(
                    self._replacements, time.monotonic(), 10 * max(1, self.prestart), 10.0
                )
                if exceeded:
                    log.error("node %s: workers keep dying; not replacing them for now",
                              self.node.node_id)
                    return
            self.spawn()
