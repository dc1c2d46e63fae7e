"""Group ``dashboard``: how fast the dashboard answers once a cluster has a long history.

One embedded cluster (``af.init(dashboard=True)``, 2 CPUs) is loaded, untimed, with real work:
``TASKS`` finished tasks (100,000; quick 10,000) of a trivial function, 1 in 1,000 of them
raising (so the failures view has rows), and ``ACTORS`` actors (1,000; quick 100) with
``num_cpus=0`` and a name each, every one answering a call. When the machine has not the
memory for that many live actor processes (``memory_fits``, ~9.5 MiB each), actors are made,
called and killed in waves so that at most that many live at once: the head records the dead
ones too (``actors_alive`` and ``actors_dead`` say how many of each the views held).

Timed: each route of the dashboard that the page uses (the page, its script, and every data
route: summary, cluster, actors, an actor search, one actor, tasks, objects, placement groups,
jobs, ``/metrics``), one request at a time with the bearer token over a real socket, from a
client in this process, each after the server's shared answers have turned stale (older than
``TTL_S``: each request is answered from the last answer while a fresh one is made behind it,
as a page refreshing every second is). ``value`` = the slowest route's median time in ms
(``ms_<route>``: each route's median, ``max_ms_<route>``: its slowest); target: every route
under 200 ms (``target_met``). Beside them, what the state layer takes to answer the queries
the views are made from, asked directly (``query_ms_<query>``: the median of 5).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import aiohttp
import cloudpickle

import actorflow as af
from actorflow.dashboard.data import TTL_S
from benchmarks._common import log, loop_kind, memory_fits, meta, run_on, sig, summarize

WORKLOADS = ("dashboard",)
TASKS, QUICK_TASKS = 100_000, 10_000
ACTORS, QUICK_ACTORS = 1_000, 100
TARGET_MS = 200.0
TOKEN = "benchmark-dashboard-token"
#: the routes timed (name, path); "{actor}" is filled with a live actor's id
ROUTES: tuple[tuple[str, str], ...] = (
    ("page", "/"),
    ("script", "/static/app.js"),
    ("summary", "/api/summary"),
    ("cluster", "/api/cluster"),
    ("actors", "/api/actors?page=3&size=50"),
    ("actors_search", "/api/actors?q=worker-9&state=ALIVE"),
    ("actor", "/api/actors/{actor}"),
    ("tasks", "/api/tasks"),
    ("objects", "/api/objects"),
    ("placement_groups", "/api/placement_groups"),
    ("jobs", "/api/jobs"),
    ("metrics", "/metrics"),
)
_BATCH = 10_000
_WAVE = 100


@af.remote
def step(i):  # type: ignore[no-untyped-def]
    if i % 1000 == 999:
        raise ValueError(f"task {i} fails on purpose")
    return i


@af.remote(num_cpus=0)
class Member:
    def ping(self, i):  # type: ignore[no-untyped-def]
        return i


async def _load_tasks(n: int) -> None:
    t0 = time.perf_counter()
    for start in range(0, n, _BATCH):
        refs = [step.remote(i) for i in range(start, min(n, start + _BATCH))]
        await asyncio.gather(*refs, return_exceptions=True)
    log(f"[dashboard] {n} tasks done in {time.perf_counter() - t0:.1f} s")


async def _load_actors(n: int) -> tuple[list[Any], int]:
    """``n`` actors made and called; those over what memory allows are killed after."""
    why = memory_fits(n, 9.5)
    keep = n if why is None else max(_WAVE, n // 4)
    if why is not None:
        log(f"[dashboard] {why}: {n - keep} of the {n} actors are killed after their call")
    t0 = time.perf_counter()
    alive: list[Any] = []
    made = 0
    while made < n:
        wave = [Member.options(name=f"worker-{made + i}").remote()
                for i in range(min(_WAVE, n - made))]
        assert await af.get([a.ping.remote(i) for i, a in enumerate(wave)]) == list(
            range(len(wave)))
        made += len(wave)
        if made > keep:
            for actor in wave:
                await af.kill(actor)
        else:
            alive += wave
    log(f"[dashboard] {n} actors made in {time.perf_counter() - t0:.1f} s "
        f"({len(alive)} kept alive)")
    return alive, n - len(alive)


async def _time_routes(url: str, reps: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name, _ in ROUTES}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
        async with http.get(url + "/api/actors?state=ALIVE&size=1") as r:
            actor_id = (await r.json())["rows"][0]["actor_id"]
        for _ in range(reps):
            for name, path in ROUTES:
                await asyncio.sleep(TTL_S + 0.05)  # the shared answers have expired
                t0 = time.perf_counter()
                async with http.get(url + path.format(actor=actor_id)) as r:
                    body = await r.read()
                dt = (time.perf_counter() - t0) * 1000
                assert r.status == 200, (name, r.status, body[:300])
                assert b"unavailable" not in body[:200], (name, body[:300])
                times[name].append(dt)
    return times


async def _time_queries(head: Any) -> dict[str, float]:
    from actorflow.state import StateClient

    state = StateClient(head)
    queries = {
        "nodes": state.list_nodes,
        "node_details": state.node_details,
        "actors": lambda: state.list_actors(limit=10_000),
        "summary_tasks": state.summary_tasks,
        "failed_tasks": lambda: state.list_tasks(filters=[("state", "=", "FAILED")], limit=50),
        "objects": lambda: state.list_objects(limit=10_000),
    }
    out = {}
    for name, query in queries.items():
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            await query()
            times.append((time.perf_counter() - t0) * 1000)
        out[f"query_ms_{name}"] = sig(statistics.median(times), 4)
        log(f"[dashboard] state layer {name}: median {statistics.median(times):.1f} ms")
    return out


async def _measure(quick: bool, reps: int) -> dict[str, Any]:
    n_tasks = QUICK_TASKS if quick else TASKS
    n_actors = QUICK_ACTORS if quick else ACTORS
    async with af.init(num_cpus=2, dashboard=True, token=TOKEN, log_to_driver=False) as rt:
        assert rt.dashboard_url is not None
        await _load_tasks(n_tasks)
        alive, dead = await _load_actors(n_actors)
        times = await _time_routes(rt.dashboard_url, reps)
        queries = await _time_queries(rt.core.head)
    medians = {name: statistics.median(v) for name, v in times.items()}
    slowest = max(medians, key=lambda k: medians[k])
    rec: dict[str, Any] = {"value": medians[slowest], "slowest_route": slowest,
                           "tasks": n_tasks, "actors_alive": len(alive), "actors_dead": dead}
    for name, values in times.items():
        rec[f"ms_{name}"] = sig(medians[name], 4)
        rec[f"max_ms_{name}"] = sig(max(values), 4)
    rec.update(queries)
    rec["target_ms"] = TARGET_MS
    rec["target_met"] = max(max(v) for v in times.values()) < TARGET_MS
    for name in medians:
        log(f"[dashboard] {name}: median {medians[name]:.1f} ms, max {max(times[name]):.1f} ms")
    return rec


def run(quick: bool, reps: int, only: set[str] | None = None) -> list[dict[str, Any]]:
    """The ``dashboard`` workload: one summarized record (see the module doc)."""
    if only is not None and "dashboard" not in only:
        return []
    provenance = {**meta(quick), "loop": loop_kind()}
    rec = run_on(loop_kind(), lambda: _measure(quick, max(reps, 3)))
    n = rec["tasks"]
    return [summarize("dashboard", "ms", n, [rec], provenance)]


# Workers must not need this module: pickle its remote function and class by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
