"""Fixtures of the job tests: a head started through the CLI (``actorflow start --head
--block``) in a private state folder, and what a test needs to reach it.

``job_head`` (module scope) starts the head with the module's ``HEAD_ARGS`` (extra
``actorflow start`` flags) and stops it at the end, failing if any process of it (a worker, a
job's driver) survives. Modules using it set ``pytestmark = pytest.mark.asyncio(loop_scope=
"module")``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "multinode"))

from job_support import JobHead, start_job_head


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def job_head(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[JobHead]:
    extra: list[str] = list(getattr(request.module, "HEAD_ARGS", []))
    head = await start_job_head(tmp_path_factory.mktemp("jobs"), extra)
    try:
        yield head
    finally:
        survivors = head.stop()
    assert not survivors, "processes of the cluster survived its stop:\n" + "\n".join(
        survivors) + "\n" + head.cli.logs()
