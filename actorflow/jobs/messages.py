"""Requests to the head's ``jobs`` actor (see :mod:`actorflow.jobs.manager`); the package
messages of runtime environments are in :mod:`actorflow.cluster.runtime_env`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actorflow.cluster.runtime_env import ResolvedEnv

__all__ = [
    "GetJob",
    "JobLogs",
    "ListJobs",
    "ReadLogs",
    "StopJob",
    "SubmitJob",
    "entrypoint_demand",
]

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
    #: what the entrypoint needs: ``{"num_cpus": N, "num_gpus": N, "resources": {...}}``
    #: (None: it runs on the head's machine and holds nothing)
    entrypoint_demand: dict[str, Any] | None = None


def entrypoint_demand(num_cpus: float | None, num_gpus: float | None,
                      resources: dict[str, float] | None) -> dict[str, Any] | None:
    """A submission's entrypoint resources, checked (None when none is asked for)."""
    if num_cpus is None and num_gpus is None and not resources:
        return None
    for what, amount in (("entrypoint_num_cpus", num_cpus), ("entrypoint_num_gpus", num_gpus)):
        if amount is not None and (isinstance(amount, bool) or not isinstance(
                amount, int | float) or amount < 0):
            raise ValueError(f"{what} must be a number >= 0, got {amount!r}")
    if resources is not None:
        if not isinstance(resources, dict) or not all(
                isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                and v >= 0 for k, v in resources.items()):
            raise ValueError('entrypoint_resources maps resource names to amounts >= 0, such '
                             f'as {{"accel": 1}}; got {resources!r}')
        if {"CPU", "GPU"} & set(resources):
            raise ValueError("give CPUs and GPUs as entrypoint_num_cpus / entrypoint_num_gpus, "
                             "not in entrypoint_resources")
    return {"num_cpus": float(num_cpus or 0), "num_gpus": float(num_gpus or 0),
            "resources": {k: float(v) for k, v in (resources or {}).items()}}


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
