"""The benchmark harness's pure logic: targets attached to records and the comparison table.

No benchmark runs here (benchmarks are never part of the test suite): records are made up;
the CPU meter is checked against a real process.
"""

from __future__ import annotations

import ast
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

cluster = pytest.importorskip("benchmarks.cluster")
compare = pytest.importorskip("benchmarks.compare")
spec = pytest.importorskip("benchmarks.spec")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def rec(workload: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"workload": workload, "unit": unit, "value": value, "min": value, "max": value,
            "n": 1, "reps": 1, **extra}


def test_every_workload_has_a_spec_and_ray_side() -> None:
    assert cluster.WORKLOADS == spec.WORKLOADS
    assert spec.WORKLOADS[-4:] == ("tree_reduce", "cross_node", "many_actors", "generator")
    for table in (spec.TARGETS, spec.EXTRA_TARGETS, spec.FLOOR_TARGETS, spec.INFO_EXTRAS,
                  spec.RAY_EXTRA_WORKLOADS):
        assert set(table) <= set(spec.WORKLOADS)
    assert {w for w, _ in spec.PROPOSALS} <= set(spec.TARGETS)
    # many_actors' n is its largest size
    assert spec.SPEC["many_actors"][1:] == (spec.MANY_ACTORS_SIZES[-1],
                                            spec.MANY_ACTORS_QUICK_SIZES[-1])


def test_ray_extra_agrees_with_the_spec() -> None:
    from benchmarks import ray_extra  # imports ray lazily: loadable without it

    for name, entry in ray_extra.WORKLOADS.items():
        assert spec.SPEC[name] == entry
    assert set(ray_extra.WORKLOADS) == set(spec.RAY_EXTRA_WORKLOADS)


def _benchmark_imports() -> dict[str, list[tuple[str, bool]]]:
    """module -> the ``benchmarks.*`` modules it imports, each with whether the import sits
    at module level (not inside a function)."""
    out: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(BENCHMARKS.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        nested = {id(n) for f in ast.walk(tree)
                  if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                  for n in ast.walk(f)}
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] if node.module != "benchmarks" else [
                    f"benchmarks.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [(n, id(node) not in nested) for n in names if n.startswith("benchmarks.")]
        out[f"benchmarks.{path.stem}"] = found
    return out


def test_benchmark_modules_import_one_another_at_top_level_without_a_cycle() -> None:
    graph = _benchmark_imports()
    assert ("benchmarks.spec", True) in graph["benchmarks.compare"]
    assert ("benchmarks.cluster", True) not in graph["benchmarks.cross_node"]
    for module, imports in graph.items():
        local = [m for m, top in imports if not top]
        assert not local, f"{module} imports {local} inside a function"
    assert not [m for m, _ in graph["benchmarks.spec"]], "the spec imports nothing of ours"
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for dep, _ in graph.get(module, []):
            visit(dep, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_pss_of_a_real_process() -> None:
    if not os.path.exists(f"/proc/{os.getpid()}/smaps_rollup"):
        pytest.skip("no /proc/PID/smaps_rollup here")
    from benchmarks._common import pss_of

    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        one = pss_of([os.getpid()])
        two = pss_of([os.getpid(), proc.pid, 2**22 + 1])  # the last pid is never live
    finally:
        proc.communicate(b"", timeout=30)
    assert one["nprocs"] == 1 and two["nprocs"] == 2
    assert 0 < one["uss_mib"] <= one["pss_mib"] <= one["rss_mib"]
    assert two["pss_mib"] > one["pss_mib"]
    assert pss_of([proc.pid])["nprocs"] == 0  # gone


def test_targets_from_the_issue() -> None:
    t = compare.TARGETS
    for name in ("tasks_async", "actor_calls_async", "async_actor_calls", "n_n_actor_calls",
                 "put_get_small", "task_chain"):
        assert t[name] == ("value", ">=", 10.0)
    assert t["tree_reduce"] == ("value", "<=", 0.1)
    assert t["idle_memory"] == ("pss_mib", "<=", 0.2)
    assert t["put_get_large"] == ("value", ">=", 2.0)
    assert t["large_arg_task"] == ("value", "<=", 1.0)
    assert t["many_actors"] == t["cross_node"] == ("value", ">=", 5.0)
    assert compare.ABS_TARGETS["startup"] == ("value", "<=", 1.0)


def test_attach_ray_floor_and_absolute_targets() -> None:
    records = [
        rec("startup", 1.2, "s"),
        rec("tasks_sync", 90.0, "us"),
        rec("actor_calls_async", 30_000.0, "calls/s"),
        rec("idle_memory", 150.0, "MiB", pss_mib=100.0),
    ]
    ray = [rec("startup", 8.0, "s"), rec("tasks_sync", 400.0, "us"),
           rec("actor_calls_async", 2_000.0, "calls/s"),
           rec("idle_memory", 800.0, "MiB", pss_mib=520.0)]
    floor = [rec("ws_rpc_sync", 40.0, "us"), rec("ws_rpc_async_coalesced", 120_000.0, "calls/s")]
    compare.attach_abs(records)
    compare.attach_ray(records, ray)
    compare.attach_floor(records, floor)
    startup, tasks_sync, calls, idle = records
    assert startup["target_met"] is True and startup["abs_target_met"] is False
    assert tasks_sync["ratio"] == pytest.approx(0.225)
    assert tasks_sync["floor"] == "ws_rpc_sync" and tasks_sync["floor_ratio"] == 2.25
    assert tasks_sync["floor_target_met"] is False  # 90 us > 2 x 40 us
    assert calls["target_met"] is True  # 15 x Ray
    assert calls["floor_ratio"] == 0.25 and calls["floor_target_met"] is False  # < 1/3
    assert idle["target"] == "pss_mib ratio <= 0.2" and idle["target_met"] is True


def test_compare_table_rows() -> None:
    records = [
        rec("startup", 0.5, "s", ttfr_s=0.3),
        rec("tasks_sync", 70.0, "us", p99_us=100.0),
        rec("many_actors", 60.0, "actors/s", n=200),
        rec("cross_node", 20_000.0, "tasks/s", transfer_100MiB_s=0.4, transfer_GBps=0.26),
        rec("kernel_ask", 9.0, "us", baseline="asyncio_rpc", baseline_value=6.0, ratio=1.5,
            target="ratio <= 3", target_met=True),
    ]
    ray = [rec("startup", 4.0, "s", ttfr_s=3.0), rec("tasks_sync", 400.0, "us"),
           rec("many_actors", 1.0, "actors/s", timed_out=1.0, completed=180.0, n=200),
           rec("cross_node", 1_000.0, "tasks/s", transfer_100MiB_s=0.3, transfer_GBps=0.35)]
    floor = [rec("ws_rpc_sync", 40.0, "us")]
    table = compare.compare_table(records, ray, floor)
    lines = table.splitlines()
    assert lines[0].split("|")[1:-1] == [c.ljust(len(c)) for c in lines[0].split("|")[1:-1]]
    cells = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
             for ln in lines[2:]}
    assert cells["startup"][4:6] == ["<= 0.2 x Ray; <= 1 s", "yes"]
    assert cells["tasks_sync"][5] == "yes"
    assert cells["tasks_sync"][6] == "ws_rpc_sync 40.0 us (x1.75; <= 2: yes)"
    assert "timed out: 180/200" in cells["many_actors"][2]
    # targets of ours (not the issue's) say so
    assert cells["many_actors"][3:6] == ["60", "ours: >= 5 x Ray", "yes"]
    assert cells["cross_node"][3:6] == ["20", "ours: >= 5 x Ray", "yes"]
    assert cells["cross_node: transfer_100MiB_s"][3:6] == ["1.33", "ours: <= 1 x Ray", "**NO**"]
    assert "cross_node: transfer_GBps" in cells
    assert cells["kernel_ask"][1:7] == ["9", "-", "-", "ratio <= 3", "yes", "asyncio_rpc 6 (x1.5)"]
    cpu = compare.cpu_table([{**records[0], "cpu_us_per_op": 5.0},
                             {**records[1], "cpu_us_per_op": 7.0, "machine_others_cpu_s": 0.25,
                              "machine_steal_pct": 1.5}],
                            [{**ray[0], "cpu_us_per_op": 9.0}])
    assert "| startup | 5 | 9 | {} | - |" in cpu
    assert f"| {records[1]['workload']} | 7 | - | {{}} | others 0.25 cpu_s, steal 1.5 % |" in cpu


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat")
def test_cpu_meter_tells_our_cpu_from_the_rest_of_the_machine() -> None:
    """A process that is not ours (re-parented away from the driver) burning CPU during the
    measured span shows as the machine's others, not as ours."""
    psutil = pytest.importorskip("psutil")
    from benchmarks._common import CpuMeter

    meter = CpuMeter()
    before = meter.snap()
    # `sh` starts the burner in the background, says its pid and exits: no child of ours
    out = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" -c "import time\nt = time.process_time()'
         f'\nwhile time.process_time() - t < 0.4: pass" >/dev/null 2>&1 & echo $!'],
        check=True, timeout=30, capture_output=True, text=True)
    burner = psutil.Process(int(out.stdout))
    deadline = time.monotonic() + 30  # until it ends (a zombie, where nobody reaps orphans)
    with contextlib.suppress(psutil.NoSuchProcess):
        while burner.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the burner did not end"
            time.sleep(0.02)
    record = meter.add({}, before, meter.snap(end=True), ops=1)
    assert record["cpu_s"] < 0.2, record
    assert record["machine_others_cpu_s"] >= 0.3, record
    assert 0.0 <= record["machine_steal_pct"] <= 100.0


def test_script_selection() -> None:
    names = ["tasks_sync", "actor_calls_sync", "actor_calls_async", "many_actors"]
    assert compare.floor_workloads(names) == ["ws_rpc_sync", "ws_rpc_async_coalesced"]
    assert compare.floor_workloads(["many_actors", "cross_node"]) == []


def test_values_of_different_sizes_are_shown_not_compared() -> None:
    """Ray's many_actors stops short of 1,000 actors where they would not fit in memory: its
    value (at 300) is shown with its n, and neither a ratio nor a verdict is drawn from it;
    the sizes both ran are compared row by row."""
    ours = [rec("many_actors", 70.0, "actors/s", n=1000, actors_per_s_300=75.0,
                pss_per_actor_mib=4.0)]
    ray = [rec("many_actors", 1.2, "actors/s", n=300, actors_per_s_300=1.2,
               pss_per_actor_mib=60.0, memory_limited="1000 actors not run")]
    compare.attach_ray(ours, ray)
    assert ours[0]["baseline_n"] == 300 and "ratio" not in ours[0]
    assert "target_met" not in ours[0]
    assert ours[0]["baseline_memory_limited"] == "1000 actors not run"
    table = compare.compare_table(ours, ray, [])
    cells = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
             for ln in table.splitlines()[2:]}
    assert cells["many_actors"][2] == "1.2 (n = 300; 1000 actors not run)"
    assert cells["many_actors"][3:6] == ["-", "ours: >= 5 x Ray", "-"]
    assert cells["many_actors: actors_per_s_300"][1:4] == ["75.0", "1.2", "62.5"]
    assert cells["many_actors: pss_per_actor_mib"][0] == "MiB"
    assert "many_actors: actors_per_s_1000" not in cells  # neither side has it
