"""Group ``borrowers``: refs outside their owner's process (the borrower protocol,
``actorflow/objects/borrows.py`` and ``actorflow/cluster/borrowing.py``) at the scale of the
ownership paper's borrowing benchmark (NSDI '21), and what the owner's books on them cost.

- ``borrow_pass`` (tasks/s; n = 100,000, quick 2,000): ``BORROWERS`` (16) actors each keep a
  window of the last ``WINDOW`` (100) refs they were given and drop older ones. The driver
  makes n refs, one ``af.put(i)`` each, and hands each, nested in a list (so it is borrowed,
  not resolved), to actor ``i % 16`` in a call ``keep([ref])``; the calls go in batches of
  ``BATCH`` (10,000), each submitted, then awaited. value: n / time. Then, untimed, each actor
  reads the values of the refs it still holds (checked against what the driver put: an object
  freed too early fails here), drops them, and the driver's object table
  (``current_core().objects.entries``) is awaited back at its size before the repetition:
  ``live_before_drop`` (entries the windows kept: 1,600 at most), ``live_after`` (entries left
  over when it stopped waiting: must be 0) and ``settle_s`` (from the drop's answers to the
  table at its baseline). The control, in each repetition before the timed pass: the same
  n calls carrying ``[i]`` instead of ``[ref]`` (same calls, no ref, no borrowing):
  ``plain_value`` (calls/s), ``plain_cpu_us_per_op``, and ``borrow_cpu_us_per_op`` =
  ``cpu_us_per_op`` - ``plain_cpu_us_per_op``: the CPU (all processes) that making, lending,
  borrowing and freeing one ref costs. Ray's side: ``benchmarks/ray_borrowers.py``, defined
  alike without the control (one repetition: at ~300 tasks/s here one takes minutes), run by
  this group when asked (``python -m benchmarks borrowers --compare ray``); the record then
  gets ``baseline``, ``baseline_value``, ``ratio`` and Ray's whole record
  (``baseline_record``).
- ``ref_metadata`` (bytes/ref; n = 20,000, quick 2,000): what the owner keeps per object,
  measured with ``tracemalloc`` in the owner's process (the driver, where the embedded node and
  head live too; every figure is after a ``gc.collect()``, with nothing else running). value:
  the traced memory that n ``af.put(i)`` refs held by the driver add, per ref (the
  ``ObjectRef``, the table's entry, its inline payload, the list holding the refs). Then the
  same refs are also handed to 1, then 16 borrower actors (each holds all n in a list), and
  the owner's extra memory (its ``Borrows`` ledger: holder sets per object, objects per
  holder) is ``bytes_per_ref_1_borrower`` (one borrower: extra / n) and
  ``bytes_per_borrower_ref_16`` (16 borrowers: extra / (16 n));
  ``bytes_per_borrower_ref_marginal`` is the 2nd to 16th borrowers' (extra / (15 n)).
  ``borrower_bytes_per_ref``: what holding them costs a borrower's own process (its refs,
  its list, its ``BorrowCounter``), traced in the first borrower. ``left_per_ref``: the
  traced memory left once everything was dropped and the table was back at its baseline,
  per ref. One trace spans every repetition, so what the first leaves for good (dicts grown
  to n entries keep their size; ``left_per_ref_first_rep``) is not counted again: in the
  later repetitions it is about 0 unless something leaks per ref. ``by_file_per_ref``: the
  owner's bytes per ref by the source file that allocated them (tracemalloc's innermost
  frame: what unpickling a message makes counts under ``transport/decoder.py``). No Ray
  counterpart (Ray's owner tables are C++, out of tracemalloc's sight).

``borrow_overhead`` (the hot paths before and after the borrower protocol) does not fit a
group (it runs two checkouts): ``python -m benchmarks.ab_compare``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections import deque
from typing import Any

import cloudpickle

import actorflow as af
from actorflow.objects.ref import current_core
from benchmarks._common import CpuMeter, child_env, log, loop_kind, meta, run_on, sig, summarize
from benchmarks.compare import DEFAULT_RAY_PYTHON, DEFAULT_RAY_SCRIPT
from benchmarks.ray_borrowers import (
    BATCH,
    BORROW_PASS_N,
    BORROWERS,
    SETTLE_TIMEOUT_S,
    WINDOW,
    expected_sums,
)

WORKLOADS = ("borrow_pass", "ref_metadata")
#: ref_metadata: refs (full, quick); refs per call handing them to a borrower
REF_METADATA_N = (20_000, 2_000)
CHUNK = 5_000
RAY_REPS = 1
RAY_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_borrowers.py")


@af.remote
class Keeper:
    """borrow_pass's borrower: the last ``window`` refs it was given."""

    def __init__(self, window: int) -> None:
        self.window: deque[Any] = deque(maxlen=window)

    def ready(self) -> bool:
        return True

    def keep(self, box):  # type: ignore[no-untyped-def]
        self.window.append(box[0])

    async def total(self) -> int:
        return sum(await af.get(list(self.window)))

    def drop(self) -> int:
        k = len(self.window)
        self.window.clear()
        return k


@af.remote
class Holder:
    """ref_metadata's borrower: holds every ref it is given; can trace its own memory."""

    def __init__(self) -> None:
        self.refs: list[Any] = []

    def ready(self) -> bool:
        return True

    def hold(self, refs):  # type: ignore[no-untyped-def]
        self.refs.extend(refs)
        return len(self.refs)

    def drop(self) -> int:
        k = len(self.refs)
        self.refs = []
        return k

    def traced(self, start: bool = False) -> int:
        if start:
            tracemalloc.start()
        gc.collect()
        return tracemalloc.get_traced_memory()[0]


def _table_size() -> int:
    return len(current_core().objects.entries)


async def _back_to(size: int, timeout: float = SETTLE_TIMEOUT_S) -> int:
    """Wait (bounded) until the driver's object table has ``size`` entries; the excess."""
    deadline = time.monotonic() + timeout
    while True:
        excess = _table_size() - size
        if excess <= 0 or time.monotonic() > deadline:
            return excess
        await asyncio.sleep(0.005)


async def _kill(handles: list[Any]) -> None:
    for h in handles:
        await af.kill(h)


# -- borrow_pass --------------------------------------------------------------------------------


async def _borrow_pass(n: int, reps: int, meter: CpuMeter) -> list[dict[str, Any]]:
    keepers = [Keeper.remote(WINDOW) for _ in range(BORROWERS)]
    assert await af.get([k.ready.remote() for k in keepers]) == [True] * BORROWERS
    put = af.put
    try:
        warm = BORROWERS * 4
        await af.get([keepers[i % BORROWERS].keep.remote([put(i)]) for i in range(warm)])
        assert sum(await af.get([k.total.remote() for k in keepers])) == sum(range(warm))
        await af.get([k.drop.remote() for k in keepers])
        await asyncio.sleep(0.5)  # the warm-up's refs let go
        expect = expected_sums(n)
        runs = []
        for r in range(reps):
            plain = await _plain_pass(keepers, n, meter)
            gc.collect()
            base = _table_size()
            before = meter.snap()
            t0 = time.perf_counter()
            for start in range(0, n, BATCH):
                await af.get([keepers[i % BORROWERS].keep.remote([put(i)])
                              for i in range(start, min(n, start + BATCH))])
            dt = time.perf_counter() - t0
            after = meter.snap(end=True)
            assert await af.get([k.total.remote() for k in keepers]) == expect, "wrong values"
            live = _table_size() - base
            dropped = sum(await af.get([k.drop.remote() for k in keepers]))
            t1 = time.perf_counter()
            left = await _back_to(base)
            rec: dict[str, Any] = {"value": n / dt, "total_s": dt, "dropped": dropped,
                                   "live_before_drop": live, "live_after": left,
                                   "settle_s": time.perf_counter() - t1}
            meter.add(rec, before, after, n)
            rec.update(plain)
            rec["borrow_cpu_us_per_op"] = rec["cpu_us_per_op"] - plain["plain_cpu_us_per_op"]
            runs.append(rec)
            log(f"[borrow_pass] rep {r + 1}/{reps}: {rec['value']:.4g} tasks/s (plain values "
                f"{plain['plain_value']:.4g}); CPU {rec['cpu_us_per_op']:.0f} us/call (plain "
                f"{plain['plain_cpu_us_per_op']:.0f}); entries kept {live}, left after the "
                f"drop {left} ({rec['settle_s'] * 1e3:.0f} ms)")
        return runs
    finally:
        await _kill(keepers)


async def _plain_pass(keepers: list[Any], n: int, meter: CpuMeter) -> dict[str, Any]:
    """The control: the same n calls carrying ``[i]`` (an int where the ref was)."""
    before = meter.snap()
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        await af.get([keepers[i % BORROWERS].keep.remote([i])
                      for i in range(start, min(n, start + BATCH))])
    dt = time.perf_counter() - t0
    after = meter.snap(end=True)
    await af.get([k.drop.remote() for k in keepers])
    cpu = meter.add({}, before, after, n)
    return {"plain_value": n / dt, "plain_cpu_us_per_op": cpu["cpu_us_per_op"]}


# -- ref_metadata -------------------------------------------------------------------------------


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _settled(ids: list[str], holders: int, timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Until every object of ``ids`` has ``holders`` holder processes and no lend left (the
    calls that carried them are done and their lends discarded)."""
    borrows = current_core().objects.borrows
    deadline = time.monotonic() + timeout
    while True:
        pending = [o for o in ids if borrows.counts(o) != (holders, 0)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} objects not settled at {holders} holders: "
                               f"e.g. {pending[0]} {borrows.counts(pending[0])}")
        await asyncio.sleep(0.01)


async def _hand(holder: Any, refs: list[Any]) -> None:
    await af.get([holder.hold.remote(refs[i:i + CHUNK]) for i in range(0, len(refs), CHUNK)])


def _by_file(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot,
             n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for stat in after.compare_to(before, "filename")[:8]:
        frame = stat.traceback[0]
        parts = frame.filename.split(os.sep)
        name = os.sep.join(parts[-2:])
        if abs(stat.size_diff) / n >= 1:
            out[name] = round(stat.size_diff / n, 1)
    return out


async def _ref_metadata_rep(n: int, holders: list[Any]) -> dict[str, Any]:
    base = _table_size()
    m0 = _traced()
    snap0 = tracemalloc.take_snapshot()
    refs = [af.put(i) for i in range(n)]
    ids = [r.id for r in refs]
    m1 = _traced()
    snap1 = tracemalloc.take_snapshot()
    b0 = await holders[0].traced.remote(True)
    await _hand(holders[0], refs)
    await _settled(ids, 1)
    b1 = await holders[0].traced.remote()
    m2 = _traced()
    await asyncio.gather(*[_hand(h, refs) for h in holders[1:]])
    await _settled(ids, len(holders))
    m3 = _traced()
    snap3 = tracemalloc.take_snapshot()
    assert await af.get([h.drop.remote() for h in holders]) == [n] * len(holders)
    del refs, ids
    left = await _back_to(base)
    m4 = _traced()
    snap4 = tracemalloc.take_snapshot()
    k = len(holders)
    rec: dict[str, Any] = {
        "value": (m1 - m0) / n,
        "bytes_per_ref_1_borrower": (m2 - m1) / n,
        "bytes_per_borrower_ref_16": (m3 - m1) / (k * n),
        "bytes_per_borrower_ref_marginal": (m3 - m2) / ((k - 1) * n),
        "borrower_bytes_per_ref": (b1 - b0) / n,
        "left_per_ref": (m4 - m0) / n,
        "live_after": left,
        "by_file_per_ref": {
            "refs": _by_file(snap0, snap1, n),
            f"{k}_borrowers": _by_file(snap1, snap3, k * n),
            "left": _by_file(snap0, snap4, n),
        },
    }
    del snap0, snap1, snap3, snap4
    return rec


async def _ref_metadata(n: int, reps: int) -> list[dict[str, Any]]:
    holders = [Holder.remote() for _ in range(BORROWERS)]
    assert await af.get([h.ready.remote() for h in holders]) == [True] * BORROWERS
    try:
        warm = [af.put(i) for i in range(100)]  # warm-up: every path once, untraced
        await asyncio.gather(*[_hand(h, warm) for h in holders])
        await af.get([h.drop.remote() for h in holders])
        del warm
        await asyncio.sleep(0.5)
        runs = []
        tracemalloc.start()  # one trace for every repetition: the first one's left-overs
        try:  # (tables grown, buffers) are not counted again by the next
            for r in range(reps):
                runs.append(await _ref_metadata_rep(n, holders))
                log(_metadata_line(r, reps, runs[-1]))
        finally:
            tracemalloc.stop()
        return runs
    finally:
        await _kill(holders)


def _metadata_line(r: int, reps: int, rec: dict[str, Any]) -> str:
    return (f"[ref_metadata] rep {r + 1}/{reps}: owner {rec['value']:.0f} B/ref; +1 borrower "
            f"{rec['bytes_per_ref_1_borrower']:.0f} B/ref; 16 borrowers "
            f"{rec['bytes_per_borrower_ref_16']:.0f} B/(borrower, ref); a borrower's own "
            f"{rec['borrower_bytes_per_ref']:.0f} B/ref; left {rec['left_per_ref']:.1f}")


# -- Ray's side, and the group's entry point --------------------------------------------------


def ray_borrow_pass(quick: bool) -> dict[str, Any]:
    """Ray's ``borrow_pass`` (``RAY_REPS`` repetitions), run with Ray's interpreter."""
    python = os.environ.get("AF_BENCH_RAY_PYTHON") or DEFAULT_RAY_PYTHON
    script = os.environ.get("AF_BENCH_RAY_SCRIPT") or DEFAULT_RAY_SCRIPT
    cmd = [python, RAY_SCRIPT, "--reps", str(RAY_REPS), *(["--quick"] if quick else []),
           "--bench-dir", os.path.dirname(script)]
    log(f"[borrow_pass] Ray's side: {' '.join(cmd)}")
    env = child_env()
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env,
                          timeout=3600, check=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return dict(json.loads(lines[-1]))


def _with_ray(rec: dict[str, Any], ray: dict[str, Any]) -> None:
    rec["baseline"] = f"ray {ray.get('version', '')}".strip()
    rec["baseline_value"] = ray["value"]
    rec["baseline_reps"] = ray.get("reps")
    rec["baseline_cpu_us_per_op"] = ray.get("cpu_us_per_op")
    rec["baseline_live_after"] = ray.get("live_after")
    rec["ratio"] = sig(rec["value"] / ray["value"], 4)
    rec["baseline_record"] = ray


def run(quick: bool, reps: int, only: set[str] | None = None,
        ray: bool = False) -> list[dict[str, Any]]:
    """The selected workloads (both by default), one record each; with ``ray``, Ray's side of
    ``borrow_pass`` afterwards (Ray's interpreter, after ours has finished)."""
    names = [w for w in WORKLOADS if only is None or w in only]
    provenance = {**meta(quick), "loop": loop_kind(), "borrowers": BORROWERS,
                  "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    q = 1 if quick else 0

    async def main() -> list[dict[str, Any]]:
        records = []
        async with af.init(num_cpus=os.cpu_count() or 1, log_to_driver=False):
            if "borrow_pass" in names:
                n = BORROW_PASS_N[q]
                runs = await _borrow_pass(n, reps, CpuMeter())
                records.append(summarize("borrow_pass", "tasks/s", n, runs,
                                         {**provenance, "window": WINDOW, "batch": BATCH}))
            if "ref_metadata" in names:
                n = REF_METADATA_N[q]
                runs = await _ref_metadata(n, reps)
                rec = summarize("ref_metadata", "bytes/ref", n, runs, provenance)
                rec["left_per_ref_first_rep"] = sig(runs[0]["left_per_ref"])
                rec["baseline"] = "none: Ray's owner tables are C++, out of tracemalloc's sight"
                records.append(rec)
        return records

    records = run_on(loop_kind(), main)
    if ray:
        for rec in records:
            if rec["workload"] == "borrow_pass":
                _with_ray(rec, ray_borrow_pass(quick))
    return records


# Workers must not need this module: pickle its remote classes by value.
if __name__ != "__main__":
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
