"""Helpers of the job tests (see conftest.py): a CLI-started head and its jobs' processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from mn_support import ROOT, CliCluster, cli

#: The bound on a job's run in these tests.
JOB_WAIT = 60.0


@dataclass
class JobHead:
    cli: CliCluster
    address: str
    token: str

    @property
    def env(self) -> dict[str, str]:
        return self.cli.env

    @property
    def state_dir(self) -> Path:
        return self.cli.state_dir

    def stop(self) -> list[str]:
        """Stop the head (it stops its jobs), and kill what this cluster left: returns the
        processes that were still there."""
        survivors = self.cli.stop()
        for proc in job_processes(self.cli.tag):
            survivors.append(f"{proc.pid} (a job's process)")
            proc.kill()
        return survivors


async def start_job_head(tmp: Path, extra: list[str]) -> JobHead:
    cluster = CliCluster(tmp, peer_timeout=2.0)
    head = cluster._spawn("head", ["--head", "--port", "0", "--host", "127.0.0.1",
                                   "--num-cpus", "1", *extra])
    try:
        await cluster.wait_head(head)
    except BaseException:
        print(cluster.logs())
        cluster.stop()
        raise
    assert cluster.address is not None and cluster.token is not None
    return JobHead(cluster, cluster.address, cluster.token)


@dataclass
class ExtraNode:
    """A node started beside a JobHead with a state folder of its own (as on another
    machine)."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    log: Any

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def start_extra_node(head: JobHead, state_dir: Path, resources: str, log_path: Path
                     ) -> ExtraNode:
    env = dict(head.env, ACTORFLOW_STATE_DIR=str(state_dir), ACTORFLOW_TOKEN=head.token)
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen(
        [sys.executable, "-m", "actorflow", "start", "--address", head.address,
         "--num-cpus", "1", "--resources", resources, "--peer-timeout", "2", "--block"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    return ExtraNode(proc, log_path, log)


def job_processes(tag: str) -> list[psutil.Process]:
    """Live processes carrying this cluster's tag whatever their command line (a job's
    driver inherits the head's environment)."""
    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("AF_MN_TAG") == tag:
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def run_cli(args: list[str], env: dict[str, str], timeout: float = JOB_WAIT) -> Any:
    return await asyncio.to_thread(cli, args, env, timeout)


def write_app(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


__all__ = [
    "JOB_WAIT",
    "ROOT",
    "ExtraNode",
    "JobHead",
    "job_processes",
    "pid_gone",
    "run_cli",
    "start_extra_node",
    "start_job_head",
    "write_app",
]
