"""Transport settings: one frozen, validated record per listener or dialer."""

from __future__ import annotations

import ssl

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["TransportConfig"]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


class TransportConfig(BaseModel):
    """How links are made, authenticated and kept alive.

    Sizes are bytes, times are seconds. No limit is unlimited: every field that bounds memory or
    time has a finite default and must stay finite.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    token: SecretStr | None = Field(
        default=None,
        description="The cluster token. A listener refuses to start without one; a dialer "
        "without one is refused by every listener (AuthenticationError).",
    )
    host: str = Field(default="127.0.0.1", description="TCP address a listener binds to.")
    port: int = Field(default=0, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    unix_path: str | None = Field(
        default="auto",
        description="Also listen on this unix socket: peers on the same host dial it, which "
        "is faster than loopback TCP. 'auto': a per-user path named after the TCP port, when "
        "the listener binds a loopback address. None: TCP only.",
    )
    server_ssl: ssl.SSLContext | None = Field(
        default=None, description="TLS for the listener's TCP socket (wss://). None: plain."
    )
    client_ssl: ssl.SSLContext | None = Field(
        default=None, description="TLS context used when dialing wss:// addresses."
    )
    handshake_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="A connection must finish HTTP upgrade and "
        "authentication within this time, or it is closed.",
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Dialing gives up after.")
    peer_timeout_s: float = Field(
        default=3.0,
        gt=0,
        description="A silent peer is declared lost after this long: an "
        "idle link is pinged after 2/3 of it and must answer within the last third.",
    )
    close_timeout_s: float = Field(
        default=2.0, gt=0, description="aclose() flushes queued messages for at most this long."
    )
    max_frame_size: int = Field(
        default=8 * MIB,
        ge=64 * KIB,
        description="Largest websocket message accepted. "
        "Bigger messages never travel in one frame: they are streamed in chunks.",
    )
    max_message_size: int = Field(
        default=2 * GIB,
        ge=64 * KIB,
        description="Largest single message (payload plus "
        "out-of-band buffers) accepted from a peer.",
    )
    max_connections_per_peer: int = Field(
        default=256,
        ge=1,
        description="Open connections one remote host (loopback counts as one host) may hold "
        "on a listener. Unix-socket peers are not counted: the socket admits only this user.",
    )
    batch_bytes: int = Field(
        default=256 * KIB,
        ge=4 * KIB,
        description="A batch frame is sealed once its body "
        "reaches this size; later messages go in the next frame.",
    )
    stream_threshold: int = Field(
        default=256 * KIB,
        ge=1 * KIB,
        description="Messages at least this large are streamed "
        "in chunks beside the batch frames, so they never hold up small messages.",
    )
    chunk_size: int = Field(default=1 * MIB, ge=4 * KIB, description="Size of one streamed chunk.")
    high_water_bytes: int = Field(
        default=4 * MIB,
        ge=64 * KIB,
        description="drain() waits while more than this is queued on a link.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TransportConfig:
        if self.chunk_size + 64 * KIB > self.max_frame_size:
            raise ValueError(
                f"chunk_size ({self.chunk_size}) must leave 64 KiB of room under "
                f"max_frame_size ({self.max_frame_size})"
            )
        if self.batch_bytes + 64 * KIB > self.max_frame_size:
            raise ValueError(
                f"batch_bytes ({self.batch_bytes}) must leave 64 KiB of room under "
                f"max_frame_size ({self.max_frame_size})"
            )
        return self

    def token_bytes(self) -> bytes | None:
        """The token as bytes for the HMAC, or None."""
        if self.token is None:
            return None
        return self.token.get_secret_value().encode()
