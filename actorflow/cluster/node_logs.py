"""A node's share of the logs: its workers' output goes to their drivers, and to files.

A worker writes each line of its stdout and stderr as ``\\x1e JOB \\x1f NAME \\x1f TEXT``
(see ``worker_main``): the job whose task or actor printed it ("" outside any) and that task's
or actor's name. The node's pool hands every line to :meth:`NodeLogs.line`, which

- sends it to the driver of its job (:class:`~actorflow.cluster.log_sink.LogBatch`, batched),
  which the head names (:class:`~actorflow.cluster.jobs_table.JobInfo`, asked once per job);
  a job whose driver asked for no logs (``log_to_driver=False``) gets none;
- prints it, prefixed ``(name pid=N)``, to the node's own stdout or stderr when it belongs to
  no job the head knows (a worker speaking outside any task), if the node forwards output
  (``log_to_driver`` of the node: an embedded cluster's node is the driver's process);
- appends it, prefixed ``(name pid=N node=ID)``, to the files under ``log_dir`` (nodes started
  by ``actorflow start``: ``<state dir>/logs/<node id>/``): ``worker-<pid>.log`` per worker
  process (an actor's process is one) and ``job-<job id>.log`` per job. A file past
  :data:`MAX_FILE_BYTES` is renamed ``.1`` (replacing the last one) and a new one begun.

:class:`ReadLogs` reads those files back (``actorflow logs``, the dashboard): the last lines of
one, or what was appended after an offset (to follow it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from actorflow._errors import ActorflowError
from actorflow.cluster.jobs_table import JobInfo
from actorflow.cluster.log_sink import LogBatch, format_prefix
from actorflow.runtime import ActorRef, OwnedTasks

__all__ = ["MAX_FILE_BYTES", "NodeLogs", "ReadLogs", "log_dir_from", "read_file"]

log = logging.getLogger("actorflow.node")

#: A log file is rotated past this size (``ACTORFLOW_LOG_MAX_BYTES`` sets it).
MAX_FILE_BYTES = int(os.environ.get("ACTORFLOW_LOG_MAX_BYTES") or 64 * 1024 * 1024)
#: How long lines wait to be sent to a driver and flushed to the files, in batches.
BATCH_S = 0.02
#: Log files kept open at once (the least recently written are closed first).
OPEN_FILES = 64
TAG, SEP = "\x1e", "\x1f"


@dataclass(frozen=True, slots=True)
class ReadLogs:
    """Ask (any process -> node): lines of one of its log files.

    ``kind``: ``"worker"`` (``key`` a pid), ``"job"`` (a job id), ``"node"`` (the node's own
    output, when it is a file) or ``"list"`` (which files there are). With ``offset`` None:
    the last ``tail`` lines; else what follows byte ``offset``. Answers ``(lines, offset)``,
    the offset to follow on from."""

    kind: str
    key: str = ""
    tail: int = 1000
    offset: int | None = None


def log_dir_from(options: Any, node_id: str) -> Path | None:
    """Where a node writes its log files: ``--log-dir`` (else the state folder's ``logs``)
    for a node started by ``actorflow start``; None (no files) for an embedded cluster,
    whose options carry no ``log_dir``."""
    if not options or "log_dir" not in options:
        return None
    from actorflow.cluster import state

    base = Path(options["log_dir"]) if options["log_dir"] else state.state_dir() / "logs"
    return base / node_id


class _File:
    __slots__ = ("f", "path", "size")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f: IO[str] = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.size = self.f.tell()


class NodeLogs:
    """The node's router of worker output (see the module docstring)."""

    def __init__(self, node_id: str, head: ActorRef, log_dir: Path | None,
                 forward: bool) -> None:
        self.node_id = node_id
        self.head = head
        self.log_dir = log_dir
        self.forward = forward
        if log_dir is not None:
            log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._sinks: dict[str, tuple[bool, ActorRef | None]] = {}  # job -> (known, sink)
        self._asking: dict[str, list[tuple[bool, str, int, str]]] = {}
        self._batches: dict[str, list[tuple[bool, str, int, str]]] = {}
        self._files: OrderedDict[str, _File] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None
        self._bg = OwnedTasks(f"node {node_id} logs", log)

    # -- lines in --------------------------------------------------------------------------------

    def line(self, pid: int, stderr: bool, raw: str) -> None:
        """One line (with its newline, or the last of a stream) from worker ``pid``."""
        raw = raw.rstrip("\n")
        job, name, text = "", "worker", raw
        if raw.startswith(TAG):
            parts = raw[1:].split(SEP, 2)
            if len(parts) == 3:
                job, name, text = parts
        if self.log_dir is not None:
            full = f"{format_prefix(name, pid, self.node_id)} {text}\n"
            self._append(f"worker-{pid}.log", full)
            if job:
                self._append(f"job-{job}.log", full)
        entry = (stderr, name, pid, text)
        if not job:
            self._local(entry)
        else:
            known = self._sinks.get(job)
            if known is None:
                waiting = self._asking.get(job)
                if waiting is None:
                    self._asking[job] = [entry]
                    self._bg.spawn(self._ask(job), f"actorflow job info {job}")
                elif len(waiting) < 10_000:
                    waiting.append(entry)
            else:
                self._route(job, known, entry)
        self._arm()

    def _local(self, entry: tuple[bool, str, int, str]) -> None:
        if not self.forward:
            return
        stderr, name, pid, text = entry
        out = sys.stderr if stderr else sys.stdout
        try:
            out.write(f"{format_prefix(name, pid, None)} {text}\n")
            out.flush()
        except (OSError, ValueError):
            pass

    def _route(self, job: str, known: tuple[bool, ActorRef | None],
               entry: tuple[bool, str, int, str]) -> None:
        is_known, sink = known
        if sink is not None:
            self._batches.setdefault(job, []).append(entry)
        elif not is_known:
            self._local(entry)  # a job the head does not know: as before jobs, the node's own

    async def _ask(self, job: str) -> None:
        try:
            known, sink, _namespace = await self.head.ask(JobInfo(job), timeout=10.0)
        except (ActorflowError, TimeoutError) as exc:
            log.debug("node %s: no word of job %s from the head: %s", self.node_id, job, exc)
            known, sink = False, None
        if len(self._sinks) > 4096:
            self._sinks.clear()
        self._sinks[job] = (known, sink)
        for entry in self._asking.pop(job, ()):
            self._route(job, (known, sink), entry)
        self._arm()

    def job_ended(self, job: str) -> None:
        self._sinks[job] = (True, None)

    # -- batches out -----------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is None and (self._batches or self._files):
            self._timer = asyncio.get_running_loop().call_later(BATCH_S, self.flush)

    def flush(self) -> None:
        self._timer = None
        batches, self._batches = self._batches, {}
        for job, lines in batches.items():
            _, sink = self._sinks.get(job, (False, None))
            if sink is None:
                continue
            try:
                sink.tell_nowait(LogBatch(self.node_id, tuple(lines)))
            except ActorflowError:  # its driver is gone (or stopping): the node's own output
                self._sinks[job] = (False, None)
                for entry in lines:
                    self._local(entry)
        for file in self._files.values():
            with contextlib.suppress(OSError, ValueError):
                file.f.flush()

    # -- files -----------------------------------------------------------------------------------

    def _append(self, name: str, text: str) -> None:
        assert self.log_dir is not None
        file = self._files.get(name)
        try:
            if file is None:
                file = self._files[name] = _File(self.log_dir / name)
                while len(self._files) > OPEN_FILES:
                    _, old = self._files.popitem(last=False)
                    old.f.close()
            else:
                self._files.move_to_end(name)
            file.f.write(text)
            file.size += len(text)
            if file.size > MAX_FILE_BYTES:
                file.f.close()
                os.replace(file.path, file.path.with_name(file.path.name + ".1"))
                self._files[name] = _File(file.path)
        except OSError as exc:
            self._files.pop(name, None)
            log.debug("node %s: cannot write log file %s: %s", self.node_id, name, exc)

    async def read(self, msg: ReadLogs) -> tuple[list[str], int]:
        """Answer a :class:`ReadLogs` (the file is read in a thread)."""
        self.flush()
        if msg.kind == "list":
            return await asyncio.to_thread(self._list), 0
        path = self._path(msg.kind, msg.key)
        if path is None:
            return [], 0
        return await asyncio.to_thread(read_file, path, msg.tail, msg.offset)

    def _list(self) -> list[str]:
        if self.log_dir is None:
            return []
        with contextlib.suppress(OSError):
            return sorted(p.name for p in self.log_dir.iterdir())
        return []

    def _path(self, kind: str, key: str) -> Path | None:
        if kind == "node":
            with contextlib.suppress(OSError):
                own = Path(os.readlink("/proc/self/fd/1"))
                if own.is_file():
                    return own
            return None
        if self.log_dir is None or not key or "/" in key or key.startswith("."):
            return None
        if kind == "worker":
            return self.log_dir / f"worker-{int(key)}.log"
        if kind == "job":
            return self.log_dir / f"job-{key}.log"
        raise ValueError(f"unknown kind of log {kind!r}; use worker, job, node or list")

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        await self._bg.close()
        for file in self._files.values():
            with contextlib.suppress(OSError):
                file.f.close()
        self._files.clear()


def read_file(path: Path, tail: int, offset: int | None) -> tuple[list[str], int]:
    """The last ``tail`` lines of ``path`` (offset None), or its complete lines after byte
    ``offset``; with the offset to go on from. A file that was rotated meanwhile (shorter
    than ``offset``) is read from its start."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            if offset is None:
                start = max(0, end - max(1, tail) * 512 - 65536)
            else:
                start = offset if offset <= end else 0
            f.seek(start)
            data = f.read(min(end - start, 16 * 1024 * 1024))
    except FileNotFoundError:
        return [], 0
    cut = data.rfind(b"\n") + 1  # complete lines only: the rest comes next time
    text = data[:cut].decode("utf-8", errors="replace")
    lines = text.splitlines()
    if offset is None:
        if start > 0 and lines:
            lines = lines[1:]  # (the first one is cut)
        lines = lines[-tail:] if tail > 0 else []
    return lines, start + cut
