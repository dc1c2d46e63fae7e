"""Fixtures for the supervision tests: a fresh ActorSystem and Journal per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sup_support import Journal

from actorflow.runtime import ActorSystem


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    before = asyncio.all_tasks()
    sys_ = ActorSystem("sup-test", stop_timeout_s=2.0, restart_wait_s=5.0)
    yield sys_
    await asyncio.wait_for(sys_.shutdown(), 15)
    left = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not left, f"tasks left after shutdown: {left}"


@pytest.fixture
def journal() -> Journal:
    return Journal()
