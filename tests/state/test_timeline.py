"""The timeline of a small program, written by ``af.timeline`` and read back as JSON: one row
per worker, one slice per task and actor call, nesting, errors in args; on and off."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from wait_support import until

import actorflow as af

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@af.remote
async def child(x: int) -> int:
    await asyncio.sleep(0.05)
    return x + 1


@af.remote
async def parent(x: int) -> int:
    await asyncio.sleep(0.02)
    got = await child.remote(x)
    await asyncio.sleep(0.02)
    return got


@af.remote(max_retries=0)
def broken() -> None:
    raise RuntimeError("no luck")


@af.remote
class Station:
    async def relay(self, x: int) -> int:
        return await child.remote(x)

    def plain(self, x: int) -> int:
        return x * 2


async def _program() -> None:
    assert await parent.remote(1) == 2
    station = Station.remote()
    assert await station.relay.remote(5) == 6
    assert await af.get([station.plain.remote(i) for i in range(3)]) == [0, 2, 4]
    with pytest.raises(RuntimeError):
        await broken.remote()

    async def recorded() -> bool | None:
        totals = (await af.state.summary_tasks())["totals"]
        ended = totals.get("FINISHED", 0) + totals.get("FAILED", 0)
        # parent, 2 child, relay, 3 plain, broken, the creation
        return True if ended >= 9 else None

    await until(recorded, what="the program's calls to be recorded")


def _slices(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def _within(inner: dict[str, Any], outer: dict[str, Any]) -> bool:
    return (outer["ts"] <= inner["ts"]
            and inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"])


async def test_a_small_programs_timeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setenv("ACTORFLOW_TIMELINE", "1")
    path = tmp_path / "trace.json"
    async with af.init(num_cpus=2, log_to_driver=False) as rt:
        await _program()
        returned = await af.timeline(path)
        rows = await af.state.list_tasks(limit=1000)
    trace = json.loads(path.read_text())
    assert trace == returned
    assert trace["otherData"]["complete"] is True

    slices = _slices(trace)
    names = sorted(e["name"] for e in slices)
    assert names == sorted(["parent", "child", "child", "Station.__init__", "Station.relay",
                            "Station.plain", "Station.plain", "Station.plain", "broken"])
    by_name: dict[str, list[dict[str, Any]]] = {}
    for e in slices:
        by_name.setdefault(e["name"], []).append(e)
        assert e["dur"] >= 0 and e["args"]["task_id"]
        assert e["cat"] == e["args"]["kind"]

    # rows: one process per node, one thread per worker process, each named
    meta = [e for e in trace["traceEvents"] if e["ph"] == "M"]
    processes = {e["pid"]: e["args"]["name"] for e in meta if e["name"] == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in meta
               if e["name"] == "thread_name"}
    assert processes == {1: f"node {rt.node_id}"}
    assert {(e["pid"], e["tid"]) for e in slices} == set(threads)
    assert {tid for _, tid in threads} == {r["pid"] for r in rows}
    for (_, tid), name in threads.items():
        assert name == f"worker {tid}"
    # the actor's creation and calls share its worker's row
    actor_rows = {e["tid"] for e in slices if e["name"].startswith("Station.")}
    assert len(actor_rows) == 1
    assert actor_rows.isdisjoint({e["tid"] for e in by_name["parent"]})

    # nesting: a task called (and awaited) from a task or an actor call lies in its span
    (outer,) = by_name["parent"]
    (relay,) = by_name["Station.relay"]
    nested = [c for c in by_name["child"] if _within(c, outer)]
    in_relay = [c for c in by_name["child"] if _within(c, relay)]
    assert len(nested) == 1 and len(in_relay) == 1 and nested != in_relay
    assert outer["args"]["job_id"] == rt.job_id
    # a call made from a task or an actor call belongs to the job that sent that one
    assert {c["args"]["job_id"] for c in by_name["child"]} == {rt.job_id}

    (failed,) = by_name["broken"]
    assert failed["args"]["state"] == "FAILED"
    assert failed["args"]["error_type"] == "RuntimeError"
    assert failed["args"]["error_message"] == "no luck"
    assert "error_type" not in outer["args"] and outer["args"]["state"] == "FINISHED"
    assert relay["args"]["actor_id"] == by_name["Station.__init__"][0]["args"]["actor_id"]


async def test_with_the_timeline_off_the_trace_shows_the_latest_calls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACTORFLOW_TIMELINE", raising=False)
    monkeypatch.setenv("ACTORFLOW_TASK_EVENTS_MAX", "4")
    async with af.init(num_cpus=2, log_to_driver=False):
        await _program()
        trace = await af.timeline(tmp_path / "t.json")
    assert trace["otherData"]["complete"] is False
    assert trace["otherData"]["timeline"] is False
    assert len(_slices(trace)) == 4  # what the ring keeps
