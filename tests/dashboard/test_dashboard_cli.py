"""``actorflow start --head``'s dashboard flags: ``--dashboard-port`` (printed, served, behind
the token), ``--no-dashboard`` (nothing more listens), a given port that is taken (the head
does not start)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "multinode"))
from mn_support import TAG_VAR, base_env, cli, describe, tagged_processes

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = base_env(tmp_path / "state", f"dash-{uuid.uuid4().hex}")
    try:
        yield env
    finally:
        cli(["stop"], env)
        deadline = time.monotonic() + 15
        left = tagged_processes(env[TAG_VAR])
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = tagged_processes(env[TAG_VAR])
        survivors = describe(left)
        for proc in left:
            proc.kill()
        assert not survivors, survivors


def head_pid(env: dict[str, str]) -> int:
    info = json.loads((Path(env["ACTORFLOW_STATE_DIR"]) / "cluster.json").read_text())
    return int(info["pid"])


def listening_ports(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN}


async def test_dashboard_port_is_printed_served_and_guarded(env: dict[str, str]) -> None:
    port = free_port()
    out = await asyncio.to_thread(cli, ["start", "--head", "--port", "0", "--num-cpus", "1",
                                        "--dashboard-port", str(port)], env)
    assert out.returncode == 0, out.stdout + out.stderr
    url = f"http://127.0.0.1:{port}"
    assert re.search(rf"^dashboard: {re.escape(url)}$", out.stdout, re.M), out.stdout
    token = (Path(env["ACTORFLOW_STATE_DIR"]) / "token").read_text().strip()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(url + "/api/cluster") as r:
            assert r.status == 401
        async with http.get(url + "/api/cluster",
                            headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
            nodes = (await r.json())["nodes"]
            assert [n["alive"] for n in nodes] == [True]


async def test_no_dashboard_serves_nothing(env: dict[str, str]) -> None:
    out = await asyncio.to_thread(cli, ["start", "--head", "--port", "0", "--num-cpus", "1",
                                        "--no-dashboard"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not re.search(r"^dashboard:", out.stdout, re.M), out.stdout
    address = re.search(r"ws://127\.0\.0\.1:(\d+)", out.stdout)
    assert address, out.stdout
    # the head's process listens on its cluster port only
    assert listening_ports(head_pid(env)) == {int(address.group(1))}


async def test_a_taken_dashboard_port_fails_the_start(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = await asyncio.to_thread(cli, ["start", "--head", "--port", "0", "--num-cpus",
                                            "1", "--dashboard-port", str(port)], env)
    assert out.returncode != 0, out.stdout
    assert "actorflow start failed" in out.stderr, out.stderr
