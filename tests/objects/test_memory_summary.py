"""``await af.memory_summary()``: each node's store figures (the same keys its NodeInfo
answer carries for the state API, the dashboard and metrics) and the largest objects, with
owner, size, refs and where they lie; spilled ones are shown on disk, restored ones counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from obj_support import MIB, store_figures, until

import actorflow as af
from actorflow.objects.ref import current_core
from actorflow.testing import cluster

LIMIT = 16 * MIB
NODE_KEYS = ("object_store_used", "object_store_limit", "spilled_bytes", "restored_bytes",
             "spilled_objects")


async def test_memory_summary_shows_nodes_and_largest_objects(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORFLOW_STATE_DIR", str(tmp_path / "state"))
    async with cluster(num_cpus=1, object_store_memory=LIMIT):
        core = current_core()
        empty = await af.memory_summary()
        (node,) = empty["nodes"]
        assert node["node_id"] == af.get_runtime_context().node_id
        assert node["object_store_limit"] == LIMIT and node["object_store_used"] == 0
        assert empty["objects"] == []

        sizes = [1, 2, 3, 4, 5, 6]  # MiB: 21 MiB in all, past the 16 MiB limit
        refs = [af.put(np.zeros(n * MIB, dtype=np.uint8)) for n in sizes]
        largest_ref = refs[-1]  # (the same ObjectRef: one ref)
        summary = await until(lambda: _spilled_summary(), what="a spill")
        figures = await store_figures(core.node)
        for key in NODE_KEYS:  # the NodeInfo answer carries the same figures
            assert key in figures
        (node,) = summary["nodes"]
        assert node["spilled_objects"] >= 1 and node["spilled_bytes"] >= MIB
        assert node["objects_in_store"] == len(sizes)
        objects = summary["objects"]
        assert [o["size"] // MIB for o in objects] == sorted(sizes, reverse=True)
        largest = objects[0]
        assert largest["object_id"] == largest_ref.id
        assert largest["refs"] == 1
        assert largest["owner"].startswith("pid ") and largest["what"] == "put"
        assert largest["node_id"] == node["node_id"]
        assert {o["where"] for o in objects} == {"shared memory", "spill file"}
        assert summary["totals"]["object_store_limit"] == LIMIT

        # reading a spilled one restores it, and the summary counts it
        spilled = next(o for o in objects if o["where"] == "spill file")
        ref = next(r for r in refs if r.id == spilled["object_id"])
        assert (await ref).nbytes == spilled["size"] - spilled["size"] % MIB
        after = await af.memory_summary(limit=2)
        assert after["nodes"][0]["restored_objects"] >= 1
        assert len(after["objects"]) == 2
        del largest_ref, ref
        refs.clear()
        await until(lambda: _store_empty(), what="the store to empty")


async def _spilled_summary() -> dict | None:  # type: ignore[type-arg]
    summary = await af.memory_summary()
    return summary if summary["nodes"][0]["spilled_objects"] else None


async def _store_empty() -> bool:
    summary = await af.memory_summary()
    node = summary["nodes"][0]
    return bool(node["object_store_used"] == 0 and node["spilled_now_bytes"] == 0
                and not summary["objects"])
