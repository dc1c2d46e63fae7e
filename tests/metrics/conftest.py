"""Fixtures of the metrics and progress tests: real embedded clusters, real worker processes,
real `actorflow start` processes; each module ends every process it started."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest

from actorflow.testing import af_cluster

__all__ = ["af_cluster", "no_process_left"]

PROCESS_EXIT_S = 5.0


def _children() -> set[int]:
    out = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.add(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(scope="module", autouse=True)
def no_process_left() -> Iterator[None]:
    before = _children()
    yield
    deadline = time.monotonic() + PROCESS_EXIT_S
    while (left := _children() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes left running after the module ended: {sorted(left)}"
