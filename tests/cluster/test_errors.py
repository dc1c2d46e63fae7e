"""API.md §7, every error type, each raised by a real cluster where the table says it is,
and each surviving a pickle round trip as it was caught."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import sys
import threading
import types
from pathlib import Path

import cloudpickle
import pytest
from cl_support import pid_alive, until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}


def round_trip(exc: BaseException) -> BaseException:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    return back


class AppError(Exception):
    """A user exception type (travels by value with this module)."""


class TwoArgError(Exception):
    """A user exception whose constructor takes two arguments (its args are one message)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@af.remote
def raise_app_error(x: int) -> None:
    def deep_inside() -> None:
        raise AppError(f"bad input {x}")

    deep_inside()


@af.remote
async def raise_key_error() -> None:
    raise KeyError("missing")


@af.remote
def raise_two_arg_error() -> None:
    raise TwoArgError(7, "seven")


async def test_task_error_is_also_the_original_type_with_the_remote_traceback(
    shared_cluster: af.Runtime,
) -> None:
    with pytest.raises(AppError) as info:
        await within(raise_app_error.remote(3))
    err = info.value
    assert isinstance(err, af.TaskError) and isinstance(err, af.ActorflowError)
    message = str(err)
    assert "Traceback (most recent call last)" in message
    assert "deep_inside" in message and "bad input 3" in message
    assert "raise_app_error" in message      # where it ran
    assert isinstance(err.cause, AppError)
    back = round_trip(err)
    assert isinstance(back, AppError) and isinstance(back, af.TaskError)

    with pytest.raises(KeyError) as kinfo:
        await within(raise_key_error.remote())
    assert isinstance(kinfo.value, af.TaskError) and "missing" in str(kinfo.value)
    round_trip(kinfo.value)


async def test_task_error_of_an_exception_with_its_own_constructor(
    shared_cluster: af.Runtime,
) -> None:
    # the remote code raised; that is a TaskError (with the original type where it can be
    # rebuilt), not a worker crash, and it is not retried as one
    with pytest.raises(af.TaskError) as info:
        await within(raise_two_arg_error.remote())
    assert not isinstance(info.value, af.WorkerCrashedError)
    assert "TwoArgError" in str(info.value) and "7: seven" in str(info.value)
    round_trip(info.value)


@af.remote
class Victim:
    def pid(self) -> int:
        return os.getpid()

    async def die(self) -> None:
        os._exit(9)


async def test_actor_died_error_after_kill(shared_cluster: af.Runtime) -> None:
    v = Victim.remote()
    await within(v.pid.remote())
    await af.kill(v)
    with pytest.raises(af.ActorDiedError) as info:
        await within(v.pid.remote())
    assert info.value.actor == "Victim" and "killed" in str(info.value)
    assert "max_restarts" in str(info.value)  # says what to do next
    back = round_trip(info.value)
    assert back.actor == "Victim"  # type: ignore[attr-defined]


async def test_actor_unavailable_error_while_restarting(shared_cluster: af.Runtime) -> None:
    v = Victim.options(max_restarts=1).remote()
    try:
        await within(v.pid.remote())
        with pytest.raises(af.ActorUnavailableError) as info:
            await within(v.die.remote())
        assert "Victim" in str(info.value) and "retry" in str(info.value)
        round_trip(info.value)
    finally:
        await af.kill(v)


@af.remote(max_retries=0)
def exit_now() -> None:
    os._exit(2)


async def test_worker_crashed_error(shared_cluster: af.Runtime) -> None:
    with pytest.raises(af.WorkerCrashedError, match="exit_now") as info:
        await within(exit_now.remote())
    assert "max_retries" in str(info.value)
    round_trip(info.value)


@af.remote
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


async def test_get_timeout_error(shared_cluster: af.Runtime) -> None:
    ref = nap.remote(5)
    with pytest.raises(af.GetTimeoutError) as info:
        await af.get(ref, timeout=0.01)
    assert isinstance(info.value, TimeoutError)
    round_trip(info.value)
    await af.cancel(ref)


async def test_task_cancelled_error(shared_cluster: af.Runtime) -> None:
    ref = nap.remote(30)
    await af.cancel(ref)
    with pytest.raises(af.TaskCancelledError) as info:
        await within(ref)
    round_trip(info.value)


@af.remote
def put_in_worker(value) -> tuple[list[af.ObjectRef], int]:
    return [af.put(value)], os.getpid()        # the worker owns the object


async def test_object_lost_error_when_the_owner_process_is_gone(
    shared_cluster: af.Runtime,
) -> None:
    (ref,), owner_pid = await within(put_in_worker.remote("owned by a worker"))
    assert await within(ref) == "owned by a worker"
    os.kill(owner_pid, signal.SIGKILL)
    await until(lambda: not pid_alive(owner_pid), what="the owner to die")
    # a fresh copy of the ref (the value is not cached in this process)
    lost = pickle.loads(pickle.dumps(ref))
    with pytest.raises(af.OwnerDiedError) as info:  # an ObjectLostError, with its facts
        await within(lost)
    assert isinstance(info.value, af.ObjectLostError)
    assert info.value.object_id == ref.id
    round_trip(info.value)


@af.remote(num_cpus=64)
def needs_64_cpus() -> int:
    return 1


@af.remote(num_cpus=64)
class Needs64:
    def f(self) -> int:
        return 1


async def test_infeasible_error_fails_fast_naming_the_demand_and_the_largest_node(
    shared_cluster: af.Runtime,
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(af.InfeasibleError) as info:
        await within(needs_64_cpus.remote(), timeout=5)
    assert loop.time() - start < 2.0
    assert info.value.demand == {"CPU": 64.0}
    message = str(info.value)  # (it names the largest node, and every node has its memory)
    assert "the largest node has {'CPU': 2.0, 'memory':" in message
    round_trip(info.value)
    # an actor that no node can ever place fails fast too, with InfeasibleError as its cause
    h = Needs64.remote()
    with pytest.raises(af.ActorDiedError) as ainfo:
        await within(h.f.remote(), timeout=5)
    assert isinstance(ainfo.value.cause, af.InfeasibleError)
    assert "64" in str(ainfo.value)


async def test_infeasible_custom_resource(shared_cluster: af.Runtime) -> None:
    with pytest.raises(af.InfeasibleError, match=r"'tpu': 1\.0"):
        await within(nap.options(resources={"tpu": 1}).remote(0), timeout=5)


async def test_serialization_error_for_an_unpicklable_argument_at_remote(
    shared_cluster: af.Runtime,
) -> None:
    lock = threading.Lock()
    with pytest.raises(af.SerializationError) as info:
        nap.remote(lambda: lock)               # a lock inside a lambda's closure
    assert isinstance(info.value, TypeError)
    assert "lock" in str(info.value) and "nap" in str(info.value)
    round_trip(info.value)
    with socket.socket() as sock:
        with pytest.raises(af.SerializationError, match="socket"):
            nap.remote(sock)
        with pytest.raises(af.SerializationError, match="socket"):
            af.put(sock)
        victim = Victim.remote()
        try:
            with pytest.raises(af.SerializationError, match="socket"):
                victim.pid.remote(sock)
            with pytest.raises(af.SerializationError, match="socket"):
                Victim.remote(sock)               # constructor arguments too
        finally:
            await af.kill(victim)


@af.remote
def returns_a_lock() -> threading.Lock:
    return threading.Lock()


async def test_serialization_error_for_an_unpicklable_result(shared_cluster: af.Runtime) -> None:
    with pytest.raises(af.SerializationError, match="lock") as info:
        await within(returns_a_lock.remote())
    assert "returns_a_lock" in str(info.value)


# a module that exists in this process only: a function using it cannot be loaded by workers
_local_only = types.ModuleType("af_test_local_only_module")
exec("def helper():\n    return 1\n", _local_only.__dict__)
sys.modules[_local_only.__name__] = _local_only
helper = _local_only.helper


@af.remote
def uses_local_only_module(marker: str) -> int:
    Path(marker).touch()
    return helper()


async def test_a_function_workers_cannot_load_is_reported_not_taken_for_a_crash(
    shared_cluster: af.Runtime, tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(af.ActorflowError) as info:
        await within(uses_local_only_module.remote(str(marker)))
    assert not isinstance(info.value, af.WorkerCrashedError), str(info.value)
    assert "af_test_local_only_module" in str(info.value)
    assert not marker.exists()


async def test_every_error_type_round_trips_with_its_facts() -> None:
    cause = ValueError("root cause")
    errors: list[BaseException] = [
        af.ActorflowError("base"),
        af.TaskError(cause, "Traceback (most recent call last):\n  ...\nValueError: root cause",
                     "task f (pid=1)").as_instanceof_cause(),
        af.ActorDiedError("Counter", "it was killed", cause),
        af.ActorUnavailableError("Counter", "its process died"),
        af.WorkerCrashedError("worker died"),
        af.NodeDiedError("node died"),
        af.ObjectLostError("object lost"),
        af.GetTimeoutError("timed out"),
        af.TaskCancelledError("cancelled"),
        af.InfeasibleError("needs {'CPU': 64.0}"),
        af.SerializationError("cannot pickle"),
        af.AuthenticationError("wrong token"),
        af.SupervisionError("gave up"),
    ]
    for err in errors:
        assert isinstance(err, af.ActorflowError)
        back = round_trip(err)
        assert back.args == err.args or str(back) == str(err)
    task_error = round_trip(errors[1])
    assert isinstance(task_error, ValueError) and isinstance(task_error, af.TaskError)
    assert "root cause" in str(task_error) and "task f (pid=1)" in str(task_error)
    died = round_trip(errors[2])
    assert isinstance(died, af.ActorDiedError)
    assert isinstance(died.cause, ValueError) and str(died.cause) == "root cause"
    assert died.reason == "it was killed"
