"""The driver's side of its job: register it with the head at ``af.init``, end it at
``af.shutdown`` (see :mod:`actorflow.cluster.jobs_table` for what the head then releases).

With ``log_to_driver`` (the default) the driver also runs a
:class:`~actorflow.cluster.log_sink.LogSink`, where the nodes send the output of the job's
workers; the head tells them where it is.

In a worker, what runs belongs to the job that sent it (``task_context``): :func:`job_of` and
:func:`namespace_of` say which job and namespace the calling code is in (a task's actors and
names are its job's). A worker learns a job's namespace from the head the first time it runs
something of that job (:func:`learn_jobs`, before it runs).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

from actorflow._errors import ActorflowError
from actorflow.cluster.core import Core
from actorflow.cluster.jobs_table import EndJob, JobInfo, RegisterJob
from actorflow.cluster.log_sink import LogSink
from actorflow.cluster.task_context import task_context

__all__ = [
    "end_job", "job_of", "known_job", "learn_jobs", "namespace_of", "register_job",
    "segment_prefix",
]

log = logging.getLogger("actorflow")

#: How long a driver's shutdown waits for the head to release its job.
END_JOB_TIMEOUT_S = 10.0


def segment_prefix(core: Core) -> str:
    """The names of the shared-memory segments ``core`` makes start with this."""
    return f"af-{core.node_id}-{core._prefix}"


async def register_job(core: Core, *, log_to_driver: bool, joined: bool = True) -> None:
    """Tell the head that ``core``'s process is the driver of job ``core.job_id``
    (``joined``: of a cluster that lives on without it, which then watches it)."""
    sink = None
    if log_to_driver:
        sink = await core.system.spawn(lambda: LogSink(core.node_id), name="log-sink")
    assert core.owner_ref is not None
    await core.head.ask(RegisterJob(
        core.job_id, core.owner_ref, core.namespace, os.getpid(), " ".join(sys.argv), sink,
        segment_prefix(core), core.node_id, joined), timeout=30.0)


async def end_job(core: Core) -> None:
    """The driver shuts down: the head releases its job (bounded; a head that is gone has
    nothing left to release)."""
    try:
        await core.head.ask(EndJob(core.job_id), timeout=END_JOB_TIMEOUT_S)
    except (ActorflowError, TimeoutError) as exc:
        log.warning("the head did not confirm the end of job %s: %s", core.job_id, exc)


#: job id -> its namespace, in this process (a worker learns those of the jobs it serves)
_NAMESPACES: dict[str, str] = {}


def job_of(core: Core) -> str:
    """The job of the calling code: the task's or actor's in a worker, else this driver's."""
    return task_context.get().job_id or core.job_id


def namespace_of(core: Core) -> str:
    """The namespace of the calling code's job (``af.init(namespace=...)`` of its driver)."""
    job = task_context.get().job_id
    if job and job != core.job_id:
        return _NAMESPACES.get(job, core.namespace)
    return core.namespace


def known_job(job_id: str) -> bool:
    """Does this process know the job's namespace (or need it not: no job)?"""
    return not job_id or job_id in _NAMESPACES


async def learn_jobs(core: Core, job_ids: Iterable[str]) -> None:
    """Ask the head for the namespaces of the jobs not known here yet (bounded: a head that
    does not answer leaves them in this process's namespace)."""
    for job in set(job_ids):
        if known_job(job):
            continue
        try:
            _known, _logs, namespace = await core.head.ask(JobInfo(job), timeout=10.0)
        except (ActorflowError, TimeoutError) as exc:
            log.warning("no namespace of job %s from the head (%s): its tasks here use %r",
                        job, exc, core.namespace)
            namespace = core.namespace
        if len(_NAMESPACES) > 10_000:
            _NAMESPACES.clear()
        _NAMESPACES[job] = namespace
