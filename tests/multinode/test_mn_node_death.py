"""Nodes killed with SIGKILL (API.md §4, §5, §7), on a cluster of their own: the cluster
notices within the peer timeout, the node's resources leave, work goes on elsewhere, the work
it held fails over or fails typed, and none of its worker processes survives it.

The head has no CPU (as a Ray head often has), so no task or actor ever lands there and any
node that runs work can be killed without taking the driver's node down. Nodes: head
``{"r_a": 1}``, node2..node5 ``{"CPU": 1, "r_b" .. "r_e": 1}``. Each test kills nodes it names,
so the tests can run alone or in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from mn_support import (
    Cluster,
    alive,
    cli,
    live_nodes,
    nonzero,
    until,
    within,
    worker_children,
)

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NODES = [
    {"name": "head", "num_cpus": 0, "resources": {"r_a": 1}},
    {"name": "node2", "num_cpus": 1, "resources": {"r_b": 1}},
    {"name": "node3", "num_cpus": 1, "resources": {"r_c": 1}},
    {"name": "node4", "num_cpus": 1, "resources": {"r_d": 1}},
    {"name": "node5", "num_cpus": 1, "resources": {"r_e": 1}},
]
PEER_TIMEOUT_S = 2.0  # what the fixture passes as --peer-timeout
MARGIN_S = 8.0  # a loaded 2-core machine: detection may lag the timeout by this much
FAST_S = 10.0


@af.remote
def where() -> str:
    return af.get_runtime_context().node_id


@af.remote
async def where_after(delay: float) -> str:
    await asyncio.sleep(delay)
    return af.get_runtime_context().node_id


@af.remote
async def slow(marker_dir: str, seconds: float) -> dict[str, Any]:
    """Says where it started (a file per attempt), then runs for ``seconds``."""
    node_id = af.get_runtime_context().node_id
    path = Path(marker_dir) / f"{os.getpid()}.json"
    path.write_text(json.dumps({"node": node_id, "pid": os.getpid()}))
    await asyncio.sleep(seconds)
    return {"node": node_id, "pid": os.getpid()}


@af.remote
class Pinger:
    def __init__(self) -> None:
        self.calls = 0

    def where(self) -> tuple[str, int, int]:
        self.calls += 1
        return af.get_runtime_context().node_id, os.getpid(), self.calls


@af.remote
class Survivor:
    def __init__(self) -> None:
        self.calls = 0

    def where(self) -> tuple[str, int, int]:
        self.calls += 1
        return af.get_runtime_context().node_id, os.getpid(), self.calls


def markers(marker_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in marker_dir.glob("*.json"):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # being written
    return out


async def live_ids() -> set[str]:
    return {v["node_id"] for v in live_nodes(await af.nodes())}


async def settled() -> None:
    """Until nothing is held anywhere (leases of finished work given back)."""
    async def check() -> bool:
        return nonzero(await af.available_resources()) == nonzero(await af.cluster_resources())

    await until(check, what="every resource to be free again")


async def actor_row(cluster: Cluster, class_name: str = "Pinger") -> dict[str, Any] | None:
    """The actor's row of ``actorflow list actors --json`` once it is ALIVE or DEAD."""
    out = await asyncio.to_thread(cli, ["list", "actors", "--json"], cluster.cli.env)
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["class_name"] == class_name]
    assert len(rows) == 1, rows
    return rows[0] if rows[0]["state"] in ("ALIVE", "DEAD") else None


async def kill_node(cluster: Cluster, name: str, *, expect_workers: set[int] | None = None
                    ) -> float:
    """SIGKILL node ``name``'s process; return how long until ``af.nodes()`` showed it dead.
    Checks that its worker processes (recorded by parent pid before the kill) all exit."""
    started = cluster.cli.started[name]
    node_id = cluster.ids[name]
    worker_pids = {w.pid for w in worker_children(started.pid)}
    assert (expect_workers or set()) <= worker_pids, (expect_workers, worker_pids)
    t0 = time.monotonic()
    started.proc.send_signal(signal.SIGKILL)  # no goodbye to anyone
    await asyncio.to_thread(started.proc.wait, 10)

    async def dead() -> bool:
        return any(v["node_id"] == node_id and not v["alive"] for v in await af.nodes())

    await until(dead, PEER_TIMEOUT_S + MARGIN_S, f"af.nodes() to show {name} dead")
    detected_s = time.monotonic() - t0
    # its workers die with it (they asked the kernel for SIGKILL when their parent dies)
    await until(lambda: not any(alive(pid) for pid in worker_pids), 5.0,
                f"{name}'s workers {sorted(worker_pids)} to exit")
    return detected_s


async def test_a_node_killed_with_sigkill(cli_cluster: Cluster, tmp_path: Path) -> None:
    ids = cli_cluster.ids
    dead_id = ids["node3"]
    assert await live_ids() == set(ids.values()), "run this test first, or alone"
    before = nonzero(await within(af.cluster_resources()))
    assert before == {"CPU": 4.0, "r_a": 1.0, "r_b": 1.0, "r_c": 1.0, "r_d": 1.0, "r_e": 1.0}

    # an actor and a long-ish task live on node3
    on_node3 = af.NodeAffinity(dead_id, soft=True)
    pinger = Pinger.options(scheduling_strategy=on_node3, max_restarts=1).remote()
    actor_node, actor_pid, _ = await within(pinger.where.remote())
    assert actor_node == dead_id
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    task = slow.options(scheduling_strategy=on_node3, max_retries=2).remote(
        str(marker_dir), 4.0)
    await until(lambda: any(m["node"] == dead_id for m in markers(marker_dir)),
                what="the task to start on node3")
    task_pid = next(m["pid"] for m in markers(marker_dir) if m["node"] == dead_id)

    detected_s = await kill_node(cli_cluster, "node3", expect_workers={actor_pid, task_pid})
    assert detected_s <= PEER_TIMEOUT_S + MARGIN_S
    cpu_nodes = {ids["node2"], ids["node4"], ids["node5"]}
    assert await live_ids() == cpu_nodes | {ids["head"]}

    # its resources leave the cluster
    after = nonzero(await within(af.cluster_resources()))
    assert after == {"CPU": 3.0, "r_a": 1.0, "r_b": 1.0, "r_d": 1.0, "r_e": 1.0}, after

    # the task that ran there fails over (max_retries) or fails with a typed error
    try:
        result = await within(task, 60)
    except (af.WorkerCrashedError, af.NodeDiedError) as exc:
        outcome: str = f"failed typed: {type(exc).__name__}"
    else:
        assert result["node"] in cpu_nodes and result["pid"] != task_pid, result
        outcome = "failed over"
    print(f"node3 seen dead after {detected_s:.2f} s; the task {outcome}")

    # new work goes on on the live nodes (once the failed-over task's lease is back: SPREAD
    # with a node busy for a moment is tested in test_mn_scheduling.py)
    await settled()
    spread = await within(af.get([where_after.options(scheduling_strategy="SPREAD").remote(0.2)
                                  for _ in range(12)]), 60)
    assert set(spread) == cpu_nodes
    assert await within(where.options(resources={"r_b": 1}).remote()) == ids["node2"]
    t1 = time.monotonic()
    with pytest.raises(af.InfeasibleError):
        await within(where.options(resources={"r_c": 1}).remote())
    with pytest.raises(af.InfeasibleError):
        await within(where.options(scheduling_strategy=af.NodeAffinity(dead_id)).remote())
    assert time.monotonic() - t1 < FAST_S
    assert await within(where.options(scheduling_strategy=on_node3).remote()) in cpu_nodes

    # the CLI reports it too
    out = await asyncio.to_thread(cli, ["list", "nodes", "--json"], cli_cluster.cli.env)
    assert out.returncode == 0, out.stderr
    rows = {r["node_id"]: r["alive"] for r in json.loads(out.stdout)}
    assert rows == {nid: nid != dead_id for nid in ids.values()}

    # the actor (max_restarts=1) comes back elsewhere or is dead for good, typed. The call is
    # made after the node's death is known: it is no "call that was running" (API.md §4), so it
    # waits for the new incarnation or fails with ActorDiedError.
    problems: list[str] = []
    first: Any
    try:
        first = await within(pinger.where.remote(), 60)
    except af.ActorDiedError as exc:
        first = exc
    except af.ActorflowError as exc:
        first = exc
        problems.append(f"a call made after node3 was known dead failed with {exc!r}")
    try:
        row = await until(lambda: actor_row(cli_cluster),
                          what="the actor to be ALIVE or DEAD")
        if row["state"] == "ALIVE":
            node_now, pid_now, calls = await within(pinger.where.remote(), 60)
            print(f"the actor came back on {cli_cluster.name_of(node_now)}; first call: "
                  f"{first!r}")
            assert node_now in cpu_nodes and node_now == row["node_id"] and pid_now != actor_pid
            if isinstance(first, tuple):
                assert first[:2] == (node_now, pid_now) and first[2] == 1, first
                assert calls == 2
            if row["restarts"] != 1:
                problems.append(f"`actorflow list actors` counts {row['restarts']} restarts "
                                "after one node death (max_restarts=1)")
        else:
            assert isinstance(first, af.ActorDiedError), first
            print(f"the actor died for good: {first}")
    finally:
        await within(af.kill(pinger))
    assert not problems, "\n".join(problems)


async def test_an_actor_outlives_as_many_node_deaths_as_its_max_restarts(
        cli_cluster: Cluster) -> None:
    """max_restarts=2: two node deaths, two restarts, each on a live node, from __init__."""
    ids = cli_cluster.ids
    live = await live_ids()
    cpu_nodes = [n for n in ("node2", "node3", "node4", "node5") if ids[n] in live]
    assert len(cpu_nodes) >= 3, "needs three live nodes with a CPU"
    actor = Survivor.options(max_restarts=2, scheduling_strategy=af.NodeAffinity(
        ids[cpu_nodes[0]], soft=True)).remote()
    try:
        node_id, pid, calls = await within(actor.where.remote())
        assert (node_id, calls) == (ids[cpu_nodes[0]], 1)
        for death in (1, 2):
            name = cli_cluster.name_of(node_id)
            await kill_node(cli_cluster, name, expect_workers={pid})
            try:
                node_id, new_pid, calls = await within(actor.where.remote(), 60)
            except af.ActorUnavailableError as exc:
                raise AssertionError(
                    f"a call made after {name} was seen dead (and its workers had exited) "
                    f"failed with {exc!r} at node death {death}; a call made while the actor "
                    "restarts waits for the new incarnation (API.md §4)") from exc
            except af.ActorDiedError as exc:
                row = await until(lambda: actor_row(cli_cluster, "Survivor"),
                                  what="the actor's state")
                raise AssertionError(
                    f"max_restarts=2, but the actor died at node death {death}: {exc!r}; "
                    f"`actorflow list actors`: {row}") from exc
            assert node_id in await live_ids() and node_id != ids["head"], node_id
            assert new_pid != pid and calls == 1, (new_pid, pid, calls)
            pid = new_pid
        row = await until(lambda: actor_row(cli_cluster, "Survivor"),
                          what="the actor's state")
        assert (row["state"], row["restarts"]) == ("ALIVE", 2), row
    finally:
        await within(af.kill(actor))
