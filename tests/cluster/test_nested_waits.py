"""Nested waits never deadlock (issue 14): a parent task that awaits its children lends its
CPU while it waits, and the node starts a worker for the children even when the parents
alone fill its usual worker cap (as Ray starts workers for blocked parents); the extra
workers are bounded by the number of blocked parents."""

from __future__ import annotations

import sys

import cloudpickle
import pytest
from cl_support import child_pids, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}
FANOUT = 3
DEPTH = 4  # 1 + 3 + 9 + 27 tasks: 13 parents wait at once, more than the node's cap of 8


@af.remote
async def tree(depth: int) -> int:
    if depth == 1:
        return 1
    return 1 + sum(await af.get([tree.remote(depth - 1) for _ in range(FANOUT)]))


async def test_a_tree_of_async_tasks_deeper_than_the_worker_cap_finishes(
        shared_cluster: af.Runtime) -> None:
    expected = sum(FANOUT ** level for level in range(DEPTH))
    assert await within(tree.remote(DEPTH), 45.0) == expected
    # bounded: about one worker per waiting parent, not one per task
    assert len(child_pids()) < expected
