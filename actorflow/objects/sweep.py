"""What dead processes of this machine left behind: their shared-memory segments (here) and
unix socket files (:mod:`actorflow.transport.liveness`); see ``docs/reliability.md``.

A process killed hard (SIGKILL, the OOM killer, a crash) runs no clean-up: its segments stay
in ``SHM_DIR`` until someone removes them. A segment is swept only when a liveness lock (a
``flock`` held for the owner's life: :mod:`actorflow.transport.liveness`) proves that no live
process owns it.

Segments (``<SHM_DIR>/af-<node id>-<id>``). Every process that creates a segment named after
node N (the node's own process, its workers, its drivers) holds a *shared* lock on
``<SHM_DIR>/actorflow-<uid>/node-<N>.lock``: :func:`claim_node` takes it before the process's
first segment of N (:mod:`actorflow.objects.shm` calls it) and keeps it for the process's life;
a node's process takes it before the node starts (:func:`hold_node`). A sweeper that gets the
lock exclusively unlinks N's segments, then the lock file, while it holds the lock. Segments
with no lock file (made by an older actorflow, or where the lock folder could not be made)
are never touched: nothing proves their owner dead. Nor are another user's.

The lock primitives come from the transport (imported on first use: a process that makes
segments has the transport already, and importing this module, as ``shm`` does, stays cheap).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import logging
import os
import stat
import tempfile
import threading
from dataclasses import dataclass

__all__ = [
    "SHM_DIR",
    "SweepReport",
    "claim_node",
    "hold_node",
    "node_lock_dir",
    "owner_of",
    "release_node",
    "sweep_machine",
    "sweep_segments",
]

log = logging.getLogger("actorflow.sweep")

#: Where segments live: a tmpfs (memory, not disk) where there is one.
SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
_SEGMENT_PREFIX = "af-"
_NODE_LOCK = "node-{}.lock"
_LOCK_SUFFIX = ".lock"


# -- folders and names ----------------------------------------------------------------------------


def node_lock_dir(*, create: bool = True) -> str | None:
    """``<SHM_DIR>/actorflow-<uid>``: the nodes' liveness locks, beside their segments (the
    same filesystem: nothing ages one out and not the other)."""
    from actorflow.transport.liveness import private_dir

    return private_dir(os.path.join(SHM_DIR, f"actorflow-{os.getuid()}"), create=create)


def owner_of(name: str) -> str | None:
    """The node a segment ``af-<node id>-<id>`` is named after (None: not a segment name)."""
    if not name.startswith(_SEGMENT_PREFIX):
        return None
    owner, sep, rest = name[len(_SEGMENT_PREFIX):].partition("-")
    return owner if sep and owner and rest else None


# -- nodes' locks (segments) ----------------------------------------------------------------------


class _Holds:
    """This process's shared locks on nodes' lock files: one descriptor per node, counted."""

    def __init__(self) -> None:
        self.mutex = threading.RLock()
        self.fds: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.claimed: set[str] = set()  # held for the process's life
        self.pid = os.getpid()

    def forget(self) -> None:
        """In a forked child: the descriptors are the parent's locks too (a flock belongs to
        the open file, which fork shares), so never unlock them here; they stay open, and
        the locks held, while the child lives."""
        self.mutex = threading.RLock()
        self.fds = {}
        self.counts = {}
        self.claimed = set()
        self.pid = os.getpid()


_holds = _Holds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_holds.forget)


def hold_node(node_id: str) -> bool:
    """Hold node ``node_id``'s liveness lock (shared) until :func:`release_node`: none of its
    segments is swept meanwhile. False when the lock folder is unusable (its segments are then
    never swept: nothing would prove their owner dead)."""
    from actorflow.transport.liveness import lock_file

    with _holds.mutex:
        if node_id not in _holds.fds:
            directory = node_lock_dir()
            if directory is None:
                log.warning("no private lock folder in %s: segments of node %s will not be "
                            "swept if its processes die", SHM_DIR, node_id)
                return False
            path = os.path.join(directory, _NODE_LOCK.format(node_id))
            fd = lock_file(path, fcntl.LOCK_SH, create=True)
            if fd is None:  # (the folder went away under us)
                raise FileNotFoundError(errno.ENOENT, "cannot make the lock file", path)
            _holds.fds[node_id] = fd
        _holds.counts[node_id] = _holds.counts.get(node_id, 0) + 1
        return True


def claim_node(node_id: str) -> None:
    """Hold node ``node_id``'s lock for the rest of this process's life (once; cheap after
    that): called before this process creates its first segment of that node."""
    if node_id in _holds.claimed:
        return
    with _holds.mutex:  # another thread's first segment waits until the lock is held
        if node_id in _holds.claimed:
            return
        try:
            hold_node(node_id)
        except OSError as exc:
            log.warning("cannot take the liveness lock of node %s (%s): its segments will "
                        "not be swept if this process dies", node_id, exc)
        _holds.claimed.add(node_id)


def release_node(node_id: str) -> int:
    """Let go of one :func:`hold_node`. When this process was the last one holding the lock,
    what is left of the node's segments goes with the lock file (blocking: run it off the
    loop). Returns the segments unlinked."""
    from actorflow.transport.liveness import unlink_locked

    with _holds.mutex:
        count = _holds.counts.get(node_id, 0) - 1
        if count > 0:
            _holds.counts[node_id] = count
            return 0
        fd = _holds.fds.pop(node_id, None)
        _holds.counts.pop(node_id, None)
        _holds.claimed.discard(node_id)
        if fd is None:
            return 0
        try:  # the last holder of all? (a conversion that fails has let go: fine, we leave)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return 0
        directory = node_lock_dir(create=False)
        names = [n for n in _listdir(SHM_DIR) if owner_of(n) == node_id]
        gone = sum(1 for name in names if _unlink_own(os.path.join(SHM_DIR, name)) >= 0)
        if directory is not None:
            _sweep_store(directory, node_id)
            unlink_locked(fd, os.path.join(directory, _NODE_LOCK.format(node_id)))
        else:
            os.close(fd)
        return gone


@atexit.register
def _release_all() -> None:
    """At a normal exit, this process's nodes' locks go (the last holder sweeps)."""
    if _holds.pid != os.getpid():
        return
    for node_id in list(_holds.fds):
        with contextlib.suppress(OSError):
            while node_id in _holds.fds:
                release_node(node_id)


# -- sweeping ------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    """What one sweep removed."""

    segments: int = 0
    segment_bytes: int = 0
    owners: int = 0  # nodes whose segments went (their lock files with them)
    sockets: int = 0
    locks: int = 0  # lock files left with nothing to guard
    spill_files: int = 0  # files of dead nodes' spill directories

    def __bool__(self) -> bool:
        return bool(self.segments or self.sockets or self.locks or self.owners
                    or self.spill_files)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _unlink_own(path: str, kind: int = stat.S_IFREG) -> int:
    """Unlink ``path`` when it is this user's file of type ``kind``; its size, or -1."""
    try:
        info = os.lstat(path)
        if stat.S_IFMT(info.st_mode) != kind or info.st_uid != os.getuid():
            return -1
        os.unlink(path)
    except OSError:
        return -1
    return info.st_size


def _sweep_store(directory: str, node_id: str) -> int:
    """(Holding node ``node_id``'s lock exclusively: it is dead, or this was its last
    process.) Remove its object store's page and spill directory (``spill.py``), whose path
    it left in ``node-<id>.spill``; returns the spill files removed."""
    _unlink_own(os.path.join(directory, f"node-{node_id}.store"))
    pointer = os.path.join(directory, f"node-{node_id}.spill")
    try:
        with open(pointer) as f:
            spill_dir = f.read().strip()
    except OSError:
        return 0
    count = 0
    # only a folder of this user's, named after that node, as the store names its own
    if spill_dir and os.path.basename(spill_dir).endswith(f"-{node_id}"):
        try:
            info = os.lstat(spill_dir)
            if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
                for entry in _listdir(spill_dir):
                    if _unlink_own(os.path.join(spill_dir, entry)) >= 0:
                        count += 1
                os.rmdir(spill_dir)
        except OSError:
            pass
    _unlink_own(pointer)
    return count


def sweep_segments(report: SweepReport | None = None) -> SweepReport:
    """Unlink the segments of every node whose liveness lock no process holds any more."""
    from actorflow.transport.liveness import lock_file, unlink_locked

    report = report if report is not None else SweepReport()
    directory = node_lock_dir(create=False)
    if directory is None:
        return report
    shm_dir = SHM_DIR
    by_owner: dict[str, list[str]] = {}
    for name in _listdir(shm_dir):
        owner = owner_of(name)
        if owner is not None:
            by_owner.setdefault(owner, []).append(name)
    for entry in _listdir(directory):
        if entry.startswith("node-") and entry.endswith(_LOCK_SUFFIX):
            by_owner.setdefault(entry[len("node-"):-len(_LOCK_SUFFIX)], [])
    for owner, names in by_owner.items():
        path = os.path.join(directory, _NODE_LOCK.format(owner))
        fd = lock_file(path, fcntl.LOCK_EX | fcntl.LOCK_NB, create=False)
        if fd is None:  # alive, or no lock file: nothing proves it dead
            continue
        try:
            for name in names:
                size = _unlink_own(os.path.join(shm_dir, name))
                if size >= 0:
                    report.segments += 1
                    report.segment_bytes += size
            report.spill_files += _sweep_store(directory, owner)
        finally:
            unlink_locked(fd, path)
        if names:
            report.owners += 1
        else:
            report.locks += 1
    return report


def sweep_machine() -> SweepReport:
    """One sweep of this user's segments and socket folder; never raises (a sweep that fails
    is logged and left for the next one). Blocking: run it off the event loop."""
    from actorflow.transport.liveness import sweep_sockets

    report = SweepReport()
    try:
        sweep_segments(report)
        report.sockets, locks = sweep_sockets()
        report.locks += locks
    except Exception:
        log.exception("sweeping what dead processes left failed")
    if report:
        log.info("swept what dead processes left: %d segment(s) (%d bytes) of %d node(s), "
                 "%d spill file(s), %d socket file(s), %d lock file(s)", report.segments,
                 report.segment_bytes, report.owners, report.spill_files, report.sockets,
                 report.locks)
    return report
