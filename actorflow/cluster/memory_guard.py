"""The node's memory: what it declares as the ``memory`` resource, and the guard that keeps a
runaway task from taking the machine down (API.md §12).

- :func:`memory_usage` reads what the node's processes may use and how much of it is used: the
  machine's memory (``/proc/meminfo``: total minus available), or this process's cgroup when
  that is tighter (v2 ``memory.max`` / ``memory.current``, v1 ``memory.limit_in_bytes`` /
  ``memory.usage_in_bytes``), as a container's limit is what its processes get killed at.
- A node declares the total as its ``memory`` resource (unless one is given), so tasks and
  actors that ask for ``memory=`` are placed where that much exists and reserved there.
- :func:`guard` runs in every node: every ``interval`` it measures; when use is at or above
  ``threshold`` of the total (default 95 %), it kills the worker of the most recently granted
  *task* lease on the node, telling the lease's owner first (:class:`MemoryKilled`). The owner
  then runs the task again if its ``max_retries`` allow, else fails it with
  ``af.OutOfMemoryError`` (task, node, used, total, threshold). Actors are never killed by the
  guard (nor the node itself): with only actors left it logs, once per ``WARN_EVERY_S``.
  After a kill it waits ``COOLDOWN_S`` for the memory to come back before it measures again.

Settings, read by the node at its start: ``ACTORFLOW_MEMORY_USAGE_THRESHOLD`` (a fraction in
(0, 1]; 1 or more turns the guard off) and ``ACTORFLOW_MEMORY_MONITOR_INTERVAL_MS`` (default
250; 0 turns it off); ``actorflow start --memory-usage-threshold`` and ``af.init(...,
memory_usage_threshold=...)`` set the first for the nodes they start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actorflow.cluster.node import Node

__all__ = ["MemoryKilled", "guard", "memory_usage", "settings", "with_memory"]

log = logging.getLogger("actorflow.memory")

THRESHOLD_ENV = "ACTORFLOW_MEMORY_USAGE_THRESHOLD"
INTERVAL_ENV = "ACTORFLOW_MEMORY_MONITOR_INTERVAL_MS"
DEFAULT_THRESHOLD = 0.95
DEFAULT_INTERVAL_MS = 250
COOLDOWN_S = 1.0
WARN_EVERY_S = 30.0
_CGROUP = Path("/sys/fs/cgroup")
_NO_LIMIT = 1 << 60  # cgroup v1 says "no limit" with a huge number


@dataclass(frozen=True, slots=True)
class MemoryKilled:
    """Node -> a lease's owner: the guard is about to kill the worker of lease ``lease_id`` of
    node ``node_id``; ``used`` and ``total`` bytes, at ``threshold``."""

    node_id: str
    lease_id: int
    used: int
    total: int
    threshold: float


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value < _NO_LIMIT else None


def _cgroup_usage() -> tuple[int, int] | None:
    """(used, limit) of this process's memory cgroup, when it has a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":  # v2
            base = _CGROUP / rel
            limit, used = _read_int(base / "memory.max"), _read_int(base / "memory.current")
        elif "memory" in controllers.split(","):  # v1
            base = _CGROUP / "memory" / rel
            if not base.exists():  # (a namespaced view: the cgroup is the root seen here)
                base = _CGROUP / "memory"
            limit = _read_int(base / "memory.limit_in_bytes")
            used = _read_int(base / "memory.usage_in_bytes")
        else:
            continue
        if limit is not None and used is not None:
            return used, limit
    return None


def _machine_usage() -> tuple[int, int]:
    fields: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) * 1024
    total = fields["MemTotal"]
    return total - fields.get("MemAvailable", fields.get("MemFree", 0)), total


def memory_usage() -> tuple[int, int]:
    """(used, total) bytes: the machine's, or this process's cgroup's when that is tighter."""
    used, total = _machine_usage()
    group = _cgroup_usage()
    if group is not None and group[1] < total:
        return group
    return used, total


def with_memory(amounts: dict[str, float]) -> dict[str, float]:
    """A node's resource ``amounts`` with its ``memory`` (bytes: the total of
    :func:`memory_usage`) added, unless they name it."""
    if "memory" not in amounts:
        amounts["memory"] = float(memory_usage()[1])
    return amounts


def settings(options: dict[str, Any] | None = None) -> tuple[float, float]:
    """(threshold, interval in seconds; 0: off), from ``options`` then the environment."""
    options = options or {}
    threshold = options.get("memory_usage_threshold")
    if threshold is None:
        threshold = float(os.environ.get(THRESHOLD_ENV, DEFAULT_THRESHOLD))
    interval_ms = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_MS))
    if not float(threshold) > 0 or float(threshold) >= 1 or interval_ms <= 0:
        return float(threshold), 0.0
    return float(threshold), interval_ms / 1000


def _victim(node: Node) -> Any:
    """The most recently granted lease of a task on ``node`` (None: none runs)."""
    found = None
    for record in node.leases.granted.values():
        if record.owner is not None and (found is None or record.lease_id > found.lease_id):
            found = record
    return found


async def guard(node: Node, threshold: float, interval: float) -> None:
    """Watch the memory of ``node``'s machine (see the module docstring) until cancelled."""
    warned = 0.0
    while True:
        await asyncio.sleep(interval)
        used, total = memory_usage()
        if used < threshold * total:
            continue
        victim = _victim(node)
        if victim is None or node.pool is None:
            if time.monotonic() - warned > WARN_EVERY_S:
                warned = time.monotonic()
                log.warning("node %s: memory use %.0f%% is over the guard's threshold %.0f%%, "
                            "and no task runs here to stop (actors are not killed)",
                            node.node_id, 100 * used / total, 100 * threshold)
            continue
        log.warning("node %s: memory use %.0f%% (%d of %d MiB) is over the threshold %.0f%%: "
                    "killing the worker (pid %d) of the newest task lease %d",
                    node.node_id, 100 * used / total, used >> 20, total >> 20, 100 * threshold,
                    victim.worker.pid, victim.lease_id)
        notice = MemoryKilled(node.node_id, victim.lease_id, used, total, threshold)
        with contextlib.suppress(Exception):  # an owner that cannot hear it sees a crash
            await victim.owner.ask(notice, timeout=1.0)
        node.pool.kill(victim.worker)
        await asyncio.sleep(COOLDOWN_S)
