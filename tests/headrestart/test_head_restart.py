"""Issue 15, "a head that can restart": a CLI cluster whose head is SIGKILLed and started again
on the same port and state folder, three times, while this process (a joined driver) keeps
calling a named actor and submitting tasks. Every call and task result arrives, the actor keeps
its state (its calls count on without a gap), and after each restart ``af.nodes()`` shows every
node (the same node ids: the nodes rejoined, they were not restarted), and ``actorflow status``
shows the whole cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
from actor_support import Counter
from mn_support import cli, within
from restart_support import RestartableCluster, nodes_back

import actorflow as af

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(300)

RESTARTS = 3
#: The second time the head stays away longer than the peer timeout (10 s).
LONG_AWAY_S = 12.0


@af.remote(num_cpus=0, resources={"r_head": 1}, max_restarts=-1)
class Pinned:
    """An actor on the head's own node: it dies with the head (same process tree)."""

    def pid(self) -> int:
        return os.getpid()


@af.remote(num_cpus=1, resources={"r_c": 1})
def total(values: np.ndarray) -> float:
    return float(values.sum())


@af.remote(num_cpus=1)
def square(x: int) -> int:
    time.sleep(0.01)
    return x * x


async def _pid_again(actor: Any) -> int:
    """The actor's pid, once a call reaches a live incarnation (a call that met the dead one
    fails: it has no task retries)."""
    while True:
        try:
            pid: int = await actor.pid.remote()
            return pid
        except (af.ActorUnavailableError, af.ActorDiedError):
            await asyncio.sleep(0.5)


async def test_a_head_sigkilled_and_restarted_three_times_under_load(tmp_path: Path) -> None:
    cluster = RestartableCluster(tmp_path)
    try:
        head = cluster.start_fixed_head()
        await cluster.wait_head(head)
        nodes = [cluster.start_node("node2", num_cpus=2, resources={"r_b": 1}),
                 cluster.start_node("node3", num_cpus=2, resources={"r_c": 1})]
        for started in nodes:
            await cluster.wait_ready(started)
        assert cluster.address is not None and cluster.token is not None
        await within(af.init(address=cluster.address, token=cluster.token,
                             log_to_driver=False))
        views = await nodes_back(set())
        node_ids = {v["node_id"] for v in views if "r_head" not in v["resources"]}
        assert len(node_ids) == 2, views

        counter = Counter.options(name="counter", lifetime="detached", num_cpus=1,
                                  resources={"r_b": 1}).remote()
        assert await within(counter.incr.remote()) == 1
        named = await within(af.get_actor("counter"))
        # a large value in shared memory (the driver's node is the head's), made before
        big = af.put(np.ones(500_000))
        pinned = Pinned.options(name="pinned", lifetime="detached").remote()
        first_pid = await within(pinned.pid.remote())

        calls: list[Any] = []
        tasks: list[tuple[int, Any]] = []
        stop = asyncio.Event()

        async def load() -> None:
            i = 0
            while not stop.is_set():
                calls.append(named.incr.remote())
                tasks.append((i, square.remote(i)))
                i += 1
                await asyncio.sleep(0.02)

        loader = asyncio.create_task(load())
        # an af.watch wait and lookups by name made while the head is away: they wait for it
        watching = asyncio.create_task(af.watch(named))
        lookups = []
        try:
            for restart in range(RESTARTS):
                await asyncio.sleep(1.5)
                head.proc.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                await asyncio.to_thread(head.proc.wait, 10)
                lookups.append(asyncio.create_task(af.get_actor("counter")))
                # the cluster runs on without its head; once longer than the peer timeout
                # (10 s), after which what waited for the link to it fails and is asked again
                if restart == 1:  # tasks that may not be retried, of a shape with no lease
                    # yet: their lease requests wait for the head's node, costing no retry
                    no_retries = [square.options(num_cpus=0.5, max_retries=0).remote(i)
                                  for i in range(5)]
                await asyncio.sleep(LONG_AWAY_S if restart == 1 else 0.5)
                head = cluster.start_fixed_head()
                await cluster.wait_ready(head, 60.0)
                ready = time.monotonic()
                views = await nodes_back(node_ids)
                assert node_ids <= {v["node_id"] for v in views}
                print(f"head restart: started {ready - killed:.1f} s after the kill, every "
                      f"node back {time.monotonic() - ready:.1f} s after that")
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await loader
            for lookup in lookups:
                if not lookup.done():
                    lookup.cancel()

        for lookup in lookups:
            found = await within(lookup)
            assert await within(found.incr.remote()) > 1
        assert not watching.done(), watching

        # every call and task result arrives: the calls counted on without a gap (the actor
        # kept its state: it was never restarted), every task's result is right
        results = await within(asyncio.gather(*calls), 120.0)
        assert results == list(range(2, 2 + len(calls)))
        squares = await within(asyncio.gather(*(ref for _, ref in tasks)), 120.0)
        assert squares == [i * i for i, _ in tasks]
        assert await within(asyncio.gather(*no_retries), 60.0) == [i * i for i in range(5)]
        assert len(calls) > 50
        print(f"{len(calls)} calls and {len(tasks)} tasks across {RESTARTS} head restarts")
        # large values made before and after the restarts are read on another node
        assert await within(total.remote(big), 60.0) == 500_000.0
        assert await within(total.remote(af.put(np.full(500_000, 2.0))), 60.0) == 1_000_000.0
        # the actor on the head's own node died with it: restarted on the new head's node
        pid = await within(_pid_again(pinned), 60.0)
        assert pid != first_pid

        # the driver's job is still running at the new head (its process is watched again)
        job_id = af.get_runtime_context().job_id
        jobs = {j["job_id"]: j for j in await within(af.state.list_jobs())}
        assert jobs[job_id]["status"] == "RUNNING", jobs

        # the new head's `actorflow status` shows the whole cluster
        status = await asyncio.to_thread(
            cli, ["status", "--address", cluster.address, "--token", cluster.token],
            cluster.env)
        assert status.returncode == 0, status.stderr
        for node_id in node_ids:
            assert f"node {node_id} alive" in status.stdout, status.stdout
        # the directory is on disk, the token is not
        store = cluster.state_dir / f"head-{cluster.port}.sqlite"
        assert store.exists()
        for path in cluster.state_dir.glob(f"{store.name}*"):  # (and its write-ahead log)
            assert cluster.token.encode() not in path.read_bytes()

        # the watch made before the restarts ends when the actor dies, and says why
        await within(af.kill(named))
        death = await within(watching, 30.0)
        assert isinstance(death, af.ActorDiedError)
        # the nodes rejoined (the same processes), and said so
        for started in nodes:
            assert started.proc.poll() is None
            assert started.log_text().count("registered again with the head") == RESTARTS
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        if af.is_initialized():
            await within(af.shutdown(), 30.0)
        survivors = await asyncio.to_thread(cluster.stop)
        assert not survivors, f"processes left behind: {survivors}"
    # a head stopped on purpose (SIGTERM) forgets its directory: the next one starts afresh
    assert not (cluster.state_dir / f"head-{cluster.port}.sqlite").exists()


async def test_a_node_stops_when_its_head_stays_away_past_the_grace_period(
        tmp_path: Path) -> None:
    cluster = RestartableCluster(tmp_path)
    cluster.env["ACTORFLOW_HEAD_GRACE_S"] = "3"
    try:
        head = cluster.start_fixed_head()
        await cluster.wait_head(head)
        node = cluster.start_node("node2", num_cpus=1, resources={"r_b": 1})
        await cluster.wait_ready(node)
        head.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.to_thread(head.proc.wait, 10)
        await asyncio.sleep(1.5)
        assert node.proc.poll() is None, "the node stopped before its grace period was over"
        await asyncio.to_thread(node.proc.wait, 30)
        waited = time.monotonic() - killed
        assert node.proc.returncode == 0, node.log_text()
        assert 3.0 <= waited < 20.0, waited
        assert "did not come back within 3 s" in node.log_text()
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        survivors = await asyncio.to_thread(cluster.stop)
        assert not survivors, f"processes left behind: {survivors}"
