"""Test helpers: a running cluster for each test, for users' own tests and ours.

Enable the plugin in a ``conftest.py``::

    pytest_plugins = ["actorflow.testing"]

then ask for the ``af_cluster`` fixture in an ``async def`` test (pytest-asyncio)::

    async def test_square(af_cluster):
        assert await square.remote(3) == 9

Options go in a marker: ``@pytest.mark.af_cluster(num_cpus=4, resources={"ssd": 1})``. Outside
pytest, :func:`cluster` is the same thing as an async context manager.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

import actorflow as af

__all__ = ["af_cluster", "cluster"]


@contextlib.asynccontextmanager
async def cluster(**init_kwargs: Any) -> AsyncIterator[af.Runtime]:
    """A fresh embedded cluster (``log_to_driver=False`` unless given), shut down on exit."""
    init_kwargs.setdefault("num_cpus", 2)
    init_kwargs.setdefault("log_to_driver", False)
    if af.is_initialized():
        raise RuntimeError("actorflow is already initialized in this process")
    async with af.init(**init_kwargs) as runtime:
        yield runtime


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "af_cluster(**init_kwargs): options of the af_cluster fixture's cluster"
    )


@pytest_asyncio.fixture
async def af_cluster(request: pytest.FixtureRequest) -> AsyncIterator[af.Runtime]:
    """A running embedded cluster for one test (see the module docstring)."""
    marker = request.node.get_closest_marker("af_cluster")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    async with cluster(**kwargs) as runtime:
        yield runtime
