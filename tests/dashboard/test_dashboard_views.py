"""The dashboard's data routes on an embedded cluster: pages, filters and searches made on the
server, answers shared and refreshed behind a stale one, the events stream, and a shutdown
that does not wait for an open stream."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import cloudpickle
import pytest_asyncio

import actorflow as af
from actorflow.dashboard.data import TTL_S

cloudpickle.register_pickle_by_value(sys.modules[__name__])

TOKEN = "views-token-" + "5" * 20
WAIT = 30.0


@af.remote(num_cpus=0)
class Named:
    def ping(self) -> int:
        return 1


@af.remote
def one(i: int) -> int:
    return i


@pytest_asyncio.fixture
async def dash() -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    rt = await af.init(num_cpus=1, dashboard=True, token=TOKEN, log_to_driver=False)
    try:
        assert rt.dashboard_url is not None
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=WAIT)) as http:
            yield rt.dashboard_url, http
    finally:
        await af.shutdown()


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        assert r.status == 200, (url, r.status, await r.text())
        return await r.json()


async def finished(http: aiohttp.ClientSession, url: str) -> int:
    return int((await get(http, url + "/api/tasks"))["states"].get("FINISHED", 0))


async def test_actors_are_paged_filtered_and_searched_on_the_server(
        dash: tuple[str, aiohttp.ClientSession]) -> None:
    url, http = dash
    actors = [Named.options(name=f"svc-{i:02d}").remote() for i in range(12)]
    assert await af.get([a.ping.remote() for a in actors]) == [1] * 12
    await af.kill(actors[0])
    deadline = time.monotonic() + WAIT
    while True:  # shared answers are at most a refresh behind
        page = await get(http, url + "/api/actors?state=ALIVE&size=5&page=1")
        if page["total"] == 11:
            break
        assert time.monotonic() < deadline, page
        await asyncio.sleep(0.2)
    assert page["pages"] == 3 and page["page"] == 1 and len(page["rows"]) == 5
    assert all(r["state"] == "ALIVE" for r in page["rows"])
    found = await get(http, url + "/api/actors?q=SVC-07")  # case-insensitive
    assert [r["name"] for r in found["rows"]] == ["svc-07"]
    one_actor = await get(http, url + f"/api/actors/{found['rows'][0]['actor_id']}")
    assert one_actor["name"] == "svc-07" and one_actor["class_name"] == "Named"
    async with http.get(url + "/api/actors/nope") as r:
        assert r.status == 404
    async with http.get(url + "/api/actors?page=x") as r:
        assert r.status == 400
    last = await get(http, url + "/api/actors?state=ALIVE&size=5&page=99")
    assert last["page"] == 2 and len(last["rows"]) == 1  # clamped to the last page


async def test_placement_groups_view(dash: tuple[str, aiohttp.ClientSession]) -> None:
    url, http = dash
    pg = af.placement_group([{"CPU": 0.5}, {"CPU": 0.25}], strategy="PACK", name="pg-view")
    await asyncio.wait_for(pg.ready(), WAIT)
    deadline = time.monotonic() + WAIT
    while True:
        rows = (await get(http, url + "/api/placement_groups"))["rows"]
        if rows:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    (row,) = rows
    assert row["name"] == "pg-view" and row["strategy"] == "PACK"
    assert row["state"] == "CREATED" and row["bundles"] == [{"CPU": 0.5}, {"CPU": 0.25}]
    await af.remove_placement_group(pg)


async def test_objects_view_shows_each_store_and_the_largest(
        dash: tuple[str, aiohttp.ClientSession]) -> None:
    url, http = dash
    big = await af.put(b"y" * (6 << 20))
    deadline = time.monotonic() + WAIT
    while True:
        data = await get(http, url + "/api/objects?size=1")
        rows = data["largest"]["rows"]
        if rows and rows[0]["bytes"] >= 6 << 20:
            break
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.2)
    (node,) = data["per_node"]
    assert node["objects"] >= 1 and node["bytes"] >= 6 << 20
    assert isinstance(node["object_store_used"], int) and node["object_store_limit"] > 0
    assert data["largest"]["size"] == 1 and data["largest"]["total"] == node["objects"]
    del big


async def test_a_stale_answer_is_served_while_a_fresh_one_is_made(
        dash: tuple[str, aiohttp.ClientSession]) -> None:
    url, http = dash
    assert await af.get([one.remote(i) for i in range(3)]) == [0, 1, 2]
    deadline = time.monotonic() + WAIT
    while (before := await finished(http, url)) < 3:
        assert time.monotonic() < deadline, before
        await asyncio.sleep(0.2)
    assert await af.get([one.remote(i) for i in range(10)]) == list(range(10))
    await asyncio.sleep(0.5)  # the workers' events reach the head (batched every 0.25 s)
    await asyncio.sleep(TTL_S)  # the answer above is stale now
    assert await finished(http, url) == before  # given at once, a refresh behind it
    while (after := await finished(http, url)) < before + 10:  # the refresh lands
        assert time.monotonic() < deadline, after
        await asyncio.sleep(0.1)


async def test_events_stream_summaries_and_shutdown_does_not_wait_for_it() -> None:
    rt = await af.init(num_cpus=1, dashboard=True, token=TOKEN, log_to_driver=False)
    try:
        assert rt.dashboard_url is not None
        headers = {"Authorization": f"Bearer {TOKEN}"}
        timeout = aiohttp.ClientTimeout(total=WAIT)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http, \
                http.get(rt.dashboard_url + "/api/events") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events = []
            while len(events) < 2:
                line = (await asyncio.wait_for(r.content.readline(), WAIT)).decode()
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
            assert events[-1]["nodes"] == {"alive": 1, "dead": 0}
            t0 = time.monotonic()
            await asyncio.wait_for(af.shutdown(), WAIT)  # the stream still open
            assert time.monotonic() - t0 < 10
            rest = await asyncio.wait_for(r.content.read(), WAIT)  # and it ends
            assert all(not line or line.startswith((b"event: ", b"data: "))
                       for line in rest.split(b"\n")), rest
    finally:
        await af.shutdown()
