"""``af.watch(handle)`` (API.md §11, issue 14): waits until the actor is dead for good and
returns the ActorDiedError that says why; a restart is not a death; a cancelled watch leaves
nothing behind at the head; it works from a task in another process too.

One shared cluster, real worker processes, real signals; every wait is bounded. The head's
waiter table is read through its ``watches`` view (waits per actor id).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import cloudpickle
import pytest
from cl_support import pid_alive, until, within

import actorflow as af
from actorflow.cluster.protocol import ListState

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}

#: How long a watch that must go on waiting is watched.
STILL_S = 0.5


@af.remote(num_cpus=0)
class Probe:
    def pid(self) -> int:
        return os.getpid()


def _write_pid(pid_file: str) -> None:
    Path(pid_file + ".tmp").write_text(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)


@af.remote(num_cpus=0)
async def watch_in_task(handle: af.ActorHandle, pid_file: str = ""
                        ) -> tuple[str, str, str, int]:
    import actorflow as af  # (in the worker)

    if pid_file:
        _write_pid(pid_file)  # (small: no harm on the loop)
    death = await af.watch(handle)
    return type(death).__name__, death.actor, death.reason, os.getpid()


async def _waits(rt: af.Runtime) -> dict[str, int]:
    waits: dict[str, int] = await rt.core.head.ask(ListState("watches"))
    return waits


async def _until_waits(rt: af.Runtime, expected: int) -> None:
    """Wait until the head's waiter table holds ``expected`` waits (all on one actor)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20.0
    while True:
        waits = await _waits(rt)
        if sum(waits.values()) == expected and len(waits) == min(expected, 1):
            return
        assert loop.time() < deadline, f"the head's watches are {waits}, not {expected}"
        await asyncio.sleep(0.02)


async def _still_waiting(watch: asyncio.Future[af.ActorDiedError]) -> None:
    await asyncio.sleep(STILL_S)
    assert not watch.done(), f"the watch returned early: {watch.result()!r}"


async def test_a_killed_actor_is_watched_to_its_death(shared_cluster: af.Runtime) -> None:
    rt = shared_cluster
    probe = Probe.remote()
    pid = await within(probe.pid.remote())
    watch = asyncio.ensure_future(af.watch(probe))
    try:
        await _until_waits(rt, 1)
        await _still_waiting(watch)
        await within(af.kill(probe))
        death = await within(watch)
    finally:
        watch.cancel()
    assert isinstance(death, af.ActorDiedError)
    assert (death.actor, death.reason, death.cause) == ("Probe", "it was killed", None)
    await until(lambda: not pid_alive(pid), what="the killed actor's process to end")
    # a watch of an actor dead already answers at once, with the same facts
    again = await within(af.watch(probe))
    assert (again.actor, again.reason) == ("Probe", "it was killed")
    await _until_waits(rt, 0)


async def test_a_restart_is_not_a_death(shared_cluster: af.Runtime) -> None:
    rt = shared_cluster
    probe = Probe.options(max_restarts=2, max_task_retries=-1).remote()
    watch = asyncio.ensure_future(af.watch(probe))
    try:
        await _until_waits(rt, 1)
        pids = [await within(probe.pid.remote())]
        for crash in range(3):
            os.kill(pids[-1], signal.SIGKILL)
            if crash < 2:  # restarted: a new process answers, the watch goes on
                await until(lambda: not pid_alive(pids[-1]), what="the crashed process to end")
                pids.append(await within(probe.pid.remote()))
                assert pids[-1] != pids[-2]
                await _still_waiting(watch)
        death = await within(watch)  # the third crash is past max_restarts=2
    finally:
        watch.cancel()
    assert isinstance(death, af.ActorDiedError)
    assert death.actor == "Probe"
    assert death.reason == "it crashed and max_restarts=2 is used up"
    assert isinstance(death.cause, af.WorkerCrashedError)
    await _until_waits(rt, 0)


async def test_a_cancelled_watch_leaves_no_wait_at_the_head(shared_cluster: af.Runtime,
                                                             tmp_path: Path) -> None:
    rt = shared_cluster
    probe = Probe.remote()
    first = asyncio.ensure_future(af.watch(probe))
    second = asyncio.ensure_future(af.watch(probe))
    try:
        await _until_waits(rt, 2)
        first.cancel()
        await _until_waits(rt, 1)
        assert first.cancelled() and not second.done()
        second.cancel()
        await _until_waits(rt, 0)
    finally:
        first.cancel()
        second.cancel()
    # the actor lives on, unaffected
    assert isinstance(await within(probe.pid.remote()), int)
    # a watch in a task ends with the task: cancelled, or its process killed
    task = watch_in_task.remote(probe)
    await _until_waits(rt, 1)
    await af.cancel(task)
    with pytest.raises(af.TaskCancelledError):
        await within(task)
    await _until_waits(rt, 0)
    pid_file = tmp_path / "watcher.pid"
    task = watch_in_task.options(max_retries=0).remote(probe, str(pid_file))
    await _until_waits(rt, 1)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    with pytest.raises(af.WorkerCrashedError):
        await within(task)
    await _until_waits(rt, 0)
    await within(af.kill(probe))


async def test_a_task_in_another_process_watches_an_actor(shared_cluster: af.Runtime) -> None:
    rt = shared_cluster
    probe = Probe.remote()
    await within(probe.pid.remote())
    task = watch_in_task.remote(probe)
    await _until_waits(rt, 1)
    await within(af.kill(probe))
    kind, actor, reason, pid = await within(task)
    assert (kind, actor, reason) == ("ActorDiedError", "Probe", "it was killed")
    assert pid != os.getpid()
    await _until_waits(rt, 0)
