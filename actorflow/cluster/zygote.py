"""The fork server ("zygote") of a node's worker pool: start a worker process in milliseconds.

A worker started as ``python -m actorflow.cluster.worker_main`` spends most of its start-up
importing the modules it needs (the transport, the runtime, the Core). The zygote imports them
once per node, does the start-up work each worker would repeat (``prepare_fork_server``), calls
:func:`gc.freeze`, then forks a worker on request: the child shares those pages with the
zygote and its siblings (copy on write), and is a worker at once.

Two sides live here:

- **the zygote process** (:func:`main`, ``python -m actorflow.cluster.zygote --channel FD
  --parent PID``): one thread, no event loop, ever (a child must start from a clean state). It
  serves one ``SOCK_SEQPACKET`` channel, shared with its node: a request is one JSON message
  (``{"op": "fork", "id", "env"}``: the worker's whole environment, boot facts and token
  included) carrying three descriptors (``SCM_RIGHTS``): the write ends of the worker's stdout
  and stderr pipes, and the node's working directory (``O_PATH``; a directory removed since
  still works, as it does for a plain child). It answers ``{"op": "forked", "id", "pid"}``
  with a pidfd of the child (opened before the child can be reaped, so it names that process
  and no other), reaps its children (``SIGCHLD``) and reports
  ``{"op": "exited", "pid", "code"}`` (the code as asyncio gives it: ``-N`` for signal N).
  It ignores SIGINT and SIGTERM (its node decides when workers stop), asks the kernel for
  SIGKILL when its node dies (``PR_SET_PDEATHSIG``), and exits when the channel closes. Its
  children ask for SIGKILL when the zygote dies.
- **the node's side** (:class:`Zygote`, :class:`ForkedProcess`), owned by the
  :class:`~actorflow.cluster.pool.WorkerPool`: launching, fork requests, the children's exits
  (a child's pidfd becomes readable the moment it ends; its code comes in the zygote's report,
  or is ``-SIGKILL`` when the zygote is gone, since the kernel killed it then), and signals sent
  through the pidfd (never to a pid that may have been reused).

A forked child becomes exactly what ``python -m actorflow.cluster.worker_main`` is: its stdout
and stderr are its own pipes, stdin is ``/dev/null``, its environment and working directory
are the node's at the time of the request, ``sys.argv`` and the command line read
``python -m actorflow.cluster.worker_main``, the signal dispositions are those the zygote
started with (a plain worker's), and ``worker_main.main()`` creates its event loop in the
child.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ForkedProcess", "Zygote", "ZygoteError", "enabled", "main", "supported"]

log = logging.getLogger("actorflow.zygote")

#: The modules a worker imports: the zygote imports them once, its children inherit them.
PRELOAD = (
    "actorflow.cluster.worker_main",
    "actorflow.transport.remote",
    "actorflow.cluster.submitter",
    "actorflow.cluster.actor_client",
    "uvloop",
)

#: The zygote's signal dispositions as it started (a plain worker's), restored in children.
_INHERITED: dict[int, Callable[[int, Any], Any] | int] = {}

_MAX_MESSAGE = 1 << 20  # one request (the environment is its bulk); a larger one is refused
_PR_SET_PDEATHSIG = 1


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


# -- the zygote process ----------------------------------------------------------------------


@dataclass(slots=True)
class _Request:
    """A fork request, as the child sees it once forked."""

    env: dict[str, str]
    stdout: int
    stderr: int
    cwd: int  # an O_PATH descriptor of the node's working directory


def _die_with(parent: int) -> None:
    """SIGKILL this process when the thread that started it ends (its parent's death)."""
    import ctypes  # (here: the node's side never needs it)

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before we asked
        os._exit(1)


def _send(chan: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(chan, [data], fds)
    else:
        chan.send(data)


def _reap(chan: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(chan, {"op": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _fork(chan: socket.socket, req: dict[str, Any], fds: list[int],
          own: list[int]) -> _Request | None:
    """Fork one worker. In the zygote: answer and return None. In the child: drop the zygote's
    state and return the request (the caller becomes the worker)."""
    if len(fds) != 3 or not isinstance(req.get("env"), dict):
        for fd in fds:
            os.close(fd)
        _send(chan, {"op": "failed", "id": req.get("id"), "error": "malformed fork request"})
        return None
    zygote = os.getpid()
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        _send(chan, {"op": "failed", "id": req["id"], "error": f"fork: {exc}"})
        return None
    if pid == 0:  # the child: nothing may return into the zygote's loop but the request
        try:
            signal.set_wakeup_fd(-1)
            for sig, handler in _INHERITED.items():  # what a plain worker starts with
                signal.signal(sig, handler)
            chan.close()
            for fd in own:
                os.close(fd)
            _die_with(zygote)
            return _Request(req["env"], fds[0], fds[1], fds[2])
        except BaseException:
            os._exit(1)
    for fd in fds:
        os.close(fd)
    # the child cannot have been reaped yet (we reap only below, later): the pidfd is its own
    pidfd = os.pidfd_open(pid)
    try:
        _send(chan, {"op": "forked", "id": req["id"], "pid": pid}, [pidfd])
    finally:
        os.close(pidfd)
    return None


def _serve(chan: socket.socket) -> _Request | None:
    """The zygote's loop: fork on request, report exits. Returns None when the node closes the
    channel; returns a request in a forked child."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    poller = select.poll()
    poller.register(chan.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    try:
        _send(chan, {"op": "ready", "pid": os.getpid()})
        while True:
            for fd, _ in poller.poll():
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_r, 512):
                            pass
                    _reap(chan)
                    continue
                data, fds, _, _ = socket.recv_fds(chan, _MAX_MESSAGE, 3,
                                                  socket.MSG_CMSG_CLOEXEC)
                if not data:
                    for fd in fds:
                        os.close(fd)
                    return None  # the node closed the channel, or died
                req = json.loads(data)
                if req.get("op") != "fork":
                    for fd in fds:
                        os.close(fd)
                    continue
                child = _fork(chan, req, fds, [wake_r, wake_w])
                if child is not None:
                    return child
    except (BrokenPipeError, ConnectionResetError):
        return None  # the node is gone


def _set_cmdline(args: list[str]) -> None:
    """Best effort: make ``/proc/self/cmdline`` (``ps``, psutil) read ``argv[0]`` then ``args``,
    written over the original argument area as setproctitle(3) does (one NUL-terminated line;
    the area's last byte is not NUL: the kernel reads up to the NUL). Skipped if too long."""
    import ctypes

    with contextlib.suppress(Exception):
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
        with open("/proc/self/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
        line = b" ".join([argv0, *(a.encode() for a in args)]) + b"\0"
        size = end - start
        if start > 0 and len(line) < size:
            ctypes.memmove(start, line.ljust(size - 1, b"\0") + b" ", size)


def _become_worker(req: _Request, zygote_cwd: str) -> None:
    """In a forked child: become ``python -m actorflow.cluster.worker_main``, then run it."""
    gc.enable()
    os.dup2(req.stdout, 1)
    os.dup2(req.stderr, 2)
    for fd in (req.stdout, req.stderr):
        if fd > 2:
            os.close(fd)
    os.fchdir(req.cwd)
    os.close(req.cwd)
    for key in [k for k in os.environ if k not in req.env]:  # what differs only: rewriting
        del os.environ[key]  # all would copy ~0.3 MiB of pages shared with the zygote
    os.environ.update((k, v) for k, v in req.env.items() if os.environ.get(k) != v)
    from actorflow.cluster import worker_main

    sys.argv = [worker_main.__file__ or "worker_main.py"]
    with contextlib.suppress(OSError):  # (a removed directory has no path)
        if sys.path and sys.path[0] == zygote_cwd:  # ``-m`` put the working directory first
            sys.path[0] = os.getcwd()
    _set_cmdline(["-m", "actorflow.cluster.worker_main"])
    worker_main.main()


def main(argv: list[str] | None = None) -> None:
    """``python -m actorflow.cluster.zygote --channel FD --parent PID`` (started by a pool)."""
    gc.disable()  # no collection may leave holes in pages the children will share
    args = sys.argv[1:] if argv is None else argv
    opts = dict(zip(args[::2], args[1::2], strict=False))
    chan_fd, parent = int(opts["--channel"]), int(opts["--parent"])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        handler = signal.getsignal(sig)
        if handler is not None:  # (None: set outside Python; left as it is)
            _INHERITED[sig] = handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when its workers stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with(parent)
    chan = socket.socket(fileno=chan_fd)
    cwd = os.getcwd()
    try:
        import importlib

        for name in PRELOAD:
            importlib.import_module(name)
        from actorflow.cluster.worker_main import prepare_fork_server
        prepare_fork_server()  # work each worker would repeat, done once here (shared pages)
        if threading.active_count() != 1:
            raise RuntimeError("importing the worker's modules started a thread; "
                               "the zygote cannot fork safely")
    except BaseException:
        with contextlib.suppress(OSError):
            _send(chan, {"op": "error", "error": traceback.format_exc()})
        raise SystemExit(1) from None
    gc.freeze()
    req = _serve(chan)
    if req is None:  # the node is gone or done: nothing to flush or clean up (its children,
        os._exit(0)  # if any, die with it), so skip the interpreter's long teardown
    _become_worker(req, cwd)


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
        if len(data) > _MAX_MESSAGE:
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
