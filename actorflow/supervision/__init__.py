"""Supervision trees with Erlang/OTP semantics (see docs/supervision.md)."""

from actorflow.supervision.spec import (
    Backoff,
    ChildSpec,
    RestartKind,
    Strategy,
    SupervisorOptions,
    add_restart,
    backoff_delay,
    should_restart,
)
from actorflow.supervision.supervisor import (
    ChildInfo,
    StartChild,
    Supervisor,
    TerminateChild,
    Tree,
    WhichChildren,
    start_supervisor,
    supervisor_spec,
)

__all__ = [
    "Backoff",
    "ChildInfo",
    "ChildSpec",
    "RestartKind",
    "StartChild",
    "Strategy",
    "Supervisor",
    "SupervisorOptions",
    "TerminateChild",
    "Tree",
    "WhichChildren",
    "add_restart",
    "backoff_delay",
    "should_restart",
    "start_supervisor",
    "supervisor_spec",
]
