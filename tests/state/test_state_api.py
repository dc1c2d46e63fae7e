"""af.state and StateClient on real clusters: lists and summaries with filters and limits,
failures with their errors, running calls, a worker's death, and the store's bounds."""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
import time
from typing import Any

import cloudpickle
import pytest
from wait_support import until

import actorflow as af
from actorflow.cluster.events import EventRecorder
from actorflow.cluster.protocol import Failed
from actorflow.objects.ref import current_core
from actorflow.state import StateClient
from actorflow.state.store import (
    MAX_NAMES,
    OTHER_NAMES,
    EventStore,
    ListTasks,
    SummarizeTasks,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@af.remote
def ok(i: int) -> int:
    return i


@af.remote(max_retries=0)
def bad(i: int) -> int:
    raise ValueError(f"bad input {i}")


@af.remote(max_retries=0)
def die() -> None:
    time.sleep(1.5)  # long enough to be seen running
    os._exit(3)


@af.remote
class Keeper:
    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> int:
        self.n += k
        return self.n

    def fail(self) -> None:
        raise KeyError("missing")


async def _tasks(filters: Any = None, limit: int = 1000) -> list[dict[str, Any]]:
    return await af.state.list_tasks(filters, limit)


async def test_lists_and_summaries_with_filters_and_limits(af_cluster: af.Runtime) -> None:
    assert await af.get([ok.remote(i) for i in range(20)]) == list(range(20))
    for i in range(3):
        with pytest.raises(ValueError):
            await bad.remote(i)
    keeper = Keeper.remote()
    assert await af.get([keeper.add.remote(1) for _ in range(5)]) == [1, 2, 3, 4, 5]
    with pytest.raises(KeyError):
        await keeper.fail.remote()

    async def all_recorded() -> dict[str, Any] | None:
        summary = await af.state.summary_tasks()
        by_name = {e["name"]: e["state_counts"] for e in summary["by_name"]}
        wanted = {"ok": {"FINISHED": 20}, "bad": {"FAILED": 3},
                  "Keeper.add": {"FINISHED": 5}, "Keeper.fail": {"FAILED": 1},
                  "Keeper.__init__": {"FINISHED": 1}}
        return summary if all(by_name.get(k) == v for k, v in wanted.items()) else None

    summary = await until(all_recorded, what="every call to be recorded")
    kinds = {e["name"]: e["kind"] for e in summary["by_name"]}
    assert kinds["ok"] == "task" and kinds["Keeper.add"] == "actor_call"
    assert kinds["Keeper.__init__"] == "actor_creation"
    assert summary["totals"]["FAILED"] == 4

    failed = await _tasks({"state": "FAILED"})
    assert sorted(r["name"] for r in failed) == ["Keeper.fail", "bad", "bad", "bad"]
    for row in failed:
        if row["name"] == "bad":
            assert row["error_type"] == "ValueError"
            assert row["error_message"].startswith("bad input ")
        else:
            assert row["error_type"] == "KeyError"
        assert row["job_id"] == af_cluster.job_id
        assert row["node_id"] == af_cluster.node_id
        assert row["pid"] and row["worker_id"]
        assert row["end_time"] >= row["start_time"]
    detailed = await af.state.list_tasks({"state": "FAILED", "name": "bad"}, detail=True)
    assert len(detailed) == 3 and all("ValueError" in r["traceback"] for r in detailed)

    five = await _tasks([("name", "=", "ok")], limit=5)
    assert len(five) == 5 and {r["name"] for r in five} == {"ok"}
    not_ok = await _tasks([("name", "!=", "ok"), ("state", "=", "FINISHED")])
    assert {r["name"] for r in not_ok} == {"Keeper.add", "Keeper.__init__"}
    calls = await _tasks({"kind": "actor_call"})
    actor_id = calls[0]["actor_id"]
    assert len(calls) == 6 and {r["actor_id"] for r in calls} == {actor_id}
    with pytest.raises(ValueError):
        await _tasks({"colour": "red"})
    with pytest.raises(ValueError):
        await _tasks([("state", "~", "x")])

    actors = await af.state.list_actors({"state": "ALIVE"})
    assert [(a["actor_id"], a["class_name"], a["job_id"]) for a in actors] == [
        (actor_id, "Keeper", af_cluster.job_id)]
    assert await af.state.list_actors({"state": "DEAD"}) == []
    assert (await af.state.summary_actors())["totals"] == {"ALIVE": 1}
    nodes = await af.state.list_nodes([("state", "=", "ALIVE")])
    assert [n["node_id"] for n in nodes] == [af_cluster.node_id]
    assert "ref" not in nodes[0]

    group = af.placement_group([{"CPU": 0.5}], name="spot")
    await group.ready()
    groups = await af.state.list_placement_groups({"state": "CREATED"})
    assert [(g["name"], g["bundles_to_node_id"]) for g in groups] == [
        ("spot", {0: af_cluster.node_id})]
    await af.remove_placement_group(group)
    jobs = await af.state.list_jobs({"job_id": af_cluster.job_id})
    assert [j["status"] for j in jobs] == ["RUNNING"]

    big = await af.put(bytes(1 << 20))  # in shared memory: an object of the node
    objects = await af.state.list_objects({"node_id": af_cluster.node_id})
    assert any(o["bytes"] >= 1 << 20 for o in objects)
    by_node = (await af.state.summary_objects())["by_node"]
    assert by_node[0]["node_id"] == af_cluster.node_id and by_node[0]["bytes"] >= 1 << 20
    del big
    # the rows are plain data
    assert pickle.loads(pickle.dumps(failed + actors + nodes + objects))


async def test_a_running_call_is_listed_and_fails_when_its_worker_dies(
        af_cluster: af.Runtime) -> None:
    ref = die.remote()

    async def running() -> list[dict[str, Any]] | None:
        rows = await _tasks({"name": "die"})
        return rows if rows and rows[0]["state"] == "RUNNING" else None

    (row,) = await until(running, what="the task to be listed as running")
    assert row["end_time"] is None and row["pid"]
    with pytest.raises(af.WorkerCrashedError):
        await ref

    async def failed() -> list[dict[str, Any]] | None:
        rows = await _tasks({"name": "die", "state": "FAILED"})
        return rows or None

    (row,) = await until(failed, what="the dead worker's task to be marked FAILED")
    assert row["error_type"] == "WorkerCrashedError"
    assert row["pid"] == (await _tasks({"name": "die"}))[0]["pid"]
    assert (await af.state.summary_tasks())["totals"].get("RUNNING", 0) == 0


async def test_the_head_keeps_the_last_n_and_counts_all(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORFLOW_TASK_EVENTS_MAX", "50")
    async with af.init(num_cpus=2, log_to_driver=False):

        async def finished(n: int) -> dict[str, Any] | None:
            summary = await af.state.summary_tasks()
            return summary if summary["totals"].get("FINISHED", 0) == n else None

        first = [ok.remote(i) for i in range(300)]
        assert sum(await af.get(first)) == sum(range(300))
        await until(lambda: finished(300), what="300 finished tasks to be counted")
        last = [ok.remote(i) for i in range(20)]
        assert await af.get(last) == list(range(20))
        summary = await until(lambda: finished(320), what="320 finished tasks to be counted")
        assert summary["finished_kept"] == 50 and summary["finished_max"] == 50
        rows = await _tasks(limit=1000)
        assert len(rows) == 50
        # the newest first: every one of the last 20, then 30 of the first 300
        kept = [r["task_id"] for r in rows]
        assert set(kept[:20]) == {ref.id for ref in last}
        assert set(kept[20:]) <= {ref.id for ref in first}
        for worker in {r["worker_id"] for r in rows}:  # each worker's, newest first
            ends = [r["end_time"] for r in rows if r["worker_id"] == worker]
            assert ends == sorted(ends, reverse=True)
        client = StateClient(current_core().head)
        assert len(await client.list_tasks(limit=7)) == 7


async def test_workers_record_nothing_with_task_events_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ACTORFLOW_TASK_EVENTS=0 reaches the workers (through their node) and turns their
    recording off; the work itself is unchanged."""
    monkeypatch.setenv("ACTORFLOW_TASK_EVENTS", "0")
    async with af.init(num_cpus=2, log_to_driver=False):
        assert await af.get([ok.remote(i) for i in range(50)]) == list(range(50))
        keeper = Keeper.remote()
        assert await keeper.add.remote(2) == 2
        await asyncio.sleep(1.0)  # four flush periods: a report would have come
        assert (await af.state.summary_tasks())["totals"] == {}
        assert await _tasks() == []
    monkeypatch.delenv("ACTORFLOW_TASK_EVENTS")
    async with af.init(num_cpus=2, log_to_driver=False):  # and on again (the default)
        assert await ok.remote(1) == 1

        async def counted() -> bool | None:
            return True if (await af.state.summary_tasks())["totals"] else None

        await until(counted, what="the task to be counted")


def _report(worker: int, first: int, n: int, fail_every: int = 0) -> bytes:
    """What a worker reports after running n calls (one in ``fail_every`` failed), built by
    the recorder workers use."""
    recorder = EventRecorder(None, "n1", f"w{worker}", ("uid", f"w{worker}"))
    for i in range(first, first + n):
        task_id = f"t{i}"
        recorder.started(task_id, (f"f{i % 10}", "task", "j1", None), 1000.0 + i)
        failed = fail_every and i % fail_every == 0
        returns = (Failed(af.TaskError(ValueError("boom"), "Traceback...")),) if failed else None
        recorder.ended(task_id, 1000.0 + i + 0.001, 0.001, returns)
    return recorder.report()


async def test_the_store_stays_bounded_and_fast_with_100k_finished() -> None:
    """The store itself (the events actor's class), fed what workers send: 100,000 calls, of
    which 1 in 100 failed, in reports of 200 calls."""
    store = EventStore(max_finished=10_000, max_failures=1_000)
    reports = [_report(b % 8, b * 200, 200, fail_every=100) for b in range(500)]
    t0 = time.perf_counter()
    for report in reports:
        store.ingest(report)
    ingest_s = time.perf_counter() - t0
    assert len(store.finished) == 10_000 and len(store.failures) == 1_000
    assert len(store.tracebacks) == 1_000 and not store.running
    summary = store.summary()
    assert summary["totals"] == {"FINISHED": 99_000, "FAILED": 1_000}
    assert sum(e["state_counts"].get("FINISHED", 0) for e in summary["by_name"]) == 99_000
    t0 = time.perf_counter()
    answer = store.list_tasks(ListTasks((("state", "=", "FAILED"),), 100))
    page = store.list_tasks(ListTasks((("name", "=", "f3"),), 50))
    summary = store.summary()
    query_s = time.perf_counter() - t0
    assert answer["total"] == 1_000 and len(answer["rows"]) == 100 and answer["truncated"]
    assert answer["rows"][0]["task_id"] == "t99900"  # the newest failure first
    assert page["total"] == 1_000 and len(page["rows"]) == 50
    assert isinstance(SummarizeTasks(), SummarizeTasks)
    # generous bounds (a shared 2-core machine): about 0.3 s and 10 ms when quiet
    assert ingest_s < 10.0, ingest_s
    assert query_s < 1.0, query_s


async def test_names_past_the_bound_are_counted_together() -> None:
    """Calls whose names are made per call (f"job-{i}") cannot grow the head's counts for
    ever: past MAX_NAMES names, later ones are counted under OTHER_NAMES; the rows keep
    their own names."""
    store = EventStore()
    recorder = EventRecorder(None, "n1", "w1", ("uid", "w1"))
    extra = 25
    for i in range(MAX_NAMES + extra):
        recorder.started(f"t{i}", (f"job-{i}", "task", None, None), 1.0)
        recorder.ended(f"t{i}", 1.5, 0.5, None)
        if i % 500 == 499:
            store.ingest(recorder.report())
    store.ingest(recorder.report())
    summary = store.summary()
    assert len(summary["by_name"]) == MAX_NAMES + 1
    (other,) = [e for e in summary["by_name"] if e["name"] == OTHER_NAMES]
    assert other["state_counts"] == {"FINISHED": extra}
    assert summary["totals"] == {"FINISHED": MAX_NAMES + extra}
    newest = store.list_tasks(ListTasks((), 1))["rows"][0]
    assert newest["name"] == f"job-{MAX_NAMES + extra - 1}"
