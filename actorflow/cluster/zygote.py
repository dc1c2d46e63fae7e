"""The node's side of its zygote: start a worker process in milliseconds, by a fork.

A worker started as ``python -m actorflow.cluster.worker_main`` spends most of its start-up
importing the modules it needs (the transport, the runtime, the Core). A zygote (the fork
server, ``python -m actorflow.cluster.zygote``, whose own side is
:mod:`actorflow.cluster.zygote_main`) imports them once per node and forks workers on request.

Here is what its node holds (:class:`Zygote`, :class:`ForkedProcess`), owned by the
:class:`~actorflow.cluster.pool.WorkerPool`: launching it, fork requests (queued in order
while the channel is full), the children's exits (a child's pidfd becomes readable the moment
it ends; its code comes in the zygote's report, or is ``-SIGKILL`` when the zygote is gone,
since the kernel killed it then), and signals sent through the pidfd (never to a pid that may
have been reused).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actorflow.cluster.zygote_main import MAX_MESSAGE, main

__all__ = ["ForkedProcess", "Zygote", "ZygoteError", "enabled", "main", "supported"]

log = logging.getLogger("actorflow.zygote")


class ZygoteError(RuntimeError):
    """The zygote could not fork this worker (it is gone, failed, or refused the request)."""


def supported() -> bool:
    """Can this platform run a zygote? (Linux: fork, pidfds, SCM_RIGHTS over seqpackets.)"""
    return (sys.platform == "linux" and hasattr(os, "pidfd_open")
            and hasattr(signal, "pidfd_send_signal") and hasattr(socket, "send_fds"))


def enabled() -> bool:
    """Should a pool fork its workers from a zygote? (Supported, and ``ACTORFLOW_ZYGOTE`` is
    not ``0``: that asks for plain ``python -m actorflow.cluster.worker_main`` processes.)"""
    return supported() and os.environ.get("ACTORFLOW_ZYGOTE", "1") != "0"


# -- the node's side -------------------------------------------------------------------------


class ForkedProcess:
    """A worker forked by a zygote: what the pool needs of an ``asyncio.subprocess.Process``
    (``pid``, ``returncode``, ``stdout``/``stderr`` readers, ``send_signal``, ``wait``)."""

    def __init__(self, zygote: Zygote, pid: int, pidfd: int, stdout: asyncio.StreamReader,
                 stderr: asyncio.StreamReader, pipes: list[asyncio.BaseTransport]) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self._zygote = zygote
        self._pidfd: int | None = pidfd
        self._pipes = pipes
        self._ended = False  # the kernel says it has ended (its pidfd became readable)
        self._code: int | None = None  # its code, as the zygote reported it
        self._done: asyncio.Future[int] = zygote.loop.create_future()
        zygote.loop.add_reader(pidfd, self._on_ended)

    @property
    def doomed(self) -> bool:
        """Its zygote is gone, so the kernel kills it (PR_SET_PDEATHSIG), if it has not
        ended already."""
        return self._zygote.lost

    def send_signal(self, sig: int) -> None:
        if self._pidfd is None:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._pidfd, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        await asyncio.wait([self._done])
        return self._done.result()

    def close_pipes(self) -> None:
        for pipe in self._pipes:
            pipe.close()

    def _on_ended(self) -> None:
        self._ended = True
        self._close_pidfd()
        if self._code is not None or self._zygote.lost:
            self._finish()

    def _reported(self, code: int) -> None:
        self._code = code
        if self._ended:
            self._finish()

    def _zygote_lost(self) -> None:
        """The zygote is gone: no code will come; the kernel killed this child (or will)."""
        if self._ended:
            self._finish()

    def _abandon(self) -> None:  # stop watching (the zygote is closed, it did not end in time)
        self._close_pidfd()
        self._finish()

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            self._zygote.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def _finish(self) -> None:
        if self._done.done():
            return
        code = self._code if self._code is not None else -signal.SIGKILL
        self.returncode = code
        self._zygote._children.pop(self.pid, None)
        self._done.set_result(code)


@dataclass(slots=True)
class _Pending:
    """A fork request from its making to its answer. ``data`` and ``fds`` (ours: the worker's
    pipe ends and the working directory) are kept until it leaves; then they are dropped."""

    fut: asyncio.Future[ForkedProcess]
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    pipes: list[asyncio.BaseTransport]
    data: bytes = b""
    fds: list[int] = field(default_factory=list)
    sent: bool = False  # it left (written to the channel whole)

    def drop_fds(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)

    def fail(self, error: BaseException) -> None:
        """It will never be answered: fail its waiter, close what it holds."""
        self.drop_fds()
        if not self.fut.done():
            self.fut.set_exception(error)
        for pipe in self.pipes:
            pipe.close()


class Zygote:
    """The node's handle on one zygote process: :meth:`launch` it, :meth:`fork` workers,
    :meth:`aclose` it. It owns the zygote's stderr forwarder and its waiter task."""

    def __init__(self, proc: asyncio.subprocess.Process, chan: socket.socket,
                 log_to_driver: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.proc = proc
        self.error: str | None = None
        self.lost = False
        #: called (once, at once) when the zygote is found gone, before its children's exits
        self.on_lost: Callable[[Zygote], None] | None = None
        self.ready: asyncio.Future[bool] = self.loop.create_future()
        self.exited: asyncio.Future[int] = self.loop.create_future()
        self._chan: socket.socket | None = chan
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        #: requests not sent yet, oldest first (the channel was full when they were made)
        self._outbox: deque[int] = deque()
        self._writing = False  # a writer callback waits for the channel to drain
        self._children: dict[int, ForkedProcess] = {}
        self.loop.add_reader(chan.fileno(), self._on_readable)
        assert proc.stderr is not None
        self._closed = False
        self._tasks = [
            self.loop.create_task(self._forward(proc.stderr, log_to_driver)),
            self.loop.create_task(self._wait()),
        ]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def launch(cls, *, log_to_driver: bool) -> Zygote:
        """Start a zygote process (it reports ready once its imports are done: :attr:`ready`).
        Its stderr (a failed import's traceback, say) is printed here, each line prefixed
        ``(zygote pid=N)``, when ``log_to_driver``."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            env = dict(os.environ)
            env.pop("ACTORFLOW_TOKEN", None)
            env.pop("ACTORFLOW_WORKER_BOOT", None)
            env.setdefault("PYTHONUNBUFFERED", "1")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "actorflow.cluster.zygote",
                "--channel", str(theirs.fileno()), "--parent", str(os.getpid()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        return cls(proc, ours, log_to_driver)

    @property
    def usable(self) -> bool:
        return not self.lost and self.ready.done() and self.ready.result()

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """True once the zygote has its modules loaded; False if it failed or timed out."""
        await asyncio.wait([self.ready], timeout=timeout)
        return self.usable

    async def fork(self, env: dict[str, str]) -> ForkedProcess:
        """A new worker process with environment ``env``, in this process's working
        directory. Requests leave in the order they were made; while the channel is full
        (the zygote is behind) they wait in :attr:`_outbox`, each kept whole until it leaves,
        so a slow zygote makes starts wait and never loses or repeats one."""
        if not self.usable or self._chan is None:
            raise ZygoteError(f"the zygote (pid {self.pid}) is not running")
        loop = self.loop
        req_id = next(self._ids)
        data = json.dumps({"op": "fork", "id": req_id, "env": env}).encode()
        if len(data) > MAX_MESSAGE:
            raise ZygoteError("the worker's environment is too large for a fork request")
        pipes: list[asyncio.BaseTransport] = []
        readers: list[asyncio.StreamReader] = []
        ends: list[int] = []
        try:
            for _ in range(2):
                r, w = os.pipe()
                ends.append(w)
                reader = asyncio.StreamReader(limit=2**16, loop=loop)
                transport, _ = await loop.connect_read_pipe(
                    functools.partial(asyncio.StreamReaderProtocol, reader, loop=loop),
                    os.fdopen(r, "rb", 0))
                readers.append(reader)
                pipes.append(transport)
            try:
                ends.append(os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            except OSError as exc:
                raise ZygoteError(f"cannot open the working directory: {exc}") from exc
        except BaseException:
            for w in ends:
                os.close(w)
            for pipe in pipes:
                pipe.close()
            raise
        # from here the request owns the pipe ends and the directory (closed once it leaves:
        # the child has its copies then; ours would keep the pipes open)
        pending = _Pending(loop.create_future(), readers[0], readers[1], pipes, data, ends)
        if self.lost:  # it was lost while the pipes were made (its channel is closed)
            pending.fail(ZygoteError(f"the zygote (pid {self.pid}) exited"))
        else:
            self._pending[req_id] = pending
            self._outbox.append(req_id)
            if not self._writing:
                self._flush()
        try:
            await asyncio.wait([pending.fut])
        except BaseException:  # cancelled: nobody will take the child, so end it
            fut = pending.fut
            if not pending.sent and self._pending.pop(req_id, None) is not None:
                # still queued here: it never leaves
                with contextlib.suppress(ValueError):
                    self._outbox.remove(req_id)
                fut.cancel()
                pending.drop_fds()
                for pipe in pending.pipes:
                    pipe.close()
            elif not fut.done():
                fut.cancel()  # the answer's handler ends it when it comes
            elif not fut.cancelled() and fut.exception() is None:
                child = fut.result()  # it came just before the cancel
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                child.close_pipes()
            raise
        return pending.fut.result()

    def _flush(self) -> None:
        """Send the queued requests, oldest first, while the channel takes them. When it is
        full, one writer callback (for the whole queue) calls this again once it drains; it
        is removed when the queue is empty or the channel is lost."""
        chan = self._chan
        outbox = self._outbox
        while outbox and chan is not None:
            req_id = outbox[0]
            pending = self._pending.get(req_id)
            if pending is None or pending.sent:  # dropped (its start was cancelled)
                outbox.popleft()
                continue
            try:
                socket.send_fds(chan, [pending.data], pending.fds)
            except BlockingIOError:
                if not self._writing:
                    self.loop.add_writer(chan.fileno(), self._flush)
                    self._writing = True
                return
            except OSError as exc:
                outbox.popleft()
                del self._pending[req_id]
                pending.fail(ZygoteError(f"cannot reach the zygote (pid {self.pid}): {exc}"))
                continue
            outbox.popleft()
            pending.sent = True
            pending.data = b""
            pending.drop_fds()
        if self._writing and chan is not None:
            self.loop.remove_writer(chan.fileno())
        self._writing = False

    # -- the channel -------------------------------------------------------------------------

    def _on_readable(self) -> None:
        while self._chan is not None:
            try:
                data, fds, _, _ = socket.recv_fds(self._chan, 1 << 16, 1,
                                                  socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                for fd in fds:
                    os.close(fd)
                self._lose()
                return
            try:
                self._handle(json.loads(data), fds)
            except Exception:  # a bad message must not stop the reader: it is logged
                log.exception("zygote %d sent a message that could not be handled", self.pid)

    def _handle(self, msg: dict[str, Any], fds: list[int]) -> None:
        op = msg.get("op")
        if op == "forked":
            pending = self._pending.pop(msg["id"], None)
            if pending is None:  # nobody asked for it (cannot happen): end it at once
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fds[0], signal.SIGKILL)
                os.close(fds[0])
                return
            child = ForkedProcess(self, msg["pid"], fds[0], pending.stdout, pending.stderr,
                                  pending.pipes)
            self._children[child.pid] = child
            if pending.fut.done():  # the start was cancelled: end it (its exit is still seen)
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                child.close_pipes()
            else:
                pending.fut.set_result(child)
            return
        elif op == "exited":
            ended = self._children.get(msg["pid"])
            if ended is not None:
                ended._reported(msg["code"])
        elif op == "failed":
            failed = self._pending.pop(msg["id"], None)
            if failed is not None:
                failed.fail(ZygoteError(msg["error"]))
        elif op == "ready":
            if not self.ready.done():
                self.ready.set_result(True)
        elif op == "error":
            self.error = str(msg.get("error"))
        for fd in fds:
            os.close(fd)

    def _lose(self) -> None:
        """The zygote is gone (or closed): fail what waits on it; its children are dying."""
        if self.lost:
            return
        self.lost = True
        if self.on_lost is not None:
            self.on_lost(self)
        chan, self._chan = self._chan, None
        if chan is not None:
            self.loop.remove_reader(chan.fileno())
            if self._writing:
                self.loop.remove_writer(chan.fileno())
            chan.close()
        self._writing = False
        if not self.ready.done():
            self.ready.set_result(False)
        self._outbox.clear()
        pending, self._pending = list(self._pending.values()), {}
        for one in pending:
            one.fail(ZygoteError(f"the zygote (pid {self.pid}) exited"))
        for child in list(self._children.values()):
            child._zygote_lost()

    async def _forward(self, stream: asyncio.StreamReader, log_to_driver: bool) -> None:
        prefix = f"(zygote pid={self.pid}) "
        while line := await stream.readline():
            if log_to_driver:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write(prefix + line.decode(errors="replace"))
                    sys.stderr.flush()

    async def _wait(self) -> None:
        code = await self.proc.wait()
        self._lose()
        self.exited.set_result(code)

    async def aclose(self, timeout: float = 3.0) -> None:
        """Close the channel (the zygote exits, and any child it still has dies with it), reap
        it (SIGKILL after ``timeout``), and stop watching its children. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._lose()
        await asyncio.wait([self.exited], timeout=timeout)
        if not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await asyncio.wait([self.exited], timeout=timeout)
        children = [c._done for c in self._children.values()]
        if children:
            await asyncio.wait(children, timeout=timeout)
        for child in list(self._children.values()):
            child._abandon()
        forwarder = self._tasks[0]
        if not forwarder.done():
            await asyncio.wait([forwarder], timeout=1.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        transport = getattr(self.proc, "_transport", None)
        if transport is not None:
            transport.close()


if __name__ == "__main__":
    main()
