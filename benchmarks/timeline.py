"""Group ``timeline``: what the task events and the timeline cost.

- ``timeline_overhead`` (% slower): the ``tasks_async`` workload (n no-op tasks submitted at
  once, then gathered) on an embedded cluster with the timeline off and on
  (``ACTORFLOW_TIMELINE=1``: the head keeps every call's span), a fresh cluster for each, the
  two interleaved and their order alternated per repetition (a shared machine drifts). value =
  (off tasks/s / on tasks/s - 1) x 100, the median over repetitions; a negative value is noise.
  Extras: ``off_tasks_s``, ``on_tasks_s`` (medians), ``off_cpu_us_per_task``,
  ``on_cpu_us_per_task`` (CPU of the driver, which hosts the head, and its workers, per task:
  steadier than wall time when the machine is shared). Target: value <= 5.
- ``task_events_overhead`` (% slower): the same, with the workers' task events off
  (``ACTORFLOW_TASK_EVENTS=0``) and on (the default), the timeline off in both. Target:
  value <= 5.
- ``task_events_recorder`` (us/call): what recording costs a worker, in this process: n calls
  through a worker's recorder (``started`` and ``ended``, a report every 1,000 calls, as a
  busy worker makes one per 0.25 s), then the head's store files the reports: value = the
  recorder's microseconds per call, the timeline off. Extras: ``timeline_us`` (the same with
  the spans a timeline needs), ``store_us`` (the store's time per call), ``bytes_per_call``
  (of the reports). Set them against ``cpu_us_per_op`` of ``tasks_async`` (the CPU a no-op
  task costs driver and workers together, 40-80 us here): the wall-clock A/B above cannot
  resolve a few per cent on a shared machine; this can.
- ``task_events_store`` (calls/s): the head's event store fed 100,000 calls (1 in 100
  failed) as 8 workers report them (reports of 500 calls, made by the workers' recorder), in
  this process: value = calls ingested per second. Extras: the time of the queries the CLI
  and the dashboard make with those 100,000 finished: ``list_failed_ms`` (FAILED, limit
  100), ``list_name_ms`` (one name, limit 100), ``summary_ms``; ``kept`` (the ring's
  bound). Target: each query under 50 ms.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
from typing import Any

import cloudpickle

import actorflow as af
from actorflow._errors import TaskError
from actorflow.cluster.events import EventRecorder
from actorflow.cluster.protocol import Failed
from actorflow.state.store import EventStore, ListTasks
from benchmarks._common import CpuMeter, check_sum, log, meta, run_on, sig, summarize
from benchmarks.spec import num_cpus

WORKLOADS = ("timeline_overhead", "task_events_overhead", "task_events_recorder",
             "task_events_store")

# name: (unit, n, quick n)
_SPEC: dict[str, tuple[str, int, int]] = {
    "timeline_overhead": ("%", 10_000, 1_000),
    "task_events_overhead": ("%", 10_000, 1_000),
    "task_events_recorder": ("us/call", 200_000, 20_000),
    "task_events_store": ("calls/s", 100_000, 20_000),
}
OVERHEAD_TARGET = 5.0
QUERY_TARGET_MS = 50.0


@af.remote
def noop(i):  # type: ignore[no-untyped-def]
    return i


async def _tasks_async(n: int, env: dict[str, str], meter: CpuMeter) -> tuple[float, float]:
    """(tasks/s, CPU us per task) of one cluster started with ``env`` set."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        async with af.init(num_cpus=num_cpus(), log_to_driver=False):
            check_sum(await af.get([noop.remote(i) for i in range(200)]), 200)
            before = meter.snap()
            t0 = time.perf_counter()
            refs = [noop.remote(i) for i in range(n)]
            res = await af.get(refs)
            elapsed = time.perf_counter() - t0
            after = meter.snap(end=True)
            check_sum(res, n)
            cpu = meter.add({}, before, after, n).get("cpu_us_per_op", 0.0)
            await asyncio.sleep(0.5)  # the last events reach the head before it stops
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return n / elapsed, cpu


#: workload -> (the setting off, on)
_SWITCHES = {
    "timeline_overhead": ({"ACTORFLOW_TIMELINE": "0"}, {"ACTORFLOW_TIMELINE": "1"}),
    "task_events_overhead": ({"ACTORFLOW_TASK_EVENTS": "0", "ACTORFLOW_TIMELINE": "0"},
                             {"ACTORFLOW_TASK_EVENTS": "1", "ACTORFLOW_TIMELINE": "0"}),
}


def _overhead(name: str, n: int, reps: int) -> list[dict[str, Any]]:
    meter = CpuMeter()
    runs = []
    for r in range(reps):
        got: dict[bool, tuple[float, float]] = {}
        for switch in ((False, True) if r % 2 == 0 else (True, False)):
            env = _SWITCHES[name][switch]
            got[switch] = run_on("uvloop", functools.partial(_tasks_async, n, env, meter))
        (off, off_cpu), (on, on_cpu) = got[False], got[True]
        value = (off / on - 1.0) * 100.0
        log(f"[{name}] rep {r + 1}/{reps}: off {off:,.0f} tasks/s, on {on:,.0f} "
            f"tasks/s: {value:+.1f}%")
        runs.append({"value": value, "off_tasks_s": off, "on_tasks_s": on,
                     "off_cpu_us_per_task": off_cpu, "on_cpu_us_per_task": on_cpu})
    return runs


def _reports(n: int) -> list[bytes]:
    """What 8 workers report after running n calls (1 in 100 failed), 500 per report."""
    recorders = [EventRecorder(None, "node1", f"w{w}", ("uid", f"w{w}")) for w in range(8)]
    failed = (Failed(TaskError(ValueError("bad value"), "Traceback (most recent call last)")),)
    out = []
    for first in range(0, n, 500):
        recorder = recorders[(first // 500) % 8]
        for i in range(first, min(n, first + 500)):
            task_id = f"task-{i:08x}"
            recorder.started(task_id, (f"fn{i % 20}", "task", "job1", None), 1000.0 + i)
            recorder.ended(task_id, 1000.0 + i + 1e-4, 1e-4, failed if i % 100 == 0 else None)
        out.append(recorder.report())
    return out


async def _recorder_costs(n: int, spans: bool) -> tuple[float, float, float]:
    """(recorder us/call, store us/call, report bytes/call) for n no-op calls."""
    recorder = EventRecorder(None, "node1", "node1-w1", ("uid", "ws://127.0.0.1:1"))
    recorder.spans = spans
    recorder.timeline_known = True
    ids = [f"{i:013x}" for i in range(n)]
    reports = []
    key = ("noop", "task", "0a1b2c3d", None)
    perf = time.perf_counter
    t0 = perf()
    for i, task_id in enumerate(ids):
        recorder.started(task_id, key, perf())
        recorder.ended(task_id, perf(), 1e-5, None)
        if i % 1000 == 999:
            reports.append(recorder.report())
    recorded = perf() - t0
    store = EventStore(timeline=spans)
    t1 = perf()
    for data in reports:
        store.ingest(data)
    filed = perf() - t1
    return recorded / n * 1e6, filed / n * 1e6, sum(map(len, reports)) / n


def _recorder(n: int, reps: int) -> list[dict[str, Any]]:
    runs = []
    for r in range(reps):
        off, store_us, size = run_on("asyncio", functools.partial(_recorder_costs, n, False))
        on, _, _ = run_on("asyncio", functools.partial(_recorder_costs, n, True))
        log(f"[task_events_recorder] rep {r + 1}/{reps}: {off:.2f} us/call ({on:.2f} with "
            f"spans), store {store_us:.2f} us/call, {size:.0f} bytes/call")
        runs.append({"value": off, "timeline_us": on, "store_us": store_us,
                     "bytes_per_call": size})
    return runs


async def _async(fn: Any, *args: Any) -> Any:
    return fn(*args)  # (a recorder arms its flush timer on the running loop)


def _store(n: int, reps: int) -> list[dict[str, Any]]:
    batches: list[bytes] = run_on("asyncio", functools.partial(_async, _reports, n))
    runs = []
    for r in range(reps):
        store = EventStore()
        t0 = time.perf_counter()
        for data in batches:
            store.ingest(data)
        ingest_s = time.perf_counter() - t0
        timings = {}
        queries: dict[str, Any] = {
            "list_failed_ms": (store.list_tasks, ListTasks((("state", "=", "FAILED"),), 100)),
            "list_name_ms": (store.list_tasks, ListTasks((("name", "=", "fn7"),), 100)),
            "summary_ms": (EventStore.summary, store),
        }
        for key, (ask, query) in queries.items():
            t1 = time.perf_counter()
            ask(query)
            timings[key] = (time.perf_counter() - t1) * 1e3
        value = n / ingest_s
        log(f"[task_events_store] rep {r + 1}/{reps}: {value:,.0f} calls/s; " + ", ".join(
            f"{k} {v:.2f}" for k, v in timings.items()))
        runs.append({"value": value, **timings, "kept": len(store.finished)})
    return runs


def run(quick: bool, reps: int, only: set[str] | None = None) -> list[dict[str, Any]]:
    """Run the selected workloads (both by default); one summarized record each."""
    provenance = meta(quick)
    records = []
    for name in WORKLOADS:
        if only is not None and name not in only:
            continue
        unit, n_full, n_quick = _SPEC[name]
        n = n_quick if quick else n_full
        if name == "task_events_recorder":
            rec = summarize(name, unit, n, _recorder(n, reps), provenance)
        elif name in _SWITCHES:
            rec = summarize(name, unit, n, _overhead(name, n, reps), provenance)
            rec["target"] = f"value <= {OVERHEAD_TARGET:g}"
            rec["target_met"] = rec["value"] <= OVERHEAD_TARGET
        else:
            rec = summarize(name, unit, n, _store(n, reps), provenance)
            worst = max(rec["list_failed_ms"], rec["list_name_ms"], rec["summary_ms"])
            rec["target"] = f"each query < {QUERY_TARGET_MS:g} ms"
            rec["target_met"] = worst < QUERY_TARGET_MS
        rec["value"] = sig(rec["value"])
        records.append(rec)
    return records


# Workers must not need this module: pickle its remote function by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
