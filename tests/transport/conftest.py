"""Fixtures of the transport tests: each transport implementation, and linked pairs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from tp_support import Pair, config, within

from actorflow.transport import MemoryTransport, Transport, WebSocketTransport

TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "memory": MemoryTransport,
    "websocket": WebSocketTransport,
}


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> Transport:
    factory: Callable[[], Transport] = TRANSPORTS[request.param]
    return factory()


@pytest.fixture
async def make_pair(transport: Transport) -> AsyncIterator[Callable[..., Any]]:
    """``await make_pair(**config_options)``: a fresh linked pair; all closed at teardown."""
    opened: list[Any] = []
    before = asyncio.all_tasks()

    async def make(server_options: dict[str, Any] | None = None, **options: Any) -> Pair:
        listener = await transport.listen(
            config(**(server_options or options)), hello={"side": "server"}
        )
        opened.append(listener)
        client = await within(
            transport.connect(listener.addresses[0], config(**options), hello={"side": "client"})
        )
        opened.append(client)
        server = await within(listener.accept())
        opened.append(server)
        return Pair(listener, client, server)

    yield make
    for thing in reversed(opened):
        await within(thing.aclose())
    left = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()}
    if left:
        await within(asyncio.wait(left, timeout=5))
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    left.discard(asyncio.current_task())  # type: ignore[arg-type]
    assert not left, f"tasks left behind: {left}"
