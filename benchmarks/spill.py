"""Group ``spill``: the object store's spilling and restoring (``actorflow/objects/spill.py``)
against a plain file write and read of the same bytes, on the same disk, in the same run.

- ``spill_write`` (MB/s): ``k`` segments of ``size`` bytes are written into shared memory
  (untimed), then each is spilled as the node's spill thread does it (``spill_file``: the
  exclusive lock, the generation check, an in-kernel copy to ``<spill dir>/<name>``, the
  unlink of the segment). Baseline, in the same repetition: the same bytes written from memory
  to ``k`` new files of that directory with ``os.write`` (``plain_mb_s``). No ``fsync``
  on either side: a spill file is a cache of memory, not a durable copy. Target: value >= 70%
  of the plain write (``vs_plain``).
- ``spill_restore`` (MB/s): each spill file copied back into a new segment (``restore_file``:
  a temporary segment filled by an in-kernel copy, then renamed into place). Baseline: the same
  files read with a plain ``f.read()`` (``plain_mb_s``), which, like a restore, fills memory
  that did not exist before. Target: ``vs_plain`` >= 70%. For reference, ``plain_warm_mb_s``:
  reading into one buffer used again and again (pages that exist: no allocation at all).
- ``spill_get`` (MB/s): end to end in an embedded cluster with ``object_store_memory`` a
  quarter of the data: ``k`` values put (their spilling untimed: waited for), then every
  spilled one read with ``await ref`` (the driver asks its node, which restores it on its
  thread; the driver maps it; numpy arrays come back zero-copy). The store is full, so each
  restore also makes the store spill another value meanwhile: this is reading past the limit,
  not a restore alone. Baseline: a plain read of the same size; reported, no target.

The spill directory is a fresh folder under the default spill root (``<state dir>/spill``:
the disk a node spills to unless told otherwise), removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from typing import Any

from benchmarks._common import log, meta, sig, summarize

WORKLOADS = ("spill_write", "spill_restore", "spill_get")
MIB = 1 << 20
#: (segment size, count) in full and quick runs
SIZES = {False: (64 * MIB, 8), True: (32 * MIB, 4)}
TARGET_RATIO = 0.7


def _segments(k: int, size: int, tag: str) -> list[tuple[str, int]]:
    from actorflow.objects import shm
    from actorflow.objects.serialization import Serialized

    payload = memoryview(os.urandom(1 << 20) * (size // (1 << 20)))
    out = []
    for i in range(k):
        name = f"af-bench{tag}-{i}"
        shm.write_segment(name, Serialized(b"m", (payload,)), i + 1)
        out.append((name, i + 1))
    return out


def _files_rep(k: int, size: int, root: str) -> dict[str, Any]:
    from actorflow.objects import shm
    from actorflow.objects.spillfiles import restore_file, spill_file

    work = tempfile.mkdtemp(prefix="bench-", dir=root)
    tag = os.urandom(3).hex()
    try:
        segs = _segments(k, size, tag)
        total = sum(os.stat(shm.path_of(n)).st_size for n, _ in segs)
        t0 = time.perf_counter()
        for name, gen in segs:
            outcome = spill_file(name, os.path.join(work, name), gen)
            assert outcome == "spilled", outcome
        spill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for name, _ in segs:
            restore_file(name, os.path.join(work, name))
        restore_s = time.perf_counter() - t0
        for name, _ in segs:
            shm.unlink_segment(name)
        # the baseline: the same bytes, plain write then plain read, same directory
        data = memoryview(os.urandom(1 << 20) * (size // (1 << 20)))
        paths = [os.path.join(work, f"plain-{i}") for i in range(k)]
        t0 = time.perf_counter()
        for path in paths:
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                done = 0
                while done < len(data):
                    done += os.write(fd, data[done:])
            finally:
                os.close(fd)
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for path in paths:
            with open(path, "rb") as f:
                got = f.read()
            assert len(got) == size
            del got
        read_s = time.perf_counter() - t0
        buf = bytearray(size + 4096)
        t0 = time.perf_counter()
        for path in paths:
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buf):  # type: ignore[attr-defined]
                    pass
        warm_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for name, _ in locals().get("segs", []):
            shm.unlink_segment(name)
    mb = total / 1e6
    plain_mb = k * size / 1e6
    return {"spill_mb_s": mb / spill_s, "restore_mb_s": mb / restore_s,
            "plain_write_mb_s": plain_mb / write_s, "plain_read_mb_s": plain_mb / read_s,
            "plain_warm_mb_s": plain_mb / warm_s,
            "bytes": total}


async def _get_rep(k: int, size: int) -> dict[str, Any]:
    import numpy as np

    import actorflow as af
    from actorflow.cluster.protocol import NodeInfo
    from actorflow.objects.ref import current_core

    async with af.init(num_cpus=1, object_store_memory=max(k * size // 4, 2 * size)):
        core = current_core()
        refs = [await af.put_async(np.full(size, i, dtype=np.uint8)) for i in range(k)]
        deadline = time.monotonic() + 60
        while True:  # wait until the store has spilled down to its limit
            info = await core.node.ask(NodeInfo())
            if info["object_store_used"] <= info["object_store_limit"]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the store did not spill in time: {info}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # (pins of the puts relaxed)
        spilled = [r for r in refs if not core.reads.is_local(
            core.objects.entries[r.id].payload)]  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for ref in spilled:
            value = await ref
            assert value.nbytes == size
            del value
        get_s = time.perf_counter() - t0
        del refs
    return {"get_mb_s": len(spilled) * size / 1e6 / get_s, "restored": len(spilled)}


def run(quick: bool, reps: int, only: set[str] | None = None) -> list[dict[str, Any]]:
    from actorflow.objects.spillfiles import spill_root

    provenance = meta(quick)
    size, k = SIZES[quick]
    root = spill_root({})
    os.makedirs(root, exist_ok=True)
    selected = [w for w in WORKLOADS if only is None or w in only]
    files_runs: list[dict[str, Any]] = []
    if {"spill_write", "spill_restore"} & set(selected):
        for r in range(reps):
            rep = _files_rep(k, size, root)
            files_runs.append(rep)
            log(f"[spill] rep {r + 1}/{reps}: spill {rep['spill_mb_s']:,.0f} MB/s (plain "
                f"write {rep['plain_write_mb_s']:,.0f}), restore {rep['restore_mb_s']:,.0f} "
                f"MB/s (plain read {rep['plain_read_mb_s']:,.0f})")
    records = []
    pairs = {"spill_write": ("spill_mb_s", "plain_write_mb_s"),
             "spill_restore": ("restore_mb_s", "plain_read_mb_s")}
    for name in ("spill_write", "spill_restore"):
        if name not in selected:
            continue
        ours, plain = pairs[name]
        runs = [{"value": rep[ours], "plain_mb_s": rep[plain],
                 "vs_plain": rep[ours] / rep[plain]} for rep in files_runs]
        if name == "spill_restore":
            for run_, rep in zip(runs, files_runs, strict=True):
                run_["plain_warm_mb_s"] = rep["plain_warm_mb_s"]
        records.append(_with_target(summarize(name, "MB/s", k, runs, provenance), size))
    if "spill_get" in selected:
        runs = []
        for r in range(reps):
            got = asyncio.run(_get_rep(k, size))
            plain = _files_rep(1, size, root)["plain_read_mb_s"]
            runs.append({"value": got["get_mb_s"], "plain_mb_s": plain,
                         "vs_plain": got["get_mb_s"] / plain, "restored": got["restored"]})
            log(f"[spill_get] rep {r + 1}/{reps}: {got['get_mb_s']:,.0f} MB/s over "
                f"{got['restored']} restored values (plain read {plain:,.0f})")
        rec = summarize("spill_get", "MB/s", k, runs, provenance)
        rec["value_bytes_each"] = size
        rec["value"] = sig(rec["value"])
        records.append(rec)
    return records


def _with_target(rec: dict[str, Any], size: int) -> dict[str, Any]:
    rec["value_bytes_each"] = size
    rec["target"] = f"vs_plain >= {TARGET_RATIO:.0%} (of the plain file operation)"
    rec["target_value"] = TARGET_RATIO
    rec["target_met"] = bool(rec["vs_plain"] >= TARGET_RATIO)
    rec["value"] = sig(rec["value"])
    return rec


if __name__ == "__main__":
    import json
    import sys

    for record in run("--quick" in sys.argv, 1):
        print(json.dumps(record))
