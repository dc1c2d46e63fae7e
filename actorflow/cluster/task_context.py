"""The task or actor call a coroutine works for: the values behind ``af.get_runtime_context()``."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["TaskContext", "task_context"]


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What runs in this context: the values behind ``af.get_runtime_context()``."""

    task_id: str | None = None
    actor_id: str | None = None
    name: str = "driver"
    gpu_ids: tuple[int, ...] = ()
    job_id: str | None = None  # the job that submitted it (None: this process's own)


# TaskContext is a frozen dataclass: immutable, so a shared default is safe

task_context: ContextVar[TaskContext] = ContextVar(
    "actorflow_task", default=TaskContext()  # noqa: B039
)
