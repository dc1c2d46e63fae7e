"""Transport settings: one frozen, validated record per listener or dialer.

:class:`TransportConfig` is a frozen slotted dataclass; each field's metadata holds its
description and its bounds (``ge``/``gt``/``le``). The rules are pydantic's, but pydantic is
imported only when a value needs more than a check (as in :mod:`actorflow.api.options`):
values of exactly the right type and in range (the defaults, and what programs pass) are
checked here, and give the very record pydantic would give; anything else (a value pydantic
would convert, like ``port="80"``, an unknown field, or a wrong value, for its message) goes
through a pydantic model built from the same fields, which raises the same
``pydantic.ValidationError`` as ever. So a worker process, which builds the default record,
never imports pydantic.
"""

from __future__ import annotations

import functools
import ssl
import typing
from dataclasses import Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["TransportConfig"]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


class SecretStr:
    """A string kept out of reprs and logs; ``get_secret_value()`` reads it (it behaves as
    pydantic's ``SecretStr``, which this module does not import)."""

    __slots__ = ("_secret_value",)

    def __init__(self, secret_value: str) -> None:
        self._secret_value = secret_value

    def get_secret_value(self) -> str:
        return self._secret_value

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SecretStr)
                and self._secret_value == other._secret_value)

    def __hash__(self) -> int:
        return hash(self._secret_value)

    def __len__(self) -> int:
        return len(self._secret_value)

    def __str__(self) -> str:
        return "**********" if self._secret_value else ""

    def __repr__(self) -> str:
        return f"SecretStr('{self}')"


def _about(description: str, **bounds: int) -> dict[str, Any]:
    """A field's metadata: its description, and its bounds (``ge``, ``gt``, ``le``)."""
    return {"description": description, **bounds}


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportConfig:
    """How links are made, authenticated and kept alive.

    Sizes are bytes, times are seconds. No limit is unlimited: every field that bounds memory or
    time has a finite default and must stay finite.

    Fields are given by keyword. A token may be given as a ``str``. A bad value raises
    ``pydantic.ValidationError`` (a ``ValueError``) naming the field.
    """

    token: SecretStr | None = field(default=None, metadata=_about(
        "The cluster token. A listener refuses to start without one; a dialer "
        "without one is refused by every listener (AuthenticationError)."))
    host: str = field(default="127.0.0.1", metadata=_about("TCP address a listener binds to."))
    port: int = field(default=0, metadata=_about(
        "TCP port; 0 picks a free one.", ge=0, le=65535))
    unix_path: str | None = field(default="auto", metadata=_about(
        "Also listen on this unix socket: peers on the same host dial it, which "
        "is faster than loopback TCP. 'auto': a per-user path named after the TCP port, when "
        "the listener binds a loopback address. None: TCP only."))
    server_ssl: ssl.SSLContext | None = field(default=None, metadata=_about(
        "TLS for the listener's TCP socket (wss://). None: plain."))
    client_ssl: ssl.SSLContext | None = field(default=None, metadata=_about(
        "TLS context used when dialing wss:// addresses."))
    handshake_timeout_s: float = field(default=5.0, metadata=_about(
        "A connection must finish HTTP upgrade and "
        "authentication within this time, or it is closed.", gt=0))
    connect_timeout_s: float = field(default=5.0, metadata=_about(
        "Dialing gives up after.", gt=0))
    peer_timeout_s: float = field(default=10.0, metadata=_about(
        "A peer whose machine stays silent this long (a partition, a frozen machine) is "
        "declared lost, by TCP keepalive; a peer whose process dies is lost at once, and one "
        "whose event loop is busy never. Also how long an unreachable peer is dialed again.",
        gt=0))
    close_timeout_s: float = field(default=2.0, metadata=_about(
        "aclose() flushes queued messages for at most this long.", gt=0))
    max_frame_size: int = field(default=8 * MIB, metadata=_about(
        "Largest websocket message accepted. "
        "Bigger messages never travel in one frame: they are streamed in chunks.", ge=64 * KIB))
    max_message_size: int = field(default=2 * GIB, metadata=_about(
        "Largest single message (payload plus "
        "out-of-band buffers) accepted from a peer.", ge=64 * KIB))
    max_connections_per_peer: int = field(default=256, metadata=_about(
        "Open connections one remote host (loopback counts as one host) may hold "
        "on a listener. Unix-socket peers are not counted: the socket admits only this user.",
        ge=1))
    batch_bytes: int = field(default=256 * KIB, metadata=_about(
        "A batch frame is sealed once its body "
        "reaches this size; later messages go in the next frame.", ge=4 * KIB))
    stream_threshold: int = field(default=256 * KIB, metadata=_about(
        "Messages at least this large are streamed "
        "in chunks beside the batch frames, so they never hold up small messages.", ge=1 * KIB))
    chunk_size: int = field(default=1 * MIB, metadata=_about(
        "Size of one streamed chunk.", ge=4 * KIB))
    high_water_bytes: int = field(default=4 * MIB, metadata=_about(
        "drain() waits while more than this is queued on a link.", ge=64 * KIB))

    if not TYPE_CHECKING:  # (type checkers see the dataclass's keyword-only __init__)

        def __init__(self, **values):  # a dataclass keeps an __init__ its class defines
            try:
                checked = _quick(values)
            except _Slow:
                checked = _slow(values)
            for name, value in checked.items():
                object.__setattr__(self, name, value)

    def token_bytes(self) -> bytes | None:
        """The token as bytes for the HMAC, or None."""
        if self.token is None:
            return None
        return self.token.get_secret_value().encode()


_FIELDS: dict[str, Field[Any]] = {f.name: f for f in fields(TransportConfig)}


def _room_problem(chunk_size: int, batch_bytes: int, max_frame_size: int) -> str | None:
    """What is wrong with these sizes taken together (None: nothing)."""
    for name, size in (("chunk_size", chunk_size), ("batch_bytes", batch_bytes)):
        if size + 64 * KIB > max_frame_size:
            return (f"{name} ({size}) must leave 64 KiB of room under "
                    f"max_frame_size ({max_frame_size})")
    return None


# -- the quick check: exact types and ranges -------------------------------------------------

class _Slow(Exception):
    """This value needs pydantic (to be converted, or for its error message)."""


#: The exact types each annotation takes without conversion (an int is a float's value).
_EXACT: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "str | None": (str, type(None)),
    "int": (int,),
    "float": (float, int),
    "ssl.SSLContext | None": (ssl.SSLContext, type(None)),
}


def _quick(values: dict[str, Any]) -> dict[str, Any]:
    """Every field's value, from ``values`` or its default, when each has exactly the right
    type and is in range; else _Slow."""
    if not values.keys() <= _FIELDS.keys():
        raise _Slow
    out: dict[str, Any] = {}
    for name, f in _FIELDS.items():
        value = values.get(name, f.default)
        if name == "token":
            if type(value) is str:
                value = SecretStr(value)
            elif value is not None and type(value) is not SecretStr:
                raise _Slow
        else:
            if type(value) not in _EXACT[f.type]:  # type: ignore[index]  # (a str here)
                raise _Slow
            if f.type == "float":
                value = float(value)
            bounds = f.metadata
            if (("ge" in bounds and not value >= bounds["ge"])
                    or ("gt" in bounds and not value > bounds["gt"])
                    or ("le" in bounds and not value <= bounds["le"])):
                raise _Slow
        out[name] = value
    if _room_problem(out["chunk_size"], out["batch_bytes"], out["max_frame_size"]):
        raise _Slow
    return out


# -- the rules, as a pydantic model (imported on first need) ---------------------------------

@functools.cache
def _rules() -> type[BaseModel]:
    from pydantic import ConfigDict, create_model, model_validator
    from pydantic import Field as PydanticField
    from pydantic import SecretStr as PydanticSecretStr

    hints = typing.get_type_hints(TransportConfig, localns={"SecretStr": PydanticSecretStr})

    def consistent(model: Any) -> Any:
        problem = _room_problem(model.chunk_size, model.batch_bytes, model.max_frame_size)
        if problem is not None:
            raise ValueError(problem)
        return model

    return create_model(  # type: ignore[call-overload, no-any-return]
        "TransportConfig",
        __config__=ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True),
        __validators__={"_consistent": model_validator(mode="after")(consistent)},
        **{name: (hints[name], PydanticField(default=f.default, **f.metadata))
           for name, f in _FIELDS.items()},
    )


def _slow(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked (and converted) by pydantic: pydantic.ValidationError if bad."""
    token = values.get("token")
    if isinstance(token, SecretStr):  # (pydantic knows its own SecretStr, not this one)
        values = {**values, "token": token.get_secret_value()}
    checked = _rules()(**values)
    out = {name: getattr(checked, name) for name in _FIELDS}
    if out["token"] is not None:
        out["token"] = SecretStr(out["token"].get_secret_value())
    return out
