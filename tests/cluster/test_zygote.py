"""The worker pool's zygote (``actorflow.cluster.zygote``): workers are forked from it, behave
as ``python -m actorflow.cluster.worker_main`` processes do, and die with it; the node sees a
forked worker's exit (and its code) at once; when the zygote dies the pool restarts it, and
when it cannot start the pool starts plain processes. Real processes, real signals, bounded
waits; the module's ``no_process_left`` guard checks that nothing is left behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest
from cl_support import pid_alive, run_python, until, within

import actorflow as af
from actorflow.cluster import zygote as zygote_mod
from actorflow.cluster.node import Node
from actorflow.cluster.pool import WorkerHandle, WorkerPool, WorkerState
from actorflow.cluster.zygote import ForkedProcess, Zygote
from actorflow.testing import cluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.skipif(not zygote_mod.supported(), reason="the zygote needs Linux")


@af.remote
def whoami() -> dict[str, Any]:
    return {"pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv,
            "token": os.environ.get("ACTORFLOW_TOKEN"), "cwd": os.getcwd(),
            "marker": os.environ.get("AF_ZYGOTE_TEST")}


@af.remote
class Holder:
    def pid(self) -> int:
        return os.getpid()

    def ppid(self) -> int:
        return os.getppid()


def _node(rt: af.Runtime) -> Node:
    ref = rt.system.lookup("node")
    assert ref is not None and ref._slot.cell is not None
    node = ref._slot.cell.actor
    assert isinstance(node, Node)
    return node


def _pool(rt: af.Runtime) -> WorkerPool:
    pool = _node(rt).pool
    assert pool is not None
    return pool


async def _zygote(rt: af.Runtime) -> Zygote:
    """The node's zygote, once it runs."""
    pool = _pool(rt)
    await until(lambda: pool.zygote is not None and pool.zygote.usable, what="a running zygote")
    assert pool.zygote is not None
    return pool.zygote


def _handle(rt: af.Runtime, pid: int) -> WorkerHandle:
    return next(h for h in _pool(rt).workers.values() if h.pid == pid)


def _cmdline(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline())


async def test_workers_are_forked_and_look_like_plain_workers() -> None:
    async with cluster(num_cpus=1) as rt:
        zygote = await _zygote(rt)
        holder = Holder.remote()
        assert await within(holder.ppid.remote()) == zygote.pid
        seen = await within(whoami.remote())
        assert seen["ppid"] == zygote.pid
        assert seen["token"] is None  # removed once read, as before
        assert seen["argv"][0].endswith(os.path.join("actorflow", "cluster", "worker_main.py"))
        assert seen["cwd"] == os.getcwd()
        assert "-m actorflow.cluster.worker_main" in _cmdline(seen["pid"])
        pid = await within(holder.pid.remote())
        assert "-m actorflow.cluster.worker_main" in _cmdline(pid)
        handle = _handle(rt, pid)
        assert isinstance(handle.proc, ForkedProcess)
        await af.kill(holder)
    assert not pid_alive(zygote.pid)


async def test_the_environment_is_the_nodes_at_fork_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with cluster(num_cpus=1) as rt:
        await _zygote(rt)
        monkeypatch.setenv("AF_ZYGOTE_TEST", "set-after-init")

        @af.remote
        class Env:
            def marker(self) -> str | None:
                return os.environ.get("AF_ZYGOTE_TEST")

        # the first may take a worker started before the change (an idle one, as before);
        # the others are forked after it and see the node's environment of now
        envs = [Env.remote() for _ in range(3)]
        markers = await within(af.get([e.marker.remote() for e in envs]))
        assert markers.count("set-after-init") >= 2, markers
        for env in envs:
            await af.kill(env)


async def test_workers_start_in_a_working_directory_removed_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "soon-gone"
    here.mkdir()
    monkeypatch.chdir(here)
    async with cluster(num_cpus=1) as rt:
        await _zygote(rt)
        here.rmdir()  # as for a plain child, the worker is in the (removed) directory

        @af.remote
        class Where:
            def cwd(self) -> str:
                try:
                    return os.getcwd()
                except OSError as exc:
                    return type(exc).__name__

        where = [Where.remote() for _ in range(3)]
        assert await within(af.get([w.cwd.remote() for w in where])) == [
            "FileNotFoundError"] * 3
        for w in where:
            await af.kill(w)


async def test_a_killed_forked_worker_is_seen_at_once_with_its_code() -> None:
    async with cluster(num_cpus=1) as rt:
        await _zygote(rt)
        holder = Holder.remote()
        pid = await within(holder.pid.remote())
        handle = _handle(rt, pid)
        assert isinstance(handle.proc, ForkedProcess)
        assert handle.exited is not None and handle.state is WorkerState.ACTOR
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        code = await within(asyncio.shield(handle.exited), 5.0)
        elapsed = time.monotonic() - t0
        assert code == -signal.SIGKILL
        assert handle.exit_code == -signal.SIGKILL
        assert elapsed < 1.0, f"the node saw the exit after {elapsed:.2f} s"
        with pytest.raises(af.ActorDiedError):
            await within(holder.pid.remote())


async def test_a_worker_that_exits_by_itself_reports_its_own_code() -> None:
    async with cluster(num_cpus=1) as rt:
        await _zygote(rt)

        @af.remote
        class Quitter:
            def pid(self) -> int:
                return os.getpid()

            def quit(self) -> None:
                os._exit(7)

        quitter = Quitter.remote()
        handle = _handle(rt, await within(quitter.pid.remote()))
        quitter.quit.remote()
        assert handle.exited is not None
        assert await within(asyncio.shield(handle.exited)) == 7


async def test_killing_the_zygote_takes_its_workers_and_the_pool_recovers() -> None:
    async with cluster(num_cpus=2) as rt:
        pool = _pool(rt)
        zygote = await _zygote(rt)
        holder = Holder.options(max_restarts=1).remote()
        old_pid = await within(holder.pid.remote())
        forked = [h.pid for h in pool.workers.values() if isinstance(h.proc, ForkedProcess)]
        assert old_pid in forked and len(forked) >= 2
        os.kill(zygote.pid, signal.SIGKILL)
        # its children die with it (PR_SET_PDEATHSIG); none is left running
        await until(lambda: not any(pid_alive(p) for p in forked), 10.0,
                    "every forked worker to die with the zygote")
        await until(lambda: not {h.pid for h in pool.workers.values()} & set(forked), 10.0,
                    "the node to see each of them exit")
        # a new zygote, and work goes on (the actor restarts in a new process)

        def restarted() -> bool:
            new = pool.zygote
            return new is not None and new.pid != zygote.pid and new.usable

        await until(restarted, 20.0, "a new zygote")
        new = pool.zygote
        assert new is not None
        assert await within(holder.pid.remote()) != old_pid
        seen = await within(whoami.remote())
        assert seen["ppid"] in (new.pid, os.getpid())  # forked, or plain while it restarted
        assert await within(holder.ppid.remote()) in (new.pid, os.getpid())
        await af.kill(holder)


async def test_the_pool_starts_plain_workers_when_the_zygote_cannot_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def cannot(cls: type[Zygote], **kwargs: Any) -> Zygote:
        raise OSError("no zygote today")

    monkeypatch.setattr(Zygote, "launch", classmethod(cannot))
    async with cluster(num_cpus=1) as rt:
        seen = await within(whoami.remote())
        assert seen["ppid"] == os.getpid()
        assert _pool(rt).zygote is None
        assert "-m actorflow.cluster.worker_main" in _cmdline(seen["pid"])


async def test_the_pool_starts_plain_workers_when_the_zygote_dies_before_ready(
        monkeypatch: pytest.MonkeyPatch) -> None:
    launch = Zygote.launch

    async def dying(cls: type[Zygote], **kwargs: Any) -> Zygote:
        zygote = await launch(**kwargs)
        zygote.proc.kill()
        return zygote

    monkeypatch.setattr(Zygote, "launch", classmethod(dying))
    async with cluster(num_cpus=1) as rt:
        seen = await within(whoami.remote())
        assert seen["ppid"] == os.getpid()
        holder = Holder.remote()
        assert await within(holder.ppid.remote()) == os.getpid()
        await af.kill(holder)
        assert _pool(rt).zygote is None


async def test_actorflow_zygote_0_asks_for_plain_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORFLOW_ZYGOTE", "0")
    async with cluster(num_cpus=1) as rt:
        seen = await within(whoami.remote())
        assert seen["ppid"] == os.getpid() and seen["token"] is None
        assert _pool(rt).zygote is None
        assert not [p for p in psutil.Process().children()
                    if "actorflow.cluster.zygote" in " ".join(p.cmdline())]


async def test_a_start_cancelled_while_forking_leaves_no_process() -> None:
    async with cluster(num_cpus=1) as rt:
        zygote = await _zygote(rt)
        pool = _pool(rt)
        before = {p.pid for p in psutil.Process(zygote.pid).children()}
        for delay in (0.0, 0.001, 0.005, 0.02):
            start = asyncio.ensure_future(pool.start())
            await asyncio.sleep(delay)
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)

        def settled() -> bool:
            kids = {p.pid for p in psutil.Process(zygote.pid).children()
                    if p.status() != psutil.STATUS_ZOMBIE}
            ours = {h.pid for h in pool.workers.values()}
            return kids - before <= ours  # every new child is a worker the pool tracks

        await until(settled, 10.0, "cancelled starts to leave no untracked process")


def test_forked_workers_output_reaches_the_driver_with_its_prefix() -> None:
    script = """
        import os, sys
        import psutil
        import actorflow as af

        @af.remote
        def shout(word):
            print("out", word)
            print("err", word, file=sys.stderr)
            return os.getpid(), os.getppid()

        async def main():
            pid, ppid = await shout.remote("hello")
            zygotes = [p.pid for p in psutil.Process().children()
                       if "actorflow.cluster.zygote" in " ".join(p.cmdline())]
            print("PIDS", pid, ppid, "ZYGOTES", *zygotes, flush=True)

        af.run(main, num_cpus=1, log_to_driver=True)
    """
    result = run_python(script, timeout=60)
    assert result.returncode == 0, result.stderr
    match = re.search(r"^PIDS (\d+) (\d+) ZYGOTES (\d+)$", result.stdout, re.MULTILINE)
    assert match, (result.stdout, result.stderr)
    pid, ppid, zygote = int(match[1]), int(match[2]), int(match[3])
    assert ppid == zygote  # it was forked
    assert f"(shout pid={pid}) out hello\n" in result.stdout
    assert f"(shout pid={pid}) err hello\n" in result.stderr


def test_a_node_killed_hard_takes_its_zygote_and_workers_with_it() -> None:
    script = """
        import os, sys, time
        import actorflow as af

        @af.remote
        class A:
            def pid(self):
                return os.getpid()

        @af.remote
        def pid():
            return os.getpid()

        async def main():
            actor = A.remote()
            pids = [await actor.pid.remote(), await pid.remote()]
            kids = [p for p in os.listdir("/proc") if p.isdigit()]
            zygote = [int(p) for p in kids
                      if open(f"/proc/{p}/cmdline", "rb").read().find(
                          b"actorflow.cluster.zygote") >= 0
                      and int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
                      == os.getpid()]
            print("PIDS", *pids, "ZYGOTE", *zygote, flush=True)
            os.kill(os.getpid(), 9)  # the node (this driver) dies without a word

        af.run(main, num_cpus=1, log_to_driver=False)
    """
    result = run_python(script, timeout=60)
    match = re.search(r"^PIDS (\d+) (\d+) ZYGOTE (\d+)$", result.stdout, re.MULTILINE)
    assert match, (result.stdout, result.stderr)
    pids = [int(match[1]), int(match[2]), int(match[3])]
    deadline = time.monotonic() + 10.0
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if pid_alive(p)]
    for pid in left:  # never leave them behind, even when the test failed
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running after their node died: {left}"


def test_the_zygote_exits_when_its_channel_closes() -> None:
    async def main() -> None:
        zygote = await Zygote.launch(log_to_driver=True)
        try:
            assert await zygote.wait_ready(30.0)
            assert zygote.usable
        finally:
            await zygote.aclose()
        assert zygote.exited.done() and zygote.exited.result() == 0
        assert not pid_alive(zygote.pid)

    asyncio.run(main())
