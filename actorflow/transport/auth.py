"""The handshake every link passes before a single byte of it is unpickled.

Three JSON text messages, each side bounded by ``handshake_timeout_s``::

    server -> client  {"t": "challenge", "proto": "actorflow", "v": 1, "nonce": N_s}
    client -> server  {"t": "auth", "v": 1, "nonce": N_c, "mac": M_c, "max_frame": F_c,
                       "hello": {...}}
    server -> client  {"t": "welcome", "v": 1, "mac": M_s, "max_frame": F_s, "hello": {...}}
                   or {"t": "refused", "v": 1, "reason": "auth" | "version" | "protocol",
                       "text": "..."}  and the server closes the connection

``M_c = HMAC-SHA256(token, "actorflow/1 client|" + N_s + "|" + N_c)`` and ``M_s`` the same
with ``server``: each side proves it knows the token without sending it, over nonces the
other side chose, so a recorded handshake cannot be replayed and a server that does not know
the token is caught by the client before it sends or unpickles anything. Digests are compared
with :func:`hmac.compare_digest`. Nonces are 32 random bytes, hex-encoded.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import orjson

from actorflow._errors import AuthenticationError, PeerUnreachableError, ProtocolError
from actorflow.transport.base import CLOSE_POLICY, CLOSE_PROTOCOL_ERROR, Carrier
from actorflow.transport.codec import PROTOCOL_VERSION
from actorflow.transport.config import TransportConfig

__all__ = ["HandshakeRefused", "PeerHello", "accept_handshake", "dial_handshake"]

#: Largest handshake message either side reads.
MAX_HANDSHAKE_MESSAGE = 16 * 1024
_NONCE_BYTES = 32


class HandshakeRefused(Exception):
    """Raised on the listening side when a connection fails the handshake. ``reason`` is one
    of ``auth``, ``version`` or ``protocol``; ``text`` is safe to log (no secrets)."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(f"{reason}: {text}")
        self.reason = reason
        self.text = text


class PeerHello:
    """What the handshake learned about the peer."""

    __slots__ = ("hello", "max_frame")

    def __init__(self, hello: dict[str, Any], max_frame: int) -> None:
        self.hello = hello
        self.max_frame = max_frame


def _mac(token: bytes, role: bytes, server_nonce: str, client_nonce: str) -> str:
    msg = b"actorflow/%d %s|%s|%s" % (
        PROTOCOL_VERSION,
        role,
        server_nonce.encode(),
        client_nonce.encode(),
    )
    return hmac.new(token, msg, hashlib.sha256).hexdigest()


def _same_digest(expected: str, got: Any) -> bool:
    return isinstance(got, str) and got.isascii() and hmac.compare_digest(expected, got)


def _is_nonce(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 2 * _NONCE_BYTES:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _max_frame(value: Any) -> int | None:
    if type(value) is int and 64 * 1024 <= value <= 2**40:
        return value
    return None


async def _read_json(carrier: Carrier) -> dict[str, Any]:
    data = await carrier.receive()
    if isinstance(data, bytes):
        raise ProtocolError("expected a handshake message, got binary data")
    if len(data) > MAX_HANDSHAKE_MESSAGE:
        raise ProtocolError(f"handshake message of {len(data)} characters is too long")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolError("handshake message is not JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("handshake message is not a JSON object")
    return obj


def _hello_bytes(hello: dict[str, Any]) -> None:
    if len(orjson.dumps(hello)) > MAX_HANDSHAKE_MESSAGE // 2:
        raise ValueError("hello is too large for the handshake")


async def accept_handshake(
    carrier: Carrier, config: TransportConfig, hello: dict[str, Any]
) -> PeerHello:
    """The listening side. Raises :class:`HandshakeRefused` after telling the peer why and
    closing the carrier; :class:`PeerUnreachableError` if the peer went away. The caller
    bounds the time."""
    token = config.token_bytes()
    if token is None:
        raise ValueError("a listener needs a cluster token")
    nonce = secrets.token_hex(_NONCE_BYTES)
    challenge = {"t": "challenge", "proto": "actorflow", "v": PROTOCOL_VERSION, "nonce": nonce}
    await carrier.send_text(orjson.dumps(challenge).decode())
    try:
        msg = await _read_json(carrier)
    except ProtocolError as exc:
        raise await _refuse(carrier, "protocol", str(exc)) from None
    if msg.get("v") != PROTOCOL_VERSION:
        text = (
            f"peer speaks protocol version {msg.get('v')!r}; this process speaks {PROTOCOL_VERSION}"
        )
        raise await _refuse(carrier, "version", text)
    if msg.get("t") != "auth" or not _is_nonce(msg.get("nonce")):
        raise await _refuse(carrier, "protocol", "malformed auth message")
    mac = msg.get("mac")
    if not mac:
        raise await _refuse(carrier, "auth", "no cluster token given")
    if not _same_digest(_mac(token, b"client", nonce, msg["nonce"]), mac):
        raise await _refuse(carrier, "auth", "wrong cluster token")
    peer_hello = msg.get("hello")
    peer_max = _max_frame(msg.get("max_frame"))
    if not isinstance(peer_hello, dict) or peer_max is None:
        raise await _refuse(carrier, "protocol", "malformed auth message")
    welcome = {
        "t": "welcome",
        "v": PROTOCOL_VERSION,
        "mac": _mac(token, b"server", nonce, msg["nonce"]),
        "max_frame": config.max_frame_size,
        "hello": hello,
    }
    await carrier.send_text(orjson.dumps(welcome).decode())
    return PeerHello(peer_hello, peer_max)


async def _refuse(carrier: Carrier, reason: str, text: str) -> HandshakeRefused:
    refusal = {"t": "refused", "v": PROTOCOL_VERSION, "reason": reason, "text": text}
    try:
        await carrier.send_text(orjson.dumps(refusal).decode())
    except PeerUnreachableError:
        pass
    code = CLOSE_POLICY if reason == "auth" else CLOSE_PROTOCOL_ERROR
    await carrier.close(code, reason)
    return HandshakeRefused(reason, text)


async def dial_handshake(
    carrier: Carrier, config: TransportConfig, hello: dict[str, Any]
) -> PeerHello:
    """The dialing side. Raises :class:`AuthenticationError`, :class:`ProtocolError` or
    :class:`PeerUnreachableError`; the caller closes the carrier on failure and bounds the
    time."""
    _hello_bytes(hello)
    where = carrier.peer
    msg = await _read_json(carrier)
    if msg.get("t") != "challenge" or msg.get("proto") != "actorflow":
        raise ProtocolError(f"{where} is not an actorflow listener")
    if msg.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"{where} speaks actorflow protocol version {msg.get('v')!r}; this process "
            f"speaks {PROTOCOL_VERSION}. Run the same actorflow version on every node."
        )
    server_nonce = msg.get("nonce")
    if not isinstance(server_nonce, str) or not _is_nonce(server_nonce):
        raise ProtocolError(f"{where} sent a malformed challenge")
    token = config.token_bytes()
    nonce = secrets.token_hex(_NONCE_BYTES)
    auth = {
        "t": "auth",
        "v": PROTOCOL_VERSION,
        "nonce": nonce,
        "mac": "" if token is None else _mac(token, b"client", server_nonce, nonce),
        "max_frame": config.max_frame_size,
        "hello": hello,
    }
    await carrier.send_text(orjson.dumps(auth).decode())
    try:
        reply = await _read_json(carrier)
    except PeerUnreachableError as exc:
        raise PeerUnreachableError(f"{where} closed the connection during the handshake") from exc
    kind = reply.get("t")
    if kind == "refused":
        reason, text = reply.get("reason"), str(reply.get("text", ""))[:200]
        if reason == "auth":
            if token is None:
                raise AuthenticationError(
                    f"{where} requires the cluster token and none was given: set "
                    "ACTORFLOW_TOKEN or pass token=..."
                )
            raise AuthenticationError(
                f"{where} refused the cluster token ({text}). Use the token the cluster was "
                "started with (ACTORFLOW_TOKEN, or the head's token file)."
            )
        raise ProtocolError(f"{where} refused the connection: {text}")
    if kind != "welcome" or reply.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"{where} sent a malformed handshake reply")
    if token is None or not _same_digest(
        _mac(token, b"server", server_nonce, nonce), reply.get("mac")
    ):
        raise AuthenticationError(
            f"{where} does not know the cluster token; refusing to talk to it"
        )
    peer_hello = reply.get("hello")
    peer_max = _max_frame(reply.get("max_frame"))
    if not isinstance(peer_hello, dict) or peer_max is None:
        raise ProtocolError(f"{where} sent a malformed handshake reply")
    return PeerHello(peer_hello, peer_max)
