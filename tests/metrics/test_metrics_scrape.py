"""Scraping a real cluster: `actorflow start` processes (a head and a second node), a driver in
a process of its own, GET /metrics on the export port and on the dashboard's port, parsed with
prometheus_client's parser."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import cloudpickle
import numpy as np
import pytest
from mt_support import kinds, samples, value
from wait_support import WAIT, until

import actorflow as af
from actorflow.cluster import bootstrap
from actorflow.placement.resources import Resources

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]

DRIVER = textwrap.dedent("""
    import asyncio, os, sys
    import actorflow as af

    JOBS = af.metrics.Counter("mt_jobs", description="jobs done", tag_keys=("kind",))

    @af.remote
    def work(i):
        JOBS.inc(1, tags={"kind": "task"})
        return os.getpid()

    @af.remote
    class Keeper:
        def ping(self):
            return os.getpid()

    async def main():
        pids = await af.get([work.remote(i) for i in range(6)])
        # (a worker may be taken next for the actor, whose process is killed when the
        # driver leaves: give the tasks' workers their flush first)
        await asyncio.sleep(2 * af.metrics.FLUSH_S)
        keeper = Keeper.remote()
        await keeper.ping.remote()
        JOBS.inc(10, tags={"kind": "driver"})  # sent by the driver's last flush, at its exit
        print("pids", len(set(pids)), flush=True)

    af.run(main, address=sys.argv[1], token=sys.argv[2])
""")


def _env(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["ACTORFLOW_STATE_DIR"] = str(state_dir)
    env.pop("ACTORFLOW_ADDRESS", None)
    return env


@contextlib.asynccontextmanager
async def _started(argv: list[str], env: dict[str, str], want: tuple[str, ...]
                   ) -> AsyncIterator[dict[str, str]]:
    """Run ``actorflow start ... --block``; yield the lines it printed that start with
    ``want`` (key: the rest of the line); SIGTERM it and wait for it on the way out."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actorflow", "start", *argv, "--block",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    found: dict[str, str] = {}
    seen: list[str] = []
    try:
        async with asyncio.timeout(WAIT):
            while not all(w in found for w in want):
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise AssertionError("actorflow start ended:\n" + "".join(seen))
                seen.append(line)
                for w in want:
                    if line.startswith(w):
                        found[w] = line[len(w):].strip()
        yield found
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(WAIT):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _get(url: str, token: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=WAIT)) as response:
        return response.status, await response.read()


async def test_scrape_a_two_node_cli_cluster(tmp_path: Path) -> None:
    env = _env(tmp_path)
    token = secrets.token_hex(16)
    head_argv = ["--head", "--port", "0", "--token", token, "--num-cpus", "2",
                 "--metrics-export-port", "0", "--dashboard-port", "0"]
    async with _started(head_argv, env, ("actorflow head running at ", "metrics: ",
                                         "dashboard: ")) as head:
        address = head["actorflow head running at "].split()[0]
        export, dashboard = head["metrics: "], head["dashboard: "].rstrip("/") + "/metrics"
        async with _started(["--address", address, "--token", token, "--num-cpus", "1"], env,
                            ("actorflow node running at ",)):
            driver = await asyncio.create_subprocess_exec(
                sys.executable, "-c", DRIVER, address, token, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            async with asyncio.timeout(2 * WAIT):
                out, _ = await driver.communicate()
            assert driver.returncode == 0, out.decode()

            # the export port and the dashboard want the token
            assert (await _get(export, None))[0] == 401
            assert (await _get(export, "wrong"))[0] == 401
            assert (await _get(dashboard, None))[0] == 401

            last: list[object] = []

            async def settled():
                status, body = await _get(export, token)
                assert status == 200
                found = samples(body)
                counts = (value(found, "mt_jobs_total", {"kind": "task"}),
                          value(found, "mt_jobs_total", {"kind": "driver"}),
                          value(found, "actorflow_cluster_active_nodes"))
                last[:] = [counts]
                return body if counts == (6.0, 10.0, 2.0) else None

            try:
                body = await until(settled, what="the driver's and its tasks' counts, two nodes")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; last: {last}") from None
            status, through_dashboard = await _get(dashboard, token)
            assert status == 200

    for text in (body, through_dashboard):
        found, types = samples(text), kinds(text)
        assert types["mt_jobs"] == "counter"
        assert value(found, "mt_jobs_total", {"kind": "driver"}) == 10.0
        cpu = found["actorflow_node_cpu_utilization"]
        assert len(cpu) == 2 and all(0.0 <= s.value <= 100.0 for s in cpu)
        used = found["actorflow_node_mem_used"]
        assert len(used) == 2 and all(s.value > 0 for s in used)
        total = {s.labels["NodeId"]: s.value for s in found["actorflow_node_mem_total"]}
        assert all(s.value <= total[s.labels["NodeId"]] for s in used)
        cpus = {s.labels["State"]: s.value for s in found["actorflow_resources"]
                if s.labels["Name"] == "CPU"}
        assert set(cpus) == {"USED", "AVAILABLE"} and cpus["USED"] + cpus["AVAILABLE"] == 3.0
        shm = [s for s in found["actorflow_object_store_memory"]
               if s.labels["Location"] == "MMAP_SHM"]
        assert len(shm) == 2 and all(s.value >= 0 for s in shm)
        keeper = [s for s in found["actorflow_actors"] if s.labels["Name"] == "Keeper"]
        assert sum(s.value for s in keeper) == 1.0
        tasks = {s.labels["State"]: s.value for s in found["actorflow_tasks"]
                 if s.labels["Name"].endswith("work")}
        assert tasks.get("FINISHED") == 6.0
        assert types["actorflow_task_duration_seconds"] == "histogram"
        (work_count,) = [s.value for s in found["actorflow_task_duration_seconds_count"]
                         if s.labels["Name"].endswith("work")]
        assert work_count == 6.0
        assert value(found, "actorflow_task_duration_seconds_bucket",
                     {"Name": "work", "le": "+Inf"}) == 6.0


async def test_export_port_auth_can_be_turned_off() -> None:
    """--metrics-no-auth serves the export port without the token; the default wants it."""
    token = secrets.token_hex(16)
    for no_auth, want in ((True, 200), (False, 401)):
        proc = await bootstrap.start_head(
            token=token, resources=Resources.of({"CPU": 1.0}), with_node=False,
            options={"metrics_export_port": 0, "metrics_no_auth": no_auth})
        try:
            url = proc.info["metrics"]
            status, body = await _get(url, None)
            assert status == want
            if status == 200:
                assert value(samples(body), "actorflow_cluster_active_nodes") == 0.0
        finally:
            await proc.aclose()
        with pytest.raises(aiohttp.ClientConnectionError):  # closed with its head
            await _get(url, None)


@af.remote(num_cpus=1)
class Holder:
    def ready(self) -> bool:
        return True


@af.remote
def fails() -> None:
    raise ValueError("on purpose")


@af.remote
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def test_system_metrics_follow_the_cluster(af_cluster: af.Runtime) -> None:
    """Resources held by an actor, bytes in shared memory, failed tasks: each is seen."""
    holder = Holder.remote()
    assert await af.get(holder.ready.remote(), timeout=WAIT)
    big = af.put(np.zeros(2 << 20, dtype=np.uint8))  # 2 MiB: a shared-memory segment
    with pytest.raises(ValueError):
        await af.get(fails.remote(), timeout=WAIT)
    assert await af.get(nap.remote(0.2), timeout=WAIT) == 0.2

    async def seen():
        found = samples(await af.metrics.exposition())
        shm = value(found, "actorflow_object_store_memory", {"Location": "MMAP_SHM"})
        failed = [s for s in found.get("actorflow_tasks", ())
                  if s.labels["Name"] == "fails" and s.labels["State"] == "FAILED"]
        napped = value(found, "actorflow_task_duration_seconds_count", {"Name": "nap"})
        # (the tasks' idle lease gives its CPU back within 0.1 s: then only the actor's)
        used = value(found, "actorflow_resources", {"Name": "CPU", "State": "USED"})
        if shm is not None and shm >= 2 << 20 and failed and napped == 1.0 and used == 1.0:
            return found
        return None

    found = await until(seen, what="the segment's bytes, the tasks, the actor's CPU")
    assert value(found, "actorflow_resources", {"Name": "CPU", "State": "AVAILABLE"}) == 1.0
    assert value(found, "actorflow_actors", {"Name": "Holder", "State": "ALIVE"}) == 1.0
    assert value(found, "actorflow_cluster_active_nodes") == 1.0
    buckets = {s.labels["le"]: s.value for s in found["actorflow_task_duration_seconds_bucket"]
               if s.labels["Name"] == "nap"}
    assert buckets["0.1"] == 0.0 and buckets["0.5"] == 1.0 and buckets["+Inf"] == 1.0
    assert 0.2 <= value(found, "actorflow_task_duration_seconds_sum", {"Name": "nap"}) < 0.5
    del big
