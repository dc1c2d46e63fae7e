"""User metrics (af.metrics): recorded in the driver, in tasks and in actors of several worker
processes, aggregated at the head, read back through the exposition with prometheus_client's
parser."""

from __future__ import annotations

import math
import os
import sys

import cloudpickle
import pytest
from mt_support import samples, value
from wait_support import until

import actorflow as af

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(120)

REQUESTS = af.metrics.Counter("mt_requests", description="requests served",
                              tag_keys=("route", "replica"))
DEPTH = af.metrics.Gauge("mt_queue_depth", description="items queued", tag_keys=("queue",))
LATENCY = af.metrics.Histogram("mt_latency_s", description="time taken",
                               boundaries=[0.1, 1.0], tag_keys=("op",))


@af.remote
class Replica:
    def __init__(self, name: str) -> None:
        self.name = name
        REQUESTS.set_default_tags({"replica": "any"})

    def serve(self, route: str, n: int) -> int:
        for _ in range(n):
            REQUESTS.inc(2, tags={"route": route})
        return os.getpid()

    def depth(self, v: float) -> None:
        DEPTH.set(v, tags={"queue": "q1"})


@af.remote
def observe(v: float) -> int:
    LATENCY.observe(v, tags={"op": "read"})
    return os.getpid()


async def _scrape() -> dict:
    return samples(await af.metrics.exposition())


async def test_counter_tags_sum_across_processes(af_cluster: af.Runtime) -> None:
    a, b = Replica.remote("a"), Replica.remote("b")
    pids = await af.get([a.serve.remote("/a", 3), b.serve.remote("/a", 3),
                         a.serve.remote("/b", 1)], timeout=30)
    assert len({pids[0], pids[1]}) == 2 and os.getpid() not in pids  # two worker processes
    REQUESTS.inc(tags={"route": "/a", "replica": "driver"})  # the driver records too

    async def summed():
        found = await _scrape()
        got_a = value(found, "mt_requests_total", {"route": "/a", "replica": "any"})
        got_b = value(found, "mt_requests_total", {"route": "/b", "replica": "any"})
        got_d = value(found, "mt_requests_total", {"route": "/a", "replica": "driver"})
        return found if (got_a, got_b, got_d) == (12.0, 2.0, 1.0) else None

    found = await until(summed, what="the counter summed over both actors' processes")
    assert len(found["mt_requests_total"]) == 3  # one series per tag set, nothing else
    (sample,) = [s for s in found["mt_requests_total"] if s.labels["route"] == "/b"]
    assert sample.labels == {"route": "/b", "replica": "any"}


async def test_gauge_keeps_the_newest_value(af_cluster: af.Runtime) -> None:
    a, b = Replica.remote("a"), Replica.remote("b")
    await af.get(a.depth.remote(5.0), timeout=30)
    await af.get(b.depth.remote(7.0), timeout=30)  # set later, in another process

    async def newest():
        got = value(await _scrape(), "mt_queue_depth", {"queue": "q1"})
        return got if got == 7.0 else None

    assert await until(newest, what="the newest gauge value") == 7.0
    DEPTH.set(3.0, tags={"queue": "q1"})
    await af.metrics.flush()  # sent and taken: the next scrape sees it
    assert value(await _scrape(), "mt_queue_depth", {"queue": "q1"}) == 3.0


async def test_histogram_buckets_merge(af_cluster: af.Runtime) -> None:
    values = [0.05, 0.5, 5.0, 0.07]
    pids = await af.get([observe.remote(v) for v in values], timeout=30)
    assert os.getpid() not in pids
    LATENCY.observe(0.2, tags={"op": "read"})
    await af.metrics.flush()

    async def counted():
        found = await _scrape()
        return found if value(found, "mt_latency_s_count", {"op": "read"}) == 5.0 else None

    found = await until(counted, what="five observations")
    buckets = {s.labels["le"]: s.value for s in found["mt_latency_s_bucket"]}
    assert buckets == {"0.1": 2.0, "1.0": 4.0, "+Inf": 5.0}
    assert math.isclose(value(found, "mt_latency_s_sum", {"op": "read"}), sum(values) + 0.2)


def test_definitions_and_records_are_checked() -> None:
    with pytest.raises(ValueError):
        af.metrics.Counter("bad name")
    with pytest.raises(ValueError):
        af.metrics.Counter("actorflow_mine")  # the system metrics' prefix
    with pytest.raises(ValueError):
        af.metrics.Gauge("g", tag_keys=("a", "a"))
    with pytest.raises(ValueError):
        af.metrics.Histogram("h", boundaries=[1.0, 0.5])
    with pytest.raises(ValueError):
        REQUESTS.inc(-1, tags={"route": "/a", "replica": "x"})
    with pytest.raises(ValueError):
        REQUESTS.inc(1, tags={"route": "/a"})  # replica missing (no default here)
    with pytest.raises(ValueError):
        REQUESTS.inc(1, tags={"route": "/a", "replica": "x", "zone": "z"})
    with pytest.raises(ValueError):
        REQUESTS.set_default_tags({"zone": "z"})
    with pytest.raises(ValueError):  # the name is taken, in this process, by another kind
        af.metrics.Gauge("mt_requests", tag_keys=("route", "replica"))
    same = af.metrics.Counter("mt_requests", description="requests served",
                              tag_keys=("route", "replica"))  # the same again: fine
    assert same.info["name"] == "mt_requests"
    assert LATENCY.boundaries == (0.1, 1.0)
    assert REQUESTS.info["tag_keys"] == ("route", "replica")
