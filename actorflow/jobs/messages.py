"""Requests to the head's ``jobs`` actor (see :mod:`actorflow.jobs.manager`); the package
messages of runtime environments are in :mod:`actorflow.cluster.runtime_env`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actorflow.cluster.runtime_env import ResolvedEnv

__all__ = ["GetJob", "JobLogs", "ListJobs", "ReadLogs", "StopJob", "SubmitJob"]

#: The statuses of a job, in the order a job may take them (the last three are final).
STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED")
FINAL = frozenset(("SUCCEEDED", "FAILED", "STOPPED"))


@dataclass(frozen=True, slots=True)
class SubmitJob:
    """Run ``entrypoint`` (a shell command) as a driver; answered with the job id."""

    entrypoint: str
    runtime_env: ResolvedEnv | None = None
    submission_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GetJob:
    """Answered with the job's row (a dict), or KeyError."""

    job_id: str


@dataclass(frozen=True, slots=True)
class ListJobs:
    """Answered with every job's row, oldest first."""


@dataclass(frozen=True, slots=True)
class StopJob:
    """SIGTERM the job's process group, SIGKILL after ``grace_s``; answered once the driver
    is gone with True, or False when the job had ended already."""

    job_id: str
    grace_s: float | None = None


@dataclass(frozen=True, slots=True)
class ReadLogs:
    """The job's output from byte ``offset``; with ``wait_s`` > 0, wait that long at most for
    output or for the job's end when there is nothing new. Answered with :class:`JobLogs`."""

    job_id: str
    offset: int = 0
    wait_s: float = 0.0


@dataclass(frozen=True, slots=True)
class JobLogs:
    data: bytes
    offset: int  # where the next read starts
    ended: bool  # the job is over and ``data`` reaches the end of its output
    row: dict[str, Any] = field(default_factory=dict)
