"""Submitted jobs live through a restart of the head (SIGKILL, started again on the same port
and state folder): ``actorflow job list|status|logs`` still show the jobs submitted before. A
job that ended before keeps its row; one whose process runs on is followed again to its end
(its exit status comes from its wrapper); one that ended while the head was away gets the
status it ended with; one whose process was killed with no status left is FAILED."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from mn_support import cli, until, within
from restart_support import RestartableCluster

import actorflow as af

pytestmark = pytest.mark.timeout(180)


def _wait_for_file(path: Path, then: str) -> str:
    return f"while [ ! -e {path} ]; do sleep 0.05; done; {then}"


async def _rows(cluster: RestartableCluster) -> dict[str, dict[str, Any]]:
    async with af.JobClient(cluster.address, token=cluster.token) as client:
        return {row["job_id"]: row for row in await client.list()}


async def test_submitted_jobs_survive_a_head_restart(tmp_path: Path) -> None:
    cluster = RestartableCluster(tmp_path)
    go_on, go_fail = tmp_path / "go-on", tmp_path / "go-fail"
    try:
        head = cluster.start_fixed_head()
        await cluster.wait_head(head)
        async with af.JobClient(cluster.address, token=cluster.token) as client:
            done = await within(client.submit("echo done-before"))
            assert await within(client.wait(done, 30.0)) == "SUCCEEDED"
            runs_on = await within(client.submit(
                "echo started; " + _wait_for_file(go_on, "echo finished-after")))
            fails = await within(client.submit(_wait_for_file(go_fail, "exit 3")))
            killed = await within(client.submit("sleep 600"))

            async def all_running() -> bool:
                rows = {j: await client.info(j) for j in (runs_on, fails, killed)}
                return all(r["status"] == "RUNNING" for r in rows.values())

            await until(all_running, 30.0, "the jobs to run")
            pids = {j: (await client.info(j))["pid"] for j in (runs_on, fails, killed)}
        await asyncio.sleep(0.3)  # (the store writes every 50 ms)

        head.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(head.proc.wait, 10)
        # while the head is away: one job ends with code 3, another is killed outright
        go_fail.touch()
        os.killpg(pids[killed], signal.SIGKILL)

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"

        await until(lambda: gone(pids[fails]) and gone(pids[killed]), 30.0, "the jobs to end")
        head = cluster.start_fixed_head()
        await cluster.wait_ready(head, 60.0)

        rows = await within(_rows(cluster), 60.0)
        assert {done, runs_on, fails, killed} <= set(rows), rows
        assert rows[done]["status"] == "SUCCEEDED" and rows[done]["exit_code"] == 0
        assert rows[fails]["status"] == "FAILED" and rows[fails]["exit_code"] == 3, rows[fails]
        assert rows[killed]["status"] == "FAILED" and rows[killed]["exit_code"] is None
        assert rows[runs_on]["status"] == "RUNNING", rows[runs_on]
        assert rows[runs_on]["pid"] == pids[runs_on]

        # the job that ran on is followed again to its end
        go_on.touch()

        async def ended() -> bool:
            return (await _rows(cluster))[runs_on]["status"] == "SUCCEEDED"

        await until(ended, 30.0, "the job that ran on to end")
        # the command line shows them, and serves their output
        listed = await asyncio.to_thread(
            cli, ["job", "list", "--json", "--address", str(cluster.address),
                  "--token", str(cluster.token)], cluster.env)
        assert listed.returncode == 0, listed.stderr
        statuses = {r["job_id"]: r["status"] for r in json.loads(listed.stdout)}
        assert statuses[runs_on] == "SUCCEEDED" and statuses[killed] == "FAILED", statuses
        logs = await asyncio.to_thread(
            cli, ["job", "logs", runs_on, "--address", str(cluster.address),
                  "--token", str(cluster.token)], cluster.env)
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout.split() == ["started", "finished-after"], logs.stdout
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        go_on.touch()  # (a job still waiting, after a failure above, ends: its process is in
        go_fail.touch()  # a session of its own, which outlives the cluster's processes)
        survivors = await asyncio.to_thread(cluster.stop)
        assert not survivors, f"processes left behind: {survivors}"
