"""``actorflow start | stop | status``: clusters of one or many machines.

``start --head`` starts a head (with a node of its own) and ``start --address`` a node that
joins one. Without ``--block`` the command starts the process in the background (a new
session, its output in the state folder's log), waits until it is up, prints where it is,
and returns; with ``--block`` it runs in the foreground until SIGTERM or SIGINT, which stop it
and every worker it started. ``stop`` signals every process that ``start`` started on this
machine (and sweeps what those it had to kill left: see ``docs/reliability.md``).
``list`` is in :mod:`actorflow.cli.state_cmds` (through the state API).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from actorflow.cluster import bootstrap, head_link, head_store, state
from actorflow.cluster.memory_guard import with_memory
from actorflow.cluster.protocol import ListState, NodeInfo
from actorflow.objects import sweep
from actorflow.placement.resources import Resources
from actorflow.runtime.loop import run_main

__all__ = [
    "cluster_address", "cluster_token", "cmd_start", "cmd_status", "cmd_stop", "register",
]


def register(sub: Any) -> None:
    """Add ``start``, ``stop`` and ``status`` to the ``actorflow`` parser."""
    start = sub.add_parser("start", help="start a head, or a node that joins one")
    start.add_argument("--head", action="store_true", help="start a head (and its own node)")
    start.add_argument("--address", default=None, help="join the head at ws://HOST:PORT")
    start.add_argument("--host", default=None,
                       help="address to listen on (a head: 127.0.0.1; a node: the address "
                       "of this machine that the head's host reaches)")
    start.add_argument("--port", type=int, default=6380, help="the head's port")
    start.add_argument("--token", default=None, help="the cluster token (default: a new one, "
                       "or $ACTORFLOW_TOKEN, or the head's token file)")
    start.add_argument("--num-cpus", type=float, default=None)
    start.add_argument("--num-gpus", type=float, default=None)
    start.add_argument("--resources", default=None, help='custom resources, JSON: {"ssd": 1}')
    start.add_argument("--peer-timeout", type=float, default=None,
                       help="seconds of silence before a peer (node) is declared dead (3)")
    start.add_argument("--block", action="store_true", help="stay in the foreground")
    start.set_defaults(handler=cmd_start)

    stop = sub.add_parser("stop", help="stop what `actorflow start` started on this machine")
    stop.add_argument("--timeout", type=float, default=10.0)
    stop.set_defaults(handler=cmd_stop)

    status = sub.add_parser("status", help="nodes, resources, actors and pending work")
    status.add_argument("--address", default=None)
    status.add_argument("--token", default=None)
    status.set_defaults(handler=cmd_status)


def _resources(args: Any) -> Resources:
    amounts: dict[str, float] = {
        "CPU": float(args.num_cpus if args.num_cpus is not None else (os.cpu_count() or 1))
    }
    if args.num_gpus:
        amounts["GPU"] = float(args.num_gpus)
    if args.resources:
        try:
            extra = json.loads(args.resources)
        except ValueError as exc:
            raise SystemExit(f"--resources must be a JSON object, e.g. '{{\"ssd\": 1}}': {exc}"
                             ) from None
        if not isinstance(extra, dict):
            raise SystemExit("--resources must be a JSON object, e.g. '{\"ssd\": 1}'")
        amounts.update({str(k): float(v) for k, v in extra.items()})
    return Resources.of(with_memory(amounts))


def _token(args: Any, *, new: bool) -> str:
    token = args.token or os.environ.get("ACTORFLOW_TOKEN")
    if token:
        return str(token)
    if not new:
        saved = state.read_token()
        if saved:
            return saved
        raise SystemExit("no cluster token: pass --token, set ACTORFLOW_TOKEN, or run this on "
                         "the head's machine (its token file is used)")
    return secrets.token_hex(16)


def _address(args: Any) -> str:
    address = getattr(args, "address", None) or os.environ.get("ACTORFLOW_ADDRESS")
    if not address or address == "auto":
        info = state.read_cluster()
        if info is None:
            raise SystemExit("no cluster found on this machine: run `actorflow start --head` "
                             "or pass --address ws://HOST:PORT")
        return str(info["address"])
    return str(address)


def cluster_address(args: Any) -> str:
    """The cluster's address: ``--address``, $ACTORFLOW_ADDRESS, or the one started here."""
    return _address(args)


def cluster_token(args: Any) -> str:
    """The cluster's token: ``--token``, $ACTORFLOW_TOKEN, or the head's token file here."""
    return _token(args, new=False)


# -- start --------------------------------------------------------------------------------------


def cmd_start(args: Any) -> int:
    if bool(args.head) == bool(args.address):
        raise SystemExit("actorflow start needs exactly one of --head or --address ws://HOST:PORT")
    if args.head and not (args.token or os.environ.get("ACTORFLOW_TOKEN")):
        # a head started again on this port keeps its token (and so its nodes: head_store.py)
        store = _store(args)
        args.token = store and head_store.saved_token(store, state.read_token())
    if not args.block:
        return _start_background(args)
    return run_main(_run_blocking(args))


def _start_background(args: Any) -> int:
    argv = [sys.executable, "-m", "actorflow", *sys.argv[1:], "--block"]
    token = _token(args, new=bool(args.head))
    env = dict(os.environ, ACTORFLOW_TOKEN=token)
    log_path = state.state_dir() / f"{'head' if args.head else 'node'}-{int(time.time())}.log"
    before = state.read_cluster() if args.head else None
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"actorflow start failed (exit {proc.returncode}); see {log_path}",
                  file=sys.stderr)
            return 1
        if any(p.get("pid") == proc.pid and p.get("ready") for p in state.read_processes()):
            break
        time.sleep(0.05)
    else:
        proc.terminate()
        print(f"actorflow start timed out; see {log_path}", file=sys.stderr)
        return 1
    if args.head:
        info = state.read_cluster()
        assert info is not None and info != before
        print(f"head started: {info['address']}  (pid {proc.pid})")
        print(f"token file: {info['token_file']} (mode 0600); `af.init(address=\"auto\")` and "
              "`actorflow ... --address auto` find both")
        for key, value in (info.get("services") or {}).items():
            print(f"{key}: {value}")
    else:
        print(f"node started (pid {proc.pid}), joined {args.address}")
    print(f"log: {log_path}")
    return 0


async def _run_blocking(args: Any) -> int:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    resources = _resources(args)
    peer_timeout = args.peer_timeout
    link: head_link.HeadLink | None = None
    if args.head:
        token = _token(args, new=True)
        proc = await bootstrap.start_head(
            token=token, resources=resources, host=args.host or "127.0.0.1", port=args.port,
            peer_timeout_s=peer_timeout, options=vars(args), store=_store(args),
        )
        token_file = state.write_token(token)
        state.write_cluster({"address": proc.address, "token_file": str(token_file),
                             "pid": os.getpid(), "session": proc.session,
                             # what the head's services say (the dashboard's URL...)
                             "services": {k: v for k, v in proc.info.items()
                                          if isinstance(v, str)}})
        kind = "head"
    else:
        token = _token(args, new=False)
        proc = await bootstrap.start_node(
            address=args.address, token=token, resources=resources, host=args.host,
            peer_timeout_s=peer_timeout, options=vars(args),
        )
        kind = "node"
        # a node whose head is gone waits for it to come back (a restart), for a while
        link = head_link.HeadLink(proc, request_stop)
        link.start()
    address = proc.address
    state.record_process(kind, address)
    _mark_ready()
    loop_kind = type(loop).__module__.partition(".")[0]  # "uvloop" or "asyncio"
    print(f"actorflow {kind} running at {address} (node {proc.node_id}, {loop_kind} loop); "
          "SIGTERM or Ctrl-C stops it", flush=True)
    for key, value in proc.info.items():
        if key != "nodes":
            print(f"{key}: {value}", flush=True)
    try:
        await stop
    finally:
        try:
            if link is not None:
                await link.aclose()
            await proc.aclose()
        finally:
            if kind == "head":
                state.clear_cluster(address)
                _forget_store(address)  # stopped on purpose: its nodes stop too
            state.forget_process()
    return 0


def _store(args: Any) -> Path | None:
    """Where the head on ``args.port`` keeps its directory; None for ``--port 0`` (a port of
    the system's choosing: a head started again would not be found there)."""
    if not args.port:
        return None
    return head_store.store_path(state.state_dir(), args.port)


def _mark_ready() -> None:
    entry = state.state_dir() / "procs" / f"{os.getpid()}.json"
    data = json.loads(entry.read_text())
    data["ready"] = True
    entry.write_text(json.dumps(data))


# -- stop ----------------------------------------------------------------------------------------


def cmd_stop(args: Any) -> int:
    procs = state.read_processes()
    if not procs:
        print("nothing to stop: no process started by `actorflow start` on this machine")
        return 0
    live: list[int] = []
    # nodes first, then heads, so nodes leave cleanly
    for entry in sorted(procs, key=lambda p: p.get("kind") == "head"):
        pid = int(entry["pid"])
        try:
            os.kill(pid, signal.SIGTERM)
            live.append(pid)
        except ProcessLookupError:
            state.forget_process(pid)
    deadline = time.monotonic() + args.timeout
    while live and time.monotonic() < deadline:
        live = [pid for pid in live if _alive(pid)]
        time.sleep(0.05)
    for pid in live:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if live:  # what they leave (segments, sockets) goes now, not at the next start
        deadline = time.monotonic() + 5.0
        while any(_alive(pid) for pid in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        sweep.sweep_machine()
    for entry in procs:
        state.forget_process(int(entry["pid"]))
        if entry.get("kind") == "head" and entry.get("address"):
            state.clear_cluster(str(entry["address"]))  # also when the head was killed hard
            _forget_store(str(entry["address"]))
    print(f"stopped {len(procs)} process(es)" + (f"; killed {len(live)}" if live else ""))
    return 0


def _forget_store(address: str) -> None:
    """The cluster of the head at ``address`` is stopped: its directory goes too."""
    port = address.rpartition(":")[2]
    if port.isdigit():
        base = head_store.store_path(state.state_dir(), int(port))
        for path in (base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


# -- status ---------------------------------------------------------------------------------------


async def _views(args: Any, what: list[str]) -> dict[str, Any]:
    address = _address(args)
    token = _token(args, new=False)
    proc = await bootstrap.connect(address, token, name="status")
    try:
        out: dict[str, Any] = {}
        for view in what:
            if view in ("nodes", "actors"):
                out[view] = await proc.head.ask(ListState(view), timeout=10.0)
        if {"tasks", "objects"} & set(what):
            nodes = await proc.head.ask(ListState("nodes"), timeout=10.0)
            details = []
            for node in nodes:
                ref = node.get("ref")
                if node.get("alive") and ref is not None:
                    details.append(await ref.ask(NodeInfo(), timeout=10.0))
            out["node_details"] = details
        return out
    finally:
        await proc.aclose()


def _fmt(amounts: dict[str, float]) -> str:
    return ", ".join(f"{k} {v / 2**30:.1f} GiB" if k == "memory" else f"{k} {v:g}"
                     for k, v in sorted(amounts.items())) or "-"


def cmd_status(args: Any) -> int:
    views = asyncio.run(_views(args, ["nodes", "actors", "tasks"]))
    nodes = views["nodes"]
    alive = [n for n in nodes if n["alive"]]
    print(f"cluster at {_address(args)}: {len(alive)} live node(s), "
          f"{len(nodes) - len(alive)} dead")
    for node in nodes:
        total = node["resources"]
        avail = node.get("available", {})
        used = {k: total[k] - avail.get(k, 0.0) for k in total}
        flag = "alive" if node["alive"] else "DEAD"
        print(f"  node {node['node_id']} {flag} {node['address']}: used {_fmt(used)} "
              f"of {_fmt(total)}")
    actors = views["actors"]
    states: dict[str, int] = {}
    for actor in actors:
        states[actor["state"]] = states.get(actor["state"], 0) + 1
    print(f"actors: {len(actors)} " + (f"({_fmt({k: float(v) for k, v in states.items()})})"
                                       if actors else ""))
    pending = sum(d.get("pending_leases", 0) for d in views["node_details"])
    running = sum(d.get("leases", 0) for d in views["node_details"])
    print(f"work: {running} worker lease(s) running, {pending} waiting for resources")
    for detail in views["node_details"]:
        for demand in detail.get("pending_demands", []):
            print(f"  waiting on node {detail['node_id']}: {_fmt(demand)}")
    return 0
