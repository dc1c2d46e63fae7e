#!/usr/bin/env python3
"""Ray's side of the ``borrowers`` group's ``borrow_pass`` (``benchmarks/borrowers.py``), and
the sizes both sides share.

Usage (with Ray's interpreter, never the project's: Ray is not a dependency of actorflow)::

    /work/rayenv/bin/python benchmarks/ray_borrowers.py [--quick] [--reps N] [--num-cpus N]
        [--bench-dir DIR]

Prints one JSON record on stdout in the peer scripts' format (``framework: "ray"``);
everything else goes to stderr. It reuses the peer folder's ``bench_common.py`` and
``ray_bench.py``'s ``init_ray`` as ``benchmarks/ray_extra.py`` does (``--bench-dir``, else the
folder of ``$AF_BENCH_RAY_SCRIPT``, else ``<checkout>/../shared/bench``, else
``/work/shared/bench``).

``borrow_pass`` (tasks/s; n = 100,000, quick 2,000): ``BORROWERS`` (16) actors each keep a
window of the last ``WINDOW`` (100) refs they were given and drop older ones. The driver makes
n refs, one ``ray.put(i)`` each, and hands each, nested in a list (so it is borrowed, not
resolved), to actor ``i % 16`` in a call ``keep([ref])``; the calls go in batches of
``BATCH`` (10,000), each batch submitted, then awaited. value: n / time. Then, untimed, each
actor reads the values of the refs it still holds (checked against what the driver put: an
object freed too early would fail here), drops them, and the driver's count of references it
knows (``core_worker.get_all_reference_counts()``, a private API: best effort) is compared with
its count before the repetition (``live_after``: 0 once every borrower's refs are gone;
``settle_s``: how long that took).

This module imports nothing but the standard library at its top (``benchmarks.ray_extra`` and
what it imports): ``benchmarks/borrowers.py`` reads the sizes from it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import deque
from typing import Any

if not __package__:  # run as a script (Ray's interpreter): the checkout on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.ray_extra import bench_dir

#: borrow_pass: calls (full, quick), borrower actors, refs each keeps, calls per batch
BORROW_PASS_N = (100_000, 2_000)
BORROWERS = 16
WINDOW = 100
BATCH = 10_000
SETTLE_TIMEOUT_S = 60.0
FRAMEWORK = "ray"


def _log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def expected_sums(n: int, k: int = BORROWERS, window: int = WINDOW) -> list[int]:
    """What each of the k actors' windows sums to after calls ``i`` (value i) went to actor
    ``i % k`` for i < n."""
    windows: list[deque[int]] = [deque(maxlen=window) for _ in range(k)]
    for i in range(n):
        windows[i % k].append(i)
    return [sum(w) for w in windows]


def _ref_count(ray: Any) -> int | None:
    try:
        worker = ray._private.worker.global_worker  # private API, best effort
        return len(worker.core_worker.get_all_reference_counts())
    except Exception:
        return None


def run_borrow_pass(ray: Any, n: int, reps: int, meter: Any) -> list[dict[str, Any]]:
    @ray.remote
    class Keeper:
        def __init__(self, window: int) -> None:
            self.window: deque[Any] = deque(maxlen=window)

        def ready(self) -> bool:
            return True

        def keep(self, box):  # type: ignore[no-untyped-def]
            self.window.append(box[0])

        def total(self) -> int:
            return sum(ray.get(list(self.window)))

        def drop(self) -> int:
            k = len(self.window)
            self.window.clear()
            return k

    keepers = [Keeper.remote(WINDOW) for _ in range(BORROWERS)]
    assert ray.get([k.ready.remote() for k in keepers]) == [True] * BORROWERS
    # warm-up: a few calls to each, a read, a drop
    ray.get([keepers[i % BORROWERS].keep.remote([ray.put(i)]) for i in range(BORROWERS * 4)])
    assert sum(ray.get([k.total.remote() for k in keepers])) == sum(range(BORROWERS * 4))
    ray.get([k.drop.remote() for k in keepers])
    time.sleep(1.0)  # the warm-up's refs let go before the first baseline count
    expect = expected_sums(n)
    runs = []
    for r in range(reps):
        base = _ref_count(ray)
        before = meter.snap()
        t0 = time.perf_counter()
        for start in range(0, n, BATCH):
            ray.get([keepers[i % BORROWERS].keep.remote([ray.put(i)])
                     for i in range(start, min(n, start + BATCH))])
        dt = time.perf_counter() - t0
        after = meter.snap()
        assert ray.get([k.total.remote() for k in keepers]) == expect, "wrong values"
        mid = _ref_count(ray)
        dropped = sum(ray.get([k.drop.remote() for k in keepers]))
        t1 = time.perf_counter()
        live = _ref_count(ray)
        while (base is not None and live is not None and live > base
               and time.perf_counter() - t1 < SETTLE_TIMEOUT_S):
            time.sleep(0.01)
            live = _ref_count(ray)
        rec: dict[str, Any] = {"value": n / dt, "total_s": dt, "dropped": dropped}
        if base is not None and live is not None and mid is not None:
            rec.update({"live_before_drop": mid - base, "live_after": live - base,
                        "settle_s": time.perf_counter() - t1})
        meter.add(rec, before, after, n)
        runs.append(rec)
        _log(f"[borrow_pass] rep {r + 1}/{reps}: {rec['value']:.4g} tasks/s; refs live after "
             f"the drop: {rec.get('live_after', '?')}")
    for k in keepers:
        ray.kill(k)
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small n, 1 repetition (smoke test)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--bench-dir", default=None, help="the folder of bench_common.py")
    args = ap.parse_args(argv)
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    if reps < 1:
        ap.error("--reps must be >= 1")
    sys.path.insert(0, bench_dir(args.bench_dir))
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from bench_common import CpuMeter, claim_stdout, emit, summarize
    from ray_bench import init_ray, ray_label, session_name

    claim_stdout()  # stdout carries JSON records only
    n = BORROW_PASS_N[1 if args.quick else 0]
    meta = {"version": ray.__version__, "python": platform.python_version(),
            "nproc": os.cpu_count(), "num_cpus": args.num_cpus, "quick": bool(args.quick),
            "borrowers": BORROWERS, "window": WINDOW, "batch": BATCH}
    _log(f"[borrow_pass] n={n}, reps={reps}")
    init_ray(args.num_cpus)
    try:
        runs = run_borrow_pass(ray, n, reps, CpuMeter(session_name(), ray_label))
    finally:
        ray.shutdown()
    emit(summarize("borrow_pass", FRAMEWORK, "tasks/s", n, runs, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
