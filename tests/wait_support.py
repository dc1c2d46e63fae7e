"""Bounded polling for the tests: :func:`until`, for state that another process changes (a file
it writes, a process it ends, what a cluster reports) where there is no event to await."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

__all__ = ["WAIT", "until"]

#: The bound on a wait expected to succeed.
WAIT = 30.0


async def until(check: Callable[[], Any], timeout: float = WAIT, what: str = "condition", *,
                every: float = 0.05) -> Any:
    """Wait until ``check()`` (a plain or an async function) returns something truthy, and
    return it; polled every ``every`` seconds. After ``timeout`` seconds, AssertionError naming
    ``what`` and the last answer. An async check is itself bounded by what is left of it."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await asyncio.wait_for(got, max(1.0, deadline - time.monotonic()))
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} "
                                 f"(last: {got!r})")
        await asyncio.sleep(every)
