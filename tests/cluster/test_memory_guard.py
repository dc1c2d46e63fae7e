"""The node's memory guard (API.md §12): a task that allocates without bound is killed before
the machine runs out, and reported as ``af.OutOfMemoryError`` once its retries are used up
(run again while they last); actors, the node and other work live on.

The guard's threshold is set, through its environment variable, a few hundred MiB above what
the machine uses when the cluster starts, so the test never comes near the machine's limit;
the runaway task also caps its own address space (RLIMIT_AS), so that if the guard failed it
would get a MemoryError (and the test would fail) instead of eating the machine.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import AsyncIterator

import cloudpickle
import pytest
import pytest_asyncio
from cl_support import within

import actorflow as af
from actorflow.cluster.memory_guard import INTERVAL_ENV, THRESHOLD_ENV, memory_usage
from actorflow.testing import cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HEADROOM = 600 << 20  # the guard acts this far above the machine's use at the start
CAP = 3 << 30  # the runaway task's own limit, if the guard did not act


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def guarded() -> AsyncIterator[float]:
    used, total = memory_usage()
    threshold = (used + HEADROOM) / total
    saved = {k: os.environ.get(k) for k in (THRESHOLD_ENV, INTERVAL_ENV)}
    os.environ[THRESHOLD_ENV] = f"{threshold:.6f}"
    os.environ[INTERVAL_ENV] = "100"
    try:
        async with cluster(num_cpus=2):
            yield threshold
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@af.remote
def runaway(marker: str = "") -> str:
    """Allocate 64 MiB at a time without end (unless ``marker`` exists: a quiet second run)."""
    if marker and os.path.exists(marker):
        return "second run"
    if marker:
        open(marker, "w").close()
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vm + CAP, hard))
    hoard = []
    while True:
        hoard.append(b"x" * (64 << 20))  # (touched: really used)
        time.sleep(0.02)


@af.remote
class Bystander:
    def __init__(self) -> None:
        self.calls = 0

    def ping(self) -> int:
        self.calls += 1
        return self.calls


@af.remote
def small(x: int) -> int:
    return x + 1


async def test_a_runaway_task_is_killed_and_reported(guarded: float) -> None:
    actor = Bystander.remote()
    assert await within(actor.ping.remote()) == 1
    with pytest.raises(af.OutOfMemoryError) as info:
        await within(runaway.options(max_retries=0).remote(), 60)
    err = info.value
    assert err.task == "runaway"
    assert err.node_id == af.get_runtime_context().node_id
    assert err.threshold == pytest.approx(guarded, abs=1e-5)
    assert err.used >= guarded * err.total * 0.99
    # the actor (never a victim), the node and new tasks live on
    assert await within(actor.ping.remote()) == 2
    assert await within(small.remote(1)) == 2


async def test_a_killed_task_runs_again_while_its_retries_last(guarded: float,
                                                              tmp_path) -> None:
    marker = str(tmp_path / "first-run")
    assert await within(runaway.options(max_retries=1).remote(marker), 60) == "second run"


async def test_memory_is_a_resource_that_tasks_reserve(guarded: float) -> None:
    total = (await within(af.cluster_resources()))["memory"]
    assert total == float(memory_usage()[1])

    @af.remote(memory=total * 0.6)
    def big_reservation() -> float:
        return 1.0

    assert await within(big_reservation.remote()) == 1.0
    with pytest.raises(af.InfeasibleError):  # more than any node has
        await within(big_reservation.options(memory=total * 2).remote())
