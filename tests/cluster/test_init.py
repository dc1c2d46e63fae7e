"""API.md §1, starting and connecting: each test starts (and stops) its own cluster, since
init and shutdown are what it checks."""

from __future__ import annotations

import os
import sys

import cloudpickle
import pytest
from cl_support import run_python, within

import actorflow as af
from actorflow.cluster.memory_guard import memory_usage
from actorflow.transport import TransportConfig, WebSocketTransport

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@af.remote
async def square(x: int) -> int:
    return x * x


@af.remote
def worker_pid() -> int:
    return os.getpid()


@pytest.fixture(autouse=True)
async def no_runtime_left():
    """Each test starts from, and must leave, a process without a runtime."""
    assert not af.is_initialized()
    yield
    if af.is_initialized():
        await af.shutdown()
        pytest.fail("the test left actorflow initialized")


async def test_await_init_then_shutdown() -> None:
    assert af.is_initialized() is False
    rt = await within(af.init())               # the embedded default, as written in API.md
    try:
        assert af.is_initialized() is True
        assert isinstance(rt, af.Runtime)
        assert rt.address is not None and rt.address.startswith("ws://127.0.0.1:")
        assert await within(square.remote(3)) == 9
        assert await within(worker_pid.remote()) != os.getpid()
    finally:
        await within(af.shutdown())
    assert af.is_initialized() is False
    await within(af.shutdown())  # a second shutdown is a no-op
    with pytest.raises(RuntimeError, match=r"af\.init\(\)"):
        square.remote(3)  # no runtime: a clear error, not a hang


async def test_async_with_init_and_the_cluster_views() -> None:
    async with af.init(num_cpus=4, num_gpus=0, resources={"ssd": 1}) as rt:   # shutdown on exit
        assert af.is_initialized()
        nodes = await within(af.nodes())
        assert len(nodes) == 1
        node = nodes[0]
        assert {"node_id", "address", "alive", "resources"} <= set(node)
        assert node["node_id"] == rt.node_id
        assert node["alive"] is True
        assert isinstance(node["address"], str) and node["address"]
        assert node["resources"].get("GPU", 0.0) == 0.0
        # a node declares its memory (bytes) as the `memory` resource (API.md §12)
        memory = float(memory_usage()[1])
        assert {k: v for k, v in node["resources"].items() if v} == {
            "CPU": 4.0, "ssd": 1.0, "memory": memory}
        total = await within(af.cluster_resources())
        assert {k: v for k, v in total.items() if v} == {"CPU": 4.0, "ssd": 1.0, "memory": memory}
        free = await within(af.available_resources())
        assert free.get("CPU") == 4.0 and free.get("ssd") == 1.0  # nothing runs yet
        assert await within(square.options(resources={"ssd": 1}).remote(5)) == 25
    assert not af.is_initialized()


async def test_init_is_idempotent_with_the_same_args_only() -> None:
    rt = await within(af.init(num_cpus=1, log_to_driver=False))
    try:
        again = await within(af.init(num_cpus=1, log_to_driver=False))
        assert again is rt
        with pytest.raises(RuntimeError, match="already initialized"):
            await within(af.init(num_cpus=2, log_to_driver=False))
        assert af.is_initialized()
        assert await within(square.remote(2)) == 4  # the first runtime still serves
    finally:
        await within(af.shutdown())
    # after shutdown, other args are fine
    async with af.init(num_cpus=2, log_to_driver=False):
        assert await within(square.remote(4)) == 16


async def test_init_and_shutdown_again_in_one_process() -> None:
    for n in range(2):
        async with af.init(num_cpus=1, log_to_driver=False):
            assert await within(square.remote(n)) == n * n


async def test_actorflow_token_env_is_the_cluster_token(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "env-token-0123456789abcdef"
    monkeypatch.setenv("ACTORFLOW_TOKEN", token)
    async with af.init(num_cpus=1, log_to_driver=False) as rt:
        assert await within(square.remote(7)) == 49  # workers authenticated with it
        assert rt.address is not None
        transport = WebSocketTransport()
        link = await within(transport.connect(rt.address, TransportConfig(token=token),
                                              hello={}))
        await within(link.aclose())
        with pytest.raises(af.AuthenticationError):
            await within(transport.connect(rt.address, TransportConfig(token="wrong-token"),
                                           hello={}))


async def test_token_argument_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORFLOW_TOKEN", "env-token-aaaaaaaaaaaaaaaa")
    async with af.init(num_cpus=1, log_to_driver=False, token="arg-token-bbbbbbbbbbbbbbbb") as rt:
        assert rt.address is not None
        link = await within(WebSocketTransport().connect(
            rt.address, TransportConfig(token="arg-token-bbbbbbbbbbbbbbbb"), hello={}))
        await within(link.aclose())
        assert await within(square.remote(3)) == 9


def test_af_run_from_a_script() -> None:
    result = run_python("""
        import os
        import actorflow as af

        @af.remote
        def where(x):
            return os.getpid(), x + 1

        async def main(x):
            assert af.is_initialized()
            pid, y = await where.remote(x)
            assert pid != os.getpid()
            return y

        value = af.run(main, 41, num_cpus=1, log_to_driver=False)
        assert not af.is_initialized()
        print("VALUE", value)
    """, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "VALUE 42" in result.stdout


def test_af_run_propagates_the_error_of_main() -> None:
    result = run_python("""
        import actorflow as af

        async def main():
            raise LookupError("main failed")

        try:
            af.run(main, num_cpus=1, log_to_driver=False)
        except LookupError as exc:
            print("CAUGHT", exc, af.is_initialized())
    """, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "CAUGHT main failed False" in result.stdout


@pytest.mark.parametrize("option", [{"num_cpus": 2}, {"resources": {"ssd": 1}},
                                    {"object_store_memory": 1 << 30}])
async def test_options_of_a_new_cluster_are_refused_when_joining_one(option) -> None:
    # (refused before anything is dialed: the address need not exist)
    with pytest.raises(ValueError):
        await af.init(address="ws://127.0.0.1:9", token="t", **option)
    assert not af.is_initialized()
