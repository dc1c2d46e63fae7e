"""Where a driver prints its workers' output: the :class:`LogSink` actor of the driver's
process, which the nodes send the lines of the job's tasks and actors to (:class:`LogBatch`).

Each line is printed to the driver's stdout or stderr (as the worker wrote it) with the prefix
``(name pid=N)``, and ``node=ID`` added when the worker runs on another node than the one the
driver joined through: ``(name pid=N node=ID)``.

Repeated lines are folded as Ray folds them (:class:`LineFolder`): a line is printed the first
time; while the same line (words holding digits ignored) comes from *other* processes within
:data:`FOLD_WINDOW_S`, those copies are counted, not printed, and one line
``... [repeated 5x across cluster]`` says how many there were once the window has passed.
Lines from one process are never folded with each other. ``ACTORFLOW_DEDUP_LOGS=0`` prints
every line.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from actorflow.runtime import Actor

__all__ = ["FOLD_WINDOW_S", "LineFolder", "LogBatch", "LogSink", "format_prefix"]

#: How long copies of a line from other processes are counted before one line reports them.
FOLD_WINDOW_S = 5.0


@dataclass(frozen=True, slots=True)
class LogBatch:
    """Tell (node -> driver): lines of the driver's job, each ``(stderr, name, pid, text)``."""

    node_id: str
    lines: tuple[tuple[bool, str, int, str], ...]


def format_prefix(name: str, pid: int, node_id: str | None) -> str:
    """``(name pid=N)``, or ``(name pid=N node=ID)`` when ``node_id`` is given."""
    if node_id:
        return f"({name} pid={pid} node={node_id})"
    return f"({name} pid={pid})"


def _key(text: str) -> str:
    """The line with its words that hold a digit left out (ids, counters, timings)."""
    return " ".join(w for w in text.split() if not any(c.isdigit() for c in w))


@dataclass(slots=True)
class _Seen:
    since: float
    prefix: str
    text: str
    stderr: bool
    sources: set[tuple[str, int]] = field(default_factory=set)
    count: int = 0


class LineFolder:
    """Ray's folding of repeated lines (see the module docstring), as pure data: feed it with
    :meth:`add`, ask it what is due with :meth:`flush`. ``clock``: seconds (monotonic)."""

    def __init__(self, window_s: float = FOLD_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, enabled: bool = True) -> None:
        self.window_s = window_s
        self.clock = clock
        self.enabled = enabled
        self._seen: dict[tuple[bool, str], _Seen] = {}

    def add(self, stderr: bool, prefix: str, text: str, source: tuple[str, int]
            ) -> str | None:
        """The line to print now (``prefix text``), or None when it is folded."""
        line = f"{prefix} {text}"
        key = _key(text)
        if not self.enabled or not key:
            return line
        seen = self._seen.get((stderr, key))
        if seen is None:
            self._seen[(stderr, key)] = _Seen(self.clock(), prefix, text, stderr, {source})
            return line
        if source in seen.sources and len(seen.sources) == 1:
            return line  # one process repeating itself: never folded
        seen.sources.add(source)
        seen.count += 1
        seen.prefix, seen.text = prefix, text
        return None

    def flush(self, everything: bool = False) -> list[tuple[bool, str]]:
        """``(stderr, line)`` for each line whose window has passed with copies folded."""
        now = self.clock()
        out = []
        for key, seen in list(self._seen.items()):
            if everything or now - seen.since >= self.window_s:
                del self._seen[key]
                if seen.count:
                    out.append((seen.stderr, f"{seen.prefix} {seen.text} "
                                             f"[repeated {seen.count}x across cluster]"))
        return out

    def next_due(self) -> float | None:
        """Seconds until the earliest window with folded copies passes (None: none)."""
        due = [s.since + self.window_s for s in self._seen.values() if s.count]
        return max(0.0, min(due) - self.clock()) if due else None

    def __len__(self) -> int:
        return len(self._seen)


class _Flush:
    pass


class LogSink(Actor):
    """Prints the job's workers' lines in the driver (see the module docstring)."""

    def __init__(self, node_id: str, out: TextIO | None = None, err: TextIO | None = None,
                 window_s: float = FOLD_WINDOW_S) -> None:
        self.node_id = node_id  # the driver's node: its workers' lines carry no node=
        self._out = out
        self._err = err
        self.folder = LineFolder(window_s, enabled=os.environ.get(
            "ACTORFLOW_DEDUP_LOGS", "1").strip().lower() not in ("0", "false", "no"))
        self._timer: asyncio.TimerHandle | None = None

    async def receive(self, message: Any) -> Any:
        if type(message) is LogBatch:
            self._print(message)
        elif type(message) is _Flush:
            self._timer = None
            self._write(self.folder.flush())
        else:
            return await super().receive(message)
        self._arm()
        return None

    def _print(self, batch: LogBatch) -> None:
        node = batch.node_id if batch.node_id != self.node_id else None
        out: list[tuple[bool, str]] = []
        for stderr, name, pid, text in batch.lines:
            line = self.folder.add(stderr, format_prefix(name, pid, node), text,
                                   (batch.node_id, pid))
            if line is not None:
                out.append((stderr, line))
        self._write(out)

    def _write(self, lines: list[tuple[bool, str]]) -> None:
        if not lines:
            return
        out = self._out or sys.stdout
        err = self._err or sys.stderr
        for stream in (out, err):
            chunk = "".join(line + "\n" for stderr, line in lines if (stream is err) == stderr)
            if chunk:
                try:
                    stream.write(chunk)
                    stream.flush()
                except (OSError, ValueError):
                    pass  # the driver's output is closed

    def _arm(self) -> None:
        if len(self.folder) > 10_000:  # (bounded: forget the oldest windows early)
            self._write(self.folder.flush(everything=True))
        due = self.folder.next_due()
        if due is None:
            due = self.folder.window_s if len(self.folder) else None
        if due is None or self._timer is not None:
            return
        self._timer = asyncio.get_running_loop().call_later(
            due + 0.01, self._tick)

    def _tick(self) -> None:
        self._timer = None
        try:
            self.ref.tell_nowait(_Flush())
        except Exception:
            pass  # the sink is stopping

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._write(self.folder.flush(everything=True))
