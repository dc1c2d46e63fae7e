"""Following a submitted job's process that is not this process's child any more.

A head that was SIGKILLed leaves its jobs running: each job's process group is a session of
its own, its output goes to a file, and its driver reconnects to the head by itself. The head
started again (:mod:`actorflow.cluster.head_store` keeps the jobs' rows) takes the jobs back:
it cannot ``wait()`` for a process it did not start, so it waits for the end of the job's
leader (the wrapper, :mod:`actorflow.jobs.wrapper`) through a pidfd, and reads the exit status
the wrapper wrote. A pid is trusted only when the process's start time (``/proc/PID/stat``)
is the one noted when it started, so a reused pid is never taken for the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

__all__ = ["process_start", "read_exit", "same_process", "wait_pid"]

#: How often the end of a process is looked for where pidfds are missing.
_POLL_S = 0.2


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or None when unknown (gone, or
    no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])  # field 22 of proc(5); fields[0] is field 3
    except (IndexError, ValueError):
        return None


def same_process(pid: int | None, started: int | None) -> bool:
    """Is ``pid`` still the process that started at ``started`` (and not a zombie)?"""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's: the pid was reused
    now = process_start(pid)
    if now is None or started is None:
        return now is None and started is None  # no /proc here: trust the pid
    if now != started:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return state[state.rfind(b")") + 2:][:1] != b"Z"


async def wait_pid(pid: int, started: int | None) -> None:
    """Return once process ``pid`` (started at ``started``) has ended."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = -1
    if fd < 0 or not same_process(pid, started):  # (checked after the pidfd: no race)
        if fd >= 0:
            os.close(fd)
        while same_process(pid, started):  # noqa: ASYNC110 - no pidfd: nothing to await
            await asyncio.sleep(_POLL_S)
        return
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ended
    finally:
        loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


def read_exit(path: Path) -> int | None:
    """The exit status the wrapper wrote, or None when there is none (it was killed)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
