"""One way to run a process's main coroutine: on a fresh uvloop event loop when uvloop is
installed (it is a dependency wherever it builds), else on asyncio's own.

Every long-lived actorflow process goes through :func:`run_main`: the driver's ``af.run``, the
``actorflow start`` node and head processes, and the workers (the fork server's children too),
so that they all take the loop the design names (``DESIGN.md``: one ActorSystem on one event
loop, uvloop when installed)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["run_main"]


def run_main(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on uvloop when installed; returns what ``main`` returned."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
        return asyncio.run(main)
    if sys.version_info >= (3, 12):  # pragma: no cover
        return asyncio.run(main, loop_factory=uvloop.new_event_loop)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
