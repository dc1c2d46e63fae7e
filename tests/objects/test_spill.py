"""Spilling and restoring (``actorflow/objects/spill.py``).

- A workload whose live data is three times the object store memory of a 2-node cluster
  started with ``actorflow start --object-store-memory --spill-dir`` completes with correct
  results: values spill on both nodes and are restored when tasks on either node and the
  driver read them; no ObjectStoreFullError; each node settles back under its limit; every
  spill file is gone once the refs are dropped. ``actorflow memory`` shows the figures.
- A freed object's spill file is deleted within a second.
- A node killed hard leaves its spill directory to the sweeper (liveness locks).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import pytest_asyncio
from obj_support import MIB, WAIT, StoreCluster, cli, files_in, store_figures, until

import actorflow as af
from actorflow.objects import sweep
from actorflow.objects.ref import current_core
from actorflow.objects.spill import RETRY_S
from actorflow.objects.spillfiles import spill_name
from actorflow.testing import cluster

pytestmark = pytest.mark.timeout(300)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

LIMIT = 32 * MIB  # per node
VALUE = 4 * MIB
COUNT = 48  # 192 MiB live: 3x the cluster's 64 MiB of object store


def _expected(i: int) -> int:
    return (i * 7 + 3) % 251


@af.remote
def make(i: int) -> np.ndarray:
    return np.full(VALUE, _expected(i), dtype=np.uint8)


@af.remote
def check(a: np.ndarray) -> tuple[int, int, int]:
    return int(a[0]), int(a[-1]), int(a.sum(dtype=np.int64))


@pytest_asyncio.fixture(loop_scope="module")
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[StoreCluster, Path]]:
    tmp = tmp_path
    spill_root = tmp / "spill"
    cl = StoreCluster(tmp)
    flags = ["--object-store-memory", str(LIMIT), "--spill-dir", str(spill_root)]
    try:
        head = cl.start_head_with([*flags, "--resources", json.dumps({"r_a": 1})])
        await cl.wait_head(head)
        node = cl.start_node_with("node2", [*flags, "--resources", json.dumps({"r_b": 1})])
        await cl.wait_ready(node)
        await af.init(address=cl.address, token=cl.token)
        await until(lambda: _two_alive(), what="both nodes")
        yield cl, spill_root
    finally:
        if af.is_initialized():
            await af.shutdown()
        left = cl.stop()
        assert not left, f"processes left: {left}\n{cl.logs()}"
    assert not files_in(spill_root), "a spill directory outlived its node"


async def _two_alive() -> bool:
    return len([n for n in await af.nodes() if n["alive"]]) == 2


async def _node_refs() -> dict[str, Any]:
    from actorflow.cluster.protocol import GetClusterInfo

    info = await current_core().head.ask(GetClusterInfo(), timeout=10.0)
    return {n["node_id"]: n["ref"] for n in info.nodes if n["alive"]}


@pytest.mark.asyncio(loop_scope="module")
async def test_three_times_the_store_completes_spilling_and_restoring(
        two_nodes: tuple[StoreCluster, Path]) -> None:
    cl, spill_root = two_nodes
    where = [{"r_a": 0.01}, {"r_b": 0.01}]
    refs = [make.options(resources=where[i % 2]).remote(i) for i in range(COUNT)]
    await asyncio.wait_for(af.wait(refs, num_returns=COUNT), WAIT * 4)
    # every value read on the other node than the one that made it (restored there first,
    # then pulled), and then by the driver
    sums = await asyncio.wait_for(af.get([
        check.options(resources=where[(i + 1) % 2]).remote(ref) for i, ref in enumerate(refs)
    ]), WAIT * 4)
    for i, (first, last, total) in enumerate(sums):
        assert first == last == _expected(i) and total == _expected(i) * VALUE, i
    for i in (0, 1, COUNT // 2, COUNT - 1):
        value = await af.get(refs[i], timeout=WAIT)
        assert int(value[0]) == _expected(i) and int(value.sum(dtype=np.int64)) == (
            _expected(i) * VALUE)
    del value
    nodes = await _node_refs()
    figures = {nid: await store_figures(ref) for nid, ref in nodes.items()}
    for nid, fig in figures.items():
        assert fig["object_store_limit"] == LIMIT, nid
        assert fig["spilled_objects"] > 0 and fig["spilled_bytes"] >= VALUE, (nid, fig)
        assert fig["restored_objects"] > 0, (nid, fig)
        assert fig["objects_in_store"] == COUNT // 2, (nid, fig)
    # once readers let go, each node is back under its limit, the rest on disk
    for ref in nodes.values():
        async def under(ref: Any = ref) -> bool:
            fig = await store_figures(ref)
            return bool(fig["object_store_used"] <= LIMIT)
        await until(under, what="the store to settle under its limit")
    assert sum(len(files_in(spill_root / d)) for d in files_in(spill_root)) > 0
    # actorflow memory (its own process) sees both nodes and the largest objects
    done = await asyncio.to_thread(cli, ["memory", "--json", "--address", str(cl.address),
                                         "--token", str(cl.token), "--limit", "5"], cl.env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert {n["node_id"] for n in summary["nodes"]} == set(nodes)
    assert len(summary["objects"]) == 5
    assert all(o["size"] >= VALUE for o in summary["objects"])
    assert summary["totals"]["spilled_objects"] >= 2
    # dropped everywhere: every spill file goes
    del refs, sums
    await until(lambda: not any(files_in(spill_root / d) for d in files_in(spill_root)),
                what="the spill files to be deleted")
    for ref in nodes.values():
        fig = await store_figures(ref)
        assert fig["spilled_now_bytes"] == 0 and fig["objects_in_store"] == 0, fig


@pytest.mark.asyncio(loop_scope="module")
async def test_a_freed_spilled_object_loses_its_file_within_a_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORFLOW_STATE_DIR", str(tmp_path / "state"))
    async with cluster(num_cpus=1, object_store_memory=16 * MIB):
        core = current_core()
        refs = [af.put(np.full(VALUE, i, dtype=np.uint8)) for i in range(8)]  # 2x
        fig = await until(lambda: _spilled(core), what="a spill")
        spill_dir = Path(fig["spill_dir"])
        spilled = {name for name in files_in(spill_dir) if not name.endswith(".tmp")}
        assert spilled
        victims = [r for r in refs if _spill_file(core, r) in spilled]
        assert victims
        names = {_spill_file(core, r) for r in victims}
        for r in victims:
            refs.remove(r)
        del victims, r
        freed_at = time.monotonic()
        try:
            await until(lambda: not names & set(files_in(spill_dir)), timeout=1.0,
                        what="the freed objects' spill files to go", every=0.01)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; left: {sorted(names & set(files_in(spill_dir)))}; "
                                 f"store: {await store_figures(core.node)}") from None
        assert time.monotonic() - freed_at < 1.05
        for i, r in enumerate(refs):  # the others are still right
            assert int((await r)[0]) in range(8), i


def _segment(core: Any, ref: af.ObjectRef) -> str:
    return str(core.objects.entries[ref.id].payload.name)


def _spill_file(core: Any, ref: af.ObjectRef) -> str:
    """The name of the spill file of ``ref``'s value (its segment's, and its generation)."""
    payload = core.objects.entries[ref.id].payload
    return spill_name(str(payload.name), int(payload.generation))


async def _spilled(core: Any) -> dict[str, Any] | None:
    fig = await store_figures(core.node)
    return fig if fig["spilled_objects"] > 0 else None


CHILD = """
import os, sys, time
from actorflow.objects import shm, spill, sweep
from actorflow.objects.serialization import serialize
from actorflow.objects.spillfiles import spill_name
node_id, root = sys.argv[1], sys.argv[2]
store = spill.open_store(node_id, "sess", {"spill_dir": root, "object_store_memory": 1 << 20})
sweep.hold_node(node_id)
name = f"af-{node_id}-x1"
shm.write_segment(name, serialize(b"x" * 300_000), 5)
assert spill.spill_file(name, os.path.join(store.dir, spill_name(name, 5)), 5) == "spilled"
print(store.dir, flush=True)
time.sleep(600)
"""


def test_a_dead_nodes_spill_directory_is_swept(tmp_path: Path) -> None:
    node_id = os.urandom(4).hex()
    root = tmp_path / "spill"
    child = subprocess.Popen([sys.executable, "-c", CHILD, node_id, str(root)],
                             stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert child.stdout is not None
        spill_dir = Path(child.stdout.readline().strip())
        spilled = [spill_name(f"af-{node_id}-x1", 5)]
        assert files_in(spill_dir) == spilled
        sweep.sweep_segments()  # alive: nothing of it is touched
        assert files_in(spill_dir) == spilled
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        report = sweep.sweep_segments()
        assert report.spill_files >= 1
        assert not spill_dir.exists()
        lock_dir = sweep.node_lock_dir(create=False)
        assert lock_dir is not None
        assert not [f for f in files_in(lock_dir) if node_id in f]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def _deleted_segment_maps(node_id: str) -> list[str]:
    """This process's mappings of segments of ``node_id`` whose file is gone: their pages
    stay in memory while mapped."""
    with open("/proc/self/maps") as f:
        return [line.split()[-2] for line in f
                if f"/af-{node_id}-" in line and line.rstrip().endswith("(deleted)")]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_reader_lets_go_of_spilled_segments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values read and let go are spilled, and the reader's kept mappings of them are closed
    soon after, so their memory goes back (not only their files)."""
    monkeypatch.setenv("ACTORFLOW_STATE_DIR", str(tmp_path / "state"))
    async with cluster(num_cpus=1, object_store_memory=16 * MIB):
        core = current_core()
        refs = [af.put(np.full(VALUE, i, dtype=np.uint8)) for i in range(8)]
        for i, ref in enumerate(refs):  # each read maps it here (the owner's own mapping)
            value = await ref
            assert int(value[-1]) == i
        del value
        await until(lambda: _spilled(core), what="a spill")
        await until(lambda: not _deleted_segment_maps(core.node_id), timeout=10.0,
                    what="the mappings of spilled segments to be closed")
        fig = await store_figures(core.node)
        assert fig["spilled_objects"] >= 4 and fig["object_store_used"] <= 16 * MIB
        for i, ref in enumerate(refs):  # and they are all still right
            assert int((await ref)[0]) == i


@pytest.mark.asyncio(loop_scope="module")
async def test_a_segment_in_use_is_not_spilled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader using a value pins its segment: the store spills the others, and this one
    only once the reader let go of it."""
    from actorflow.objects import shm

    monkeypatch.setenv("ACTORFLOW_STATE_DIR", str(tmp_path / "state"))
    async with cluster(num_cpus=1, object_store_memory=16 * MIB):
        core = current_core()
        first = af.put(np.full(VALUE, 7, dtype=np.uint8))
        held = await first  # a view of its segment, alive
        name = _segment(core, first)
        others = [af.put(np.full(VALUE, i, dtype=np.uint8)) for i in range(8)]
        await until(lambda: _spilled(core), what="a spill")
        fig = await until(lambda: _settled(core), what="the store to settle under its limit")
        assert fig["spilled_objects"] >= 4
        await asyncio.sleep(2 * RETRY_S)
        assert shm.exists(name), "a segment in use was spilled"
        assert int(held[0]) == 7
        del held
        await asyncio.sleep(1.5)  # (its pin relaxes)
        # as much again: the store must spill what it holds now, the let-go one among them
        more = [af.put(np.full(VALUE, i, dtype=np.uint8)) for i in range(5)]
        await until(lambda: not shm.exists(name), what="the let-go segment to be spilled")
        assert int((await first)[-1]) == 7  # restored
        assert len(others) == 8 and len(more) == 5


async def _settled(core: Any) -> dict[str, Any] | None:
    fig = await store_figures(core.node)
    return fig if fig["object_store_used"] <= fig["object_store_limit"] else None
