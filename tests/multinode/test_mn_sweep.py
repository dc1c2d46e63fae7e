"""What a node killed hard leaves on its machine is swept by the next node that starts there,
and what live processes own is never touched; a normal start/run/stop leaves nothing behind
(``docs/reliability.md``, "What is swept after a crash").

Clusters of real ``actorflow start`` processes; each has a driver that is a process of its
own (``actorflow_driver.py`` below), so that every process owning a cluster's segments (head,
workers, driver) can be killed. The files looked at are named after each cluster's node ids
and its processes' sockets, so other clusters on the machine (a parallel test run) are never
counted; a sweep they run may remove what our dead processes left, which does not change what
is asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from mn_support import ROOT, CliCluster, Started, cli, tagged_processes, until, within

from actorflow.objects import shm, sweep
from actorflow.transport import liveness

pytestmark = pytest.mark.timeout(240)

#: A sweep on a loaded 2-core machine: the new node's first one runs right after its start.
SWEPT_WITHIN_S = 10.0
VALUE_FLOATS = 1_000_000  # 8 MB: well past the inline limit, so each value is a segment

DRIVER = """
import asyncio, json, os, sys
import numpy as np
import psutil
import actorflow as af

N = int(sys.argv[3])

@af.remote
def make(n):  # a task's result: a segment the worker writes, the caller owns
    return np.ones(n)

@af.remote
class Holder:  # a worker that puts values of its own and keeps them
    def keep(self, n):
        self.refs = [af.put(np.full(n, 2.0)) for _ in range(2)]
        return len(self.refs)

def sockets():
    out = set()
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            out.update(c.laddr for c in proc.net_connections(kind="unix") if c.laddr)
        except psutil.Error:
            pass
    return sorted(out)

async def main():
    address, token, mode = sys.argv[1], sys.argv[2], sys.argv[4]
    if address == "embedded":
        await af.init(num_cpus=1, log_to_driver=False)
    else:
        await af.init(address=address, token=token, log_to_driver=False)
    refs = [af.put(np.full(N, float(i))) for i in range(3)]
    result_ref = make.remote(N)
    result = await result_ref
    holder = Holder.remote()
    assert await holder.keep.remote(N) == 2
    nodes = [n["node_id"] for n in await af.nodes()]
    print(json.dumps({"node_id": af.get_runtime_context().node_id, "nodes": nodes,
                      "sockets": sockets(), "pid": os.getpid()}), flush=True)
    if mode == "wait":
        await asyncio.to_thread(sys.stdin.readline)  # then: read the values again
        values = await af.get(refs)
        print(json.dumps({"sums": [float(v.sum()) for v in values],
                          "result": float(result.sum())}), flush=True)
        await asyncio.to_thread(sys.stdin.readline)
    await af.shutdown()

asyncio.run(main())
"""


class Driver:
    """``python actorflow_driver.py ADDRESS TOKEN N MODE`` with the cluster's environment."""

    def __init__(self, tmp: Path, env: dict[str, str], address: str, token: str,
                 mode: str) -> None:
        script = tmp / "actorflow_driver.py"
        script.write_text(DRIVER)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), address, token, str(VALUE_FLOATS), mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            text=True)

    async def report(self, timeout: float = 90.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await within(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line:
            assert self.proc.stderr is not None
            raise AssertionError(f"the driver ended ({self.proc.wait(10)}):\n"
                                 f"{self.proc.stderr.read()[-4000:]}")
        return dict(json.loads(line))

    def say(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def segments_of(*node_ids: str) -> set[str]:
    return {name for name in os.listdir(shm.SHM_DIR)
            if any(name.startswith(f"af-{node_id}-") for node_id in node_ids)}


def node_locks_of(*node_ids: str) -> set[str]:
    directory = sweep.node_lock_dir(create=False)
    if directory is None:
        return set()
    return {f"node-{i}.lock" for i in node_ids} & set(os.listdir(directory))


def sockets_of(tag: str) -> set[str]:
    """The unix sockets in the socket folder that this cluster's processes are bound to."""
    directory = liveness.socket_dir(create=False)
    assert directory is not None
    out: set[str] = set()
    for proc in tagged_processes(tag):
        try:
            out.update(c.laddr for c in proc.net_connections(kind="unix")
                       if c.laddr and os.path.dirname(c.laddr) == directory)
        except psutil.Error:
            continue
    return out


def present(paths: set[str]) -> set[str]:
    """Those of ``paths`` that exist, and the lock files beside them that exist."""
    return {p for path in paths for p in (path, path + ".lock") if os.path.exists(p)}


async def start_head(cluster: CliCluster) -> Started:
    head = cluster.start_head(num_cpus=1)
    await cluster.wait_head(head)
    return head


def kill_all(cluster: CliCluster, driver: Driver) -> None:
    for started in cluster.started.values():
        if started.proc.poll() is None:
            started.proc.send_signal(signal.SIGKILL)
        started.proc.wait(10)
    driver.end()


async def test_a_new_node_sweeps_what_a_killed_node_left_and_spares_a_live_cluster(
        tmp_path: Path) -> None:
    victim = CliCluster(tmp_path / "victim")
    live = CliCluster(tmp_path / "live")
    fresh = CliCluster(tmp_path / "fresh")
    for cluster in (victim, live, fresh):
        cluster.tmp.mkdir()
    drivers: list[Driver] = []
    try:
        await start_head(victim)
        await start_head(live)
        assert victim.address and victim.token and live.address and live.token
        v_driver = Driver(victim.tmp, victim.env, victim.address, victim.token, "wait")
        l_driver = Driver(live.tmp, live.env, live.address, live.token, "wait")
        drivers += [v_driver, l_driver]
        v_info, l_info = await v_driver.report(), await l_driver.report()
        v_node, l_node = v_info["node_id"], l_info["node_id"]
        v_segments, l_segments = segments_of(v_node), segments_of(l_node)
        # the driver's puts (3), the task's result (1), the actor's puts (2): all segments
        assert len(v_segments) >= 6 and len(l_segments) >= 6, (v_segments, l_segments)
        v_sockets, l_sockets = sockets_of(victim.tag), sockets_of(live.tag)
        assert len(v_sockets) >= 3 and len(l_sockets) >= 3, (v_sockets, l_sockets)
        assert node_locks_of(v_node) and present(v_sockets) == {
            p for s in v_sockets for p in (s, s + ".lock")}

        # a crash: the head (its node and workers with it) and the driver, all SIGKILLed
        kill_all(victim, v_driver)
        await until(lambda: not tagged_processes(victim.tag), 15.0,
                    "every process of the killed cluster to be gone")

        await start_head(fresh)
        started = time.monotonic()
        await until(lambda: not segments_of(v_node) and not present(v_sockets)
                    and not node_locks_of(v_node), SWEPT_WITHIN_S,
                    "the killed cluster's segments, sockets and locks to be swept")
        print(f"swept {time.monotonic() - started:.2f} s after the new node was ready")

        # the live cluster lost nothing, and still reads its values
        assert l_segments <= segments_of(l_node)
        assert present(l_sockets) == {p for s in l_sockets for p in (s, s + ".lock")}
        assert node_locks_of(l_node)
        l_driver.say()
        again = await l_driver.report()
        assert again["sums"] == [0.0, VALUE_FLOATS * 1.0, VALUE_FLOATS * 2.0]
        assert again["result"] == VALUE_FLOATS
    finally:
        for driver in drivers:
            driver.end()
        survivors = [s for c in (victim, live, fresh) for s in c.stop()]
    assert not survivors, survivors


async def test_a_normal_start_run_stop_leaves_nothing_behind(tmp_path: Path) -> None:
    cluster = CliCluster(tmp_path)
    driver: Driver | None = None
    try:
        await start_head(cluster)
        node = cluster.start_node("node2", num_cpus=1)
        await cluster.wait_ready(node)
        assert cluster.address and cluster.token
        driver = Driver(tmp_path, cluster.env, cluster.address, cluster.token, "exit")
        info = await driver.report()
        nodes = info["nodes"]
        assert len(nodes) == 2
        cluster_sockets = sockets_of(cluster.tag) | set(info["sockets"])
        assert segments_of(*nodes) and len(cluster_sockets) >= 4
        assert await within(asyncio.to_thread(driver.proc.wait, 60)) == 0
        stopped = await within(asyncio.to_thread(cli, ["stop"], cluster.env))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        await until(lambda: not tagged_processes(cluster.tag), 15.0, "the cluster to stop")
        assert segments_of(*nodes) == set()
        assert present(cluster_sockets) == set()
        assert node_locks_of(*nodes) == set()
    finally:
        if driver is not None:
            driver.end()
        survivors = cluster.stop()
    assert not survivors, survivors


async def test_an_embedded_cluster_leaves_nothing_behind(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    driver = Driver(tmp_path, env, "embedded", "", "exit")
    try:
        info = await driver.report()
        assert segments_of(info["node_id"]) and info["sockets"]
        assert await within(asyncio.to_thread(driver.proc.wait, 60)) == 0
        assert segments_of(info["node_id"]) == set()
        assert present(set(info["sockets"])) == set()
        assert node_locks_of(info["node_id"]) == set()
    finally:
        driver.end()
