"""Fixtures of the cluster tests: real embedded clusters with real worker processes.

``shared_cluster`` is one cluster for a whole module (tests that do not disturb each other
share it; the module sets ``pytestmark = pytest.mark.asyncio(loop_scope="module")`` and may
set ``CLUSTER = {...}`` for its init options). Tests that need their own cluster start one
with ``actorflow.testing.cluster`` or use ``af_cluster``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import psutil
import pytest
import pytest_asyncio
from cl_support import child_pids

import actorflow as af
from actorflow.testing import af_cluster, cluster

__all__ = ["af_cluster", "no_process_left", "shared_cluster"]

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


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_cluster(request: pytest.FixtureRequest) -> AsyncIterator[af.Runtime]:
    kwargs = dict(getattr(request.module, "CLUSTER", {}))
    async with cluster(**kwargs) as runtime:
        yield runtime
    assert not af.is_initialized()
