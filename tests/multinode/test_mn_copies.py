"""Secondary copies (issue 16): a value's first read from a node goes straight into its reader;
from the second read on, the node keeps a copy for its readers (one pull, concurrent readers
wait on it), frees it with the primary, evicts
it before spilling any primary, and drops it when the primary's node dies (the owner decides:
lineage rebuilds the value or it is lost). Node2 makes the values; node3 (a small store) reads
them. The counts come from the nodes' memory summaries; the copies are files in /dev/shm."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import json
import os
import signal
import sys
import time
from typing import Any

import cloudpickle
import numpy as np
import pytest
from mn_support import Cluster, cli, live_nodes, until, within

import actorflow as af
from actorflow.objects import shm
from actorflow.objects.ref import current_core

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MIB = 1 << 20
NODES = [
    {"name": "head", "num_cpus": 1, "resources": {"r_a": 1}},
    {"name": "node2", "num_cpus": 1, "resources": {"r_b": 1}},
    {"name": "node3", "num_cpus": 2, "resources": {"r_c": 1},
     "extra": ["--object-store-memory", "48M"]},
]


@af.remote(resources={"r_b": 0.01})
def made_there(seed: int, nbytes: int) -> np.ndarray:
    return np.full(nbytes, seed, dtype=np.uint8)


@af.remote
def made(seed: int, nbytes: int) -> np.ndarray:
    return np.full(nbytes, seed, dtype=np.uint8)


@af.remote(resources={"r_c": 0.01})
def made_on_node3(seed: int, nbytes: int) -> np.ndarray:
    return np.full(nbytes, seed, dtype=np.uint8)


@af.remote(resources={"r_c": 0.01})
def read_arg(arr: np.ndarray) -> tuple[str, int, int, bool]:
    """Read an argument (a top-level ref: the owner frees it once the call is done)."""
    return (af.get_runtime_context().node_id, int(arr[0]), int(arr.sum(dtype=np.int64)),
            bool(arr.flags.writeable))


@af.remote(resources={"r_c": 0.01})
async def read_on_node3(box: list, times: int = 1) -> list:
    """Read the boxed ref ``times`` times at once; per read: (node, first byte, sum, writable)."""
    node = af.get_runtime_context().node_id

    async def one() -> tuple[str, int, int, bool]:
        arr = await box[0]
        return node, int(arr[0]), int(arr.sum(dtype=np.int64)), bool(arr.flags.writeable)

    return list(await asyncio.gather(*(one() for _ in range(times))))


async def _figures(node_id: str) -> dict[str, Any]:
    summary = await within(af.memory_summary())
    (row,) = [n for n in summary["nodes"] if n["node_id"] == node_id]
    return row


def _copies_of(node_id: str, primary: str | None = None) -> list[str]:
    prefix = f"af-{node_id}-copy-"
    return [n for n in os.listdir(shm.SHM_DIR)
            if n.startswith(prefix) and (primary is None or n.endswith(f"-{primary}"))]


async def _segment(ref: af.ObjectRef) -> str:
    (payload,) = await within(current_core().reads.payloads([ref]))
    return str(payload.name)


def _unpinned(name: str) -> bool:
    """No process maps-and-pins copy ``name`` (the node could evict it now)."""
    try:
        fd = os.open(shm.path_of(name), os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


async def test_readers_on_a_node_share_one_pull_and_the_copy_goes_with_the_primary(
        cli_cluster: Cluster) -> None:
    node2, node3, head = (cli_cluster.ids[n] for n in ("node2", "node3", "head"))
    ref = made_there.remote(3, 8 * MIB)
    await within(af.wait([ref], fetch_local=False))
    primary = await _segment(ref)
    before = await _figures(node3)

    # the first reader pulls it itself; no copy on the node
    read = await within(read_arg.remote(ref))
    assert read[:3] == (node3, 3, 3 * 8 * MIB)
    first = await _figures(node3)
    assert first["copy_first_reads"] - before["copy_first_reads"] == 1
    assert first["copy_pulls"] == before["copy_pulls"] and not _copies_of(node3, primary)
    # two more readers, one after the other: one pull; both map the node's copy (read-only)
    for _ in range(2):
        read = await within(read_arg.remote(ref))
        assert read == (node3, 3, 3 * 8 * MIB, False)
    after = await _figures(node3)
    assert after["copy_pulls"] - before["copy_pulls"] == 1
    assert after["copy_reads"] - before["copy_reads"] == 2
    assert after["copy_first_reads"] == first["copy_first_reads"]
    assert len(_copies_of(node3, primary)) == 1 and after["secondary_copies"] >= 1

    # the driver reads it twice: the second read makes a copy on its own node (the head's)
    for _ in range(2):
        assert int((await within(ref))[-1]) == 3
    assert len(_copies_of(head, primary)) == 1
    assert (await _figures(node2))["copy_pulls"] == 0  # node2 holds the primary

    # the owner frees it: every copy goes within a second
    del ref
    gc.collect()
    start = time.monotonic()
    await until(lambda: not _copies_of(node3, primary) and not _copies_of(head, primary),
                timeout=1.0, what="the copies freed with their primary")
    assert time.monotonic() - start < 1.0
    gone = await _figures(node3)
    assert gone["copy_drops"] - after["copy_drops"] == 1


async def test_copies_are_evicted_before_any_primary_spills(cli_cluster: Cluster) -> None:
    node3 = cli_cluster.ids["node3"]

    async def empty() -> bool:
        row = await _figures(node3)
        return bool(row["secondary_copies"] == 0
                    and row["object_store_used"] == row["copy_spare_bytes"])

    await until(empty, what="node3's store empty")
    far = made_there.remote(7, 16 * MIB)
    for _ in range(2):  # (the second read makes the copy)
        read = await within(read_arg.remote(far))
        assert read[:3] == (node3, 7, 7 * 16 * MIB)
    primary = await _segment(far)
    (copy,) = _copies_of(node3, primary)
    await until(lambda: _unpinned(copy), what="the reader to let the copy go")
    before = await _figures(node3)
    assert before["secondary_copies"] == 1 and before["object_store_limit"] == 48 * MIB

    # primaries on node3: 16 MiB copy + 2 x 12 MiB fit in 48 MiB; a third does not
    mine = [made_on_node3.remote(i, 12 * MIB) for i in range(3)]
    await within(af.wait(mine, num_returns=3, fetch_local=False))

    async def evicted() -> dict[str, Any] | None:
        row = await _figures(node3)
        return row if row["secondary_copies"] == 0 else None

    row = await until(evicted, what="the copy evicted")
    assert row["copy_evictions"] - before["copy_evictions"] == 1
    assert row["spilled_objects"] == before["spilled_objects"]  # no primary spilled
    assert not _copies_of(node3, primary)
    # read again: pulled again (room is made by evicting, never by spilling)
    del mine
    gc.collect()
    await until(empty, what="node3's primaries freed")
    read = await within(read_arg.remote(far))
    assert read[:3] == (node3, 7, 7 * 16 * MIB)
    again = await _figures(node3)
    assert again["copy_pulls"] - before["copy_pulls"] == 1
    (copy,) = _copies_of(node3, primary)
    await until(lambda: _unpinned(copy), what="the reader to let the copy go")

    # a copy that a reader maps (this process, pinning it as every reader does) stays: under
    # the same pressure a primary spills instead
    reader = shm.Mapping(copy)
    try:
        mine = [made_on_node3.remote(i, 12 * MIB) for i in range(3)]
        await within(af.wait(mine, num_returns=3, fetch_local=False))

        async def spilled() -> dict[str, Any] | None:
            row = await _figures(node3)
            return row if row["spilled_objects"] > again["spilled_objects"] else None

        row = await until(spilled, what="a primary spilled")
        assert row["secondary_copies"] == 1 and _copies_of(node3, primary) == [copy]
        assert row["copy_evictions"] == again["copy_evictions"]
    finally:
        reader.close()
    del mine
    gc.collect()


async def test_concurrent_readers_wait_on_the_one_pull(cli_cluster: Cluster) -> None:
    node3 = cli_cluster.ids["node3"]
    ref = made_there.remote(5, 16 * MIB)
    await within(af.wait([ref], fetch_local=False))
    before = await _figures(node3)
    reads = await within(read_on_node3.remote([ref], times=5))
    # the first pulls it itself; the other four share the node's one pull
    assert [r[:3] for r in reads] == [(node3, 5, 5 * 16 * MIB)] * 5
    after = await _figures(node3)
    assert after["copy_first_reads"] - before["copy_first_reads"] == 1
    assert after["copy_pulls"] - before["copy_pulls"] == 1
    assert after["copy_reads"] - before["copy_reads"] == 4
    assert after["copy_shared_pulls"] - before["copy_shared_pulls"] >= 1  # waited, not pulled
    shown = await asyncio.to_thread(cli, ["memory", "--json"], cli_cluster.cli.env)
    assert shown.returncode == 0, shown.stderr
    (row,) = [n for n in json.loads(shown.stdout)["nodes"] if n["node_id"] == node3]
    assert row["secondary_copies"] >= 1 and row["secondary_bytes"] >= 16 * MIB
    # the ref went inside a list (a borrower on node3): dropped everywhere, its copy goes too
    primary = await _segment(ref)
    del ref
    gc.collect()
    await until(lambda: not _copies_of(node3, primary), timeout=2.0, what="the copy freed")


async def test_copies_of_a_dead_nodes_segments_go_and_the_owner_decides(
        cli_cluster: Cluster) -> None:
    """Last in the module: node2 is killed."""
    node2, node3 = cli_cluster.ids["node2"], cli_cluster.ids["node3"]
    there = af.NodeAffinity(node2, soft=True)  # on node2 while it lives, else anywhere
    ref = made.options(scheduling_strategy=there, max_retries=3, num_cpus=0).remote(9, 8 * MIB)
    reads = await within(read_on_node3.remote([ref], times=2))  # (makes a copy)
    assert [r[:3] for r in reads] == [(node3, 9, 9 * 8 * MIB)] * 2
    primary = await _segment(ref)
    assert primary.startswith(f"af-{node2}-") and _copies_of(node3, primary)

    started = cli_cluster.cli.started["node2"]
    started.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(started.proc.wait, 10)

    async def two_nodes() -> bool:
        return len(live_nodes(await af.nodes())) == 2

    await until(two_nodes, what="node2 declared dead")
    # node3 drops its copy (it would never be freed: frees go to node2, and the owner decides
    # what a lost primary means)...
    await until(lambda: not _copies_of(node3, primary), timeout=5.0, what="the copy dropped")
    # ...so a reader there (a borrower) finds the primary lost and its owner rebuilds it
    (read,) = await within(read_on_node3.remote([ref]), 60)
    assert read[:3] == (node3, 9, 9 * 8 * MIB)
    rebuilt = await _segment(ref)
    assert rebuilt != primary and not rebuilt.startswith(f"af-{node2}-")
    assert int((await within(ref))[0]) == 9
