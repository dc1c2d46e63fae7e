"""A job's entrypoint placed by the resources it asks for (``--entrypoint-num-cpus``,
``--entrypoint-resources``): on a 2-node CLI cluster where only the second node has the custom
resource, the entrypoint runs there as the job's driver, holds those resources while it runs
and gives them back when it ends; its output is served by the head's job API; a stop reaches
it there; a demand no node can meet fails the job."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from job_support import JOB_WAIT, JobHead, run_cli, start_extra_node, write_app

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")

APP = """\
import asyncio, os, sys
from pathlib import Path
import actorflow as af

async def main():
    await af.init()
    print("state", os.environ["ACTORFLOW_STATE_DIR"], flush=True)
    print("job", af.get_runtime_context().job_id, flush=True)
    while not Path(sys.argv[1]).exists():
        await asyncio.sleep(0.05)
    await af.shutdown()
    print("bye", flush=True)

asyncio.run(main())
"""


async def _free(resource: str) -> float:
    for node in await af.nodes():
        if node["alive"] and resource in node["resources"]:
            return float(node.get("available", {}).get(resource, 0.0))
    return -1.0


async def _until(check: object, what: str) -> None:
    deadline = time.monotonic() + JOB_WAIT
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_the_entrypoint_runs_on_a_node_that_has_its_resources(
        job_head: JobHead, tmp_path: Path) -> None:
    other_state = tmp_path / "other-machine"
    node = start_extra_node(job_head, other_state, '{"accel": 1}', tmp_path / "node.log")
    app = write_app(tmp_path / "app", {"app.py": APP}) / "app.py"
    go = tmp_path / "go"
    try:
        async with af.init(address=job_head.address, token=job_head.token,
                           log_to_driver=False), af.JobClient(
                job_head.address, token=job_head.token) as client:
            async def given_back() -> bool:
                return await _free("accel") == 1.0

            await _until(given_back, "the second node to join")
            out = await run_cli(
                ["job", "submit", "--no-wait", "--entrypoint-num-cpus", "1",
                 "--entrypoint-resources", json.dumps({"accel": 1}), "--",
                 f"{sys.executable} {app} {go}"], job_head.env)
            assert out.returncode == 0, out.stderr
            job_id = out.stdout.split()[-1]

            async def started() -> bool:
                return f"job {job_id}" in await client.logs(job_id)

            await _until(started, "the entrypoint to start as the job's driver")
            text = await client.logs(job_id)
            assert f"state {other_state}" in text, text  # it runs on the second node
            row = await client.info(job_id)
            assert row["status"] == "RUNNING"
            assert row["entrypoint_resources"] == {"accel": 1.0}
            assert row["entrypoint_num_cpus"] == 1.0
            assert await _free("accel") == 0.0  # held while it runs
            go.touch()
            assert await client.wait(job_id, JOB_WAIT) == "SUCCEEDED"
            assert (await client.logs(job_id)).rstrip().endswith("bye")
            await _until(given_back, "the entrypoint's resources to come back")

            # a stop reaches the entrypoint on its node; its resources come back
            long = await client.submit("echo up; sleep 600",
                                       entrypoint_resources={"accel": 1})

            async def up() -> bool:
                return "up" in (await client.logs(long)).split()

            await _until(up, "the long entrypoint to start")
            assert await _free("accel") == 0.0
            assert await client.stop(long)
            assert await client.status(long) == "STOPPED"
            await _until(given_back, "the stopped entrypoint's resources to come back")

            # a demand that no node can meet fails the job
            never = await client.submit("echo never", entrypoint_resources={"nope": 1})
            assert await client.wait(never, JOB_WAIT) == "FAILED"
            assert (await client.info(never))["exit_code"] == 1
            assert "never" not in (await client.logs(never)).split()
            with pytest.raises(ValueError):
                await client.submit("echo x", entrypoint_num_cpus=-1)
    finally:
        node.stop()
