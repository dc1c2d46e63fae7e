"""The machine's CPU and memory use, read from ``/proc`` (Linux), for a node's live figures.

Two small reads, no dependency: ``/proc/stat``'s first line (CPU time since boot, in clock
ticks, by kind) and ``/proc/meminfo`` (``MemTotal`` and ``MemAvailable``). The CPU use is the
busy share of the ticks that passed between two samples (the first sample: since boot).
Figures are the machine's (or the container's view of it), not the node process's. Elsewhere
than Linux every figure is None.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HostSampler", "read_cpu_ticks", "read_memory", "sample"]


def read_cpu_ticks() -> tuple[int, int] | None:
    """``(busy, total)`` clock ticks of every CPU since boot; None where /proc is missing."""
    try:
        with open("/proc/stat", "rb") as f:
            first = f.readline().split()
    except OSError:
        return None
    if not first or first[0] != b"cpu":
        return None
    ticks = [int(x) for x in first[1:]]
    # user nice system idle iowait irq softirq steal (guest times are inside user and nice)
    ticks = ticks[:8]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    total = sum(ticks)
    return total - idle, total


def read_memory() -> tuple[int, int] | None:
    """``(used, total)`` bytes of memory (used: total less what is available); None where
    /proc/meminfo is missing."""
    fields: dict[bytes, int] = {}
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                name, _, rest = line.partition(b":")
                if name in (b"MemTotal", b"MemAvailable", b"MemFree"):
                    fields[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    total = fields.get(b"MemTotal")
    available = fields.get(b"MemAvailable", fields.get(b"MemFree"))
    if total is None or available is None:
        return None
    return total - available, total


class HostSampler:
    """Samples the machine's figures; CPU use is over the time since the previous sample."""

    def __init__(self) -> None:
        self._last: tuple[int, int] | None = None

    def sample(self) -> dict[str, Any]:
        """``cpu_percent`` (0-100 over every CPU), ``mem_used`` and ``mem_total`` (bytes)."""
        cpu: float | None = None
        ticks = read_cpu_ticks()
        if ticks is not None:
            busy, total = ticks
            if self._last is not None and total > self._last[1]:
                busy -= self._last[0]
                total -= self._last[1]
            cpu = 100.0 * busy / total if total > 0 else 0.0
            self._last = ticks
        memory = read_memory()
        return {
            "cpu_percent": cpu,
            "mem_used": memory[0] if memory else None,
            "mem_total": memory[1] if memory else None,
        }


_SAMPLERS: dict[str, HostSampler] = {}


def sample(key: str) -> dict[str, Any]:
    """:meth:`HostSampler.sample` of the sampler kept for ``key`` (a node id): CPU use since
    that node's previous sample."""
    sampler = _SAMPLERS.get(key)
    if sampler is None:
        sampler = _SAMPLERS[key] = HostSampler()
    return sampler.sample()
