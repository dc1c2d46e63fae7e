"""Fate-sharing (API.md §10, issue 14): an actor created by another actor dies with its
creator unless detached. The creator's process ending is what counts: killed, crashed past
``max_restarts``, or crashed and restarting (Ray's rule: the children belonged to the process
that is gone). Named children die too (they would outlive their handles otherwise); children of
children too; detached ones live on.

One shared cluster, real worker processes, real signals; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

import cloudpickle
import pytest
from cl_support import pid_alive, until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}

#: The issue's bound: a child's process is gone this soon after its creator's.
GONE_S = 2.0


@af.remote(num_cpus=0)
class Child:
    def __init__(self) -> None:
        self.kids: list[Any] = []

    def pid(self) -> int:
        return os.getpid()

    async def spawn(self, name: str) -> int:
        """Create a named child of its own (a grandchild of its creator)."""
        kid = Child.options(name=name).remote()
        self.kids.append(kid)
        pid: int = await kid.pid.remote()
        return pid


@af.remote(num_cpus=0)
class Parent:
    def __init__(self) -> None:
        self.kids: list[Any] = []

    def pid(self) -> int:
        return os.getpid()

    async def make(self, prefix: str) -> tuple[list[int], Any]:
        """Three children: named, anonymous (its handle goes to the caller too, so the
        caller's handle would keep it alive), and detached; the named one makes a child."""
        named = Child.options(name=f"{prefix}-named").remote()
        anon = Child.remote()
        free = Child.options(name=f"{prefix}-free", lifetime="detached").remote()
        self.kids = [named, anon, free]
        pids = list(await asyncio.gather(*(k.pid.remote() for k in self.kids)))
        pids.append(await named.spawn.remote(f"{prefix}-grandchild"))
        return pids, anon


async def _gone(pids: list[int], what: str) -> float:
    t0 = time.monotonic()
    await until(lambda: not any(pid_alive(p) for p in pids), GONE_S, what)
    return time.monotonic() - t0


async def test_children_die_with_a_killed_creator_detached_ones_live_on(
        shared_cluster: af.Runtime) -> None:
    parent = Parent.remote()
    (named, anon, free, grandchild), anon_handle = await within(parent.make.remote("k"))
    named_handle = await within(af.get_actor("k-named"))
    watches = asyncio.gather(af.watch(named_handle), af.watch(anon_handle))
    try:
        await within(af.kill(parent))
        await _gone([named, anon, grandchild], "the killed creator's children to end")
        deaths = await within(watches)
    finally:
        watches.cancel()
    for death in deaths:
        assert (death.actor, death.reason) == ("Child", "its creator's process ended")
        assert isinstance(death.cause, af.ActorDiedError)
        assert (death.cause.actor, death.cause.reason) == ("Parent", "it was killed")
    with pytest.raises(af.ActorDiedError) as info:
        await within(anon_handle.pid.remote())
    assert info.value.reason == "its creator's process ended"
    detached = await within(af.get_actor("k-free"))
    assert await within(detached.pid.remote()) == free
    with pytest.raises(ValueError):  # its name was given back
        await within(af.get_actor("k-named"))
    await within(af.kill(detached))


async def test_children_die_when_their_creators_process_dies_even_if_it_restarts(
        shared_cluster: af.Runtime) -> None:
    parent = Parent.options(max_restarts=1, max_task_retries=1).remote()
    (named, anon, free, grandchild), anon_handle = await within(parent.make.remote("s"))
    parent_pid = await within(parent.pid.remote())
    watch = asyncio.ensure_future(af.watch(anon_handle))
    try:
        os.kill(parent_pid, signal.SIGKILL)
        await _gone([named, anon, grandchild], "the crashed creator's children to end")
        death = await within(watch)
    finally:
        watch.cancel()
    assert (death.actor, death.reason) == ("Child", "its creator's process ended")
    # the creator itself restarted; its detached child lives on
    assert await within(parent.pid.remote()) != parent_pid
    detached = await within(af.get_actor("s-free"))
    assert await within(detached.pid.remote()) == free
    with pytest.raises(af.ActorDiedError) as info:
        await within(anon_handle.pid.remote())
    assert info.value.reason == "its creator's process ended"
    await within(af.kill(detached))
    await within(af.kill(parent))


async def test_an_actor_made_by_the_driver_has_no_creator_to_die_with(
        shared_cluster: af.Runtime) -> None:
    """Only actors have children: an actor the driver made outlives any other actor."""
    child = Child.options(name="d-named").remote()
    pid = await within(child.pid.remote())
    parent = Parent.remote()
    await within(parent.pid.remote())
    await within(af.kill(parent))
    await asyncio.sleep(0.5)
    assert pid_alive(pid)
    assert await within(child.pid.remote()) == pid
    await within(af.kill(child))
