"""Job submission end to end on a CLI-started head (API.md §10): a program with a working_dir
holding a module it imports and an env var it prints, its logs followed; a long job stopped
(STOPPED, its processes gone); a failing one FAILED with its exit code; the list; the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from job_support import JOB_WAIT, JobHead, pid_gone, run_cli, write_app
from wait_support import until

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
HEAD_ARGS = ["--job-stop-grace", "1.5"]

APP = """\
import asyncio, os, sys
import helper_mod
import actorflow as af

print(helper_mod.GREETING, os.environ["JOB_COLOR"])
print("cwd", os.getcwd())

async def main():
    async with af.init():  # ACTORFLOW_ADDRESS / ACTORFLOW_TOKEN come from the job
        print("job_id", af.get_runtime_context().job_id)
    print("to stderr", file=sys.stderr)

asyncio.run(main())
"""


async def collect(client: af.JobClient, job_id: str) -> list[str]:
    lines = []
    async for line in client.tail(job_id):
        lines.append(line)
    return lines


async def test_working_dir_module_env_var_and_followed_logs(job_head: JobHead,
                                                            tmp_path: Path) -> None:
    wd = write_app(tmp_path / "app", {"app.py": APP,
                                      "helper_mod.py": "GREETING = 'hello from helper_mod'\n"})
    async with af.JobClient(job_head.address, token=job_head.token) as client:
        job_id = await client.submit(f"{sys.executable} app.py",
                                     runtime_env={"working_dir": str(wd),
                                                  "env_vars": {"JOB_COLOR": "teal"}},
                                     metadata={"owner": "test"})
        lines = await asyncio.wait_for(collect(client, job_id), JOB_WAIT)
        row = await client.info(job_id)
        assert row["status"] == "SUCCEEDED", (row, lines)
        assert row["exit_code"] == 0 and row["metadata"] == {"owner": "test"}
        assert row["runtime_env"]["env_vars"] == {"JOB_COLOR": "teal"}
        assert row["runtime_env"]["working_dir"].startswith("pkg:")
        assert row["start_time"] <= row["end_time"]
        assert "hello from helper_mod teal" in lines
        assert f"job_id {job_id}" in lines  # the driver's job id is the job's
        assert "to stderr" in lines
        cwd = next(line.split(" ", 1)[1] for line in lines if line.startswith("cwd "))
        runtime_envs = job_head.state_dir / "runtime_envs"
        assert Path(cwd).parent == runtime_envs  # the unpacked working_dir, by its digest
        assert (Path(cwd) / "helper_mod.py").read_text().startswith("GREETING")
        assert await client.status(job_id) == "SUCCEEDED"
        assert "hello from helper_mod teal" in await client.logs(job_id)

        # the same tree again: the same package, unpacked once
        again = await client.submit(f"{sys.executable} app.py",
                                    runtime_env={"working_dir": str(wd),
                                                 "env_vars": {"JOB_COLOR": "red"}})
        assert await client.wait(again, JOB_WAIT) == "SUCCEEDED"
        assert "hello from helper_mod red" in await client.logs(again)
        assert [p.name for p in runtime_envs.iterdir()] == [Path(cwd).name]


async def test_stop_a_long_job(job_head: JobHead, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # the driver ignores SIGTERM, so the stop must come to SIGKILL after the grace period
    code = ("import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); print('ready', flush=True);"
            " time.sleep(600)")
    async with af.JobClient(job_head.address, token=job_head.token) as client:
        job_id = await client.submit(f"{sys.executable} -c \"{code}\"")
        async for line in client.tail(job_id):
            if line == "ready":
                break
        assert await client.status(job_id) == "RUNNING"
        pid = int(pid_file.read_text())
        assert not pid_gone(pid)
        assert await asyncio.wait_for(client.stop(job_id), JOB_WAIT) is True
        row = await client.info(job_id)
        assert row["status"] == "STOPPED" and row["exit_code"] in (-15, -9), row
        # gone by SIGKILL (it ignores SIGTERM), once the grace period passed
        await until(lambda: pid_gone(pid), 10.0, "the stopped driver to be gone")
        assert row["end_time"] - row["start_time"] < 30
        assert await client.stop(job_id) is False  # it had ended
        assert (await collect(client, job_id)) == ["ready"]


async def test_failed_job_has_its_exit_code(job_head: JobHead) -> None:
    async with af.JobClient(job_head.address, token=job_head.token) as client:
        job_id = await client.submit("echo about to fail; exit 3")
        assert await client.wait(job_id, JOB_WAIT) == "FAILED"
        row = await client.info(job_id)
        assert row["exit_code"] == 3 and "3" in row["message"]
        assert await client.logs(job_id) == "about to fail\n"
        killed = await client.submit("kill -KILL $$")
        assert await client.wait(killed, JOB_WAIT) == "FAILED"
        row = await client.info(killed)
        assert row["exit_code"] == -9 and "SIGKILL" in row["message"], row
        with pytest.raises(KeyError):
            await client.status("no-such-job")
        rows = {r["job_id"]: r for r in await client.list()}
        assert rows[job_id]["status"] == "FAILED"
        assert all(r["status"] in ("SUCCEEDED", "FAILED", "STOPPED") for r in rows.values())
        assert len(rows) >= 2  # the jobs of the tests before this one too


async def test_cli_submit_status_logs_list(job_head: JobHead, tmp_path: Path) -> None:
    wd = write_app(tmp_path / "cliapp", {"main.py": "import os, helper2\nprint(helper2.X, "
                                         "os.environ['K1'], os.environ['K2'])\n",
                                         "helper2.py": "X = 'from-helper2'\n"})
    env = job_head.env
    where = ["--address", job_head.address, "--token", job_head.token]
    out = await run_cli(["job", "submit", *where, "--working-dir", str(wd), "--env", "K1=a",
                         "--env", "K2=b=c", "--", sys.executable, "main.py"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "from-helper2 a b=c" in out.stdout.splitlines()
    job_id = out.stdout.splitlines()[0].removeprefix("submitted job ")

    failed = await run_cli(["job", "submit", *where, "--", "exit 7"], env)
    assert failed.returncode == 1 and "FAILED (exit code 7)" in failed.stdout, failed.stdout

    # without --address/--token: the cluster of this state folder ("auto")
    status = await run_cli(["job", "status", job_id, "--json"], env)
    assert json.loads(status.stdout)["status"] == "SUCCEEDED", status.stdout + status.stderr
    logs = await run_cli(["job", "logs", job_id], env)
    assert logs.stdout == "from-helper2 a b=c\n", logs.stdout + logs.stderr
    listed = await run_cli(["job", "list", "--json"], env)
    assert job_id in {r["job_id"] for r in json.loads(listed.stdout)}

    background = await run_cli(["job", "submit", *where, "--no-wait", "--",
                                "echo started; sleep 600"], env)
    assert background.returncode == 0, background.stderr
    bg_id = background.stdout.split()[-1]
    follow = asyncio.ensure_future(run_cli(["job", "logs", "--follow", bg_id], env))
    stop = await run_cli(["job", "stop", bg_id], env)
    assert stop.returncode == 0 and "STOPPED" in stop.stdout, stop.stdout + stop.stderr
    followed = await asyncio.wait_for(follow, JOB_WAIT)  # ends with the job
    assert followed.returncode == 0 and followed.stdout.splitlines() in ([], ["started"])
    missing = await run_cli(["job", "status", "nope"], env)
    assert missing.returncode == 1 and "nope" in missing.stderr
    assert os.environ.get("ACTORFLOW_TOKEN") != job_head.token


async def test_a_driver_may_hold_a_job_client_too(job_head: JobHead) -> None:
    """A process that is a driver (af.init) runs a second system for its JobClient: both
    resolve the head through their own."""
    async with (af.init(address=job_head.address, token=job_head.token, log_to_driver=False),
                af.JobClient(job_head.address, token=job_head.token) as client):
        job_id = await client.submit("echo from-a-driver")
        assert await client.wait(job_id, JOB_WAIT) == "SUCCEEDED"
        assert await client.logs(job_id) == "from-a-driver\n"
