"""Comparison with Ray and the floor: the targets, running Ray's side and the floor, and the
tables (the harness's table of records too).

Comparison with Ray (same machine, same sitting): ``python -m benchmarks --compare ray`` (every
group) or ``python -m benchmarks.cluster --compare ray`` (the cluster group; also
``AF_BENCH_COMPARE=ray``) runs our workloads, then the peer ``floor_bench.py`` for the floors
that apply, then the peer script ``ray_bench.py`` and ``benchmarks/ray_extra.py`` with Ray's own
interpreter (one program at a time, never at once); adds
``baseline``/``baseline_value``/``ratio``/``target``/``target_met`` (Ray) and
``floor``/``floor_value``/``floor_ratio``/``floor_target``/``floor_target_met`` to the records,
and prints the table workload | unit | actorflow | Ray | ratio | target | met | floor, then the
CPU per operation of both (:func:`compare_with_ray`, :func:`compare_table`, :func:`cpu_table`).
The workloads compared with Ray are the cluster group's (``benchmarks/cluster.py``); records of
other groups keep their own target and floor in the table.

Ray is never a dependency of the project: it is run as a separate program. Where it lives:
``--ray-python`` / ``AF_BENCH_RAY_PYTHON`` (default ``/work/rayenv/bin/python``) and
``--ray-script`` / ``AF_BENCH_RAY_SCRIPT`` (default ``<checkout>/../shared/bench/ray_bench.py``
where it exists, else ``/work/shared/bench/ray_bench.py``); the floor script likewise
(``--floor-script`` / ``AF_BENCH_FLOOR_SCRIPT``, ``floor_bench.py``), run with this interpreter.

The workloads, their sizes and the targets are ``benchmarks.spec``'s. Standard library,
``benchmarks._common`` and ``benchmarks.spec`` only: the harness imports this module whatever
the groups it runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from typing import Any

from benchmarks._common import attach_baseline, log, sig
from benchmarks.spec import (
    ABS_TARGETS,
    EXTRA_TARGETS,
    FLOOR_TARGETS,
    INFO_EXTRAS,
    PROPOSALS,
    RAY_EXTRA_WORKLOADS,
    SPEC,
    TARGETS,
    num_cpus,
)

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)


def _shared_bench(script: str) -> str:
    """``<checkout>/../shared/bench/SCRIPT`` where it exists, else ``/work/shared/bench/``."""
    local = os.path.normpath(os.path.join(_ROOT, "..", "shared", "bench", script))
    return local if os.path.exists(local) else os.path.join("/work/shared/bench", script)


DEFAULT_RAY_PYTHON = "/work/rayenv/bin/python"
DEFAULT_RAY_SCRIPT = _shared_bench("ray_bench.py")
DEFAULT_FLOOR_SCRIPT = _shared_bench("floor_bench.py")
RAY_EXTRA_SCRIPT = os.path.join(_HERE, "ray_extra.py")


# -- targets without Ray ---------------------------------------------------------------------------


def _meets(x: float, op: str, limit: float) -> bool:
    return x >= limit if op == ">=" else x <= limit


def attach_abs(records: list[dict[str, Any]]) -> None:
    """``abs_target`` / ``abs_target_met`` for the workloads with an absolute target."""
    for rec in records:
        spec = ABS_TARGETS.get(rec["workload"])
        if spec is None or rec.get(spec[0]) is None:
            continue
        key, op, limit = spec
        rec["abs_target"] = f"{key} {op} {limit:g} {rec['unit']}"
        rec["abs_target_met"] = _meets(rec[key], op, limit)


# -- comparison with Ray and the floor -------------------------------------------------------------


def _run_script(label: str, cmd: list[str], timeout: float) -> list[dict[str, Any]]:
    """Run one peer script to completion (its stderr passed on); the JSON records it printed.
    Past ``timeout`` it gets SIGINT (Ray then stops what it started), then SIGKILL."""
    log(f"[{label}] running {' '.join(cmd)}")
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise RuntimeError(f"{label} ran past {timeout:.0f} s and was stopped") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed (rc={proc.returncode})")
    return [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]


def _common_args(quick: bool, reps: int) -> list[str]:
    return ["--reps", str(reps), *(["--quick"] if quick else [])]


def _script_timeout(quick: bool) -> float:
    return 900.0 if quick else 3600.0


def _ray_paths(python: str | None, script: str | None) -> tuple[str, str]:
    python = python or os.environ.get("AF_BENCH_RAY_PYTHON") or DEFAULT_RAY_PYTHON
    script = script or os.environ.get("AF_BENCH_RAY_SCRIPT") or DEFAULT_RAY_SCRIPT
    for path in (python, script):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} does not exist: install Ray in its own virtualenv "
                "(python3 -m venv /work/rayenv && /work/rayenv/bin/pip install 'ray[default]' "
                "numpy psutil) and point AF_BENCH_RAY_PYTHON / AF_BENCH_RAY_SCRIPT at it"
            )
    return python, script


def run_ray_peer(names: Iterable[str], quick: bool, reps: int, python: str | None = None,
                 script: str | None = None) -> list[dict[str, Any]]:
    """The peer script ``ray_bench.py`` (Ray's interpreter) on the peer workloads among
    ``names``; its records."""
    peer = [w for w in names if w in SPEC and w not in RAY_EXTRA_WORKLOADS]
    if not peer:
        return []
    python, script = _ray_paths(python, script)
    cmd = [python, script, "--only", ",".join(peer), *_common_args(quick, reps),
           "--num-cpus", str(num_cpus())]
    return _run_script("ray_bench.py", cmd, _script_timeout(quick))


def run_ray_extra(names: Iterable[str], quick: bool, reps: int, python: str | None = None,
                  script: str | None = None) -> list[dict[str, Any]]:
    """``benchmarks/ray_extra.py`` (Ray's interpreter) on our own workloads among ``names``;
    it finds ``bench_common.py`` next to ``script`` (ray_bench.py)."""
    extra = [w for w in names if w in RAY_EXTRA_WORKLOADS]
    if not extra:
        return []
    python, script = _ray_paths(python, script)
    cmd = [python, RAY_EXTRA_SCRIPT, "--only", ",".join(extra), *_common_args(quick, reps),
           "--num-cpus", str(num_cpus()), "--bench-dir", os.path.dirname(script)]
    return _run_script("ray_extra.py", cmd, _script_timeout(quick))


def run_ray(names: Iterable[str], quick: bool, reps: int, python: str | None = None,
            script: str | None = None) -> list[dict[str, Any]]:
    """Ray's side of ``names``: ``ray_bench.py``, then ``ray_extra.py`` (one at a time, after
    ours has finished); their records. Raises if either fails."""
    names = list(names)
    return (run_ray_peer(names, quick, reps, python, script)
            + run_ray_extra(names, quick, reps, python, script))


def floor_workloads(names: Iterable[str]) -> list[str]:
    """The floor workloads that the targets of ``names`` need, each once."""
    out: list[str] = []
    for w in names:
        spec = FLOOR_TARGETS.get(w)
        if spec is not None and spec[0] not in out:
            out.append(spec[0])
    return out


def run_floor(names: Iterable[str], quick: bool, reps: int,
              script: str | None = None) -> list[dict[str, Any]]:
    """The peer ``floor_bench.py`` (this interpreter) on the floors ``names`` need."""
    wanted = floor_workloads(names)
    if not wanted:
        return []
    script = script or os.environ.get("AF_BENCH_FLOOR_SCRIPT") or DEFAULT_FLOOR_SCRIPT
    if not os.path.exists(script):
        raise FileNotFoundError(f"{script} does not exist: point AF_BENCH_FLOOR_SCRIPT at "
                                "the peer floor_bench.py")
    cmd = [sys.executable, script, "--only", ",".join(wanted), *_common_args(quick, reps)]
    return _run_script("floor_bench.py", cmd, _script_timeout(quick))


def compare_with_ray(
    records: list[dict[str, Any]], quick: bool, reps: int, *, ray_python: str | None = None,
    ray_script: str | None = None, floor_script: str | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """For the cluster workloads among ``records``: run ``floor_bench.py``, ``ray_bench.py``
    and ``ray_extra.py`` one after the other, and attach Ray's and the floor's figures to the
    records. Returns (Ray's records, the floor's records, the scripts that failed); a failed
    script is reported on stderr and the others still run."""
    names = [r["workload"] for r in records if r.get("workload") in SPEC]
    ray_records: list[dict[str, Any]] = []
    floor_records: list[dict[str, Any]] = []
    failed: list[str] = []
    # The floor first, right after ours: the machine's speed drifts by tens of percent over
    # minutes here (2026-12-02: put_get_small 292k and 175k ops/s in two sittings an hour
    # apart), and the floor targets compare our figures with it. Ray's scripts take ~13 min.
    stages: list[tuple[str, Callable[[], list[dict[str, Any]]], list[dict[str, Any]]]] = [
        ("floor_bench.py", lambda: run_floor(names, quick, reps, floor_script), floor_records),
        ("ray_bench.py", lambda: run_ray_peer(names, quick, reps, ray_python, ray_script),
         ray_records),
        ("ray_extra.py", lambda: run_ray_extra(names, quick, reps, ray_python, ray_script),
         ray_records),
    ]
    for label, fn, into in stages:
        try:
            into.extend(fn())
        except Exception as exc:
            log(f"[compare] {label} failed: {exc}")
            failed.append(label)
    attach_ray(records, ray_records)
    attach_floor(records, floor_records)
    return ray_records, floor_records, failed


def same_n(rec: dict[str, Any], ray: dict[str, Any]) -> bool:
    """Whether two records' values measure the same size (``many_actors`` on Ray stops short
    of its largest size where that would not fit in memory; its ``n`` says where)."""
    return rec.get("n") is None or ray.get("n") is None or rec["n"] == ray["n"]


def attach_ray(records: list[dict[str, Any]], ray_records: list[dict[str, Any]]) -> None:
    """Give each record Ray's figure of the same run as ``baseline_value`` (plus ``ratio``,
    ``target``, ``target_met`` where the issue sets a target); extras compared get
    ``<extra>_baseline_value`` / ``<extra>_ratio`` / ``<extra>_target_met``."""
    by_name = {r["workload"]: r for r in ray_records}
    for rec in records:
        ray = by_name.get(rec["workload"])
        if ray is None:
            continue
        rec["baseline"] = "ray"
        rec["baseline_value"] = ray["value"]
        rec["baseline_version"] = ray.get("version")
        if ray.get("timed_out"):
            rec["baseline_timed_out"] = True
        if ray.get("memory_limited"):
            rec["baseline_memory_limited"] = ray["memory_limited"]
        key, op, factor = TARGETS.get(rec["workload"], ("value", "", 0.0))
        if not same_n(rec, ray):  # Ray stopped at a smaller size: no ratio of the values
            rec["baseline_n"] = ray["n"]
        elif key == "value" and op:
            attach_baseline(rec, "ray", op, factor)
        elif ray["value"]:
            rec["ratio"] = sig(rec["value"] / ray["value"], 4)
        if key != "value" and key in rec and ray.get(key):
            # the target is on an extra (idle_memory: PSS)
            rec[f"{key}_baseline_value"] = ray[key]
            ratio = rec[key] / ray[key]
            rec[f"{key}_ratio"] = sig(ratio, 4)
            rec["target"] = f"{key} ratio {op} {factor:g}"
            rec["target_met"] = _meets(ratio, op, factor)
        extra = EXTRA_TARGETS.get(rec["workload"])
        if extra and extra[0] in rec and ray.get(extra[0]):
            k, op, factor = extra
            ratio = rec[k] / ray[k]
            rec[f"{k}_baseline_value"] = ray[k]
            rec[f"{k}_ratio"] = sig(ratio, 4)
            rec[f"{k}_target"] = f"ratio {op} {factor:g}"
            rec[f"{k}_target_met"] = _meets(ratio, op, factor)


def attach_floor(records: list[dict[str, Any]], floor_records: list[dict[str, Any]]) -> None:
    """``floor``, ``floor_value``, ``floor_ratio`` (value / floor's), ``floor_target`` and
    ``floor_target_met`` for the records with a target against the floor (FLOOR_TARGETS)."""
    by_name = {r["workload"]: r for r in floor_records}
    for rec in records:
        spec = FLOOR_TARGETS.get(rec["workload"])
        floor = by_name.get(spec[0]) if spec else None
        if spec is None or floor is None or not floor.get("value") or rec.get("value") is None:
            continue
        name, op, factor = spec
        ratio = rec["value"] / floor["value"]
        rec["floor"] = name
        rec["floor_value"] = floor["value"]
        rec["floor_ratio"] = sig(ratio, 4)
        rec["floor_target"] = f"floor_ratio {op} {factor:.3g}"
        rec["floor_target_met"] = _meets(ratio, op, factor)


# -- the tables ------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def _span(rec: dict[str, Any], key: str) -> str:
    if key == "value" and "min" in rec and rec.get("reps", 1) > 1:
        return f"{_fmt(rec['value'])} ({_fmt(rec['min'])}-{_fmt(rec['max'])})"
    return _fmt(rec.get(key))


def _unit_of(key: str, default: str) -> str:
    if key.endswith("_us"):
        return "us"
    if key.endswith("_s"):
        return "s"
    if key.endswith("GBps"):
        return "GB/s"
    if key.endswith("_mib"):
        return "MiB"
    return default


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _count(x: Any) -> str:
    return str(round(x)) if _num(x) else "?"


def _met_cell(checks: list[bool | None]) -> str:
    known = [m for m in checks if m is not None]
    if not known:
        return "-"
    if not all(known):
        return "**NO**"
    return "yes" if len(known) == len(checks) else "yes (part)"


def _floor_cell(rec: dict[str, Any], by_floor: dict[str, dict[str, Any]]) -> str:
    """The floor column: a cluster workload's floor target, or a kernel/transport record's
    own floor (its ``baseline``)."""
    spec = FLOOR_TARGETS.get(rec["workload"])
    if spec is not None:
        name, op, factor = spec
        floor = by_floor.get(name)
        if floor is None or not floor.get("value") or not _num(rec.get("value")):
            return f"{name}: not run"
        ratio = rec["value"] / floor["value"]
        met = "yes" if _meets(ratio, op, factor) else "**NO**"
        return (f"{name} {_fmt(floor['value'])} {floor.get('unit', '')} (x{ratio:.3g}; "
                f"{op} {factor:.3g}: {met})")
    base = rec.get("baseline")
    if base and base != "ray" and _num(rec.get("baseline_value")):
        ratio = rec.get("ratio")
        return f"{base} {_fmt(rec['baseline_value'])}" + (
            f" (x{ratio:.3g})" if _num(ratio) else "")
    return "-"


def compare_table(records: list[dict[str, Any]], ray_records: list[dict[str, Any]],
                  floor_records: list[dict[str, Any]] | None = None) -> str:
    """Markdown: workload | unit | actorflow (median, min-max) | Ray | ratio af/Ray | target |
    met | floor. Cluster workloads are judged against Ray (TARGETS, EXTRA_TARGETS, plus
    ABS_TARGETS) and, where one applies, the floor (in the floor cell); records of other
    groups (kernel, transport, placement) show their own target and floor."""
    by_ray = {r["workload"]: r for r in ray_records}
    by_floor = {r["workload"]: r for r in floor_records or ()}
    rows = [("workload", "unit", "actorflow (median, min-max)", "Ray", "ratio af/Ray",
             "target", "met", "floor")]

    def row(label: str, unit: str, rec: dict[str, Any], ray: dict[str, Any] | None, key: str,
            target: tuple[str, str, float] | None, floor: str = "-",
            absolute: tuple[str, str, float] | None = None) -> None:
        ours = rec.get(key)
        theirs = ray.get(key) if ray else None
        if key == "value" and ray and not same_n(rec, ray):
            theirs = None  # another size: shown, not compared
        ratio = ours / theirs if _num(ours) and _num(theirs) and theirs else None
        texts: list[str] = []
        checks: list[bool | None] = []
        if target is not None:
            ours_only = (rec["workload"], key) in PROPOSALS
            texts.append(("ours: " if ours_only else "") + f"{target[1]} {target[2]:g} x Ray")
            checks.append(None if ratio is None else _meets(ratio, target[1], target[2]))
        if absolute is not None:
            texts.append(f"{absolute[1]} {absolute[2]:g} {unit}")
            checks.append(_meets(float(ours), absolute[1], absolute[2]) if _num(ours) else None)
        ray_cell = _span(ray, key) if ray else "-"
        if ray and key == "value" and ray.get("timed_out"):
            ray_cell += f" (timed out: {_count(ray.get('completed'))}/{ray.get('n')})"
        if ray and key == "value" and not same_n(rec, ray):
            ray_cell += f" (n = {ray.get('n')}"
            ray_cell += f"; {ray['memory_limited']})" if ray.get("memory_limited") else ")"
        ours_cell = _span(rec, key)
        if key == "value" and rec.get("timed_out"):
            ours_cell += f" (timed out: {_count(rec.get('completed'))}/{rec.get('n')})"
        rows.append((label, unit, ours_cell, ray_cell,
                     f"{ratio:.3g}" if ratio is not None else "-",
                     "; ".join(texts) or "-", _met_cell(checks), floor))

    for rec in records:
        name, unit = rec["workload"], rec.get("unit", "")
        if name not in SPEC:  # another group's record: its own target and floor
            met = rec.get("target_met")
            rows.append((name, unit, _span(rec, "value"), "-", "-", str(rec.get("target", "-")),
                         "-" if met is None else ("yes" if met else "**NO**"),
                         _floor_cell(rec, by_floor)))
            continue
        ray = by_ray.get(name)
        target = TARGETS.get(name)
        if name == "idle_memory":
            row("idle_memory (RSS)", "MiB", rec, ray, "value", None)
            row("idle_memory (PSS)", "MiB", rec, ray, "pss_mib", target)
            row("idle_memory (USS)", "MiB", rec, ray, "uss_mib", None)
            continue
        row(name, unit, rec, ray, "value", target if target and target[0] == "value" else None,
            _floor_cell(rec, by_floor), ABS_TARGETS.get(name))
        extra = EXTRA_TARGETS.get(name)
        if extra:
            row(f"{name}: {extra[0]}", _unit_of(extra[0], unit), rec, ray, extra[0], extra)
        for key in INFO_EXTRAS.get(name, ()):
            if key in rec or (ray and key in ray):
                row(f"{name}: {key}", _unit_of(key, unit), rec, ray, key, None)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def cpu_table(records: list[dict[str, Any]], ray_records: list[dict[str, Any]]) -> str:
    """Markdown: CPU microseconds per operation, both frameworks, all processes."""
    by_name = {r["workload"]: r for r in ray_records}
    lines = ["| workload | actorflow cpu_us_per_op | Ray cpu_us_per_op "
             "| actorflow cpu_s by process | rest of the machine during ours |",
             "| --- | --- | --- | --- | --- |"]
    for rec in records:
        if "cpu_us_per_op" not in rec:
            continue
        ray = by_name.get(rec["workload"], {})
        machine = "-"
        if "machine_others_cpu_s" in rec:
            machine = (f"others {_fmt(rec['machine_others_cpu_s'])} cpu_s, "
                       f"steal {_fmt(rec.get('machine_steal_pct', 0.0))} %")
        lines.append(f"| {rec['workload']} | {_fmt(rec['cpu_us_per_op'])} | "
                     f"{_fmt(ray.get('cpu_us_per_op'))} | {rec.get('cpu_s_by_name', {})} "
                     f"| {machine} |")
    return "\n".join(lines)


def comparison_text(records: list[dict[str, Any]], ray_records: list[dict[str, Any]],
                    floor_records: list[dict[str, Any]]) -> str:
    return (compare_table(records, ray_records, floor_records) + "\n\n"
            + cpu_table(records, ray_records) + "\n")



def records_table(records: list[dict[str, Any]]) -> str:
    """The harness's plain table (no Ray): each record's value, min-max and its own baseline."""
    head = ("workload", "value", "unit", "min-max", "baseline", "ratio", "target", "met",
            "uvloop", "uvloop ratio")
    rows = [head]
    for r in records:
        met = r.get("target_met")
        rows.append((
            str(r.get("workload")),
            _fmt(r.get("value")),
            str(r.get("unit", "")),
            f"{_fmt(r.get('min'))}-{_fmt(r.get('max'))}",
            f"{r['baseline']} {_fmt(r.get('baseline_value'))}" if "baseline" in r else "-",
            _fmt(r.get("ratio")),
            str(r.get("target", "-")),
            "-" if met is None else ("yes" if met else "NO"),
            _fmt(r.get("uvloop_value")),
            _fmt(r.get("uvloop_ratio")),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
