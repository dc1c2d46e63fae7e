"""``actorflow memory``, and the object-store flags of ``actorflow start``.

``actorflow start ... --object-store-memory BYTES --spill-dir DIR`` (``BYTES`` may end in K,
M or G, powers of 1024) set the node's object store limit and where it spills
(``actorflow/objects/spill.py``). ``actorflow memory [--address ADDR] [--json] [--limit N]``
prints each node's store (used, limit, spilled, restored) and the largest objects.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from actorflow.cli.cluster_cmds import cluster_address, cluster_token

__all__ = ["cmd_memory", "parse_bytes", "register"]

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
          "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


def parse_bytes(text: str) -> int:
    """``"67108864"``, ``"64M"``, ``"64MiB"``, ``"1.5G"`` -> bytes (> 0)."""
    raw = text.strip().upper()
    digits = raw.rstrip("KMGIB")
    unit = raw[len(digits):]
    try:
        value = int(float(digits) * _UNITS[unit])
    except (KeyError, ValueError):
        raise ValueError(f"not a size in bytes: {text!r} (e.g. 67108864, 64M, 2G)") from None
    if value <= 0:
        raise ValueError(f"a size must be positive, got {text!r}")
    return value


def _size_arg(text: str) -> int:
    import argparse

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Any) -> None:
    start = sub.choices["start"]
    start.add_argument("--object-store-memory", type=_size_arg, default=None, metavar="BYTES",
                       help="this node's object store limit (default: 30%% of memory or "
                            "50%% of /dev/shm, whichever is smaller); past it objects spill")
    start.add_argument("--spill-dir", default=None, metavar="DIR",
                       help="where objects spill (default: <state dir>/spill)")
    mem = sub.add_parser("memory", help="object store memory per node and the largest objects")
    mem.add_argument("--address", default=None)
    mem.add_argument("--token", default=None)
    mem.add_argument("--limit", type=int, default=20, help="how many of the largest objects")
    mem.add_argument("--json", action="store_true")
    mem.set_defaults(handler=cmd_memory)


async def _summary(args: Any) -> dict[str, Any]:
    from actorflow.api.memory import summarize
    from actorflow.cluster import bootstrap

    proc = await bootstrap.connect(cluster_address(args), cluster_token(args), name="memory")
    try:
        return await summarize(proc.head, limit=args.limit)
    finally:
        await proc.aclose()


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def cmd_memory(args: Any) -> int:
    summary = asyncio.run(_summary(args))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    for node in summary["nodes"]:
        if "error" in node:
            print(f"node {node['node_id']}: no answer ({node['error']})")
            continue
        used, limit = node["object_store_used"], node["object_store_limit"]
        print(f"node {node['node_id']}: used {_mib(used)} of {_mib(limit)} "
              f"({100 * used / max(1, limit):.0f}%) in {node['objects_in_store']} object(s); "
              f"spilled {_mib(node['spilled_bytes'])} ({node['spilled_objects']} object(s)), "
              f"on disk now {_mib(node['spilled_now_bytes'])}; restored "
              f"{_mib(node['restored_bytes'])} ({node['restored_objects']} object(s))")
        if "secondary_copies" in node:
            print(f"  secondary copies (pulled from other nodes): {node['secondary_copies']}, "
                  f"{_mib(node['secondary_bytes'])}; {node['copy_pulls']} pull(s), "
                  f"{node['copy_reads']} read(s) served, {node['copy_evictions']} evicted")
    objects = summary["objects"]
    print(f"largest objects ({len(objects)}):")
    if objects:
        print(f"  {'SIZE':>12}  {'NODE':<10} {'WHERE':<14} {'OWNER':<24} {'WHAT':<12} "
              f"{'REFS':>4}  SEGMENT")
    for obj in objects:
        refs = "-" if obj["refs"] is None else str(obj["refs"])
        print(f"  {_mib(obj['size']):>12}  {obj['node_id']:<10} {obj['where']:<14} "
              f"{obj['owner']:<24} {obj['what']:<12} {refs:>4}  {obj['segment']}")
    return 0
