"""``actorflow logs``: read the log files that the nodes of a started cluster keep.

::

    actorflow logs                          # which files each node has
    actorflow logs --job JOB_ID             # a job's lines, from every node
    actorflow logs --actor ID_OR_NAME [--namespace NS]
    actorflow logs --pid N [--node NODE_ID] # one worker process
    actorflow logs --node NODE_ID           # the node process's own output
    ... [--tail N] [--follow] [--address ADDR] [--token TOKEN]

It also adds ``--log-dir DIR`` to ``actorflow start`` (where the node writes its files;
default: ``logs/`` in the state folder).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from actorflow.cli.cluster_cmds import cluster_address, cluster_token

__all__ = ["cmd_logs", "register"]


def register(sub: Any) -> None:
    logs = sub.add_parser("logs", help="read the logs of a job, an actor, a worker or a node")
    logs.add_argument("--job", default=None, help="a job's id (af.get_runtime_context())")
    logs.add_argument("--actor", default=None, help="an actor's id, or its name")
    logs.add_argument("--namespace", default="", help="the namespace of an actor's name")
    logs.add_argument("--pid", type=int, default=None, help="a worker process's pid")
    logs.add_argument("--node", default=None, help="a node's id (alone: its own output)")
    logs.add_argument("--tail", type=int, default=1000, help="how many last lines (1000)")
    logs.add_argument("--follow", "-f", action="store_true", help="go on printing new lines")
    logs.add_argument("--address", default=None)
    logs.add_argument("--token", default=None)
    logs.set_defaults(handler=cmd_logs)
    start = sub.choices.get("start")
    if start is not None:
        start.add_argument("--log-dir", default="", help="where the node writes its workers' "
                           "log files (default: logs/ in the state folder)")


async def _logs(args: Any) -> int:
    from actorflow.cluster import bootstrap, logs

    proc = await bootstrap.connect(cluster_address(args), cluster_token(args), name="logs")
    try:
        what: dict[str, Any] = {"job_id": args.job, "actor_id": args.actor,
                                "namespace": args.namespace, "node_id": args.node,
                                "pid": args.pid}
        if not any(what[k] is not None for k in ("job_id", "actor_id", "node_id", "pid")):
            for node_id, names in (await logs.list_logs(proc.head)).items():
                print(f"node {node_id}:")
                for name in names:
                    print(f"  {name}")
            return 0
        try:
            if args.follow:
                async for line in logs.follow_logs(proc.head, tail=args.tail, **what):
                    print(line, flush=True)
                return 0
            for line in await logs.read_logs(proc.head, tail=args.tail, **what):
                print(line)
        except ValueError as exc:
            print(f"actorflow logs: {exc}", file=sys.stderr)
            return 1
        return 0
    finally:
        await proc.aclose()


def cmd_logs(args: Any) -> int:
    try:
        return asyncio.run(_logs(args))
    except KeyboardInterrupt:
        return 130
