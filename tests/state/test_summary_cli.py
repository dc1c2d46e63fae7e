"""``actorflow summary | list | timeline`` against a cluster that ``actorflow start --head
--timeline`` started: real processes, the state folder of the test."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest
from wait_support import until

import actorflow as af

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[2]
TAG_VAR = "AF_STATE_TAG"


@af.remote
def square(x: int) -> int:
    return x * x


@af.remote(max_retries=0)
def refuse(x: int) -> int:
    raise PermissionError(f"not {x}")


@af.remote
class Tally:
    def add(self, x: int) -> int:
        return x


def _env(state_dir: Path, tag: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ACTORFLOW_ADDRESS", "ACTORFLOW_TOKEN", "ACTORFLOW_TIMELINE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["ACTORFLOW_STATE_DIR"] = str(state_dir)
    env[TAG_VAR] = tag
    return env


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "actorflow", *args], env=env, cwd=str(ROOT),
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, f"actorflow {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


async def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_cli, args, env)


def _tagged(tag: str) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get(TAG_VAR) == tag:
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


async def test_summary_list_and_timeline_commands(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir = tmp_path / "state"
    tag = f"{tmp_path.name}-{os.getpid()}"
    env = _env(state_dir, tag)
    try:
        started = await cli(["start", "--head", "--port", "0", "--num-cpus", "2",
                             "--timeline"], env)
        assert "head started" in started.stdout, started.stdout
        address = started.stdout.split("head started: ", 1)[1].split()[0]
        joined = await cli(["start", "--address", address, "--num-cpus", "1",
                            "--resources", '{"far": 1}'], env)
        assert "node started" in joined.stdout, joined.stdout
        monkeypatch.setenv("ACTORFLOW_STATE_DIR", str(state_dir))
        for var in ("ACTORFLOW_ADDRESS", "ACTORFLOW_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        async with af.init(address="auto", log_to_driver=False) as rt:
            assert await af.get([square.remote(i) for i in range(12)]) == [
                i * i for i in range(12)]
            with pytest.raises(PermissionError):
                await refuse.remote(7)
            tally = Tally.remote()
            assert await tally.add.remote(3) == 3
            far_ref = square.options(resources={"far": 1}).remote(0)
            assert await far_ref == 0
            far_node = next(n["node_id"] for n in await af.state.list_nodes()
                            if "far" in n["resources"])

            async def recorded() -> dict[str, Any] | None:
                summary = await af.state.summary_tasks()
                return summary if summary["totals"].get("FINISHED", 0) >= 15 else None

            await until(recorded, what="the calls to reach the head")

            summary = json.loads((await cli(["summary", "tasks", "--json"], env)).stdout)
            by_name = {e["name"]: e["state_counts"] for e in summary["by_name"]}
            assert by_name["square"] == {"FINISHED": 13}
            assert by_name["refuse"] == {"FAILED": 1}
            assert by_name["Tally.add"] == {"FINISHED": 1}
            table = (await cli(["summary", "tasks"], env)).stdout
            assert table.splitlines()[0] == "tasks: 1 FAILED, 15 FINISHED"
            assert any(line.split()[:2] == ["square", "task"] for line in table.splitlines())

            failed = json.loads((await cli(["list", "tasks", "--filter", "state=FAILED",
                                            "--json", "--detail"], env)).stdout)
            assert [(r["name"], r["error_type"], r["error_message"]) for r in failed] == [
                ("refuse", "PermissionError", "not 7")]
            assert failed[0]["job_id"] == rt.job_id and "PermissionError" in failed[0][
                "traceback"]
            three = json.loads((await cli(["list", "tasks", "--filter", "name=square",
                                           "--limit", "3", "--json"], env)).stdout)
            assert len(three) == 3 and {r["name"] for r in three} == {"square"}

            actors = json.loads((await cli(["list", "actors", "--json"], env)).stdout)
            assert [(a["class_name"], a["state"], a["job_id"]) for a in actors] == [
                ("Tally", "ALIVE", rt.job_id)]
            listed = (await cli(["list", "actors"], env)).stdout.splitlines()
            assert "job_id" in listed[0].split() and rt.job_id in listed[1].split()
            actor_summary = json.loads((await cli(["summary", "actors", "--json"], env)).stdout)
            assert actor_summary["totals"] == {"ALIVE": 1}
            objects = json.loads((await cli(["summary", "objects", "--json"], env)).stdout)
            assert sorted(n["node_id"] for n in objects["by_node"]) == sorted(
                [rt.node_id, far_node])
            nodes = json.loads((await cli(["list", "nodes", "--filter", "alive=true",
                                           "--json"], env)).stdout)
            assert sorted(n["node_id"] for n in nodes) == sorted([rt.node_id, far_node])

            trace_path = tmp_path / "trace.json"
            wrote = (await cli(["timeline", "-o", str(trace_path)], env)).stdout
            assert wrote.startswith("wrote 16 slice(s)"), wrote
            trace = json.loads(trace_path.read_text())
            assert trace["otherData"]["complete"] is True
            names = [e["name"] for e in trace["traceEvents"] if e["ph"] == "X"]
            assert sorted(set(names)) == ["Tally.__init__", "Tally.add", "refuse", "square"]
            # one process per node; the far node's worker reported across the network
            processes = {e["args"]["name"]: e["pid"] for e in trace["traceEvents"]
                         if e["name"] == "process_name"}
            assert set(processes) == {f"node {rt.node_id}", f"node {far_node}"}
            (pinned,) = [e for e in trace["traceEvents"]
                         if e["ph"] == "X" and e["args"]["task_id"] == far_ref.id]
            assert pinned["pid"] == processes[f"node {far_node}"]
            assert pinned["name"] == "square" and pinned["args"]["state"] == "FINISHED"
        await cli(["stop"], env)
    finally:
        for proc in _tagged(tag):
            proc.kill()
