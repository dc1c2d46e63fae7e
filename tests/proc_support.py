"""Process hygiene of the tests that start clusters: :func:`child_pids`, and the
``no_process_left`` fixture that a test folder's conftest imports (module-scoped, autouse):
each module ends every process it started, its clusters' workers included, checked after its
last test and its module fixtures, so a leak is blamed on its module."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest

__all__ = ["child_pids", "no_process_left"]


def child_pids() -> set[int]:
    """Live (not zombie) descendants of this process."""
    out = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.add(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return out


#: How long the processes a module started may take to end once it is done.
PROCESS_EXIT_S = 5.0


@pytest.fixture(scope="module", autouse=True)
def no_process_left() -> Iterator[None]:
    """Each module ends every process it started (its clusters' workers included): checked
    after the module's last test and its module fixtures, so a leak is blamed on its module."""
    before = child_pids()
    yield
    deadline = time.monotonic() + PROCESS_EXIT_S
    while (left := child_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        described = []
        for pid in sorted(left):
            try:
                described.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())}")
            except psutil.NoSuchProcess:
                pass
        if described:
            pytest.fail(f"processes left running {PROCESS_EXIT_S} s after the module ended:\n"
                        + "\n".join(described))
