"""The benchmark harness's pure logic: targets attached to records and the comparison table.

No benchmark runs here (benchmarks are never part of the test suite): records are made up;
the CPU meter is checked against a real process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import Any

import pytest

cluster = pytest.importorskip("benchmarks.cluster")
compare = pytest.importorskip("benchmarks.compare")


def rec(workload: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"workload": workload, "unit": unit, "value": value, "min": value, "max": value,
            "n": 1, "reps": 1, **extra}


def test_every_workload_has_a_spec_and_ray_side() -> None:
    assert cluster.WORKLOADS[-3:] == ("tree_reduce", "cross_node", "many_actors")
    assert set(compare.TARGETS) <= set(cluster.WORKLOADS)
    assert set(compare.FLOOR_TARGETS) <= set(cluster.WORKLOADS)
    assert set(compare.RAY_EXTRA_WORKLOADS) <= set(cluster.WORKLOADS)


def test_ray_extra_agrees_with_the_spec() -> None:
    from benchmarks import ray_extra  # imports ray lazily: loadable without it

    for name, spec in ray_extra.WORKLOADS.items():
        assert cluster._SPEC[name] == spec
    assert set(ray_extra.WORKLOADS) == set(compare.RAY_EXTRA_WORKLOADS)


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
        rec("many_actors", 60.0, "actors/s"),
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
