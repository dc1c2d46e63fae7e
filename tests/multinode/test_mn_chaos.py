"""Chaos: a mixed workload of tasks and actor calls on a 3-node CLI cluster while worker
processes are SIGKILLed every 0.5 s and one whole node is SIGKILLed (reliability.md).

Every task allows unlimited retries and every actor unlimited restarts and call retries, so
the promise is exact: every result arrives, and each equals what the ledger says it must be;
afterwards the cluster's free resources come back to the surviving total within 10 s and no
process of the killed node is left. Each run of a task or call appends a line to a file, so
the figures (re-runs) are counted, not guessed. The workload is one round of the chaos soak
(``python -m benchmarks chaos --minutes N``, which also restarts the killed node each round).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest
from mn_support import Cluster, alive, live_nodes, nonzero, until, within

import actorflow as af
from benchmarks.chaos import (
    CALLS_PER_ACTOR,
    KILL_EVERY_S,
    N_ACTORS,
    N_TASKS,
    NODE_KILL_AFTER_S,
    WAVE_S,
    WAVES,
    Keeper,
    busy_workers,
    square,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NODES = [
    {"name": "head", "num_cpus": 2, "resources": {"r_a": 1}},
    {"name": "node2", "num_cpus": 2, "resources": {"r_b": 1}},
    {"name": "node3", "num_cpus": 2, "resources": {"r_c": 1}},
]
DEADLINE_S = 100.0  # the whole workload, kills included (the test's bound is 2 minutes)


async def run_chaos(cluster: Cluster, ledger: Path, victim: str) -> dict[str, Any]:
    """The workload with kills; returns its figures. Raises if a result is lost or wrong."""
    rng = random.Random(1234)
    victim_proc = cluster.cli.started[victim]
    victim_children = [p.pid for p in psutil.Process(victim_proc.pid).children(recursive=True)]
    start = time.monotonic()
    kills = 0
    node_killed = False
    done = asyncio.Event()

    async def killer() -> None:
        nonlocal kills, node_killed, victim_children
        while not done.is_set():
            await asyncio.sleep(KILL_EVERY_S)
            if not node_killed and time.monotonic() - start >= NODE_KILL_AFTER_S:
                victim_children = list({*victim_children, *(
                    p.pid for p in psutil.Process(victim_proc.pid).children(recursive=True))})
                victim_proc.proc.send_signal(signal.SIGKILL)
                node_killed = True
                continue
            # a worker that holds a lease (a task's or an actor's): killing idle ones tests
            # nothing
            busy = await busy_workers()
            if busy:
                try:
                    os.kill(rng.choice(busy), signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass

    async def workload() -> tuple[list[int], list[tuple[int, int, int]], list[Any]]:
        keepers = [Keeper.remote(str(ledger), k) for k in range(N_ACTORS)]
        call_refs = [(k, i, keepers[k].work.remote(i))
                     for i in range(CALLS_PER_ACTOR) for k in range(N_ACTORS)]
        # in waves, a third of them SPREAD (one lease request per task): lease requests,
        # grants and pushes go on all the time, to every node, the one that dies too
        spread = square.options(scheduling_strategy="SPREAD")
        task_refs: list[Any] = []
        for wave in range(WAVES):
            if wave:
                await asyncio.sleep(WAVE_S)
            task_refs += [(spread if i % 3 == 0 else square).remote(str(ledger), i)
                          for i in range(len(task_refs), len(task_refs) + N_TASKS // WAVES)]
        pending.extend(task_refs)
        pending.extend(ref for _, _, ref in call_refs)
        squares = await af.get(task_refs)
        calls = await af.get([ref for _, _, ref in call_refs])
        expected = [(k, i, i * 7 + k) for k, i, _ in call_refs]
        wrong = [(c, e) for c, e in zip(calls, expected, strict=True) if c != e]
        assert not wrong, wrong[:5]
        return squares, calls, keepers

    pending: list[Any] = []
    killing = asyncio.ensure_future(killer())
    try:
        squares, calls, keepers = await within(workload(), DEADLINE_S)
    except TimeoutError:
        _, stuck = await af.wait(pending, num_returns=len(pending), timeout=0)
        raise AssertionError(f"{len(stuck)} of {len(pending)} results never came: "
                             f"{stuck[:5]}") from None
    finally:
        done.set()
        await within(killing, 5.0)
    elapsed = time.monotonic() - start
    assert node_killed, "the workload ended before the node kill: make it longer"
    assert squares == [i * i for i in range(N_TASKS)]
    lines = (await asyncio.to_thread(ledger.read_text)).splitlines()
    task_runs = sum(1 for line in lines if line.startswith("t "))
    call_runs = sum(1 for line in lines if line.startswith("a "))
    for keeper in keepers:
        await within(af.kill(keeper, no_restart=True))
    return {
        "elapsed_s": round(elapsed, 2), "worker_kills": kills, "node_kills": 1,
        "tasks": N_TASKS, "task_reruns": task_runs - N_TASKS,
        "calls": len(calls), "call_reruns": call_runs - len(calls),
        "victim_children": victim_children,
    }


@pytest.mark.timeout(150)
async def test_nothing_is_lost_under_worker_and_node_kills(cli_cluster: Cluster,
                                                           tmp_path: Path) -> None:
    figures = await run_chaos(cli_cluster, tmp_path / "ledger", "node3")
    print("chaos figures:", {k: v for k, v in figures.items() if k != "victim_children"})
    victim_id = cli_cluster.ids["node3"]

    async def settled() -> bool:
        views = live_nodes(await af.nodes())
        if victim_id in {v["node_id"] for v in views}:
            return False
        total = nonzero(await af.cluster_resources())
        free = nonzero(await af.available_resources())
        return total == free
    start = time.monotonic()
    await until(settled, timeout=10.0, what="free resources back to the live total")
    settle_s = time.monotonic() - start
    print(f"resources settled {settle_s:.2f} s after the last result")
    orphans = [pid for pid in figures["victim_children"] if alive(pid)]
    assert not orphans, f"processes of the killed node survive it: {orphans}"
