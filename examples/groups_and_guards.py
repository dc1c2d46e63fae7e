"""Placement groups that capture their children, a death watch, and the memory guard.

Run: actorflow run examples/groups_and_guards.py   (or: python examples/groups_and_guards.py)

The memory guard part sets the guard's threshold a little above what this machine uses now,
so that a task that allocates without end is stopped after a few hundred MiB (the task also
caps its own address space, so it can never take the machine down).
"""

from __future__ import annotations

import os
import resource
import time

import actorflow as af
from actorflow.cluster.memory_guard import INTERVAL_ENV, THRESHOLD_ENV, memory_usage


@af.remote(num_cpus=0.5)
def where() -> str:
    return af.get_runtime_context().node_id


@af.remote(num_cpus=0.5)
class Planner:
    async def spawn_work(self) -> list[str]:
        # no strategy of their own: they run in the group that holds this actor
        return [await where.remote() for _ in range(3)]


@af.remote
class Mortal:
    def ping(self) -> str:
        return "pong"


@af.remote(max_retries=0)
def hoard() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), hard))  # a safety net
    kept = []
    while True:
        kept.append(b"x" * (32 << 20))
        time.sleep(0.02)


async def main() -> None:
    # a group of two bundles, found again by name; an actor in it captures its children
    pg = af.placement_group([{"CPU": 1}, {"CPU": 1}], name="plan")
    await pg.ready()
    same = await af.get_placement_group("plan")
    print("found by name:", same.id == pg.id)
    strategy = af.PlacementGroupStrategy(pg, 0, capture_child_tasks=True)
    planner = Planner.options(scheduling_strategy=strategy).remote()
    print("children placed:", len(await planner.spawn_work.remote()))
    table = await af.placement_group_table(pg)
    print("group state:", table["state"])
    await af.kill(planner)
    await af.remove_placement_group(pg)

    # a death watch returns when the actor is dead for good, with the cause
    mortal = Mortal.remote()
    print(await mortal.ping.remote())
    await af.kill(mortal)
    cause = await af.watch(mortal)
    print("watched:", type(cause).__name__)

    # the memory guard stops a runaway task; its caller gets OutOfMemoryError
    try:
        await hoard.remote()
    except af.OutOfMemoryError as exc:
        print(f"guard stopped {exc.task!r} at {exc.used / exc.total:.0%} of memory")


if __name__ == "__main__":
    used, total = memory_usage()
    os.environ[THRESHOLD_ENV] = str((used + (400 << 20)) / total)  # read by the node at start
    os.environ[INTERVAL_ENV] = "100"
    af.run(main, num_cpus=2)
