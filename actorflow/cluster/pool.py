"""Worker processes of a node: start them without blocking the loop, forward their output,
notice their exit.

Each worker is what ``python -m actorflow.cluster.worker_main`` runs. It is told where its node
listens (and the token) through its environment, connects back, and reports
:class:`~actorflow.cluster.protocol.WorkerReady`. Its stdout and stderr are pipes read by tasks
owned by the pool, each line handed to ``on_output`` (the node's logs: ``node_logs``).

On Linux a worker is forked by the pool's zygote (:mod:`actorflow.cluster.zygote`), a fork
server started with the pool that has the worker's modules imported already: a start costs a
fork instead of an interpreter and its imports, and idle workers share those pages. Elsewhere,
while the zygote is starting again after a crash, or when it cannot fork, a worker is a plain
``python -m actorflow.cluster.worker_main`` child process (``ACTORFLOW_ZYGOTE=0`` asks for that
always). The pool's :class:`~actorflow.cluster.zygote_keeper.ZygoteKeeper` restarts the zygote
when it dies (a few times a minute at most; then workers stay plain processes).

A worker dies with its node: it asks the kernel for SIGKILL when its parent (the node, or the
zygote, which itself dies with the node) dies, and it exits when the link to its node is lost.
Its exit is seen at once: a plain child's by asyncio's wait, a forked one's by its pidfd (its
code comes from the zygote, which reaps it).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from actorflow.cluster.runtime_env import ENV_VAR, ResolvedEnv
from actorflow.cluster.runtime_env import apply as apply_env
from actorflow.cluster.zygote import ForkedProcess, Zygote, ZygoteError
from actorflow.cluster.zygote_keeper import ZygoteKeeper
from actorflow.runtime import ActorRef

__all__ = ["WorkerHandle", "WorkerPool", "WorkerState"]

log = logging.getLogger("actorflow.pool")

class WorkerState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    LEASED = "leased"
    ACTOR = "actor"  # dedicated to one user actor
    DEAD = "dead"


@dataclass(eq=False, slots=True)
class WorkerHandle:
    worker_id: str
    proc: asyncio.subprocess.Process | ForkedProcess
    state: WorkerState = WorkerState.STARTING
    ref: ActorRef | None = None
    control: ActorRef | None = None
    ready: asyncio.Future[None] | None = None
    lease_id: int | None = None
    exit_code: int | None = None
    exited: asyncio.Future[int] | None = None
    env_key: str = ""  # its runtime environment's ("": none)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid


class WorkerPool:
    """Starts and tracks the worker processes of one node (owned by the Node actor).

    Made inside the node's running loop. It takes ``zygote`` (one started earlier, so that
    its imports overlapped the rest of the node's start-up: the pool owns it from now on) or
    starts its own at once when :func:`actorflow.cluster.zygote.enabled`.
    """

    def __init__(
        self,
        *,
        boot: dict[str, Any],
        token: str,
        log_to_driver: bool,
        on_exit: Callable[[WorkerHandle], None],
        start_timeout_s: float = 60.0,
        zygote: Zygote | None = None,
        on_output: Callable[[int, bool, str], None] | None = None,
    ) -> None:
        self.boot = boot
        self.token = token
        self.log_to_driver = log_to_driver
        self.on_exit = on_exit
        #: ``(pid, stderr, line)`` for each line a worker writes (else: printed here as is)
        self.on_output = on_output
        self.start_timeout_s = start_timeout_s
        self.workers: dict[str, WorkerHandle] = {}
        #: the same workers by state (each in the bucket of its state), so that finding an idle
        #: one or counting a state does not scan every worker (a node hosts hundreds of actors)
        self._by_state: dict[WorkerState, dict[str, WorkerHandle]] = {s: {} for s in WorkerState}
        self._counter = 0
        self._launching = 0  # starts whose process does not exist yet (counted as STARTING)
        self._closing = False
        #: the zygote that forks this pool's workers (cluster/zygote_keeper.py)
        self.zygotes = ZygoteKeeper(boot["node_id"], log_to_driver, start_timeout_s, zygote)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def zygote(self) -> Zygote | None:
        """The zygote forking this pool's workers now (None while none is running)."""
        return self.zygotes.current

    def idle(self, env_key: str = "") -> WorkerHandle | None:
        """An idle worker of runtime environment ``env_key`` ("": none)."""
        for handle in self._by_state[WorkerState.IDLE].values():
            if handle.env_key == env_key and not _doomed(handle):
                return handle
        return None

    def idle_other(self, env_key: str) -> WorkerHandle | None:
        """An idle worker of another runtime environment than ``env_key`` (to make room)."""
        for handle in self._by_state[WorkerState.IDLE].values():
            if handle.env_key != env_key:
                return handle
        return None

    def count(self, *states: WorkerState) -> int:
        """Workers in any of ``states``; a start whose process is not made yet (waiting for
        the zygote, say) counts as STARTING."""
        launching = self._launching if WorkerState.STARTING in states else 0
        return launching + sum(len(self._by_state[state]) for state in states)

    def set_state(self, handle: WorkerHandle, state: WorkerState) -> None:
        """Move a worker to ``state`` (every change of a tracked worker's state goes here)."""
        if handle.state is state:
            return
        bucket = self._by_state[handle.state]
        if bucket.pop(handle.worker_id, None) is not None:
            self._by_state[state][handle.worker_id] = handle
        handle.state = state

    @property
    def size(self) -> int:
        """Every worker the pool has or is starting."""
        return len(self.workers) + self._launching

    async def start(self, runtime: ResolvedEnv | None = None,
                    folders: Mapping[str, Path] | None = None) -> WorkerHandle:
        """Start one worker process and return once it has reported ready; one of runtime
        environment ``runtime`` (its packages unpacked in ``folders``) when given."""
        if self._closing:
            raise RuntimeError("the worker pool is shutting down")
        self._counter += 1
        worker_id = f"{self.boot['node_id']}-w{self._counter}"
        env = dict(os.environ)
        env.pop(ENV_VAR, None)
        boot = {**self.boot, "worker_id": worker_id}
        if runtime is not None:  # its variables; its folder and import path (set at its boot)
            env, cwd, paths = apply_env(runtime, folders or {}, env)
            boot["runtime_env"] = {"cwd": cwd, "paths": paths}
        env["ACTORFLOW_WORKER_BOOT"] = json.dumps(boot)
        env["ACTORFLOW_TOKEN"] = self.token
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._launching += 1
        try:
            proc = await self._launch(worker_id, env)
        finally:
            self._launching -= 1
        loop = asyncio.get_running_loop()
        handle = WorkerHandle(worker_id, proc, ready=loop.create_future(),
                              exited=loop.create_future(),
                              env_key=runtime.key if runtime is not None else "")
        if self.closing:  # close() ran while the process was being created: end it here,
            # without awaiting (a cancel must not leave it half-ended): closing the transport
            # kills the process if it still runs, and asyncio reaps it (a forked one is killed
            # through its pidfd, reaped by the zygote, and watched until the zygote closes)
            self.kill(handle)
            _close_pipes(handle)
            raise RuntimeError("the worker pool is shutting down")
        self.workers[worker_id] = handle
        self._by_state[handle.state][worker_id] = handle
        assert proc.stdout is not None and proc.stderr is not None
        handle.tasks = [
            loop.create_task(self._forward(proc.stdout, sys.stdout, proc.pid)),
            loop.create_task(self._forward(proc.stderr, sys.stderr, proc.pid)),
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
        self.set_state(handle, WorkerState.IDLE)
        handle.ready.set_result(None)
        return True

    async def _forward(self, stream: asyncio.StreamReader, out: TextIO, pid: int) -> None:
        on_output = self.on_output
        stderr = out is sys.stderr
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the stream's limit: take it in pieces
                line = await stream.read(1 << 16)
            if not line:
                return
            if on_output is not None:
                on_output(pid, stderr, line.decode(errors="replace"))
            elif self.log_to_driver:
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
        self.set_state(handle, WorkerState.DEAD)
        self._by_state[WorkerState.DEAD].pop(handle.worker_id, None)
        self.workers.pop(handle.worker_id, None)
        assert handle.exited is not None
        handle.exited.set_result(code)
        if not self._closing:
            self.on_exit(handle)

    def kill(self, handle: WorkerHandle, sig: int = signal.SIGKILL) -> None:
        if handle.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                handle.proc.send_signal(sig)

    async def _launch(self, worker_id: str, env: dict[str, str]
                      ) -> asyncio.subprocess.Process | ForkedProcess:
        zygote = await self.zygotes.ready()
        if zygote is not None:
            try:  # (bounded: a zygote that stopped answering must not hold starts for ever)
                return await asyncio.wait_for(zygote.fork(env), self.start_timeout_s)
            except (ZygoteError, TimeoutError) as exc:
                why = exc if isinstance(exc, ZygoteError) else (
                    f"no answer within {self.start_timeout_s} s")
                log.warning("worker %s: the zygote could not fork it (%s); starting a plain "
                            "process", worker_id, why)
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "actorflow.cluster.worker_main",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )

    async def close(self, timeout: float = 3.0) -> None:
        """Terminate every worker (SIGTERM, then SIGKILL after ``timeout``) and reap them;
        then close the zygote."""
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
        await self.zygotes.close()
        for handle in handles:
            _close_pipes(handle)


def _doomed(handle: WorkerHandle) -> bool:
    """Is it a forked worker whose zygote is gone? (The kernel is killing it: its exit is
    seen soon; it must not be handed out meanwhile.)"""
    return isinstance(handle.proc, ForkedProcess) and handle.proc.doomed


def _close_pipes(handle: WorkerHandle) -> None:
    """Close the process's pipe transports now, not at garbage collection (asyncio's
    Process has no public close; its transport's close closes the pipes)."""
    if isinstance(handle.proc, ForkedProcess):
        handle.proc.close_pipes()
        return
    transport = getattr(handle.proc, "_transport", None)
    if transport is not None:
        transport.close()
