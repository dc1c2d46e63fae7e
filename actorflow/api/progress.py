"""Progress bars (tqdm): ``af.get(refs, progress=True)`` (``af.wait`` too) and ``actorflow
run --progress``.

Off unless asked: ``af.get`` without ``progress`` never imports tqdm, and a task's submission
costs two integer increments (the submitter's ``submitted`` and ``settled`` counts, which
``actorflow run --progress`` reads).

- :func:`get_bar`: a bar over the refs of one ``af.get``, advanced by the object table's
  callbacks as each value arrives (on the loop thread; no polling).
- :class:`RunBar`: a bar of the driver's tasks, settled over submitted, refreshed by a loop
  timer every :data:`REFRESH_S` second while the app's ``main`` runs.

``progress`` is ``True`` (a bar on stderr), a string (the bar's description) or a mapping of
tqdm's keyword arguments (``{"file": stream, "desc": "loading", "mininterval": 0}``...).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from actorflow.cluster.core import Core
    from actorflow.objects.ref import ObjectRef

__all__ = ["REFRESH_S", "Progress", "RunBar", "get_bar", "make_bar", "with_run_bar"]

T = TypeVar("T")

#: What ``progress=`` takes.
Progress = bool | str | Mapping[str, Any]
#: Seconds between two refreshes of ``actorflow run --progress``'s bar.
REFRESH_S = 0.2


def make_bar(progress: Progress, total: int, unit: str) -> Any:
    """A tqdm bar of ``total`` ``unit``s, as ``progress`` asks (see the module docstring)."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    kwargs: dict[str, Any] = {"total": total, "unit": unit, "dynamic_ncols": True}
    if isinstance(progress, str):
        kwargs["desc"] = progress
    elif isinstance(progress, Mapping):
        kwargs.update(progress)
    return tqdm(**kwargs)


def get_bar(core: Core, refs: Sequence[ObjectRef], progress: Progress,
            total: int | None = None) -> Any:
    """A bar that advances as each of ``refs`` becomes ready (a failure counts: it is
    settled), up to ``total`` (default: all of them). Close it when the wait is over."""
    bar = make_bar(progress, len(refs) if total is None else total, "obj")

    def arrived(_payload: Any) -> None:
        if bar.n < bar.total:
            bar.update(1)

    for ref in refs:
        core.reads.when_ready(ref, arrived)
    return bar


class RunBar:
    """The driver's tasks, settled over submitted (see the module docstring)."""

    def __init__(self, core: Core, progress: Progress = True) -> None:
        self.core = core
        self.bar = make_bar(progress, 0, "task")
        self._timer: asyncio.TimerHandle | None = None
        self._refresh()

    def _figures(self) -> tuple[int, int]:
        submitter = self.core.submitter
        return submitter.submitted, submitter.settled

    def _refresh(self) -> None:
        submitted, settled = self._figures()
        bar = self.bar
        if bar.total != submitted or bar.n != settled:
            bar.total = submitted
            bar.n = min(settled, submitted)
            bar.refresh()
        self._timer = asyncio.get_running_loop().call_later(REFRESH_S, self._refresh)

    def close(self) -> None:
        """Show the last figures and close the bar."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        submitted, settled = self._figures()
        self.bar.total = submitted
        self.bar.n = min(settled, submitted)
        self.bar.close()


def with_run_bar(main: Callable[..., Awaitable[T]],
                 progress: Progress = True) -> Callable[..., Awaitable[T]]:
    """``main`` with a :class:`RunBar` shown while it runs (what ``actorflow run
    --progress`` runs)."""
    from actorflow.objects.ref import current_core

    @functools.wraps(main)
    async def wrapped(*args: Any) -> T:
        bar = RunBar(current_core(), progress)
        try:
            return await main(*args)
        finally:
            bar.close()

    return wrapped
