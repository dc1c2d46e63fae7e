"""Helpers of the multi-node tests: clusters of real processes started through the CLI.

A :class:`CliCluster` runs ``python -m actorflow start --head ... --block`` and
``python -m actorflow start --address ... --block`` as child processes of the test, each with
its own custom resources, all sharing one private state folder (``$ACTORFLOW_STATE_DIR``).
Every process it starts, and every worker those start, carries a tag in its environment
(``AF_MN_TAG``), so :func:`tagged_processes` finds exactly this cluster's processes (other
clusters on the machine, such as a parallel test run, are never touched nor counted).

Every wait is bounded; :meth:`CliCluster.stop` always runs (SIGTERM, a bounded wait, SIGKILL
for what is left) and returns the tagged processes that survived it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
from wait_support import until

import actorflow as af

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
#: The bound on every wait expected to succeed.
WAIT = 30.0
TAG_VAR = "AF_MN_TAG"


async def within(aw: Awaitable[T], timeout: float = WAIT) -> T:
    return await asyncio.wait_for(aw, timeout)


def base_env(state_dir: Path, tag: str) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("ACTORFLOW_ADDRESS", "ACTORFLOW_TOKEN"):
        env.pop(var, None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["ACTORFLOW_STATE_DIR"] = str(state_dir)
    env[TAG_VAR] = tag
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA's indices as nvidia-smi's
    return env


def cli(args: list[str], env: dict[str, str], timeout: float = 60.0
        ) -> subprocess.CompletedProcess[str]:
    """``python -m actorflow ARGS`` to completion (killed when ``timeout`` passes)."""
    return subprocess.run([sys.executable, "-m", "actorflow", *args], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=timeout, check=False)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Live processes (not zombies) whose environment carries ``AF_MN_TAG=tag``."""
    out = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid == me or "actorflow" not in " ".join(proc.info["cmdline"] or ()):
                continue
            if proc.environ().get(TAG_VAR) != tag:
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid} {' '.join(proc.cmdline())}")
        except psutil.Error:
            out.append(f"{proc.pid} (gone)")
    return out


def worker_children(pid: int) -> list[psutil.Process]:
    """The worker processes (``actorflow.cluster.worker_main``) below process ``pid``, and the
    zygote that forks them (``actorflow.cluster.zygote``): right after a node starts, its
    workers may still be on their way (the zygote is importing their modules)."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for kid in kids:
        try:
            cmdline = " ".join(kid.cmdline())
            if "actorflow.cluster.worker_main" in cmdline or "actorflow.cluster.zygote" in cmdline:
                out.append(kid)
        except psutil.Error:
            continue
    return out


@dataclass
class Started:
    """One ``actorflow start ... --block`` process."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: Any = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class CliCluster:
    """Processes started with ``python -m actorflow start ... --block`` (see module doc)."""

    def __init__(self, tmp: Path, *, peer_timeout: float = 2.0) -> None:
        self.tmp = tmp
        self.state_dir = tmp / "state"
        self.tag = uuid.uuid4().hex
        self.env = base_env(self.state_dir, self.tag)
        self.peer_timeout = peer_timeout
        self.started: dict[str, Started] = {}
        self.address: str | None = None
        self.token: str | None = None

    # -- starting ----------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], prefix: Sequence[str] = ()) -> Started:
        """``prefix`` runs it under another command (``ip netns exec NAME``: another host)."""
        log_path = self.tmp / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        argv = [*prefix, sys.executable, "-m", "actorflow", "start", *args,
                "--peer-timeout", str(self.peer_timeout), "--block"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=self.env, cwd=str(ROOT))
        started = Started(name, proc, log_path, log)
        self.started[name] = started
        return started

    @staticmethod
    def _resource_args(num_cpus: float, resources: dict[str, float] | None,
                       num_gpus: float | None) -> list[str]:
        args = ["--num-cpus", str(num_cpus)]
        if resources:
            args += ["--resources", json.dumps(resources)]
        if num_gpus:
            args += ["--num-gpus", str(num_gpus)]
        return args

    def start_head(self, name: str = "head", *, num_cpus: float = 1,
                   resources: dict[str, float] | None = None,
                   num_gpus: float | None = None, host: str = "127.0.0.1") -> Started:
        return self._spawn(name, ["--head", "--port", "0", "--host", host,
                                  *self._resource_args(num_cpus, resources, num_gpus)])

    def start_node(self, name: str, *, num_cpus: float = 1,
                   resources: dict[str, float] | None = None,
                   num_gpus: float | None = None, prefix: Sequence[str] = (),
                   extra: Sequence[str] = ()) -> Started:
        """``extra``: more options of ``actorflow start`` (``--object-store-memory 48M``)."""
        assert self.address is not None, "start the head first"
        return self._spawn(name, ["--address", self.address, *extra,
                                  *self._resource_args(num_cpus, resources, num_gpus)], prefix)

    async def wait_ready(self, started: Started, timeout: float = WAIT) -> None:
        """Until the process has marked itself ready in the state folder."""
        entry = self.state_dir / "procs" / f"{started.pid}.json"

        def ready() -> bool:
            if started.proc.poll() is not None:
                raise AssertionError(
                    f"{started.name} exited with {started.proc.returncode}:\n"
                    f"{started.log_text()[-3000:]}"
                )
            try:
                return bool(json.loads(entry.read_text()).get("ready"))
            except (OSError, ValueError):
                return False

        await until(ready, timeout, f"{started.name} to be ready")

    async def wait_head(self, started: Started, timeout: float = WAIT) -> None:
        await self.wait_ready(started, timeout)
        self.address, self.token = self.read_head_info()

    def read_head_info(self) -> tuple[str, str]:
        """The address and token the head left in the state folder."""
        info = json.loads((self.state_dir / "cluster.json").read_text())
        return info["address"], Path(info["token_file"]).read_text().strip()

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, timeout: float = 15.0) -> list[str]:
        """SIGTERM every started process (nodes first), wait (bounded), SIGKILL what is left,
        reap all, close the logs; then wait (bounded) for this cluster's tagged processes
        (workers included) to be gone. Returns those still alive (empty when all is well)."""
        order = sorted(self.started.values(), key=lambda s: s.name == "head")
        for started in order:
            if started.proc.poll() is None:
                try:
                    started.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for started in order:
            try:
                started.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                started.proc.kill()
                started.proc.wait(10)
        for started in order:
            started.log.close()
        deadline = time.monotonic() + 10.0
        left = tagged_processes(self.tag)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = tagged_processes(self.tag)
        survivors = describe(left)
        for proc in left:  # never leave them behind, even when the test fails on them
            try:
                proc.kill()
            except psutil.Error:
                pass
        return survivors

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} (pid {s.pid}) ---\n{s.log_text()[-4000:]}"
                         for s in self.started.values())


async def start_cluster(cluster: CliCluster, nodes: list[dict[str, Any]]) -> None:
    """Start ``nodes[0]`` as the head and the others as nodes joining it (in parallel)."""
    head_opts = dict(nodes[0])
    head = cluster.start_head(head_opts.pop("name", "head"), **head_opts)
    await cluster.wait_head(head)
    joined = []
    for opts in nodes[1:]:
        opts = dict(opts)
        joined.append(cluster.start_node(opts.pop("name"), **opts))
    for started in joined:
        await cluster.wait_ready(started)


@dataclass
class Cluster:
    """A running CLI-started cluster with this process connected as its driver."""

    cli: CliCluster
    runtime: af.Runtime
    ids: dict[str, str] = field(default_factory=dict)  # node name -> node id
    resources: dict[str, dict[str, float]] = field(default_factory=dict)  # node id -> totals

    def name_of(self, node_id: str) -> str:
        for name, nid in self.ids.items():
            if nid == node_id:
                return name
        return f"unknown node {node_id}"


def live_nodes(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in views if v.get("alive")]


def nonzero(amounts: dict[str, float]) -> dict[str, float]:
    """The amounts that are not zero, the nodes' ``memory`` (bytes, which every node declares)
    left out: see :func:`memory_of` for it."""
    return {k: round(v, 6) for k, v in amounts.items() if abs(v) > 1e-9 and k != "memory"}


def memory_of(amounts: dict[str, float]) -> float:
    return amounts.get("memory", 0.0)
