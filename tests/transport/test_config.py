"""TransportConfig: a frozen record whose common values are checked without pydantic, and whose
other values get pydantic's conversions and pydantic's errors, as when it was a pydantic model."""

from __future__ import annotations

import dataclasses
import ssl
import subprocess
import sys
import textwrap
from typing import Any

import pydantic
import pytest

from actorflow.transport import TransportConfig
from actorflow.transport import config as config_mod
from actorflow.transport.config import KIB, MIB, SecretStr

#: Values of exactly the right types, in range: the quick check takes them.
GOOD: list[dict[str, Any]] = [
    {},
    {"token": "abc"},
    {"token": SecretStr("abc"), "port": 6380, "host": "0.0.0.0", "unix_path": None},
    {"handshake_timeout_s": 1, "connect_timeout_s": 0.5, "peer_timeout_s": float("inf")},
    {"max_frame_size": 64 * MIB, "chunk_size": 32 * MIB, "batch_bytes": 1 * MIB},
    {"max_frame_size": 128 * KIB, "chunk_size": 64 * KIB, "batch_bytes": 64 * KIB},
    {"max_connections_per_peer": 1, "stream_threshold": 1 * KIB, "high_water_bytes": 2**40},
    {"server_ssl": ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
     "client_ssl": ssl.create_default_context()},
]


@pytest.mark.parametrize("values", GOOD, ids=range(len(GOOD)))
def test_the_quick_check_gives_what_pydantic_gives(values: dict[str, Any]) -> None:
    quick = config_mod._quick(dict(values))
    assert quick == config_mod._slow(dict(values))
    assert TransportConfig(**values) == TransportConfig(**quick)
    for name in ("handshake_timeout_s", "connect_timeout_s", "peer_timeout_s",
                 "close_timeout_s"):
        assert type(quick[name]) is float


def test_common_values_do_not_import_pydantic() -> None:
    code = textwrap.dedent("""
        import dataclasses, sys
        from actorflow.transport.config import SecretStr, TransportConfig
        import actorflow.transport.remote
        c = TransportConfig(token="t", host="0.0.0.0", port=6380, unix_path=None,
                            peer_timeout_s=1, max_frame_size=16 * 1024 * 1024)
        c = dataclasses.replace(c, token=SecretStr("u"))
        assert c.token_bytes() == b"u" and c.peer_timeout_s == 1.0
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(("values", "field", "message"), [
    ({"port": -1}, "port", "greater than or equal to 0"),
    ({"port": 70000}, "port", "less than or equal to 65535"),
    ({"port": 8.5}, "port", "valid integer"),
    ({"host": None}, "host", "valid string"),
    ({"unix_path": 3}, "unix_path", "valid string"),
    ({"token": 5}, "token", "valid string"),
    ({"server_ssl": 1}, "server_ssl", "instance of SSLContext"),
    ({"handshake_timeout_s": 0}, "handshake_timeout_s", "greater than 0"),
    ({"peer_timeout_s": float("nan")}, "peer_timeout_s", "greater than 0"),
    ({"max_frame_size": 1}, "max_frame_size", "greater than or equal to 65536"),
    ({"chunk_size": 1024}, "chunk_size", "greater than or equal to 4096"),
    ({"max_connections_per_peer": 0}, "max_connections_per_peer",
     "greater than or equal to 1"),
    ({"prot": 1}, "prot", "Extra inputs are not permitted"),
])
def test_bad_values_raise_pydantics_error(values: dict[str, Any], field: str,
                                          message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        TransportConfig(**values)
    assert info.value.title == "TransportConfig"
    [error] = info.value.errors()
    assert error["loc"] == (field,)
    assert message in error["msg"]


@pytest.mark.parametrize("name", ["chunk_size", "batch_bytes"])
def test_sizes_must_leave_room_under_the_frame(name: str) -> None:
    with pytest.raises(pydantic.ValidationError,
                       match=rf"{name} \(8388608\) must leave 64 KiB of room under "
                             r"max_frame_size \(8388608\)"):
        TransportConfig(**{name: 8 * MIB})
    with pytest.raises(ValueError, match="64 KiB of room"):  # (a ValidationError is one)
        TransportConfig(max_frame_size=1 * MIB)


def test_values_pydantic_converts_are_converted() -> None:
    config = TransportConfig(port="80", handshake_timeout_s="2",  # type: ignore[arg-type]
                             token=pydantic.SecretStr("p"))  # type: ignore[arg-type]
    assert config.port == 80
    assert config.handshake_timeout_s == 2.0
    assert isinstance(config.token, SecretStr)
    assert config.token_bytes() == b"p"
    assert TransportConfig(token=SecretStr("q"), port="81").token_bytes() == b"q"  # type: ignore[arg-type]


def test_the_token_is_masked_and_compared_by_value() -> None:
    config = TransportConfig(token="very-secret")
    assert "very-secret" not in repr(config)
    assert "SecretStr('**********')" in repr(config)
    assert str(config.token) == "**********"
    assert config.token_bytes() == b"very-secret"
    assert config == TransportConfig(token=SecretStr("very-secret"))
    assert hash(config) == hash(TransportConfig(token="very-secret"))
    assert config != TransportConfig(token="other")
    assert TransportConfig().token_bytes() is None


def test_the_record_is_frozen_and_replace_checks_again() -> None:
    config = TransportConfig()
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]
    assert dataclasses.replace(config, port=6380).port == 6380
    with pytest.raises(pydantic.ValidationError, match="port"):
        dataclasses.replace(config, port=-1)
    with pytest.raises(TypeError):
        TransportConfig("positional")  # type: ignore[misc]


def test_the_rules_mirror_the_fields() -> None:
    rules = config_mod._rules().model_fields
    fields = dataclasses.fields(TransportConfig)
    assert list(rules) == [f.name for f in fields]
    for f in fields:
        assert f.metadata["description"], f.name
        assert rules[f.name].description == f.metadata["description"]
        assert rules[f.name].default == f.default
        assert f.name == "token" or f.type in config_mod._EXACT, f.name  # (quick-checked)
