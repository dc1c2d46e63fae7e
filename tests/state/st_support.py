"""Helpers of the state API tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: The longest any wait in these tests lasts.
WAIT = 30.0


async def until(check: Callable[[], Awaitable[T | None]], what: str,
                timeout: float = WAIT) -> T:
    """Poll ``check`` until it returns something other than None (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
