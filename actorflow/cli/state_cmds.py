"""``actorflow list | summary | timeline``: the cluster's state, through
:class:`actorflow.state.StateClient` (the same rows as ``af.state`` and the dashboard).

- ``actorflow list nodes|actors|tasks|objects|jobs|placement-groups|leases [--filter KEY=VALUE]
  [--filter KEY!=VALUE] [--limit N] [--json] [--detail]``;
- ``actorflow summary tasks|actors|objects [--json]``;
- ``actorflow timeline -o trace.json``: a Chrome trace / Perfetto file of the tasks and actor
  calls (every one since the head started when it was started with ``--timeline`` or
  ``ACTORFLOW_TIMELINE=1``; else the last 10,000).

``actorflow start --head --timeline`` turns the timeline on. Every command takes ``--address``
(default: the cluster started on this machine) and ``--token``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from actorflow.cli.cluster_cmds import cluster_address, cluster_token
from actorflow.cluster import bootstrap
from actorflow.state import StateClient
from actorflow.state.timeline import to_chrome_trace, write_trace

__all__ = ["cmd_list", "cmd_summary", "cmd_timeline", "register"]

T = TypeVar("T")

#: What ``actorflow list`` lists.
LISTS = ("nodes", "actors", "tasks", "objects", "jobs", "placement-groups", "leases")


def register(sub: Any) -> None:
    """Add ``list``, ``summary`` and ``timeline``; ``start`` gets ``--timeline``."""
    start = sub.choices.get("start")
    if start is not None:
        start.add_argument("--timeline", action="store_true", default=None,
                           help="keep every task's span at the head for `actorflow timeline` "
                           "(default: off, or $ACTORFLOW_TIMELINE=1)")

    lst = sub.add_parser("list", help="list nodes, actors, tasks, objects, jobs...")
    lst.add_argument("what", choices=LISTS)
    _connection(lst)
    lst.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                     help="keep rows whose KEY is (KEY=VALUE) or is not (KEY!=VALUE) VALUE; "
                     "repeatable, all must hold")
    lst.add_argument("--limit", type=int, default=100, help="at most this many rows (100)")
    lst.add_argument("--detail", action="store_true", help="tasks: each failure's traceback")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=cmd_list)

    summary = sub.add_parser("summary", help="counts of tasks, actors or objects")
    summary.add_argument("what", choices=("tasks", "actors", "objects"))
    _connection(summary)
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(handler=cmd_summary)

    timeline = sub.add_parser("timeline", help="write a Chrome trace of the tasks and calls")
    timeline.add_argument("-o", "--output", default="timeline.json",
                          help="the file to write (timeline.json)")
    _connection(timeline)
    timeline.set_defaults(handler=cmd_timeline)


def _connection(parser: Any) -> None:
    parser.add_argument("--address", default=None)
    parser.add_argument("--token", default=None)


def _with_client(args: Any, use: Callable[[StateClient], Awaitable[T]]) -> T:
    async def run() -> T:
        proc = await bootstrap.connect(cluster_address(args), cluster_token(args), name="state")
        try:
            return await use(StateClient(proc.head))
        finally:
            await proc.aclose()

    return asyncio.run(run())


def parse_filters(texts: list[str]) -> list[tuple[str, str, Any]]:
    """``KEY=VALUE`` / ``KEY!=VALUE`` as filters; a VALUE that reads as JSON (a number,
    true, null) is that value, else the text."""
    out = []
    for text in texts:
        op = "!=" if "!=" in text else "="
        key, sep, raw = text.partition(op)
        if not sep or not key:
            raise SystemExit(f"--filter takes KEY=VALUE or KEY!=VALUE, got {text!r}")
        value: Any
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out.append((key.strip(), op, value))
    return out


def cmd_list(args: Any) -> int:
    filters = parse_filters(args.filter)

    async def rows_of(client: StateClient) -> list[dict[str, Any]]:
        what = args.what
        if what == "tasks":
            return await client.list_tasks(filters, args.limit, detail=args.detail)
        lister = {"nodes": client.list_nodes, "actors": client.list_actors,
                  "objects": client.list_objects, "jobs": client.list_jobs,
                  "placement-groups": client.list_placement_groups,
                  "leases": client.list_leases}[what]
        return await lister(filters, args.limit)

    try:
        rows = _with_client(args, rows_of)
    except ValueError as exc:  # a filter on a column that is not there
        raise SystemExit(f"actorflow list {args.what}: {exc}") from None
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"no {args.what}")
        return 0
    _table(rows)
    return 0


def _table(rows: list[dict[str, Any]], keys: list[str] | None = None) -> None:
    keys = keys or list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(k)) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)).rstrip())
    for cell in cells:
        print("  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ",".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def cmd_summary(args: Any) -> int:
    what = args.what

    async def summary_of(client: StateClient) -> dict[str, Any]:
        if what == "tasks":
            return await client.summary_tasks()
        if what == "actors":
            return await client.summary_actors()
        return await client.summary_objects()

    summary = _with_client(args, summary_of)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    if what == "tasks":
        rows = [{"name": e["name"], "kind": e["kind"], **e["state_counts"],
                 "mean_s": e["mean_s"], "max_s": e["max_s"]} for e in summary["by_name"]]
        states = sorted({s for e in summary["by_name"] for s in e["state_counts"]})
        print(f"tasks: {_counts(summary['totals'])}")
        if rows:
            _table(rows, ["name", "kind", *states, "mean_s", "max_s"])
        if summary.get("events_dropped"):
            print(f"({summary['events_dropped']} event(s) could not reach the head)")
    elif what == "actors":
        print(f"actors: {_counts(summary['totals'])}")
        rows = [{"class_name": e["class_name"], **e["state_counts"]}
                for e in summary["by_class"]]
        if rows:
            states = sorted({s for e in summary["by_class"] for s in e["state_counts"]})
            _table(rows, ["class_name", *states])
    else:
        print(f"objects: {summary['total_objects']} in shared memory, "
              f"{summary['total_bytes']} bytes")
        rows = [{k: v for k, v in node.items() if k != "largest"} for node in summary["by_node"]]
        if rows:
            _table(rows, ["node_id", "objects", "bytes"])
    return 0


def _counts(totals: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(totals.items())) or "none"


def cmd_timeline(args: Any) -> int:
    spans = _with_client(args, lambda client: client.timeline_spans())
    trace = to_chrome_trace(spans)
    write_trace(trace, args.output)
    slices = sum(1 for e in trace["traceEvents"] if e["ph"] == "X")
    note = "" if trace["otherData"]["complete"] else (
        " (the timeline is off at the head: these are the latest calls only; start the head "
        "with --timeline or ACTORFLOW_TIMELINE=1 for all of them)")
    print(f"wrote {slices} slice(s) to {args.output}{note}")
    return 0
