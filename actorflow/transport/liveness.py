"""Liveness locks: how a sweeper tells a dead process's files from a live one's, and the
unix socket files of listeners (see ``docs/reliability.md``).

A liveness lock is a BSD ``flock`` on a lock file, held for as long as its owner may use what
it guards; the kernel drops it when the owner's process ends, however it ends (SIGKILL, the OOM
killer, a crash). A sweeper takes it exclusively and without waiting: it gets it only when no
live process holds it, and removes what it guards while it holds it, then the lock file.

Sockets (``<tmp>/actorflow-<uid>/<port>.sock``, or any ``unix_path``): a listener holds an
exclusive lock on ``<path>.lock`` from before it binds until after it unlinks the socket
(:func:`lock_socket`; at a normal exit, what is still held is released). :func:`sweep_sockets`
unlinks a socket file when it gets that lock (creating the lock file when there is none: a
socket of an older actorflow) and a connect to the socket is refused (nothing listens: an
older actorflow's live socket is kept).

Only this user's files are looked at: the socket folder is private (0700, owned by this user,
else not used) and a socket owned by another user is skipped. Sweeping is blocking file work:
callers on an event loop run it in a thread.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import socket
import stat
import tempfile

__all__ = [
    "SocketLock",
    "lock_file",
    "lock_socket",
    "private_dir",
    "socket_dir",
    "sweep_sockets",
    "unlink_locked",
]

_SOCK_SUFFIX = ".sock"
_LOCK_SUFFIX = ".lock"


def private_dir(path: str, *, create: bool) -> str | None:
    """``path`` as a folder only this user may enter (made when ``create``), or None when it
    is missing, not a folder, another user's, or open to others: it is then not trusted."""
    try:
        if create:
            os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return path


def socket_dir(*, create: bool = True) -> str | None:
    """``<tmp>/actorflow-<uid>``: where listeners put their same-host unix sockets."""
    return private_dir(os.path.join(tempfile.gettempdir(), f"actorflow-{os.getuid()}"),
                       create=create)


def lock_file(path: str, op: int, *, create: bool) -> int | None:
    """A descriptor holding flock ``op`` on the file now at ``path``; None when it is held
    elsewhere (``LOCK_NB``) or, without ``create``, absent. A file unlinked while we waited (a
    sweeper removes the lock file of what it swept) is not it: we start again. The descriptor
    is not inherited by programs this process starts."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    for _ in range(100):
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, op)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            held, now = os.fstat(fd), os.stat(path, follow_symlinks=False)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
        if not create:
            return None
    raise OSError(errno.EAGAIN, f"lock file {path} keeps being replaced")


def unlink_locked(fd: int, path: str) -> None:
    """Unlink the lock file ``path`` that ``fd`` holds exclusively, then let go of it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)


# -- sockets -------------------------------------------------------------------------------------


class SocketLock:
    """The exclusive lock a listener holds on ``<socket path>.lock`` while it listens."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self._pid = os.getpid()
        #: Set once the socket is bound: :meth:`release` then unlinks it.
        self.bound = False
        _held.add(self)

    def release(self) -> None:
        """Unlink the socket file (when bound), then the lock file, then let go
        (idempotent; a no-op in a forked child, whose descriptor is its parent's lock)."""
        fd, self._fd = self._fd, None
        _held.discard(self)
        if fd is None or self._pid != os.getpid():
            return
        if self.bound:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        unlink_locked(fd, self.path + _LOCK_SUFFIX)


_held: set[SocketLock] = set()


@atexit.register
def _release_all() -> None:
    """At a normal exit, listeners never closed leave no socket file."""
    for lock in list(_held):
        with contextlib.suppress(OSError):
            lock.release()


def lock_socket(path: str) -> SocketLock | None:
    """Take the lock of a unix socket about to be bound at ``path``; None when a live process
    holds it (it listens there). Never waits: a sweeper holds it for microseconds, so a
    caller that gets None may try again shortly. Raises OSError when no lock file can be
    made beside ``path``."""
    fd = lock_file(path + _LOCK_SUFFIX, fcntl.LOCK_EX | fcntl.LOCK_NB, create=True)
    return SocketLock(path, fd) if fd is not None else None


def _listening(path: str) -> bool:
    """Does anything accept connections on the unix socket at ``path``? (Refused: no.)"""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:  # EAGAIN (its backlog is full) or anything unexpected: keep it
        return True
    finally:
        sock.close()
    return True


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def sweep_sockets(directory: str | None = None) -> tuple[int, int]:
    """Unlink the socket files in ``directory`` (default: :func:`socket_dir`) that no live
    listener holds the lock of and nothing listens on, and lock files left with no socket.
    Returns how many of each went."""
    directory = directory if directory is not None else socket_dir(create=False)
    if directory is None:
        return 0, 0
    sockets = locks = 0
    entries = set(_listdir(directory))
    for entry in sorted(entries):
        path = os.path.join(directory, entry)
        if entry.endswith(_SOCK_SUFFIX):
            try:
                info = os.lstat(path)
                if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
                    continue
                fd = lock_file(path + _LOCK_SUFFIX, fcntl.LOCK_EX | fcntl.LOCK_NB, create=True)
            except OSError:
                continue
            if fd is None:  # its listener lives
                continue
            try:
                if not _listening(path):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                        sockets += 1
            finally:
                unlink_locked(fd, path + _LOCK_SUFFIX)
        elif (entry.endswith(_SOCK_SUFFIX + _LOCK_SUFFIX)
              and entry[: -len(_LOCK_SUFFIX)] not in entries):
            fd = lock_file(path, fcntl.LOCK_EX | fcntl.LOCK_NB, create=False)
            if fd is not None:
                unlink_locked(fd, path)
                locks += 1
    return sockets, locks
