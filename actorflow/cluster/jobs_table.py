"""Jobs at the head: every driver is a job, and a job's end releases what it made.

A driver registers its job when ``af.init`` connects (:class:`RegisterJob`: its id, the ref of
its object owner, whose process the head watches, its namespace, pid and entrypoint, and where
its workers' output goes). The job ends when the driver calls ``af.shutdown()``
(:class:`EndJob`, status ``SUCCEEDED``), or when its process ends without it (the link to the
process is lost, which the kernel tells at once for a dead process; a process that is merely
busy is never taken for dead): status ``FAILED``.

When a job ends, the head (:meth:`actorflow.cluster.head.Head.end_job`)

- stops the job's non-detached actors, named ones included (``lifetime="detached"`` ones live
  on until ``af.kill``); the actors they created die with them (fate-sharing), and the
  children of a detached actor live as long as it does;
- removes the job's placement groups that are not detached;
- tells every node to free the shared-memory segments of the driver's objects
  (:class:`FreeSegments`);
- and the job's tasks: a node returns the leases of an owner whose process is gone and kills
  the workers that ran them, so a driver's running tasks end, and the tasks those submitted
  (their owners' processes end in turn).

:class:`JobsTable` is the head's record of jobs (pure data): the rows that
``ListState("jobs")`` shows, and what nodes ask about a job (:class:`JobInfo`: where its
workers' output goes, its namespace).
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from actorflow.placement.messages import GroupTable, RemoveGroup
from actorflow.runtime import ActorRef

__all__ = [
    "DriverGone",
    "EndJob",
    "FreeSegments",
    "HeadJobs",
    "JobInfo",
    "JobRow",
    "JobsTable",
    "KeepSubmitted",
    "KeptSubmitted",
    "RegisterJob",
    "job_view",
]

log = logging.getLogger("actorflow.head")

#: How many ended jobs the head keeps rows of (the oldest are forgotten first).
ENDED_JOBS_KEPT = 1000


@dataclass(frozen=True, slots=True)
class RegisterJob:
    """Ask (driver -> head): this driver's job starts.

    ``driver``: the driver's object owner, whose process the head watches; ``logs``: where
    the job's workers' output goes (a :class:`~actorflow.cluster.log_sink.LogSink` in the
    driver), None with ``log_to_driver=False``; ``segment_prefix``: the names of the driver's
    shared-memory segments start with it (freed when the job ends)."""

    job_id: str
    driver: ActorRef
    namespace: str = ""
    pid: int = 0
    entrypoint: str = ""
    logs: ActorRef | None = None
    segment_prefix: str = ""
    node_id: str = ""
    #: watch the driver's process (not for an embedded cluster's own driver: its process's
    #: end is the cluster's)
    watch: bool = True


@dataclass(frozen=True, slots=True)
class EndJob:
    """Ask (driver -> head): the driver shuts down; release its job now (answers when done)."""

    job_id: str


@dataclass(frozen=True, slots=True)
class JobInfo:
    """Ask (node or worker -> head): ``(known, logs, namespace)`` of a job: whether the head
    knows it, where its workers' output goes (None once it ended, or when its driver asked
    for none), and its namespace."""

    job_id: str


@dataclass(frozen=True, slots=True)
class KeepSubmitted:
    """Tell (the head's ``jobs`` service -> head): keep this submitted job's row in the head's
    store (pickled by the service; None: forget it), so that a restarted head has it back."""

    job_id: str
    row: bytes | None


@dataclass(frozen=True, slots=True)
class KeptSubmitted:
    """Ask (the head's ``jobs`` service -> head, as it starts): the submitted jobs' rows the
    head's store kept (a restarted head's), as a tuple of pickled rows."""


@dataclass(frozen=True, slots=True)
class FreeSegments:
    """Tell (head -> node): a job ended: unlink this node's segments whose names start with
    ``prefix`` (its driver's), and the task results made for job ``job_id``."""

    prefix: str
    job_id: str = ""


@dataclass(slots=True)
class JobRow:
    job_id: str
    driver: ActorRef
    namespace: str
    pid: int
    entrypoint: str
    logs: ActorRef | None
    segment_prefix: str
    node_id: str
    status: str = "RUNNING"
    start_time: float = field(default_factory=time.time)
    end_time: float | None = None
    message: str = ""


def job_view(row: JobRow) -> dict[str, Any]:
    """A job as ``ListState("jobs")`` shows it (plain, JSON-able)."""
    return {
        "job_id": row.job_id, "status": row.status, "type": "DRIVER",
        "namespace": row.namespace, "driver_pid": row.pid, "driver_node_id": row.node_id,
        "entrypoint": row.entrypoint, "start_time": row.start_time, "end_time": row.end_time,
        "message": row.message,
    }


class JobsTable:
    """The head's jobs: running ones by id, and the last :data:`ENDED_JOBS_KEPT` ended."""

    def __init__(self) -> None:
        self.rows: dict[str, JobRow] = {}
        self._ended: list[str] = []

    def register(self, msg: RegisterJob) -> JobRow:
        old = self.rows.get(msg.job_id)
        if old is not None and old.status == "RUNNING" and old.driver != msg.driver:
            raise ValueError(
                f"job {msg.job_id!r} is running already (its driver is pid {old.pid}); a "
                "second driver of one job is refused: a process that inherited "
                "ACTORFLOW_JOB_ID from a submitted job's driver must unset it")
        row = self.rows[msg.job_id] = JobRow(
            msg.job_id, msg.driver, msg.namespace, msg.pid, msg.entrypoint, msg.logs,
            msg.segment_prefix, msg.node_id)
        return row

    def end(self, job_id: str, status: str, message: str) -> JobRow | None:
        """Mark a running job ended; returns its row, or None when it was not running."""
        row = self.rows.get(job_id)
        if row is None or row.status != "RUNNING":
            return None
        row.status = status
        row.message = message
        row.end_time = time.time()
        self._ended.append(job_id)
        while len(self._ended) > ENDED_JOBS_KEPT:
            self.rows.pop(self._ended.pop(0), None)
        return row

    def running_of(self, driver: ActorRef) -> list[str]:
        return [r.job_id for r in self.rows.values()
                if r.driver == driver and r.status == "RUNNING"]

    def info(self, job_id: str) -> tuple[bool, ActorRef | None, str]:
        row = self.rows.get(job_id)
        if row is None:
            return False, None, ""
        return True, (row.logs if row.status == "RUNNING" else None), row.namespace

    def views(self) -> list[dict[str, Any]]:
        return [job_view(r) for r in self.rows.values()]


@dataclass(frozen=True, slots=True)
class DriverGone:
    """(The head's own message.) The process of a job's driver ended."""

    job_id: str


class HeadJobs(abc.ABC):
    """The Head's part that keeps jobs (a mixin of :class:`~actorflow.cluster.head.Head`,
    kept here so that the head's module stays about actors and nodes). The head provides how
    one of its actors is stopped: :meth:`_stop_for_job`."""

    jobs: JobsTable
    ref: ActorRef
    placement: ActorRef
    actors: dict[str, Any]
    nodes: dict[str, Any]
    system: Any

    def _jobs_message(self, message: Any) -> tuple[bool, Any]:
        """Handle a jobs message: ``(True, answer)``, or ``(False, None)`` for another kind.
        (Only the synchronous ones: EndJob and DriverGone are awaited by the head.)"""
        kind = type(message)
        if kind is RegisterJob:
            self._register_job(message)
            return True, None
        if kind is JobInfo:
            return True, self.jobs.info(message.job_id)
        return False, None

    def _register_job(self, msg: RegisterJob) -> None:
        self.jobs.register(msg)
        job_id = msg.job_id
        if not msg.watch:
            return

        def gone(_notice: Any) -> None:
            try:
                self.ref.tell_nowait(DriverGone(job_id))
            except Exception:
                pass  # the head itself is stopping

        self.system.on_terminated(msg.driver, gone)

    async def end_job(self, job_id: str, status: str, message: str) -> None:
        """Release what job ``job_id`` made (see the module docstring)."""
        row = self.jobs.end(job_id, status, message)
        if row is None:
            return
        for record in list(self.actors.values()):
            spec = record.spec
            if (spec.job_id != job_id or spec.lifetime == "detached"
                    or record.state.value == "DEAD" or record.job_ended):
                continue
            if spec.creator and spec.creator in self.actors:
                continue  # an actor's child ends with its creator (fate-sharing), not its job
            record.job_ended = True
            self._stop_for_job(record)
        try:
            groups: dict[str, dict[str, Any]] = await self.placement.ask(GroupTable(), timeout=5.0)
            for group_id, entry in groups.items():
                if (entry.get("job_id") == job_id and entry.get("lifetime") != "detached"
                        and entry.get("state") != "REMOVED"):
                    self.placement.tell_nowait(RemoveGroup(group_id))
        except Exception as exc:  # the placement is stopping with the head
            log.debug("removing the placement groups of job %s: %s", job_id, exc)
        for node in list(self.nodes.values()):
            if node.alive:
                try:
                    node.ref.tell_nowait(FreeSegments(row.segment_prefix, job_id))
                except Exception:
                    pass  # that node is gone, and its segments with it
        log.info("job %s ended (%s): its actors, placement groups and objects are released",
                 job_id, status)

    @abc.abstractmethod
    def _stop_for_job(self, record: Any) -> None:
        """Stop the actor of ``record`` (one of :attr:`actors`) for good: its job ended."""
