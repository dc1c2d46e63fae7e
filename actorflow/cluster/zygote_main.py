"""The zygote process: the fork server that makes a node's workers (its own side).

``python -m actorflow.cluster.zygote --channel FD --parent PID`` runs :func:`main` (the node's
side, :mod:`actorflow.cluster.zygote`, launches it). It imports what a worker imports
(:data:`PRELOAD`) once, does the start-up work each worker would repeat
(``prepare_fork_server``), calls :func:`gc.freeze`, then forks a worker on request: the child
shares those pages with the zygote and its siblings (copy on write), and is a worker at once.

One thread, no event loop, ever (a child must start from a clean state). It serves one
``SOCK_SEQPACKET`` channel, shared with its node: a request is one JSON message (``{"op":
"fork", "id", "env"}``: the worker's whole environment, boot facts and token included)
carrying three descriptors (``SCM_RIGHTS``): the write ends of the worker's stdout and stderr
pipes, and the node's working directory (``O_PATH``; a directory removed since still works, as
it does for a plain child). It answers ``{"op": "forked", "id", "pid"}`` with a pidfd of the
child (opened before the child can be reaped, so it names that process and no other), reaps
its children (``SIGCHLD``) and reports ``{"op": "exited", "pid", "code"}`` (the code as asyncio
gives it: ``-N`` for signal N). It ignores SIGINT and SIGTERM (its node decides when workers
stop), asks the kernel for SIGKILL when its node dies (``PR_SET_PDEATHSIG``), and exits when
the channel closes. Its children ask for SIGKILL when the zygote dies.

A forked child becomes exactly what ``python -m actorflow.cluster.worker_main`` is: its stdout
and stderr are its own pipes, stdin is ``/dev/null``, its environment and working directory
are the node's at the time of the request, ``sys.argv`` and the command line read
``python -m actorflow.cluster.worker_main``, the signal dispositions are those the zygote
started with (a plain worker's), and ``worker_main.main()`` creates its event loop in the
child.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_MESSAGE", "PRELOAD", "main"]

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

MAX_MESSAGE = 1 << 20  # one request (the environment is its bulk); a larger one is refused
_PR_SET_PDEATHSIG = 1


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
                data, fds, _, _ = socket.recv_fds(chan, MAX_MESSAGE, 3,
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

