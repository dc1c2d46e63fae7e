"""OwnedTasks: the one helper for background coroutines (no task is started and forgotten)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from actorflow.runtime import OwnedTasks

log = logging.getLogger("test.owned")


async def test_close_cancels_what_runs_and_awaits_it() -> None:
    tasks = OwnedTasks("tester", log)
    ended: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append("forever")

    tasks.spawn(forever(), "forever")
    await asyncio.sleep(0)
    assert len(tasks) == 1
    await asyncio.wait_for(tasks.close(), 5.0)
    assert ended == ["forever"] and len(tasks) == 0


async def test_close_without_cancel_lets_work_finish() -> None:
    tasks = OwnedTasks("tester", log)
    done = []

    async def short() -> None:
        await asyncio.sleep(0.05)
        done.append(1)

    tasks.spawn(short())
    await asyncio.wait_for(tasks.close(cancel=False), 5.0)
    assert done == [1]


async def test_a_failure_is_logged_with_its_owner(caplog: pytest.LogCaptureFixture) -> None:
    tasks = OwnedTasks("the tester", log)

    async def fails() -> None:
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, logger="test.owned"):
        task = tasks.spawn(fails(), "failing")
        assert task is not None
        await asyncio.wait([task])
    assert any("the tester" in r.getMessage() and r.exc_info for r in caplog.records)
    await tasks.close()


async def test_nothing_starts_once_closing() -> None:
    tasks = OwnedTasks("tester", log)
    await tasks.close()
    ran = []

    async def never() -> None:
        ran.append(1)

    assert tasks.spawn(never()) is None
    await asyncio.sleep(0)
    assert ran == []
