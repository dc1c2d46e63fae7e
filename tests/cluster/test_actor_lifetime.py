"""Actor lifetimes (issue 18, part 2): an anonymous, non-detached actor is stopped once no
handle to it is alive anywhere; named and detached actors stay.

Handles are counted per process and reported to the head; a handle pickled into another
process (a task's argument, a result, an actor's state) counts while it is on its way and
once it is unpickled there; a process that ends holds nothing. Real processes (a second node
joins through ``actorflow start``), real signals; every wait is bounded. The ledger's rules
(``actorflow.cluster.holds``) are checked on their own at the end.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest_asyncio
from cl_support import ROOT, pid_alive, until, within

import actorflow as af
from actorflow.cluster.holds import CLOSED_TOKENS, HoldLedger
from actorflow.testing import cluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: The issue's bound: a process whose actor lost its last handle is gone within this.
GONE_S = 2.0
#: How long an actor that must stay is watched.
STAY_S = 3.0


@af.remote(num_cpus=0)
class Probe:
    def pid(self) -> int:
        return os.getpid()

    async def slow(self, seconds: float) -> int:
        await asyncio.sleep(seconds)
        return os.getpid()


@af.remote(num_cpus=0)
class Keeper:
    """Holds handles it was given, in its own process."""

    def __init__(self) -> None:
        self.kept: list[Any] = []

    def keep(self, handle: Any) -> int:
        self.kept.append(handle)
        return os.getpid()

    def make(self) -> Any:
        return Probe.remote()  # created here, returned to the caller

    def drop(self) -> None:
        self.kept.clear()

    def announced(self, path: str) -> Any:
        return Announcer.remote(path)  # created here, returned inside a result


@af.remote(resources={"far": 1}, num_cpus=0)
async def hold_until(handle: Any, release: str) -> tuple[int, str]:
    """On the far node: use the handle, then hold it until ``release`` exists."""
    import actorflow as af  # (a fresh import in the worker)

    def wait_for_release() -> None:
        deadline = time.monotonic() + 60.0
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.02)

    pid = await handle.pid.remote()
    await asyncio.to_thread(wait_for_release)
    return pid, af.get_runtime_context().node_id


async def _gone_within(pid: int, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    await until(lambda: not pid_alive(pid), timeout, what)
    return time.monotonic() - t0


async def _stays(pids: list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert all(pid_alive(p) for p in pids), "an actor that must stay was stopped"
        await asyncio.sleep(0.05)


def _start_node(address: str, token: str, tmp_path: Path
                ) -> tuple[subprocess.Popen[bytes], Any]:
    env = dict(os.environ, ACTORFLOW_TOKEN=token, ACTORFLOW_STATE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    env.pop("ACTORFLOW_ADDRESS", None)
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115 - closed by the fixture
    node = subprocess.Popen(
        [sys.executable, "-m", "actorflow", "start", "--address", address,
         "--num-cpus", "1", "--resources", json.dumps({"far": 1}), "--block"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    return node, log


@pytest_asyncio.fixture
async def two_nodes(tmp_path: Path) -> AsyncIterator[af.Runtime]:
    """An embedded cluster (head and a node, 2 CPUs) and a second node with resource ``far``,
    joined through ``actorflow start --address ... --block``."""
    token = secrets.token_hex(16)
    async with cluster(num_cpus=2, token=token) as rt:
        node, log = _start_node(str(rt.address), token, tmp_path)
        try:
            async def joined() -> bool:
                nodes = await af.nodes()
                return sum(1 for n in nodes if n["alive"]) == 2

            deadline = time.monotonic() + 30.0
            while not await joined():
                assert node.poll() is None, (tmp_path / "node.log").read_text()
                assert time.monotonic() < deadline, "the second node did not join"
                await asyncio.sleep(0.1)
            yield rt
        finally:
            node.send_signal(signal.SIGTERM)
            try:
                await within(asyncio.to_thread(node.wait, 15.0), 20.0)
            except (subprocess.TimeoutExpired, TimeoutError):
                node.kill()
                node.wait(10.0)
            log.close()


# -- dropped handles stop anonymous actors --------------------------------------------------------


async def test_actors_whose_handles_are_all_dropped_are_stopped() -> None:
    async with cluster(num_cpus=2):
        probes = [Probe.remote() for _ in range(5)]
        pids = await within(asyncio.gather(*(p.pid.remote() for p in probes)))
        assert len(set(pids)) == 5
        del probes
        gc.collect()
        for pid in pids:
            await _gone_within(pid, GONE_S, "a dropped actor's process to end")


@af.remote(num_cpus=0)
class Announcer:
    def __init__(self, path: str) -> None:
        Path(path).write_text(str(os.getpid()))


async def test_an_actor_made_and_dropped_at_once_answers_its_call_then_stops(
        tmp_path: Path) -> None:
    async with cluster(num_cpus=2):
        # the handle is gone before the actor is up; the call in flight keeps it
        pid = await within(Probe.remote().slow.remote(0.3))
        await _gone_within(pid, GONE_S, "the actor to stop after its call")
        # and one nobody ever calls is stopped once it is up
        path = tmp_path / "pid"
        Announcer.remote(str(path))
        await until(lambda: path.exists() and path.read_text() != "", what="its start")
        await _gone_within(int(path.read_text()), GONE_S, "the uncalled actor to stop")


async def test_named_and_detached_actors_stay_without_handles() -> None:
    async with cluster(num_cpus=2):
        named = Probe.options(name="stays").remote()
        detached = Probe.options(lifetime="detached").remote()
        both = Probe.options(name="both", lifetime="detached").remote()
        pids = await within(asyncio.gather(named.pid.remote(), detached.pid.remote(),
                                           both.pid.remote()))
        del named, detached, both
        gc.collect()
        await _stays(pids, STAY_S)
        again = await within(af.get_actor("stays"))
        assert await within(again.pid.remote()) == pids[0]
        await within(af.kill(again))
        await _gone_within(pids[0], GONE_S, "the killed named actor to end")
        assert pid_alive(pids[1]) and pid_alive(pids[2])
        del again
        gc.collect()
        await _stays(pids[1:], 0.5)


async def test_a_handle_held_in_another_process_keeps_it_until_that_process_dies() -> None:
    async with cluster(num_cpus=2):
        keeper = Keeper.remote()
        probe = Probe.remote()
        pid = await within(probe.pid.remote())
        keeper_pid = await within(keeper.keep.remote(probe))
        del probe
        gc.collect()
        await _stays([pid], 1.0)  # the keeper's copy holds it
        await within(keeper.drop.remote())
        await _gone_within(pid, GONE_S, "the actor to stop once its keeper dropped it")
        # a holder whose process dies holds nothing
        probe = Probe.remote()
        pid = await within(probe.pid.remote())
        await within(keeper.keep.remote(probe))
        del probe
        gc.collect()
        await _stays([pid], 0.5)
        os.kill(keeper_pid, signal.SIGKILL)
        await _gone_within(pid, GONE_S + 2.0, "the actor to stop once its holder died")
        del keeper


async def test_an_actor_created_elsewhere_lives_while_its_returned_handle_does() -> None:
    async with cluster(num_cpus=2):
        keeper = Keeper.remote()
        made = await within(keeper.make.remote())  # created in the keeper, pickled back
        pid = await within(made.pid.remote())
        await _stays([pid], 1.0)  # the keeper's own handle is gone: ours holds it
        del made
        gc.collect()
        await _gone_within(pid, GONE_S, "the returned actor to stop once dropped")
        await within(af.kill(keeper))


@af.remote
def takes(handle: Any) -> None:
    return None


async def test_a_handle_in_a_call_that_never_ran_does_not_keep_it() -> None:
    async with cluster(num_cpus=2, resources={"gate": 1}):
        gate = Probe.options(resources={"gate": 1}).remote()  # holds the only "gate"
        await within(gate.pid.remote())
        probe = Probe.remote()
        pid = await within(probe.pid.remote())
        queued = takes.options(resources={"gate": 1}).remote([probe])  # waits behind it
        del probe
        gc.collect()
        await _stays([pid], 0.5)  # the queued call's arguments hold it
        await within(af.cancel(queued))
        try:
            await within(queued)
        except af.TaskCancelledError:
            pass
        del queued
        gc.collect()
        await _gone_within(pid, GONE_S, "the actor to stop once the unsent call was dropped")
        await within(af.kill(gate))


async def test_a_handle_in_a_result_never_read_does_not_keep_it(tmp_path: Path) -> None:
    async with cluster(num_cpus=2):
        keeper = Keeper.remote()
        path = tmp_path / "pid"
        result = keeper.announced.remote(str(path))  # a handle inside it, never unpickled
        await until(lambda: path.exists() and path.read_text() != "", what="its start")
        pid = int(path.read_text())
        await within(af.wait([result], timeout=10))
        await _stays([pid], 0.5)  # the result holds it
        del result
        gc.collect()
        await _gone_within(pid, GONE_S, "the actor to stop once its unread result was freed")
        await within(af.kill(keeper))


async def test_a_handle_held_by_a_task_on_another_node_keeps_it(
        two_nodes: af.Runtime, tmp_path: Path) -> None:
    release = tmp_path / "release"
    probe = Probe.remote()
    pid = await within(probe.pid.remote())
    held = hold_until.remote(probe, str(release))
    del probe  # at once: the only handle left is the one on its way to the far node
    gc.collect()
    await _stays([pid], 1.5)
    release.touch()
    used_pid, node_id = await within(held)
    assert used_pid == pid and node_id != two_nodes.node_id  # it ran on the other node
    del held
    await _gone_within(pid, GONE_S, "the actor to stop once the far task let it go")


# -- the ledger's rules ---------------------------------------------------------------------------


def test_ledger_a_handle_in_flight_holds_whichever_report_comes_first() -> None:
    for lender_first in (True, False):
        ledger = HoldLedger()
        assert ledger.apply("A", held=["x"]) == []
        if lender_first:
            assert ledger.apply("A", released=["x"], lent=[("x", "t")]) == []
            assert ledger.apply("B", held=["x"], taken=[("x", "t")]) == []
        else:
            assert ledger.apply("B", held=["x"], taken=[("x", "t")]) == []
            assert ledger.apply("B", released=["x"]) == []  # the token is still open
            assert ledger.apply("A", released=["x"], lent=[("x", "t")]) == ["x"]
            assert ledger.unheld("x")
            continue
        assert ledger.apply("B", released=["x"]) == ["x"]


def test_ledger_duplicates_and_holder_deaths() -> None:
    ledger = HoldLedger()
    ledger.apply("A", held=["x"], lent=[("x", "t")])
    ledger.apply("B", held=["x"], taken=[("x", "t")])
    ledger.apply("C", held=["x"], taken=[("x", "t")])  # a second reader: no new token
    assert ledger.holders("x") == {"A", "B", "C"}
    assert ledger.apply("A", released=["x"]) == []
    assert ledger.holder_gone("B") == []
    assert ledger.holder_gone("C") == ["x"]
    assert ledger.unheld("x") and not ledger.unheld("never-heard")
    ledger.forget("x")
    assert not ledger.heard("x")
    # a report that holds and releases at once passes no zero on the way
    assert ledger.apply("A", held=["y"], released=["y"]) == ["y"]
    assert CLOSED_TOKENS >= 1 << 10


def test_ledger_a_handle_in_a_kept_value_holds_until_that_value_is_discarded() -> None:
    orders = [("kept", "taken", "discarded"), ("taken", "kept", "discarded"),
              ("discarded", "taken", "kept"), ("kept", "discarded")]
    for order in orders:
        ledger = HoldLedger()
        ledger.apply("A", held=["x"])
        for i, side in enumerate(order):
            # the lender lets its own handle go as it lends it; the taker does not hold one
            left = ledger.apply("B" if side == "taken" else "A",
                                released=["x"] if side == "kept" else [],
                                **{side: [("x", "t")]})
            if i < len(order) - 1:
                assert left == [] and not ledger.unheld("x"), (order, side)
        assert ledger.unheld("x"), order
