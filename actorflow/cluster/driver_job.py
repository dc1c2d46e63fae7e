"""The driver's side of its job: register it with the head at ``af.init``, end it at
``af.shutdown`` (see :mod:`actorflow.cluster.jobs_table` for what the head then releases).

With ``log_to_driver`` (the default) the driver also runs a
:class:`~actorflow.cluster.log_sink.LogSink`, where the nodes send the output of the job's
workers; the head tells them where it is.
"""

from __future__ import annotations

import logging
import os
import sys

from actorflow._errors import ActorflowError
from actorflow.cluster.core import Core
from actorflow.cluster.jobs_table import EndJob, RegisterJob
from actorflow.cluster.log_sink import LogSink

__all__ = ["end_job", "register_job", "segment_prefix"]

log = logging.getLogger("actorflow")

#: How long a driver's shutdown waits for the head to release its job.
END_JOB_TIMEOUT_S = 10.0


def segment_prefix(core: Core) -> str:
    """The names of the shared-memory segments ``core`` makes start with this."""
    return f"af-{core.node_id}-{core._prefix}"


async def register_job(core: Core, *, log_to_driver: bool) -> None:
    """Tell the head that ``core``'s process is the driver of job ``core.job_id``."""
    sink = None
    if log_to_driver:
        sink = await core.system.spawn(lambda: LogSink(core.node_id), name="log-sink")
    assert core.owner_ref is not None
    await core.head.ask(RegisterJob(
        core.job_id, core.owner_ref, core.namespace, os.getpid(), " ".join(sys.argv), sink,
        segment_prefix(core), core.node_id), timeout=30.0)


async def end_job(core: Core) -> None:
    """The driver shuts down: the head releases its job (bounded; a head that is gone has
    nothing left to release)."""
    try:
        await core.head.ask(EndJob(core.job_id), timeout=END_JOB_TIMEOUT_S)
    except (ActorflowError, TimeoutError) as exc:
        log.warning("the head did not confirm the end of job %s: %s", core.job_id, exc)
