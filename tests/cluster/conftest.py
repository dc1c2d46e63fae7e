"""Fixtures of the cluster tests: real embedded clusters with real worker processes.

``shared_cluster`` is one cluster for a whole module (tests that do not disturb each other
share it; the module sets ``pytestmark = pytest.mark.asyncio(loop_scope="module")`` and may
set ``CLUSTER = {...}`` for its init options). Tests that need their own cluster start one
with ``actorflow.testing.cluster`` or use ``af_cluster``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from proc_support import no_process_left

import actorflow as af
from actorflow.testing import af_cluster, cluster

__all__ = ["af_cluster", "no_process_left", "shared_cluster"]

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_cluster(request: pytest.FixtureRequest) -> AsyncIterator[af.Runtime]:
    kwargs = dict(getattr(request.module, "CLUSTER", {}))
    async with cluster(**kwargs) as runtime:
        yield runtime
    assert not af.is_initialized()
