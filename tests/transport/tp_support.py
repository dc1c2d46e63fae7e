"""Helpers of the transport tests: peer processes, bounded waits, config shortcuts.

Every wait is bounded (``within``); order comes from events and replies, never from sleeps.
Every process a test starts is ended by the test (its stdin closed, then killed if needed).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from netns_support import NetNs, netns, netns_unavailable  # noqa: F401  (re-exported)

from actorflow.transport import Link, TransportConfig, WebSocketTransport

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TOKEN = "test-token-0123456789abcdef"
#: The bound on every wait expected to succeed; only a bug makes one run out.
WAIT = 10.0


async def within(aw: Awaitable[T], timeout: float = WAIT) -> T:
    return await asyncio.wait_for(aw, timeout)


def config(**options: Any) -> TransportConfig:
    options.setdefault("token", TOKEN)
    return TransportConfig(**options)


class PeerProcess:
    """A ``tp_peer.py`` child process. Its stderr is collected in the background (a reader
    thread owned by this object), so the tests can read what it logged."""

    def __init__(self, mode: str, *, prefix: Sequence[str] = (), **options: Any) -> None:
        """``prefix`` runs it under another command (``ip netns exec NAME``)."""
        env = dict(os.environ, AF_TEST_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, str(HERE / "tp_peer.py"), mode, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._stderr: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.close()
            raise RuntimeError(f"tp_peer {mode} did not start:\n{self.stderr()}")
        self.info: dict[str, Any] = json.loads(line)
        self.pid: int = self.info["pid"]

    @property
    def address(self) -> str:
        address = self.info["address"]
        return address[0] if isinstance(address, list) else address

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def stderr(self) -> str:
        return "".join(self._stderr)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def close(self) -> None:
        """Ask it to stop (stdin closed); kill it if it has not after 10 s."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


async def echo_round_trip(link: Link, value: Any) -> Any:
    """Send ``value`` as kind 2 to a ``listener`` peer and return what it echoes."""
    link.send(2, "t", value, "", 7)
    batch = await within(link.receive())
    [(kind, _target, _sender, cid, echoed)] = list(batch)
    assert (kind, cid) == (3, 7)
    return echoed


async def assert_served(address: str, **options: Any) -> None:
    """A good client still gets served at ``address``."""
    link = await within(WebSocketTransport().connect(address, config(**options), hello={}))
    try:
        assert await echo_round_trip(link, "still serving") == "still serving"
    finally:
        await link.aclose()


class Pair:
    """A listener and one link dialed to it, with the accepted end (see conftest's
    ``make_pair``). Here, not in conftest, so test modules import it by a unique name."""

    def __init__(self, listener: Any, client: Any, server: Any) -> None:
        self.listener = listener
        self.client = client
        self.server = server


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` and its key, written into ``tmp``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def tls_contexts(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(a listener's context serving a fresh self-signed certificate, a dialer's context that
    trusts it)."""
    cert, key = self_signed(tmp)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    return server_ctx, ssl.create_default_context(cafile=str(cert))
