"""The cluster group's ``cross_node`` workload (``python -m benchmarks.cluster cross_node``): two
nodes on this machine started as real processes through the CLI, and a driver joined to them.

- ``cross_node`` (tasks/s; n = 10,000, quick 1,000): the head and a second node started through
  the CLI (``actorflow start --head --port 0 --num-cpus 1`` and ``actorflow start --address ...
  --num-cpus 1 --resources '{"far": 1}'``, with a private ``ACTORFLOW_STATE_DIR``), the driver
  joined with ``af.init(address=..., token=...)``, all in a fresh child process
  (``python -m benchmarks.cluster --child cross_node --n N --reps R``, which calls
  :func:`child_main`). value: n no-op tasks pinned to the far node (``resources={"far":
  0.001}``), submitted then gathered. Extras: ``transfer_100MiB_s`` (a task on the far node
  returning the 100 MiB array, from submission to the checked array in the driver, whose node is
  the head) and ``transfer_GBps``; ``produce_s`` (the same task returning only the last element:
  all but the move), ``move_s`` = transfer - produce, ``move_GBps``; ``transfer_cpu_s``. The
  ``cpu_*`` fields cover the task part only. ``reread_first_s`` and ``reread_later_s``
  (median; once, after the repetitions, the same in every record): one far 100 MiB result
  read :data:`REREADS` times by the driver; the first read
  pulls it into a secondary copy on the driver's node (``actorflow/cluster/copies.py``), the
  later ones map that copy.

The parent side (:func:`measure`, called by ``benchmarks.cluster.run``) gives the child its state
folder and a process tag of its own; once the child has exited (it stops its nodes, on failure
too) it kills any ``actorflow start`` process group left in that folder and any process left
with the tag, and removes the folder. Ray's side of the workload is in
``benchmarks/ray_extra.py``.

The spec (n, the 100 MiB array's size) is ``benchmarks.spec``'s, the child runner
``benchmarks._common``'s; ``benchmarks.cluster`` imports this module. Its remote functions
travel by value, as that module's do (see the end of the module).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import cloudpickle

import actorflow as af
from benchmarks._common import (
    TAG_VAR,
    CliNodes,
    CpuMeter,
    check_sum,
    large_array,
    log,
    loop_kind,
    reap_tagged,
    run_child,
    run_on,
    summarize,
)
from benchmarks.spec import LARGE_BYTES, SPEC

_FAR = {"far": 0.001}
_CROSS_NODE_TIMEOUT_S = 1200.0  # the whole child, all repetitions
REREADS = 5  # reads of one far result (the first pulls it, the later ones find the copy)


# -- remote functions ------------------------------------------------------------------------------


@af.remote
def noop(i):  # type: ignore[no-untyped-def]
    return i


@af.remote
def where() -> str:
    return af.get_runtime_context().node_id


@af.remote
def big():  # type: ignore[no-untyped-def]
    import numpy as np

    return np.random.default_rng(0).random(LARGE_BYTES // 8)


@af.remote
def big_last() -> float:
    import numpy as np

    return float(np.random.default_rng(0).random(LARGE_BYTES // 8)[-1])


# -- the nodes: ``actorflow start`` processes ------------------------------------------------------


def _kill_leftovers(state_dir: str) -> None:
    """Parent side: end the process groups of ``actorflow start`` processes the child left in
    ``state_dir`` (it ends them itself unless it was killed)."""
    for entry in Path(state_dir, "procs").glob("*.json"):
        try:
            pid = int(json.loads(entry.read_text())["pid"])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, KeyError):
            continue
        if b"actorflow" in cmdline:
            log(f"[cross_node] killing leftover actorflow process group {pid}")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


# -- the driver (in the child) ---------------------------------------------------------------------


def _snap_delta(before: dict[int, tuple[str, float]],
                after: dict[int, tuple[str, float]]) -> float:
    return sum(max(0.0, t - before.get(pid, ("", 0.0))[1]) for pid, (_, t) in after.items())


async def _cross_node_driver(address: str, token: str, n: int, reps: int
                             ) -> list[dict[str, Any]]:
    import numpy as np

    meter = CpuMeter()
    rt = await af.init(address=address, token=token, log_to_driver=False)
    try:
        deadline = time.monotonic() + 30.0
        while True:
            views = [v for v in await af.nodes() if v.get("alive")]
            far = [v["node_id"] for v in views if "far" in v.get("resources", {})]
            if len(views) == 2 and len(far) == 1:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"expected 2 live nodes, one with 'far': {views}")
            await asyncio.sleep(0.1)
        far_noop, far_where = noop.options(resources=_FAR), where.options(resources=_FAR)
        far_big, far_big_last = big.options(resources=_FAR), big_last.options(resources=_FAR)
        local = large_array()
        shape, last = local.shape, float(local[-1])
        del local
        assert await far_where.remote() == far[0] != rt.node_id, "far tasks did not run far"
        # warm-up: tasks on the far node, one big transfer (first touch of shared memory)
        check_sum(await af.get([far_noop.remote(i) for i in range(200)]), 200)
        out = await far_big.remote()
        assert isinstance(out, np.ndarray) and out.shape == shape and out[-1] == last
        del out
        assert await far_big_last.remote() == last

        runs = []
        for r in range(reps):
            before = meter.snap()
            t0 = time.perf_counter()
            refs = [far_noop.remote(i) for i in range(n)]
            t1 = time.perf_counter()
            res = await af.get(refs)
            t2 = time.perf_counter()
            after = meter.snap(end=True)
            check_sum(res, n)
            del refs, res
            rec: dict[str, Any] = {"value": n / (t2 - t0), "submit_s": t1 - t0,
                                   "total_s": t2 - t0}
            meter.add(rec, before, after, n)

            t3 = time.perf_counter()
            assert await far_big_last.remote() == last
            t4 = time.perf_counter()
            before = meter.snap()
            t5 = time.perf_counter()
            out = await far_big.remote()
            t6 = time.perf_counter()
            after = meter.snap(end=True)
            assert out.shape == shape and out[-1] == last
            del out
            transfer, produce = t6 - t5, t4 - t3
            move = max(transfer - produce, 1e-9)
            rec.update({
                "transfer_100MiB_s": transfer,
                "transfer_GBps": LARGE_BYTES / transfer / 1e9,
                "produce_s": produce,
                "move_s": move,
                "move_GBps": LARGE_BYTES / move / 1e9,
                "transfer_cpu_s": _snap_delta(before, after),
            })
            runs.append(rec)
            log(f"[cross_node] rep {r + 1}/{reps}: {rec['value']:.4g} tasks/s; 100 MiB "
                f"far->driver {transfer:.3f} s ({rec['transfer_GBps']:.3g} GB/s; produce "
                f"{produce:.3f} s)")
        # after the reps (its copies' churn must not overlap the tasks measured above)
        reads = await _rereads(far_big, shape, last)
        later = sorted(reads[1:])[len(reads[1:]) // 2]
        for rec in runs:
            rec["reread_first_s"], rec["reread_later_s"] = reads[0], later
        log(f"[cross_node] one far 100 MiB result read {REREADS} times: first "
            f"{reads[0] * 1e3:.1f} ms, later {later * 1e3:.2f} ms (median)")
        summary = await af.memory_summary()
        (mine,) = [n for n in summary["nodes"] if n["node_id"] == rt.node_id]
        log(f"[cross_node] the driver's node: {mine.get('copy_pulls')} pulls, "
            f"{mine.get('copy_spare_hits')} into spares, {mine.get('copy_reads')} reads; "
            f"making their segments {mine.get('copy_segment_s')} s, pulls "
            f"{mine.get('copy_pull_s')} s in all")
        return runs
    finally:
        await af.shutdown()


async def _rereads(far_big: Any, shape: Any, last: float) -> list[float]:
    """Seconds of each of REREADS reads of one far 100 MiB result (made, not yet read)."""
    ref = far_big.remote()
    await af.wait([ref], fetch_local=False)
    out: list[float] = []
    for _ in range(REREADS):
        t0 = time.perf_counter()
        arr = await ref
        out.append(time.perf_counter() - t0)
        assert arr.shape == shape and arr[-1] == last
        del arr
    return out


# -- the child and the parent ----------------------------------------------------------------------


def child_main(n: int, reps: int) -> list[dict[str, Any]]:
    """The child (``--child cross_node``): start the head and the far node, run the driver, stop
    the nodes; one dict per repetition."""
    nodes = CliNodes(Path(os.environ["ACTORFLOW_STATE_DIR"]), label="cross_node")
    try:
        nodes.start("head", ["--head", "--port", "0", "--host", "127.0.0.1", "--num-cpus", "1"])
        nodes.wait_ready("head")
        address, token = nodes.head_info()
        nodes.start("far", ["--address", address, "--num-cpus", "1",
                            "--resources", json.dumps({"far": 1})])
        nodes.wait_ready("far")
        return run_on(loop_kind(), lambda: _cross_node_driver(address, token, n, reps))
    finally:
        nodes.stop()


def measure(quick: bool, reps: int, provenance: dict[str, Any]) -> dict[str, Any]:
    """The parent: run the child, clean up after it; the summarized record."""
    unit, n_full, n_quick = SPEC["cross_node"]
    n = n_quick if quick else n_full
    state_dir = tempfile.mkdtemp(prefix="af-bench-cross-node-")
    tag = uuid.uuid4().hex  # the child's, its nodes' and their workers'
    try:
        _, runs = run_child("cross_node", ["--n", str(n), "--reps", str(reps)],
                             env={"ACTORFLOW_STATE_DIR": state_dir, TAG_VAR: tag},
                             timeout=_CROSS_NODE_TIMEOUT_S, quiet=False)
    finally:
        _kill_leftovers(state_dir)
        reap_tagged(tag, what="cross_node")
        shutil.rmtree(state_dir, ignore_errors=True)
    return summarize("cross_node", unit, n, runs, {**provenance, "num_cpus": 1, "nodes": 2})


# Workers must not need this module: pickle its remote functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
