"""Links between actor systems: framing, authentication, batching and liveness.

Internal to actorflow (users never import it): the runtime's remoting layer builds on
:class:`Transport`, :class:`Listener` and :class:`Link`. ``docs/protocol.md`` specifies the wire
format and ``docs/threat-model.md`` what is trusted.
"""

from actorflow.transport.base import Link, LinkStatistics, Listener, ListenerStatistics, Transport
from actorflow.transport.codec import PROTOCOL_VERSION, Batch, Envelope, UndecodableValue
from actorflow.transport.config import TransportConfig
from actorflow.transport.memory import MemoryTransport
from actorflow.transport.ws import WebSocketTransport

__all__ = [
    "PROTOCOL_VERSION",
    "Batch",
    "Envelope",
    "Link",
    "LinkStatistics",
    "Listener",
    "ListenerStatistics",
    "MemoryTransport",
    "Transport",
    "TransportConfig",
    "UndecodableValue",
    "WebSocketTransport",
]
