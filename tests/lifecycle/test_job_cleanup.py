"""API.md §10: when a job ends (its driver is SIGKILLed, or calls af.shutdown()) its
non-detached actors (named ones too), running and queued tasks, placement groups and objects
are released within 5 s, while a detached actor and another driver's work carry on. Real
processes: a CLI-started cluster, the victim driver a script of its own, this process the
other driver."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import cloudpickle
import psutil
import pytest
from actor_support import Counter
from lc_support import Driver, head_cluster, shm_names
from mn_support import alive, until, within

import actorflow as af
from actorflow.cluster.protocol import ListState

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(240)

#: The promise: a job's resources are back this soon after its end.
RELEASE_S = 5.0

VICTIM = """
import asyncio, os, sys, time
import numpy as np
import actorflow as af
from actorflow.cluster.driver_job import segment_prefix

@af.remote(num_cpus=1)
class Holder:
    def pid(self):
        return os.getpid()

@af.remote(num_cpus=0)
class Child:
    def pid(self):
        return os.getpid()

@af.remote(num_cpus=0)
class Keeper:
    def __init__(self):
        self.n = 0
        self.child = None
    def bump(self):
        self.n += 1
        return self.n
    async def child_pid(self):
        self.child = Child.remote()  # the detached actor's child: it lives as long as it
        return await self.child.pid.remote()
    async def keep_result(self):
        self.result = big_result.remote()  # its own task's result: not its job's driver's
        return int((await self.result).sum())
    async def kept_sum(self):
        return int((await self.result).sum())
    def big(self):
        return np.ones(4 << 20, dtype=np.uint8)  # an actor call's result for the driver

@af.remote(num_cpus=1)
def big_result():
    return np.ones(4 << 20, dtype=np.uint8)  # written by the worker, owned by the driver

@af.remote(num_cpus=1)
def sleeper(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)

async def main():
    rt = await af.init(namespace="lc")
    named = Holder.options(name="svc").remote()
    anon = Holder.remote()
    keeper = Keeper.options(name="keeper", lifetime="detached").remote()
    await keeper.bump.remote()
    child_pid = await keeper.child_pid.remote()
    pg = af.placement_group([{"CPU": 1}])
    await pg.ready()
    big = af.put(np.ones(4 << 20, dtype=np.uint8))
    result = big_result.remote()
    await result
    result_segment = rt.core.objects.entries[result.id].payload.name
    assert await keeper.keep_result.remote() == 4 << 20
    call_result = keeper.big.remote()
    await call_result
    call_segment = rt.core.objects.entries[call_result.id].payload.name
    running = sleeper.remote("{tmp}/running.pid")
    queued = sleeper.remote("{tmp}/queued.pid")  # no CPU left for it: it waits
    while not os.path.exists("{tmp}/running.pid"):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    task_pid = int(open("{tmp}/running.pid").read())
    print("READY", rt.job_id, await named.pid.remote(), await anon.pid.remote(), task_pid,
          pg.id, segment_prefix(rt.core), child_pid, result_segment, call_segment,
          flush=True)
    if "{mode}" == "shutdown":
        while not os.path.exists("{tmp}/go"):
            await asyncio.sleep(0.05)
        await af.shutdown()
        print("SHUT", flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


async def _jobs(rt: af.Runtime) -> dict[str, dict[str, object]]:
    rows = await within(rt.core.head.ask(ListState("jobs")))
    return {row["job_id"]: row for row in rows}


async def _check_job_ends(tmp_path: Path, mode: str) -> None:
    async with head_cluster(tmp_path, num_cpus=4) as cluster:
        assert cluster.address is not None
        rt = await within(af.init(address=cluster.address, token=cluster.token,
                                  log_to_driver=False))
        victim = Driver(cluster, tmp_path, "victim", VICTIM.replace("{tmp}", str(tmp_path))
                        .replace("{mode}", mode))
        try:
            mine = Counter.remote()
            assert await within(mine.incr.remote()) == 1
            ready = (await victim.expect("READY")).split()
            job_id, named_pid, anon_pid, task_pid = ready[1], *map(int, ready[2:5])
            pg_id, prefix, child_pid = ready[5], ready[6], int(ready[7])
            result_segment, call_segment = ready[8], ready[9]
            assert shm_names(prefix), "the victim's value is in shared memory"
            assert shm_names(result_segment), "its task's result is in shared memory"
            assert shm_names(call_segment), "its actor call's result is in shared memory"
            assert (await within(af.available_resources())).get("CPU", 0) == 0
            assert (await _jobs(rt))[job_id]["status"] == "RUNNING"
            assert rt.job_id != job_id

            started = time.monotonic()
            if mode == "kill":
                os.kill(victim.proc.pid, signal.SIGKILL)
            else:
                (tmp_path / "go").touch()
                await victim.expect("SHUT")
                started = time.monotonic()

            pids = {"named actor": named_pid, "anonymous actor": anon_pid,
                    "running task": task_pid}

            def released() -> bool:
                return not any(alive(p) for p in pids.values())

            try:
                await until(released, RELEASE_S, "the job's actor and task processes to end")
            except AssertionError as exc:
                left = [what for what, pid in pids.items() if alive(pid)]
                raise AssertionError(f"{exc}: {left} still run") from None
            cpus = await until(
                lambda: _cpus_back(), RELEASE_S + 1, "the job's CPUs to come back")
            assert cpus == 4
            await until(lambda: not shm_names(prefix), RELEASE_S, "its segments to go")
            await until(lambda: not shm_names(result_segment), RELEASE_S,
                        "its task's result to go")
            await until(lambda: not shm_names(call_segment), RELEASE_S,
                        "its actor call's result to go")
            took = time.monotonic() - started
            assert took < RELEASE_S + 1, took
            table = await within(af.placement_group_table())
            assert table[pg_id]["state"] == "REMOVED"
            row = (await _jobs(rt))[job_id]
            assert row["status"] == ("FAILED" if mode == "kill" else "SUCCEEDED")
            assert row["end_time"] is not None
            with pytest.raises(ValueError):
                await within(af.get_actor("svc", namespace="lc"))
            # the queued task never ran, though its CPU is free now
            await asyncio.sleep(1.0)
            assert not (tmp_path / "queued.pid").exists()
            assert (await within(af.available_resources())).get("CPU", 0) == 4
            # the detached actor and this driver's own work carry on
            keeper = await within(af.get_actor("keeper", namespace="lc"))
            assert await within(keeper.bump.remote()) == 2
            # what the detached actor's own task made stays (its owner lives on)
            assert await within(keeper.kept_sum.remote()) == 4 << 20
            assert alive(child_pid)  # a detached actor's child lives as long as it does
            assert await within(mine.incr.remote()) == 2
            if mode == "shutdown":
                assert victim.proc.poll() is None  # it ended its job, not its process
            await within(af.kill(keeper))
            print(f"job of a {mode} driver released in {took:.2f} s")
        finally:
            victim.close()
            await within(af.shutdown())


async def _cpus_back() -> float | None:
    cpus = (await af.available_resources()).get("CPU", 0)
    return cpus if cpus == 4 else None


async def test_a_killed_drivers_job_is_released_within_5_s(tmp_path: Path) -> None:
    await _check_job_ends(tmp_path, "kill")


async def test_af_shutdown_ends_the_job_the_same_way(tmp_path: Path) -> None:
    await _check_job_ends(tmp_path, "shutdown")


async def test_a_job_row_for_every_driver(tmp_path: Path) -> None:
    """Each driver is a job with an id of its own; af.get_runtime_context() tells it."""
    async with head_cluster(tmp_path, num_cpus=1) as cluster:
        rt = await within(af.init(address=cluster.address, token=cluster.token,
                                  log_to_driver=False))
        try:
            assert af.get_runtime_context().job_id == rt.job_id
            rows = await _jobs(rt)
            assert rows[rt.job_id]["status"] == "RUNNING"
            assert rows[rt.job_id]["driver_pid"] == os.getpid()
            assert psutil.Process(os.getpid()).is_running()
        finally:
            await within(af.shutdown())
