"""Spilling and restoring at the edges of an object's life (``actorflow/objects/spill.py``,
``spilldir.py``), on a real store driven in this process: a ``NodeStore`` with its spill
directory and threads, real segments in shared memory, real files, a real reader's pin.

- A primary that was spilled and restored (its spill file kept) and is freed while it is being
  spilled again loses its spill file within a second, even when that spill fails (pinned).
- A restore whose object was freed meanwhile, and whose segment name its writer reused for a
  newer value, leaves the newer value alone: neither its segment nor its spill file goes.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from obj_support import MIB, WAIT, files_in, until

from actorflow.objects import shm, sweep
from actorflow.objects.serialization import serialize
from actorflow.objects.spill import RESTORED_GRACE_S, NodeStore, Stored
from actorflow.objects.spilldir import RESIDENT, RESTORING, SPILLED, SPILLING, Primary

pytestmark = pytest.mark.timeout(60)

SIZE = 2 * MIB
ROOMY = 64 * MIB  # a limit nothing here reaches: no spilling
TIGHT = MIB  # a limit one value passes: it spills
#: Long enough for the deletions a store started on its threads to have run (a check that
#: something does NOT happen); well under RESTORED_GRACE_S, so nothing is spilled again.
SETTLE_S = 0.3


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[NodeStore]:
    node_id = os.urandom(4).hex()
    root = tmp_path / "spill"
    node_store = NodeStore(node_id, "sess", limit=ROOMY, spill_root=str(root))
    await asyncio.to_thread(node_store.start)
    try:
        yield node_store
    finally:
        await node_store.close()
        # this process claimed the node's lock with its first segment: let go, and what is
        # left of its segments goes with it
        await asyncio.to_thread(sweep.release_node, node_id)
    assert not files_in(root / f"sess-{node_id}"), "the spill directory outlived the store"
    assert not [n for n in files_in(shm.SHM_DIR) if sweep.owner_of(n) == node_id]


def _write(name: str, fill: int, generation: int) -> int:
    """A writer's new segment ``name`` holding value ``fill`` (``generation``)."""
    return shm.write_segment(name, serialize(np.full(SIZE, fill, dtype=np.uint8)), generation)


def _rewrite(name: str, fill: int, generation: int) -> int:
    """The segment's writer reuses it for a newer value, as ``SegmentStore.write`` does: over
    the same file, under its exclusive lock."""
    mapping = shm.Mapping(name, writable=True, pin=False)
    try:
        assert mapping.exclusive(), "a writer could not take its segment to rewrite it"
        return shm.rewrite(mapping, serialize(np.full(SIZE, fill, dtype=np.uint8)), generation)
    finally:
        mapping.close()


def _stored(store: NodeStore, name: str, nbytes: int, generation: int) -> Primary:
    store.stored(Stored(name, nbytes, generation, os.getpid(), "put"))
    return store.objects[name]


def _segment_value(name: str) -> tuple[int, int] | None:
    """``(generation, fill)`` of the value segment ``name`` holds now (None: no segment)."""
    try:
        mapping = shm.Mapping(name)
    except FileNotFoundError:
        return None
    try:
        view = mapping.view()
        generation, _meta, buffers = shm.parse(view, name)
        fill = int(buffers[0][0]), int(buffers[0][-1])
        assert fill[0] == fill[1], fill
        del buffers, _meta
        view.release()
        return generation, fill[0]
    finally:
        mapping.close()


def _file_generation(path: Path) -> int:
    """The generation of the value a spill file holds (a spill file is the segment's bytes)."""
    with open(path, "rb") as f:
        head = f.read(24)
    return int(struct.unpack_from("<Q", head, 16)[0])


async def _spill(store: NodeStore, obj: Primary) -> None:
    """Let the store spill ``obj`` (past its limit), then take no more."""
    store.limit = TIGHT
    store.secondary_changed()  # (anything that changes what it holds makes it look)
    await until(lambda: obj.state == SPILLED and obj.busy is None, what="a spill")
    store.limit = ROOMY


async def _drive(coro: Coroutine[Any, Any, Any], step: Any) -> Any:
    """Go on running ``coro`` by hand from ``step`` (what it last waited on), as its task
    would: wait for each future it waits on, then resume it, until it returns."""
    while True:
        if step is None:  # (a bare yield: asyncio.sleep(0))
            await asyncio.sleep(0)
        else:
            done, _ = await asyncio.wait([step], timeout=WAIT)
            assert done, f"{coro} waited on {step} for over {WAIT} s"
        try:
            step = coro.send(None)
        except StopIteration as stop:
            return stop.value


async def test_a_restored_value_freed_while_spilled_again_loses_its_file(
        store: NodeStore) -> None:
    name = f"af-{store.node_id}-x1"
    obj = _stored(store, name, _write(name, 1, generation=1), 1)
    await _spill(store, obj)
    spill_dir = Path(store.dir)
    assert len(files_in(spill_dir)) == 1
    await asyncio.wait_for(store.ensure(name), WAIT)  # restored; its spill file is kept
    assert obj.state == RESIDENT and obj.on_disk and len(files_in(spill_dir)) == 1
    reader = shm.Mapping(name)  # a reader maps it and pins it: a spill now is "busy"
    try:
        await asyncio.sleep(RESTORED_GRACE_S)  # (a value just restored is not spilled again)
        # past the limit again (another value comes): the store spills the oldest, this one
        store.limit = TIGHT
        small = f"af-{store.node_id}-x2"
        _stored(store, small, shm.write_segment(small, serialize(b"x")), 0)
        await asyncio.sleep(0)  # the spill round has handed it to the spill thread
        assert obj.state == SPILLING
        store.freed(name, 1)  # ... and its owner frees it meanwhile
        freed_at = asyncio.get_running_loop().time()
        await until(lambda: obj.busy is None, timeout=WAIT, what="the spill to end",
                    every=0.01)
        assert shm.exists(name), "the pinned segment was spilled"
        await until(lambda: not files_in(spill_dir), timeout=1.0, every=0.01,
                    what="the freed object's spill file to go")
        assert asyncio.get_running_loop().time() - freed_at < 1.05
        assert store.figures()["spilled_now_bytes"] == 0
        assert name not in store.objects
    finally:
        reader.close()


@pytest.mark.parametrize("newer_spilled", [False, True], ids=["newer-in-memory",
                                                               "newer-spilled"])
async def test_a_late_restore_of_a_freed_value_leaves_the_newer_value_alone(
        store: NodeStore, newer_spilled: bool) -> None:
    name = f"af-{store.node_id}-x1"
    nbytes = _write(name, 1, generation=1)
    old = _stored(store, name, nbytes, 1)
    await _spill(store, old)
    spill_dir = Path(store.dir)
    # a reader asks for the old value: its restore runs on a thread. The test steps the
    # reader's request by hand, so it decides when the store sees that restore end.
    request = store.ensure(name)
    moved = request.send(None)
    assert old.state == RESTORING
    done, _ = await asyncio.wait([moved], timeout=WAIT)
    assert done, "the restore did not end"
    # the thread has put the old value back in the segment; before the store hears of it,
    # the owner frees the old value and the writer reuses the segment for a newer one
    store.freed(name, 1)
    assert _rewrite(name, 2, generation=2) == nbytes
    new = _stored(store, name, nbytes, 2)
    if newer_spilled:
        await _spill(store, new)
    newer_files = {f: _file_generation(spill_dir / f) for f in files_in(spill_dir)}
    # now the store hears that the old value's restore ended (and the reader's request goes
    # on: it finds the newer value under that name, restored if it was spilled)
    await _drive(request, moved)
    await asyncio.sleep(SETTLE_S)  # (the deletions it started on threads have run)
    left = {f: _file_generation(spill_dir / f) for f in files_in(spill_dir)}
    if newer_spilled:
        assert 2 in newer_files.values()
        assert list(left.values()) == [2], f"the newer value's spill file went: {left}"
        assert store.figures()["spilled_now_bytes"] == nbytes
    else:
        assert left == {}, f"the freed value's spill file stayed: {left}"
        assert store.figures()["spilled_now_bytes"] == 0
    assert _segment_value(name) == (2, 2), "the newer value's segment was lost"
    assert store.objects[name] is new and new.state == RESIDENT
