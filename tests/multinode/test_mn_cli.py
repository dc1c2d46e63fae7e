"""API.md §8, the non-blocking form: ``actorflow start`` returns once its process is up,
``"auto"`` finds the cluster, ``status`` and ``list`` show it, ``stop`` ends all of it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from mn_support import (
    TAG_VAR,
    CliCluster,
    base_env,
    cli,
    describe,
    live_nodes,
    nonzero,
    start_cluster,
    tagged_processes,
    until,
    within,
    worker_children,
)

import actorflow as af

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@af.remote
def where() -> str:
    return af.get_runtime_context().node_id


def mode_and_text(path: Path) -> tuple[int, str]:
    return stat.S_IMODE(path.stat().st_mode), path.read_text().strip()


async def run_cli(args: list[str], env: dict[str, str]) -> Any:
    out = await asyncio.to_thread(cli, args, env)
    assert out.returncode == 0, f"actorflow {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


async def test_start_returns_and_auto_status_list_stop_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir = tmp_path / "state"
    env = base_env(state_dir, tmp_path.name + "-" + str(os.getpid()))
    tag = env[TAG_VAR]
    try:
        head = await run_cli(["start", "--head", "--port", "0", "--num-cpus", "1",
                              "--resources", '{"r_a": 1}', "--peer-timeout", "2"], env)
        address = re.search(r"(ws://127\.0\.0\.1:\d+)", head.stdout)
        token_file = re.search(r"token file: (\S+)", head.stdout)
        assert address and token_file, head.stdout
        token_path = Path(token_file.group(1))
        assert token_path == state_dir / "token"
        mode, token = mode_and_text(token_path)
        assert mode == 0o600
        assert token and token not in head.stdout  # never printed
        # the command returned, its process runs on in the background
        assert len(tagged_processes(tag)) >= 1

        node = await run_cli(["start", "--address", address.group(1), "--num-cpus", "1",
                              "--resources", '{"r_b": 1}', "--peer-timeout", "2"], env)
        assert "node started" in node.stdout, node.stdout

        monkeypatch.setenv("ACTORFLOW_STATE_DIR", str(state_dir))
        monkeypatch.delenv("ACTORFLOW_ADDRESS", raising=False)
        monkeypatch.delenv("ACTORFLOW_TOKEN", raising=False)
        async with af.init(address="auto", log_to_driver=False) as rt:
            assert rt.address is not None

            async def two_alive() -> list[dict[str, Any]] | None:
                views = live_nodes(await af.nodes())
                return views if len(views) == 2 else None

            views = await until(two_alive, what="two live nodes")
            by_res = {next(k for k in v["resources"] if k.startswith("r_")): v["node_id"]
                      for v in views}
            assert set(by_res) == {"r_a", "r_b"}
            assert await within(where.options(resources={"r_b": 1}).remote()) == by_res["r_b"]
            assert nonzero(await within(af.cluster_resources())) == {
                "CPU": 2.0, "r_a": 1.0, "r_b": 1.0}

        status = await run_cli(["status"], env)
        assert "2 live node(s)" in status.stdout, status.stdout
        for node_id in by_res.values():
            assert node_id in status.stdout
        listed = await run_cli(["list", "nodes", "--json"], env)
        rows = json.loads(listed.stdout)
        assert {r["node_id"] for r in rows if r["alive"]} == set(by_res.values())
        assert sorted((nonzero(r["resources"]) for r in rows), key=str) == sorted(
            [{"CPU": 1.0, "r_a": 1.0}, {"CPU": 1.0, "r_b": 1.0}], key=str)

        stopped = await run_cli(["stop"], env)
        assert "stopped 2 process(es)" in stopped.stdout, stopped.stdout
        # every process of that cluster, workers included, is gone
        await until(lambda: not tagged_processes(tag), 15.0,
                    "the cluster's processes to exit after `actorflow stop`")
        assert not list((state_dir / "procs").glob("*.json"))
        assert not (state_dir / "cluster.json").exists()
        again = await run_cli(["stop"], env)
        assert "nothing to stop" in again.stdout
    finally:
        left = tagged_processes(tag)
        survivors = describe(left)
        for proc in left:  # never leave them behind, even when the test failed
            proc.kill()
    assert not survivors, f"left behind: {survivors}"


async def test_sigterm_stops_a_blocking_head_cleanly_and_its_nodes_follow(
        tmp_path: Path) -> None:
    cluster = CliCluster(tmp_path)
    try:
        await start_cluster(cluster, [
            {"name": "head", "num_cpus": 1, "resources": {"r_a": 1}},
            {"name": "node2", "num_cpus": 1, "resources": {"r_b": 1}},
        ])
        head, node = cluster.started["head"], cluster.started["node2"]
        assert worker_children(head.pid) and worker_children(node.pid)
        # both run on uvloop (DESIGN: one ActorSystem per process, uvloop when installed)
        for started in (head, node):
            assert re.search(r"running at \S+ \(node \w+, uvloop loop\)", started.log_text()), (
                started.log_text())
        head.proc.send_signal(signal.SIGTERM)
        await until(lambda: head.proc.poll() is not None, 15.0, "the head to exit on SIGTERM")
        # a node whose head is gone has nothing left to do
        await until(lambda: node.proc.poll() is not None, 15.0, "the node to follow its head")
        await until(lambda: not tagged_processes(cluster.tag), 15.0,
                    "every worker to exit with its node")
        assert head.proc.returncode == 0, head.log_text()
        assert node.proc.returncode == 0, node.log_text()
        leftovers = sorted(p.name for p in (cluster.state_dir / "procs").glob("*.json"))
        assert leftovers == [], "processes that exited are still recorded as running"
        assert not (cluster.state_dir / "cluster.json").exists(), (
            "the stopped head is still advertised to address='auto':\n" + head.log_text())
    finally:
        survivors = cluster.stop()
    assert not survivors, survivors
