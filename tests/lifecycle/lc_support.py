"""Helpers of the lifecycle tests: a CLI cluster of one head, and driver scripts run as
processes of their own against it (their stdout read line by line, every wait bounded)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mn_support import ROOT, CliCluster, start_cluster

__all__ = ["Driver", "head_cluster", "shm_names"]


@asynccontextmanager
async def head_cluster(tmp: Path, num_cpus: float = 4, *, nodes: int = 0
                       ) -> AsyncIterator[CliCluster]:
    """A head with ``num_cpus`` (and ``nodes`` more nodes of 1 CPU); stopped at the end, and
    the test fails if a process of it survives."""
    cluster = CliCluster(tmp)
    specs = [{"name": "head", "num_cpus": num_cpus, "resources": {"r_head": 1}}]
    specs += [{"name": f"node{i}", "num_cpus": 1, "resources": {f"r_node{i}": 1}}
              for i in range(nodes)]
    try:
        await start_cluster(cluster, specs)
        yield cluster
    finally:
        survivors = await asyncio.to_thread(cluster.stop)
        assert not survivors, f"processes left behind: {survivors}\n{cluster.logs()}"


class Driver:
    """A driver script (``python FILE``) in a process of its own, joined to ``cluster``."""

    def __init__(self, cluster: CliCluster, tmp: Path, name: str, source: str) -> None:
        path = tmp / f"{name}.py"
        path.write_text(source)
        env = dict(cluster.env)
        env["ACTORFLOW_ADDRESS"] = cluster.address or ""
        env["ACTORFLOW_TOKEN"] = cluster.token or ""
        self.proc = subprocess.Popen([sys.executable, str(path)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd=str(ROOT), text=True, bufsize=1)
        self.lines: list[str] = []

    async def expect(self, start: str, timeout: float = 60.0) -> str:
        """The first line of its stdout that starts with ``start`` (bounded)."""
        for line in self.lines:
            if line.startswith(start):
                return line
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline),
                                          max(0.1, deadline - time.monotonic()))
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if line.startswith(start):
                return line.rstrip("\n")
        raise AssertionError(f"no line starting {start!r} from the driver; "
                             f"got {self.lines!r}\nstderr: {self.stderr()[-3000:]}")

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def shm_names(prefix: str) -> list[str]:
    try:
        return [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    except OSError:
        return []
