"""``python -m benchmarks [NAMES...] [--json] [--quick] [--reps N] [--list] [--compare ray]
[--save DIR] [--minutes N]``.

NAMES are group names (``kernel``, ``transport``, ...) or workload names; none means every
group but the soaks (``chaos``: run only when named, for ``--minutes N``, default 1). With
``--json`` each workload's record is one JSON line on stdout; otherwise a table is printed at
the end. Progress and notes go to stderr.

With ``--compare ray`` (or ``AF_BENCH_COMPARE=ray``) our selected groups run first, then, one
program at a time, the peer ``floor_bench.py`` with this interpreter (for the floors the cluster
targets need), then the peer ``ray_bench.py`` and ``benchmarks/ray_extra.py`` with Ray's own
interpreter (for the cluster workloads selected); the records get Ray's and the floor's
figures (``baseline*``, ``ratio``, ``target*``, ``floor*``) and ONE markdown table compares
them all (workload | unit | actorflow | Ray | ratio | target | met | floor), followed by the
CPU per operation of both. With ``--json`` the records (baselines attached) are printed at the
end and the tables go to stderr. ``--save DIR`` writes ``actorflow.jsonl`` (and ``ray.jsonl``,
``floor.jsonl``) there.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

from benchmarks._common import (
    claim_stdout,
    emit,
    log,
    meta,
    reap_tagged,
    save_jsonl,
    tag_processes,
)
from benchmarks.compare import compare_with_ray, comparison_text, records_table

#: group name -> module. A group module exposes ``WORKLOADS: tuple[str, ...]`` and
#: ``run(quick, reps, only=None) -> list[dict]``; a module with only ``run(quick, reps)`` is
#: accepted (it is then run whole, and selected by its group name only).
GROUPS: dict[str, str] = {
    "kernel": "benchmarks.kernel",
    "transport": "benchmarks.transport",
    "cluster": "benchmarks.cluster",
    "placement": "benchmarks.placement",
    "spill": "benchmarks.spill",
    "dashboard": "benchmarks.dashboard",
    "timeline": "benchmarks.timeline",
    "borrowers": "benchmarks.borrowers",
    "chaos": "benchmarks.chaos",
}
#: Soaks: run only when named (never by default, nor by a bare ``--compare ray``).
SOAKS = ("chaos",)

Runner = Callable[..., list[dict[str, Any]]]


def _load(group: str) -> ModuleType | None:
    """Import a group lazily; a missing or broken one is skipped with a note."""
    try:
        return importlib.import_module(GROUPS[group])
    except ImportError as exc:
        log(f"[{group}] skipped: cannot import {GROUPS[group]} ({exc})")
    except Exception:
        log(f"[{group}] skipped: importing {GROUPS[group]} raised:\n{traceback.format_exc()}")
    return None


def _workloads(mod: ModuleType) -> tuple[str, ...] | None:
    names = getattr(mod, "WORKLOADS", None)
    return tuple(names) if names is not None else None


def _takes(fn: Runner, param: str) -> bool:
    try:
        return param in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _select(
    names: list[str], modules: dict[str, ModuleType]
) -> tuple[dict[str, set[str] | None], list[str]]:
    """Map each requested name to its group: ``{group: None (all) | {workloads}}``, plus the
    names no loaded group knows."""
    plan: dict[str, set[str] | None] = {}
    unknown = []
    for name in names:
        if name in GROUPS:
            if name in modules:
                plan[name] = None
            continue
        owner = next((g for g, m in modules.items() if name in (_workloads(m) or ())), None)
        if owner is None:
            unknown.append(name)
        elif owner not in plan:
            plan[owner] = {name}
        elif (only := plan[owner]) is not None:
            only.add(name)
    return plan, unknown


def _run_group(
    group: str, mod: ModuleType, quick: bool, reps: int, only: set[str] | None,
    minutes: float | None = None, compare: bool = False,
) -> list[dict[str, Any]]:
    fn: Runner = mod.run
    kwargs: dict[str, Any] = {}
    if minutes is not None and _takes(fn, "minutes"):
        kwargs["minutes"] = minutes
    if only is not None and _takes(fn, "only"):
        kwargs["only"] = only
    if _takes(fn, "compare"):
        kwargs["compare"] = ""  # a comparison is the harness's, once, after every group
    if compare and _takes(fn, "ray"):
        kwargs["ray"] = True  # a group that runs its own Ray side (borrowers), after its own
    records = fn(quick, reps, **kwargs)
    if only is not None:
        records = [r for r in records if r.get("workload") in only]
    provenance = meta(quick)
    for rec in records:  # groups written elsewhere may leave provenance out
        rec.setdefault("framework", "actorflow")
        for key, value in provenance.items():
            rec.setdefault(key, value)
    return records


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME", help="groups or workloads (default: all)")
    ap.add_argument("--json", action="store_true", help="one JSON record per line on stdout")
    ap.add_argument("--quick", action="store_true", help="about n/10, 1 rep: a smoke test")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    ap.add_argument("--list", action="store_true", help="list groups and workloads, and exit")
    ap.add_argument("--compare", choices=["ray"], default=None,
                    help="then run Ray's scripts and the floor, and print one comparison table "
                         "(also AF_BENCH_COMPARE=ray)")
    ap.add_argument("--ray-python", default=None,
                    help="Ray's interpreter (AF_BENCH_RAY_PYTHON; default /work/rayenv/bin/python)")
    ap.add_argument("--ray-script", default=None,
                    help="the peer ray_bench.py (AF_BENCH_RAY_SCRIPT; default "
                         "<checkout>/../shared/bench/ray_bench.py, else /work/shared/bench/...)")
    ap.add_argument("--floor-script", default=None,
                    help="the peer floor_bench.py (AF_BENCH_FLOOR_SCRIPT; default as "
                         "--ray-script)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="how long a soak (chaos) runs (default 1)")
    ap.add_argument("--save", default=None, metavar="DIR",
                    help="also write actorflow.jsonl (and ray.jsonl, floor.jsonl) into DIR")
    args = ap.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        ap.error("--reps must be >= 1")
    env_compare = os.environ.get("AF_BENCH_COMPARE") or None
    if env_compare not in (None, "ray"):
        ap.error(f"AF_BENCH_COMPARE knows only 'ray', not {env_compare!r}")
    compare = (args.compare or env_compare) == "ray"

    wanted = ([g for g in GROUPS if g in args.names] if args.names
              else [g for g in GROUPS if g not in SOAKS])
    # workload names need every group loaded to find their owner
    to_load = list(GROUPS) if args.list or any(n not in GROUPS for n in args.names) else wanted
    modules = {g: m for g in to_load if (m := _load(g)) is not None}

    if args.list:
        for group in GROUPS:
            mod = modules.get(group)
            names = _workloads(mod) if mod is not None else None
            what = "(not available)" if mod is None else "(workloads not listed)"
            soak = " (soak: run only when named)" if group in SOAKS else ""
            print(f"{group}: {' '.join(names) if names else what}{soak}")
        return 0

    plan, unknown = _select(args.names or wanted, modules)
    if unknown:
        known = sorted({*GROUPS, *(w for m in modules.values() for w in (_workloads(m) or ()))})
        ap.error(f"unknown name(s) {unknown}; known: {known}")

    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    if args.json:
        claim_stdout()
    tag = tag_processes()  # whatever a benchmark starts, and does not end, is ended below
    try:
        return _run(args, plan, modules, reps, compare)
    finally:
        reap_tagged(tag)


def _run(args: argparse.Namespace, plan: dict[str, set[str] | None],
         modules: dict[str, ModuleType], reps: int, compare: bool) -> int:
    records: list[dict[str, Any]] = []
    failed = []
    for group, only in plan.items():
        log(f"[{group}] running" + (f" {sorted(only)}" if only else ""))
        try:
            group_records = _run_group(group, modules[group], args.quick, reps, only,
                                       args.minutes, compare)
        except ImportError as exc:  # a dependency only the group needs is missing
            log(f"[{group}] skipped: {exc}")
            continue
        except Exception:  # one broken group must not cost the others their numbers
            log(f"[{group}] failed:\n{traceback.format_exc()}")
            failed.append(group)
            continue
        if any(rec.get("lost") or rec.get("wrong") for rec in group_records):
            failed.append(group)  # a soak that lost or garbled a result
        for rec in group_records:
            records.append(rec)
            if args.json and not compare:
                emit(rec)
    ray_records: list[dict[str, Any]] = []
    floor_records: list[dict[str, Any]] = []
    text = None
    if compare:
        try:
            ray_records, floor_records, broken = compare_with_ray(
                records, args.quick, reps, ray_python=args.ray_python,
                ray_script=args.ray_script, floor_script=args.floor_script)
            failed += broken
            text = comparison_text(records, ray_records, floor_records)
        except Exception:
            log(f"[compare] failed:\n{traceback.format_exc()}")
            failed.append("compare")
    if args.save:
        save_jsonl(args.save, records, ray_records, floor_records)
    if args.json and compare:
        for rec in records:
            emit(rec)
    if text is not None:
        (sys.stderr if args.json else sys.stdout).write(text)
    elif not args.json:
        print(records_table(records) if records else "no benchmark ran")
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
