"""actorflow: distributed computing for async Python.

Everything public is imported from here (``import actorflow as af``); the rest is private.
"""

from __future__ import annotations

from actorflow._errors import (
    ActorDiedError,
    ActorflowError,
    ActorUnavailableError,
    AuthenticationError,
    GetTimeoutError,
    InfeasibleError,
    MailboxFullError,
    NodeDiedError,
    ObjectLostError,
    PeerUnreachableError,
    ProtocolError,
    SerializationError,
    SupervisionError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)

__version__ = "0.1.0"

__all__ = [
    "ActorDiedError",
    "ActorUnavailableError",
    "ActorflowError",
    "AuthenticationError",
    "GetTimeoutError",
    "InfeasibleError",
    "MailboxFullError",
    "NodeDiedError",
    "ObjectLostError",
    "PeerUnreachableError",
    "ProtocolError",
    "SerializationError",
    "SupervisionError",
    "TaskCancelledError",
    "TaskError",
    "WorkerCrashedError",
    "__version__",
]
