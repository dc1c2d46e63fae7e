"""API.md §4 and §10 on a CLI-started cluster: names live in namespaces. Two drivers of two
namespaces each have their own "svc"; each finds the other's only by naming its namespace;
tasks and actors of a job use its namespace (a lookup, a name they give, the runtime
context); and the actors a job's tasks created end with the job."""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import pytest
from lc_support import Driver, head_cluster
from mn_support import until, within

import actorflow as af

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(240)

ALPHA = """
import asyncio, os
import actorflow as af

@af.remote(num_cpus=0)
class Svc:
    def __init__(self, tag):
        self.t = tag
    def tag(self):
        return self.t

@af.remote(num_cpus=0)
async def lookup():
    svc = await af.get_actor("svc")
    return await svc.tag.remote(), af.get_runtime_context().namespace

@af.remote(num_cpus=0)
async def make():
    made = Svc.options(name="from-task").remote("task")
    return await made.tag.remote()

async def main():
    await af.init(namespace="alpha")
    svc = Svc.options(name="svc").remote("alpha")
    assert await svc.tag.remote() == "alpha"
    tag, ns = await lookup.remote()
    made = await make.remote()
    print("READY", tag, ns, made, flush=True)
    while not os.path.exists("{tmp}/go"):
        await asyncio.sleep(0.05)
    await af.shutdown()
    print("DONE", flush=True)

asyncio.run(main())
"""


@af.remote(num_cpus=0)
class Svc:
    def __init__(self, tag: str) -> None:
        self.t = tag

    def tag(self) -> str:
        return self.t


async def test_namespaces_isolate_names_across_drivers_and_their_tasks(tmp_path: Path) -> None:
    async with head_cluster(tmp_path, num_cpus=2) as cluster:
        alpha = Driver(cluster, tmp_path, "alpha", ALPHA.replace("{tmp}", str(tmp_path)))
        await within(af.init(address=cluster.address, token=cluster.token, namespace="beta",
                             log_to_driver=False))
        try:
            # a task of alpha's job found alpha's svc, and made its actor in "alpha"
            assert (await alpha.expect("READY")).split()[1:] == ["alpha", "alpha", "task"]
            mine = Svc.options(name="svc").remote("beta")  # the same name, another namespace
            assert await within(mine.tag.remote()) == "beta"
            assert await within((await af.get_actor("svc")).tag.remote()) == "beta"
            theirs = await within(af.get_actor("svc", namespace="alpha"))
            assert await within(theirs.tag.remote()) == "alpha"
            from_task = await within(af.get_actor("from-task", namespace="alpha"))
            assert await within(from_task.tag.remote()) == "task"
            with pytest.raises(ValueError):
                await within(af.get_actor("from-task"))
            with pytest.raises(ValueError):
                await within(af.get_actor("svc", namespace=""))
            same = Svc.options(name="svc", namespace="alpha", get_if_exists=True).remote("x")
            assert await within(same.tag.remote()) == "alpha"
            assert af.get_runtime_context().namespace == "beta"

            (tmp_path / "go").touch()
            await alpha.expect("DONE")

            async def alpha_names_gone() -> bool:
                for name in ("svc", "from-task"):
                    try:
                        await af.get_actor(name, namespace="alpha")
                        return False
                    except ValueError:
                        pass
                return True

            # alpha's job ended: its actors, the one its task made too, are gone; beta's is not
            await until(alpha_names_gone, 10.0, "alpha's named actors to end")
            assert await within(mine.tag.remote()) == "beta"
        finally:
            alpha.close()
            await within(af.shutdown())
