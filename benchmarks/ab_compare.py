"""Old against new: cluster workloads on this checkout and on an earlier commit, interleaved.

``python -m benchmarks.ab_compare --base COMMIT [--base-dir DIR] [--pairs N] [--reps R]
[--quick] [--json] NAMES...`` (NAMES: workloads of the cluster group, ``benchmarks/spec.py``).

The earlier commit is checked out, detached, in a git worktree (``--base-dir``; default
``<tmp>/actorflow-ab-<commit>``, made with ``git worktree add --detach`` when missing; left
in place for the next run: ``git worktree remove DIR`` removes it). Each of the ``--pairs``
pairs (default 3) runs ``python -m benchmarks.cluster NAMES --json --reps R`` first in this
checkout (A), then in the base (B), each a fresh process with ``PYTHONPATH`` set to its own
tree only and its own cluster, one after the other, never at once: A B A B ... Each tree
runs its own ``benchmarks/cluster.py`` (so the base must have the workloads named).

One record per workload (``workload``: ``<name>_ab``, unit ``x``): ``value`` = the median of
A's values / the median of B's (each run's value is the median of its R repetitions), so for
a throughput above 1 is faster now and for a latency below 1 is; ``current_runs`` /
``base_runs`` the runs' values, ``pair_ratios`` each pair's A / B, ``cpu_ratio`` the same
for the CPU per operation of every process (``cpu_us_per_op``: less sensitive than the
rate to what else runs on the machine), ``loadavg`` the machine's load when the pairs began
and ended. This is how ``borrow_overhead`` (the borrower protocol's cost on the hot paths;
``docs/performance.md``) is measured: ``--base d27ca11 tasks_async actor_calls_async
put_get_small``. Not a group of ``python -m benchmarks``: it runs two checkouts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks._common import claim_stdout, emit, log, meta, reap_tagged, sig, tag_processes
from benchmarks.spec import WORKLOADS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_TIMEOUT_S = 1800.0


def _git(*args: str, cwd: str = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, stdout=subprocess.PIPE,
                          text=True).stdout.strip()


def base_tree(commit: str, base_dir: str | None) -> tuple[str, str]:
    """The base checkout (made when missing) and its full commit."""
    full = _git("rev-parse", "--verify", f"{commit}^{{commit}}")
    path = base_dir or os.path.join(tempfile.gettempdir(), f"actorflow-ab-{full[:12]}")
    if not os.path.exists(path):
        log(f"[ab] git worktree add --detach {path} {full[:12]}")
        _git("worktree", "add", "--detach", path, full)
    head = _git("rev-parse", "HEAD", cwd=path)
    if head != full:
        raise SystemExit(f"{path} is at {head[:12]}, not {full[:12]}: pass another --base-dir")
    return path, full


def _env(tree: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("ACTORFLOW_ADDRESS", "ACTORFLOW_TOKEN", "AF_BENCH_COMPARE"):
        env.pop(key, None)
    env["PYTHONPATH"] = tree  # this tree only: its actorflow and its benchmarks
    return env


def run_side(tree: str, names: list[str], reps: int, quick: bool) -> dict[str, dict[str, Any]]:
    """One run of the cluster group in ``tree``: its records by workload."""
    cmd = [sys.executable, "-m", "benchmarks.cluster", *names, "--json", "--reps", str(reps),
           *(["--quick"] if quick else [])]
    proc = subprocess.run(cmd, cwd=tree, env=_env(tree), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {tree} failed (rc={proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    recs = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return {r["workload"]: r for r in recs}


def _ratio(a: list[float], b: list[float]) -> float | None:
    if not a or not b or not statistics.median(b):
        return None
    return sig(statistics.median(a) / statistics.median(b), 4)


def compare(names: list[str], base: str, base_dir: str | None, pairs: int, reps: int,
            quick: bool) -> list[dict[str, Any]]:
    tree, full = base_tree(base, base_dir)
    sides = {"current": ROOT, "base": tree}
    got: dict[str, list[dict[str, dict[str, Any]]]] = {"current": [], "base": []}
    load0 = os.getloadavg()
    for p in range(pairs):
        for side in ("current", "base"):  # A B, A B, ...
            recs = run_side(sides[side], names, reps, quick)
            got[side].append(recs)
            log(f"[ab] pair {p + 1}/{pairs} {side}: " + ", ".join(
                f"{w} {recs[w]['value']:.4g} {recs[w]['unit']}" for w in names if w in recs))
    load1 = os.getloadavg()
    current = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    out = []
    for w in names:
        a = [r[w] for r in got["current"] if w in r]
        b = [r[w] for r in got["base"] if w in r]
        av, bv = [r["value"] for r in a], [r["value"] for r in b]
        ac = [r["cpu_us_per_op"] for r in a if "cpu_us_per_op" in r]
        bc = [r["cpu_us_per_op"] for r in b if "cpu_us_per_op" in r]
        rec: dict[str, Any] = {
            "workload": f"{w}_ab", "unit": "x", "value": _ratio(av, bv),
            "of": w, "of_unit": a[0]["unit"] if a else None,
            "current_value": sig(statistics.median(av)) if av else None,
            "base_value": sig(statistics.median(bv)) if bv else None,
            "current_runs": [sig(v, 5) for v in av], "base_runs": [sig(v, 5) for v in bv],
            "pair_ratios": [sig(x / y, 4) for x, y in zip(av, bv, strict=False) if y],
            "current_cpu_us_per_op": sig(statistics.median(ac)) if ac else None,
            "base_cpu_us_per_op": sig(statistics.median(bc)) if bc else None,
            "cpu_ratio": _ratio(ac, bc),
            "pairs": pairs, "reps_per_run": reps, "n": a[0]["n"] if a else None,
            "base": full[:12], "current": current[:12] + ("+dirty" if dirty else ""),
            "loadavg": [round(x, 2) for x in (*load0, *load1)],
            **meta(quick),
        }
        out.append(rec)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ab_compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", metavar="NAME", help="cluster workloads")
    ap.add_argument("--base", required=True, help="the earlier commit")
    ap.add_argument("--base-dir", default=None, help="its worktree (made when missing)")
    ap.add_argument("--pairs", type=int, default=3, help="A B pairs (default 3)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per run (default 3)")
    ap.add_argument("--quick", action="store_true", help="the workloads' quick n")
    ap.add_argument("--json", action="store_true", help="one JSON record per line on stdout")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; known: {list(WORKLOADS)}")
    if args.pairs < 1 or args.reps < 1:
        ap.error("--pairs and --reps must be >= 1")
    if args.json:
        claim_stdout()
    tag = tag_processes()
    try:
        records = compare(args.names, args.base, args.base_dir, args.pairs, args.reps,
                          args.quick)
    finally:
        reap_tagged(tag)
    for rec in records:
        if args.json:
            emit(rec)
        else:
            print(f"{rec['of']}: current {rec['current_value']} / base {rec['base_value']} "
                  f"{rec['of_unit']} = {rec['value']} (pairs {rec['pair_ratios']}); CPU per "
                  f"op {rec['current_cpu_us_per_op']} / {rec['base_cpu_us_per_op']} us = "
                  f"{rec['cpu_ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
