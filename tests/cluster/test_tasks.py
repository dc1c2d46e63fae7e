"""API.md §2, remote functions, on one shared cluster with real worker processes.

The cluster declares a GPU and an ``ssd`` resource it does not have (API.md §5 allows that for
tests), so the samples of §2 run exactly as written there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
import pytest
from cl_support import within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
# workers cannot import this test module: its functions and classes travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2, "num_gpus": 1, "resources": {"ssd": 1}}


# -- the samples of API.md §2, as written ---------------------------------------------------------


@af.remote
async def square(x: int) -> int:
    return x * x


@af.remote(num_cpus=2, num_gpus=0.5, resources={"ssd": 1}, max_retries=3,
           retry_exceptions=False, scheduling_strategy="SPREAD")
def crunch(block):           # plain def is allowed; it must not block the worker's loop
    return {"block": block, "gpus": af.get_gpu_ids(), "pid": os.getpid(),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}


@af.remote
def split(data):
    half = len(data) // 2
    return data[:half], data[half:]


async def test_samples_of_section_2(shared_cluster: af.Runtime) -> None:
    ref = square.remote(3)         # returns af.ObjectRef at once: submission never awaits
    assert isinstance(ref, af.ObjectRef)
    assert await within(ref) == 9
    refs = [square.remote(i) for i in range(1000)]
    values = await within(af.get(refs))                # list in the same order
    assert values == [i * i for i in range(1000)]
    assert await within(square.options(num_cpus=0.5, name="sq").remote(4)) == 16
    out = await within(crunch.remote(ref))     # ObjectRef arguments are resolved to values first
    assert out["block"] == 9
    assert out["pid"] != os.getpid()
    assert out["gpus"] == [0] and out["cuda"] == "0"
    data = list(range(10))
    a, b = split.options(num_returns=2).remote(data)
    assert isinstance(a, af.ObjectRef) and isinstance(b, af.ObjectRef)
    assert await within(a) == [0, 1, 2, 3, 4]
    assert await within(b) == [5, 6, 7, 8, 9]


# -- async and sync functions run in worker processes ---------------------------------------------


@af.remote
async def where_async() -> tuple[int, str | None, str | None]:
    ctx = af.get_runtime_context()
    return os.getpid(), ctx.task_id, ctx.actor_id


@af.remote
def where_sync() -> tuple[int, str | None, str | None]:
    ctx = af.get_runtime_context()
    return os.getpid(), ctx.task_id, ctx.actor_id


async def test_async_and_sync_functions_run_in_workers(shared_cluster: af.Runtime) -> None:
    for fn in (where_async, where_sync):
        pid, task_id, actor_id = await within(fn.remote())
        assert pid != os.getpid()
        assert task_id is not None
        assert actor_id is None


@af.remote
def named_context() -> str:
    return af.get_runtime_context().name


async def test_options_name_is_the_task_name(shared_cluster: af.Runtime) -> None:
    assert await within(named_context.options(num_cpus=0.5, name="sq").remote()) == "sq"
    assert await within(named_context.remote()) == "named_context"


async def test_calling_a_remote_function_directly_raises_type_error(
    shared_cluster: af.Runtime,
) -> None:
    with pytest.raises(TypeError, match=r"\.remote\(") as info:
        square(3)
    assert not isinstance(info.value, af.ActorflowError)  # misuse is a TypeError, not an af error
    with pytest.raises(TypeError, match=r"\.remote\("):
        square.options(name="x")(3)


async def test_options_are_validated_with_the_valid_choices(shared_cluster: af.Runtime) -> None:
    with pytest.raises(TypeError, match=r"num_cpu.*Valid options:.*num_cpus"):
        square.options(num_cpu=1)


# -- arguments ------------------------------------------------------------------------------------


@af.remote
async def describe(top, nested):
    inner = nested["refs"][0]
    return {
        "top": top,
        "nested_is_ref": isinstance(inner, af.ObjectRef),
        "nested_value": await inner,
    }


async def test_refs_are_resolved_at_top_level_and_stay_refs_in_containers(
    shared_cluster: af.Runtime,
) -> None:
    top = square.remote(5)
    inner = af.put("inner value")
    out = await within(describe.remote(top, {"refs": [inner]}))
    assert out == {"top": 25, "nested_is_ref": True, "nested_value": "inner value"}
    # keyword arguments too
    out = await within(describe.remote(top=af.put(1), nested={"refs": [square.remote(2)]}))
    assert out == {"top": 1, "nested_is_ref": True, "nested_value": 4}


@af.remote
def fails(x):
    raise ValueError(f"bad {x}")


@af.remote
def never_runs(x, marker: str):
    Path(marker).touch()
    return x


async def test_failed_argument_fails_the_dependent_task_without_running_it(
    shared_cluster: af.Runtime, tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ValueError, match="bad 1"):
        await within(never_runs.remote(fails.remote(1), str(marker)))
    assert not marker.exists()


# -- nested tasks and actors ----------------------------------------------------------------------


@af.remote
class Box:
    def __init__(self, v):
        self.v = v

    def get(self):
        return self.v, os.getpid()


@af.remote
async def fan_out(n: int) -> dict:
    values = await af.get([square.remote(i) for i in range(n)])
    box = Box.remote(sum(values))
    boxed, box_pid = await box.get.remote()
    await af.kill(box)
    return {"values": values, "boxed": boxed, "box_pid": box_pid, "me": os.getpid()}


@af.remote
def fan_out_sync(n: int) -> list[af.ObjectRef]:
    # a plain def runs in a thread of the worker; its .remote() calls go through the worker's
    # loop, which keeps running meanwhile (a blocked loop would deadlock right here)
    return [square.remote(i) for i in range(n)]


async def test_tasks_submit_tasks_and_create_actors(shared_cluster: af.Runtime) -> None:
    out = await within(fan_out.remote(5))
    assert out["values"] == [0, 1, 4, 9, 16]
    assert out["boxed"] == 30
    assert out["box_pid"] not in (out["me"], os.getpid())


async def test_plain_def_tasks_submit_tasks_and_return_their_refs(
    shared_cluster: af.Runtime,
) -> None:
    refs = await within(fan_out_sync.remote(4))
    assert all(isinstance(r, af.ObjectRef) for r in refs)
    assert await within(af.get(refs)) == [0, 1, 4, 9]


@af.remote
async def depth(n: int) -> int:
    if n == 0:
        return 0
    return 1 + await depth.remote(n - 1)


async def test_recursive_nested_tasks(shared_cluster: af.Runtime) -> None:
    # each level waits for the next while holding its CPU: the node must lend the CPU of a
    # blocked task, or three levels on two CPUs would deadlock
    assert await within(depth.remote(3)) == 3


# -- retries --------------------------------------------------------------------------------------


@af.remote
def die_once(marker: str) -> int:
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)                            # the worker process dies mid-task
    return os.getpid()


async def test_max_retries_covers_a_worker_that_died(
    shared_cluster: af.Runtime, tmp_path: Path,
) -> None:
    marker = tmp_path / "died"
    pid = await within(die_once.remote(str(marker)))   # default max_retries=3
    assert marker.exists()  # the first attempt did die
    assert pid != os.getpid()


async def test_worker_death_without_retries_is_worker_crashed_error(
    shared_cluster: af.Runtime, tmp_path: Path,
) -> None:
    with pytest.raises(af.WorkerCrashedError, match="die_once"):
        await within(die_once.options(max_retries=0).remote(str(tmp_path / "died")))
    # the cluster replaced the worker: work goes on
    assert await within(square.remote(6)) == 36


def _attempt(path: str) -> int:
    with open(path, "a") as f:
        f.write("x")
    return os.path.getsize(path)


@af.remote
def flaky(path: str, fail_times: int, exc_name: str) -> int:
    n = _attempt(path)
    if n <= fail_times:
        raise {"ValueError": ValueError, "KeyError": KeyError}[exc_name](f"attempt {n}")
    return n


async def test_user_exceptions_are_not_retried_by_default(
    shared_cluster: af.Runtime, tmp_path: Path,
) -> None:
    path = tmp_path / "attempts"
    with pytest.raises(ValueError, match="attempt 1"):
        await within(flaky.remote(str(path), 1, "ValueError"))
    assert path.read_text() == "x"


async def test_retry_exceptions_true_retries_user_exceptions(
    shared_cluster: af.Runtime, tmp_path: Path,
) -> None:
    path = tmp_path / "attempts"
    assert await within(flaky.options(retry_exceptions=True).remote(str(path), 2, "KeyError")) == 3
    # and max_retries bounds it: 1 + 1 attempts, then the error
    path2 = tmp_path / "attempts2"
    with pytest.raises(KeyError, match="attempt 2"):
        await within(flaky.options(retry_exceptions=True, max_retries=1).remote(
            str(path2), 5, "KeyError"))
    assert path2.read_text() == "xx"


async def test_retry_exceptions_list_retries_only_those_types(
    shared_cluster: af.Runtime, tmp_path: Path,
) -> None:
    only_value = flaky.options(retry_exceptions=[ValueError])
    path = tmp_path / "value"
    assert await within(only_value.remote(str(path), 2, "ValueError")) == 3
    path = tmp_path / "key"
    with pytest.raises(KeyError, match="attempt 1"):
        await within(only_value.remote(str(path), 2, "KeyError"))
    assert path.read_text() == "x"
