"""Child specifications, supervisor options, and the pure rules they follow.

The rules are functions of plain values (timestamps, counts, reasons), so they are tested
without actors and without sleeping:

- :func:`add_restart` is OTP's restart intensity: a supervisor may restart at most
  ``max_restarts`` times within any ``within_s`` window; one more and it gives up.
- :func:`should_restart` is OTP's restart kinds: ``permanent`` children always come back,
  ``transient`` ones only after an abnormal exit (a crash or a kill), ``temporary`` ones never.
- :func:`backoff_delay` spaces restarts out exponentially while they come fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from actorflow.runtime import Actor, ExitReason

__all__ = [
    "Backoff",
    "ChildSpec",
    "RestartKind",
    "Strategy",
    "SupervisorOptions",
    "add_restart",
    "backoff_delay",
    "should_restart",
]

RestartKind = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]


class ChildSpec(BaseModel):
    """How a supervisor starts, restarts and stops one child.

    - ``factory(*args, **kwargs)`` builds the child's Actor (a class is the usual factory).
    - ``name``: unique among the supervisor's children; the child's path is
      ``<supervisor path>/<name>``.
    - ``restart``: ``permanent`` | ``transient`` | ``temporary`` (see :func:`should_restart`).
    - ``shutdown``: seconds the child gets to stop (``on_stop``) before it is killed, or
      ``"brutal_kill"`` to kill it at once without ``on_stop``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    factory: Callable[..., Actor]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    name: str = Field(min_length=1, pattern=r"^[^/]+$")
    restart: RestartKind = "permanent"
    shutdown: float | Literal["brutal_kill"] = 5.0
    max_concurrency: int | None = Field(default=None, ge=1)
    mailbox_size: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_shutdown(self) -> ChildSpec:
        if isinstance(self.shutdown, float) and self.shutdown < 0:
            raise ValueError("shutdown must be >= 0 seconds or 'brutal_kill'")
        return self

    def build(self) -> Actor:
        return self.factory(*self.args, **self.kwargs)


class Backoff(BaseModel):
    """Exponential delay between restarts that come fast: the first restart inside the
    intensity window is immediate, the k-th (k >= 2) waits ``initial_s * factor**(k-2)``,
    at most ``max_s``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_s: float = Field(default=0.1, gt=0)
    max_s: float = Field(default=5.0, gt=0)
    factor: float = Field(default=2.0, ge=1)


class SupervisorOptions(BaseModel):
    """A supervisor's strategy and restart intensity (see docs/supervision.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy = "one_for_one"
    max_restarts: int = Field(default=3, ge=0)
    within_s: float = Field(default=5.0, gt=0)
    backoff: Backoff | None = None


def add_restart(
    restarts: tuple[float, ...], now: float, max_restarts: int, within_s: float
) -> tuple[tuple[float, ...], bool]:
    """Record a restart at ``now``. Returns the restarts still inside the window (``now``
    included) and whether the intensity is exceeded (more than ``max_restarts`` of them).

    A restart at time t stays in the window while ``now - t < within_s``.
    """
    kept = (*(t for t in restarts if now - t < within_s), now)
    return kept, len(kept) > max_restarts


def should_restart(kind: RestartKind, reason: ExitReason) -> bool:
    """OTP's restart kinds."""
    if kind == "permanent":
        return True
    if kind == "transient":
        return reason.abnormal
    return False


def backoff_delay(backoff: Backoff | None, restarts_in_window: int) -> float:
    """Seconds to wait before a restart that is the ``restarts_in_window``-th inside the
    window (0 without a backoff, and for the first)."""
    if backoff is None or restarts_in_window <= 1:
        return 0.0
    return float(min(backoff.max_s, backoff.initial_s * backoff.factor ** (restarts_in_window - 2)))
