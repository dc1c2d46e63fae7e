"""The object store limit (``object_store_memory``): a put that can never fit fails at once
with ObjectStoreFullError naming the sizes; a spill directory that fills gives the same error,
not a retry loop or a hang, and room comes back when objects are freed; the default limit and
the sizes ``actorflow start --object-store-memory`` takes."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest
from obj_support import MIB, files_in, small_tmpfs, store_figures, until

import actorflow as af
from actorflow.cli.memory_cmds import parse_bytes
from actorflow.objects import shm
from actorflow.objects.ref import current_core
from actorflow.objects.spillfiles import MEMORY_SHARE, SHM_SHARE, default_limit
from actorflow.testing import cluster

LIMIT = 16 * MIB


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("ACTORFLOW_STATE_DIR", str(state))
    return state


async def test_a_put_larger_than_the_limit_fails_at_once(state_dir: Path) -> None:
    async with cluster(num_cpus=1, object_store_memory=LIMIT):
        big = np.zeros(20 * MIB, dtype=np.uint8)
        started = time.monotonic()
        with pytest.raises(af.ObjectStoreFullError) as info:
            af.put(big)
        assert time.monotonic() - started < 1.0
        error = info.value
        assert error.size >= big.nbytes
        assert error.limit == LIMIT
        assert "object_store_memory" in error.where
        with pytest.raises(af.ObjectStoreFullError):
            await af.put_async(big)

        @af.remote
        def make() -> np.ndarray:
            return np.zeros(20 * MIB, dtype=np.uint8)

        # a task's result too: the task fails with the typed error
        with pytest.raises(af.ObjectStoreFullError) as info:
            await af.get(make.remote(), timeout=60)
        cause = info.value.cause  # type: ignore[attr-defined]  # (a TaskError too)
        assert isinstance(cause, af.ObjectStoreFullError) and cause.limit == LIMIT
        # what fits still goes in
        ref = af.put(np.ones(4 * MIB, dtype=np.uint8))
        assert int((await ref)[-1]) == 1


async def test_a_full_spill_disk_fails_puts_with_the_typed_error(state_dir: Path) -> None:
    with small_tmpfs(state_dir / "spill", "6m") as spill_disk:
        async with cluster(num_cpus=1, object_store_memory=LIMIT):
            core = current_core()
            refs = []
            error = None
            started = time.monotonic()
            for i in range(40):  # 40 x 4 MiB: far past the limit and the 6 MiB disk
                try:
                    refs.append(af.put(np.full(4 * MIB, i, dtype=np.uint8)))
                except af.ObjectStoreFullError as exc:
                    error = exc
                    break
                await asyncio.sleep(0.05)  # the spill thread catches up meanwhile
            assert error is not None, "the store never reported its spill disk full"
            assert time.monotonic() - started < 20.0
            assert error.size >= 4 * MIB
            assert error.limit < error.size  # what was left under the limit
            assert "spill directory is full" in error.where
            figures = await store_figures(core.node)
            assert figures["spill_dir_full"] is True
            assert figures["spilled_objects"] >= 1
            # no half-written spill file is left on the full disk
            (spill_dir,) = [spill_disk / d for d in files_in(spill_disk)]
            assert not [f for f in files_in(spill_dir) if f.endswith(".tmp")]
            # every value stored is still right, spilled or not
            for i, ref in enumerate(refs):
                value = await af.get(ref, timeout=30)
                assert int(value[0]) == i and int(value[-1]) == i
            # freeing makes room again: puts go in
            del refs, value
            await until(lambda: not files_in(spill_dir), what="spill files to go")
            ref = af.put(np.full(4 * MIB, 7, dtype=np.uint8))
            assert int((await ref)[0]) == 7


async def test_the_default_limit_is_the_smaller_share(state_dir: Path) -> None:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    fs = os.statvfs(shm.SHM_DIR)
    expected = int(min(MEMORY_SHARE * memory, SHM_SHARE * fs.f_blocks * fs.f_frsize))
    assert default_limit() == expected
    async with cluster(num_cpus=1):
        figures = await store_figures(current_core().node)
        assert figures["object_store_limit"] == expected
        for key in ("object_store_used", "spilled_bytes", "restored_bytes", "spilled_objects"):
            assert figures[key] == 0, key


def test_start_flag_sizes() -> None:
    assert parse_bytes("67108864") == 64 * MIB
    assert parse_bytes("64M") == parse_bytes("64MiB") == 64 * MIB
    assert parse_bytes("1.5G") == 3 * (1 << 29)
    for bad in ("", "-1", "12X", "0"):
        with pytest.raises(ValueError):
            parse_bytes(bad)
