"""API.md §4, actors, on one shared cluster with real worker processes (each actor is a
process of its own). Every test kills the actors it made, so the next finds the CPUs free."""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import cloudpickle
import pytest
import pytest_asyncio
from cl_support import pid_alive, until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}


# -- the sample of API.md §4, as written ----------------------------------------------------------


@af.remote(num_cpus=1, max_restarts=2, max_task_retries=1, max_concurrency=1)
class Counter:
    def __init__(self, start=0):
        self.n = start
    async def incr(self, k=1):
        self.n += k
        return self.n
    def value(self):
        return self.n


@pytest_asyncio.fixture(loop_scope="module")
async def killer(shared_cluster: af.Runtime) -> AsyncIterator[list[af.ActorHandle]]:
    """Actors a test appends here are killed after it (pass or fail)."""
    made: list[af.ActorHandle] = []
    yield made
    for handle in made:
        await within(af.kill(handle, no_restart=True))


async def test_sample_of_section_4(killer: list[af.ActorHandle]) -> None:
    c = Counter.remote(10)            # ActorHandle at once; creation runs in the background
    killer.append(c)
    assert isinstance(c, af.ActorHandle)
    assert await within(c.incr.remote(5)) == 15
    c2 = Counter.options(name="global", namespace="app", get_if_exists=True,
                         lifetime="detached").remote()
    killer.append(c2)
    c3 = await within(af.get_actor("global", namespace="app"))
    assert await within(c2.incr.remote()) == 1
    assert await within(c3.incr.remote()) == 2  # the same actor
    again = Counter.options(name="global", namespace="app", get_if_exists=True).remote()
    assert await within(again.incr.remote()) == 3
    assert await within(c.value.remote()) == 15  # c is another actor
    await af.kill(c, no_restart=True)
    with pytest.raises(af.ActorDiedError, match="Counter"):
        await within(c.incr.remote())
    with pytest.raises(af.ActorDiedError):
        await within(c.value.remote())


async def test_calling_an_actor_class_or_method_directly_raises_type_error(
    killer: list[af.ActorHandle],
) -> None:
    with pytest.raises(TypeError, match=r"\.remote\("):
        Counter(1)
    c = Counter.remote()
    killer.append(c)
    with pytest.raises(TypeError, match=r"\.remote\("):
        c.incr(1)
    with pytest.raises(AttributeError, match="no method 'nope'"):
        c.nope  # noqa: B018


# -- names and namespaces -------------------------------------------------------------------------


@af.remote
class Tag:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def get(self) -> str:
        return self.tag


async def test_names_are_per_namespace(killer: list[af.ActorHandle]) -> None:
    a = Tag.options(name="svc", namespace="ns-a").remote("a")
    b = Tag.options(name="svc", namespace="ns-b").remote("b")
    killer.extend([a, b])
    assert await within(a.get.remote()) == "a"
    assert await within(b.get.remote()) == "b"
    found_a = await within(af.get_actor("svc", namespace="ns-a"))
    found_b = await within(af.get_actor("svc", namespace="ns-b"))
    assert await within(found_a.get.remote()) == "a"
    assert await within(found_b.get.remote()) == "b"
    with pytest.raises(ValueError, match="no actor named 'svc'"):
        await within(af.get_actor("svc"))  # the job's namespace has none


async def test_a_taken_name_fails_without_get_if_exists(killer: list[af.ActorHandle]) -> None:
    first = Tag.options(name="unique").remote("first")
    killer.append(first)
    assert await within(first.get.remote()) == "first"
    second = Tag.options(name="unique").remote("second")
    with pytest.raises(af.ActorDiedError, match="already exists"):
        await within(second.get.remote())
    # once the first is dead its name is free again
    await af.kill(first)
    third = Tag.options(name="unique").remote("third")
    killer.append(third)
    assert await within(third.get.remote()) == "third"
    assert await within((await within(af.get_actor("unique"))).get.remote()) == "third"


# -- ordering and concurrency ---------------------------------------------------------------------


@af.remote
class Log:
    def __init__(self) -> None:
        self.seen: list[int] = []

    async def add(self, i: int) -> int:
        self.seen.append(i)
        return i

    def add_sync(self, i: int) -> int:
        self.seen.append(i)
        return i

    async def add_after(self, i: int, value) -> int:
        self.seen.append(i)
        return i

    def all(self) -> list[int]:
        return self.seen


@af.remote
async def later(value, seconds: float):
    await asyncio.sleep(seconds)
    return value


async def test_calls_from_one_caller_run_in_submission_order(
    killer: list[af.ActorHandle],
) -> None:
    log = Log.options(max_concurrency=1).remote()
    killer.append(log)
    refs = [(log.add if i % 3 else log.add_sync).remote(i) for i in range(300)]
    assert await within(af.get(refs)) == list(range(300))
    assert await within(log.all.remote()) == list(range(300))


async def test_a_call_waiting_for_its_argument_holds_back_later_calls(
    killer: list[af.ActorHandle],
) -> None:
    log = Log.remote()  # async methods: max_concurrency 1000, yet one caller's order holds
    killer.append(log)
    first = log.add_after.remote(1, later.remote("x", 0.3))
    second = log.add.remote(2)
    assert await within(af.get([first, second])) == [1, 2]
    assert await within(log.all.remote()) == [1, 2]


@af.remote
class Gate:
    """``enter`` returns only once ``need`` calls are inside at the same time."""

    def __init__(self, need: int) -> None:
        self.need = need
        self.inside = 0
        self.most = 0
        self.full = asyncio.Event()

    async def enter(self) -> int:
        self.inside += 1
        self.most = max(self.most, self.inside)
        if self.inside >= self.need:
            self.full.set()
        try:
            await asyncio.wait_for(self.full.wait(), 5.0)
        except TimeoutError:
            return -self.most  # the calls did not interleave
        finally:
            self.inside -= 1
        return self.most

    async def pause(self, seconds: float) -> int:
        self.inside += 1
        self.most = max(self.most, self.inside)
        await asyncio.sleep(seconds)
        self.inside -= 1
        return self.most


async def test_max_concurrency_interleaves_async_calls(killer: list[af.ActorHandle]) -> None:
    gate = Gate.options(max_concurrency=4).remote(4)
    killer.append(gate)
    # all four must be inside enter() at once for any of them to return a positive count
    assert await within(af.get([gate.enter.remote() for _ in range(4)])) == [4, 4, 4, 4]


async def test_async_actors_interleave_by_default(killer: list[af.ActorHandle]) -> None:
    gate = Gate.remote(8)  # default for actors with async methods: 1000
    killer.append(gate)
    assert await within(af.get([gate.enter.remote() for _ in range(8)])) == [8] * 8


async def test_max_concurrency_one_runs_calls_one_at_a_time(
    killer: list[af.ActorHandle],
) -> None:
    gate = Gate.options(max_concurrency=1).remote(2)
    killer.append(gate)
    assert await within(af.get([gate.pause.remote(0.02) for _ in range(5)])) == [1] * 5


# -- kill, restarts, retries ----------------------------------------------------------------------


@af.remote(max_restarts=1)
class Fragile:
    def __init__(self) -> None:
        self.n = 0

    async def incr(self) -> int:
        self.n += 1
        return self.n

    def pid(self) -> int:
        return os.getpid()

    async def crash(self) -> None:
        os._exit(3)

    def crash_once(self, marker: str) -> int:
        if not os.path.exists(marker):
            Path(marker).touch()
            os._exit(4)
        return os.getpid()

    async def wait_forever(self) -> None:
        await asyncio.sleep(60)


async def test_kill_fails_running_and_later_calls_with_actor_died_error(
    killer: list[af.ActorHandle],
) -> None:
    f = Fragile.remote()
    pid = await within(f.pid.remote())
    running = f.wait_forever.remote()
    await af.kill(f, no_restart=True)
    with pytest.raises(af.ActorDiedError, match="killed"):
        await within(running)
    with pytest.raises(af.ActorDiedError, match="killed"):
        await within(f.incr.remote())
    await until(lambda: not pid_alive(pid), what="the killed actor's process to end")


async def test_restart_after_a_crash_then_dead_past_max_restarts(
    killer: list[af.ActorHandle],
) -> None:
    f = Fragile.remote()
    killer.append(f)
    assert await within(f.incr.remote()) == 1
    assert await within(f.incr.remote()) == 2
    pid1 = await within(f.pid.remote())
    # the process dies during the call: that call fails, the actor restarts (max_restarts=1)
    with pytest.raises(af.ActorUnavailableError, match="Fragile"):
        await within(f.crash.remote())
    # the new incarnation starts from __init__
    assert await within(f.incr.remote()) == 1
    pid2 = await within(f.pid.remote())
    assert pid2 != pid1
    assert not pid_alive(pid1)
    # a second crash is past max_restarts: dead for good, with the cause
    with pytest.raises(af.ActorDiedError) as info:
        await within(f.crash.remote())
    assert "max_restarts=1" in str(info.value)
    assert info.value.cause is not None and "exited with code 3" in str(info.value.cause)
    with pytest.raises(af.ActorDiedError, match="max_restarts=1"):
        await within(f.incr.remote())


async def test_max_task_retries_sends_the_call_to_the_new_incarnation(
    killer: list[af.ActorHandle], tmp_path: Path,
) -> None:
    f = Fragile.options(max_restarts=1, max_task_retries=1).remote()
    killer.append(f)
    pid1 = await within(f.pid.remote())
    marker = tmp_path / "crashed"
    pid2 = await within(f.crash_once.remote(str(marker)))
    assert marker.exists() and pid2 != pid1


async def test_calls_made_while_the_actor_restarts_wait_for_it(
    killer: list[af.ActorHandle],
) -> None:
    f = Fragile.options(max_restarts=1).remote()
    killer.append(f)
    assert await within(f.incr.remote()) == 1
    pid1 = await within(f.pid.remote())
    await af.kill(f, no_restart=False)          # its process dies; max_restarts allows one
    # no call was running when it died: these calls are made while it restarts and must reach
    # the new incarnation (API.md §4), not fail with ActorUnavailableError
    assert await within(f.incr.remote()) == 1
    assert await within(f.pid.remote()) != pid1


async def test_actor_whose_constructor_raises_is_dead_with_the_cause(
    killer: list[af.ActorHandle],
) -> None:
    @af.remote
    class Broken:
        def __init__(self) -> None:
            raise ValueError("cannot build")

        def f(self) -> int:
            return 1

    b = Broken.remote()
    with pytest.raises(af.ActorDiedError, match="cannot build") as info:
        await within(b.f.remote())
    assert isinstance(info.value.cause, ValueError)


# -- handles --------------------------------------------------------------------------------------


@af.remote
async def bump_from_task(handle: af.ActorHandle, k: int) -> int:
    return await handle.incr.remote(k)


@af.remote
class Forwarder:
    async def forward(self, handles: list[af.ActorHandle]) -> int:
        return await handles[0].incr.remote(100)


async def test_handles_pickle_and_work_from_tasks_and_actors(
    killer: list[af.ActorHandle],
) -> None:
    c = Counter.options(num_cpus=0).remote(0)   # holds no CPU: the tasks below need them
    fwd = Forwarder.remote()
    killer.extend([c, fwd])
    copy = pickle.loads(pickle.dumps(c))
    assert copy == c and hash(copy) == hash(c)
    assert await within(copy.incr.remote(1)) == 1
    assert await within(bump_from_task.remote(c, 10)) == 11
    assert await within(fwd.forward.remote([c])) == 111
    assert await within(c.value.remote()) == 111


# -- runtime context ------------------------------------------------------------------------------


@af.remote
class Where:
    def ctx(self) -> tuple:
        c = af.get_runtime_context()
        return c.node_id, c.job_id, c.task_id, c.actor_id, c.worker_pid

    async def ctx_async(self) -> tuple:
        c = af.get_runtime_context()
        return c.actor_id, c.worker_pid


@af.remote
def task_ctx() -> tuple:
    c = af.get_runtime_context()
    return c.node_id, c.task_id, c.actor_id, c.worker_pid


async def test_runtime_context(shared_cluster: af.Runtime, killer: list[af.ActorHandle]) -> None:
    ctx = af.get_runtime_context()
    assert ctx.actor_id is None and ctx.task_id is None
    assert ctx.worker_pid == os.getpid()
    assert ctx.node_id == shared_cluster.node_id and ctx.job_id == shared_cluster.job_id
    w = Where.remote()
    killer.append(w)
    node_id, _job_id, _task_id, actor_id, pid = await within(w.ctx.remote())
    assert node_id == shared_cluster.node_id
    assert actor_id is not None and pid != os.getpid()
    assert await within(w.ctx_async.remote()) == (actor_id, pid)
    other = Where.remote()
    killer.append(other)
    other_actor_id = (await within(other.ctx.remote()))[3]
    assert other_actor_id not in (None, actor_id)
    t_node, t_task, t_actor, t_pid = await within(task_ctx.remote())
    assert t_node == shared_cluster.node_id and t_task is not None and t_actor is None
    assert t_pid != os.getpid()
