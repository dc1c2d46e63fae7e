"""The actor kernel: actors, refs, mailboxes and the per-loop ActorSystem.

It knows nothing of clusters or tasks; the transport and the cluster layers build on it.
"""

from actorflow.runtime.actor import (
    Actor,
    ActorState,
    ErrorReply,
    ExitReason,
    ServiceActor,
    Terminated,
)
from actorflow.runtime.mailbox import Mailbox, MailboxStatistics
from actorflow.runtime.owned import OwnedTasks
from actorflow.runtime.ref import (
    ActorRef,
    CallbackReply,
    Reply,
    Slot,
    SlotState,
    current_system,
    restore_ref,
)
from actorflow.runtime.system import ActorSystem, RemoteResolver

__all__ = [
    "Actor",
    "ActorRef",
    "ActorState",
    "ActorSystem",
    "CallbackReply",
    "ErrorReply",
    "ExitReason",
    "Mailbox",
    "MailboxStatistics",
    "OwnedTasks",
    "RemoteResolver",
    "Reply",
    "ServiceActor",
    "Slot",
    "SlotState",
    "Terminated",
    "current_system",
    "restore_ref",
]
