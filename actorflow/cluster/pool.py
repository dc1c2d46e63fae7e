"""Worker processes of a node: start them without blocking the loop, forward their output,
notice their exit.

Each worker is a ``python -m actorflow.cluster.worker_main`` child process. It is told where its
node listens (and the token) through its environment, connects back, and reports
:class:`~actorflow.cluster.protocol.WorkerReady`. Its stdout and stderr are pipes read by tasks
owned by the pool; the worker itself prefixes each line with the task or actor name and its pid.
A worker also dies with its node: it asks the kernel for SIGKILL when its parent dies, and it
exits when the link to its node is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actorflow.runtime import ActorRef

__all__ = ["WorkerHandle", "WorkerPool", "WorkerState"]


class WorkerState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    LEASED = "leased"
    ACTOR = "actor"  # dedicated to one user actor
    DEAD = "dead"


@dataclass(eq=False, slots=True)
class WorkerHandle:
    worker_id: str
    proc: asyncio.subprocess.Process
    state: WorkerState = WorkerState.STARTING
    ref: ActorRef | None = None
    control: ActorRef | None = None
    ready: asyncio.Future[None] | None = None
    lease_id: int | None = None
    exit_code: int | None = None
    exited: asyncio.Future[int] | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid


class WorkerPool:
    """Starts and tracks the worker processes of one node (owned by the Node actor)."""

    def __init__(
        self,
        *,
        boot: dict[str, Any],
        token: str,
        log_to_driver: bool,
        on_exit: Callable[[WorkerHandle], None],
        start_timeout_s: float = 60.0,
    ) -> None:
        self.boot = boot
        self.token = token
        self.log_to_driver = log_to_driver
        self.on_exit = on_exit
        self.start_timeout_s = start_timeout_s
        self.workers: dict[str, WorkerHandle] = {}
        self._counter = 0
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    def idle(self) -> WorkerHandle | None:
        for handle in self.workers.values():
            if handle.state is WorkerState.IDLE:
                return handle
        return None

    def count(self, *states: WorkerState) -> int:
        return sum(1 for h in self.workers.values() if h.state in states)

    async def start(self) -> WorkerHandle:
        """Start one worker process and return once it has reported ready."""
        if self._closing:
            raise RuntimeError("the worker pool is shutting down")
        self._counter += 1
        worker_id = f"{self.boot['node_id']}-w{self._counter}"
        env = dict(os.environ)
        env["ACTORFLOW_WORKER_BOOT"] = json.dumps({**self.boot, "worker_id": worker_id})
        env["ACTORFLOW_TOKEN"] = self.token
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "actorflow.cluster.worker_main",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        loop = asyncio.get_running_loop()
        handle = WorkerHandle(worker_id, proc, ready=loop.create_future(),
                              exited=loop.create_future())
        if self.closing:  # close() ran while the process was being created: end it here,
            # without awaiting (a cancel must not leave it half-ended): closing the transport
            # kills the process if it still runs, and asyncio reaps it
            self.kill(handle)
            _close_pipes(handle)
            raise RuntimeError("the worker pool is shutting down")
        self.workers[worker_id] = handle
        assert proc.stdout is not None and proc.stderr is not None
        handle.tasks = [
            loop.create_task(self._forward(proc.stdout, sys.stdout)),
            loop.create_task(self._forward(proc.stderr, sys.stderr)),
            loop.create_task(self._wait(handle)),
        ]
        assert handle.ready is not None and handle.exited is not None
        waits: list[asyncio.Future[Any]] = [handle.ready, handle.exited]
        done, _ = await asyncio.wait(
            waits, timeout=self.start_timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if handle.ready not in done:
            handle.ready.cancel()
            self.kill(handle)
            why = (f"exited with code {handle.exit_code}" if handle.exited in done
                   else f"did not report ready within {self.start_timeout_s} s")
            raise RuntimeError(f"worker process {proc.pid} {why}; see its output above")
        return handle

    def mark_ready(self, worker_id: str, ref: ActorRef, control: ActorRef | None) -> bool:
        handle = self.workers.get(worker_id)
        if handle is None or handle.ready is None or handle.ready.done():
            return False
        handle.ref = ref
        handle.control = control
        handle.state = WorkerState.IDLE
        handle.ready.set_result(None)
        return True

    async def _forward(self, stream: asyncio.StreamReader, out: Any) -> None:
        while True:
            line = await stream.readline()
            if not line:
                return
            if self.log_to_driver:
                try:
                    out.write(line.decode(errors="replace"))
                    out.flush()
                except (OSError, ValueError):
                    pass

    async def _wait(self, handle: WorkerHandle) -> None:
        code = await handle.proc.wait()
        # let the forwarders pass on its last lines, then close its pipes now (not at GC)
        forwarders = [t for t in handle.tasks if t is not asyncio.current_task()]
        if forwarders:
            await asyncio.wait(forwarders, timeout=1.0)
        _close_pipes(handle)
        handle.exit_code = code
        handle.state = WorkerState.DEAD
        self.workers.pop(handle.worker_id, None)
        assert handle.exited is not None
        handle.exited.set_result(code)
        if not self._closing:
            self.on_exit(handle)

    def kill(self, handle: WorkerHandle, sig: int = signal.SIGKILL) -> None:
        if handle.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                handle.proc.send_signal(sig)

    async def close(self, timeout: float = 3.0) -> None:
        """Terminate every worker (SIGTERM, then SIGKILL after ``timeout``) and reap them."""
        self._closing = True
        handles = list(self.workers.values())
        for handle in handles:
            self.kill(handle, signal.SIGTERM)
        waits = [h.exited for h in handles if h.exited is not None]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for handle in handles:
                if handle.exited in pending:
                    self.kill(handle)
            if pending:
                await asyncio.wait(pending, timeout=timeout)
        tasks = [t for h in handles for t in h.tasks]
        for task in tasks:
            if not task.done():
                task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for handle in handles:
            _close_pipes(handle)


def _close_pipes(handle: WorkerHandle) -> None:
    """Close the process's pipe transports now, not at garbage collection (asyncio's
    Process has no public close; its transport's close closes the pipes)."""
    transport = getattr(handle.proc, "_transport", None)
    if transport is not None:
        transport.close()
