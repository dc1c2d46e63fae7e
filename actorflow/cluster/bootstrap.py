"""Starting the cluster's processes and joining them.

- :func:`start_head`: an ActorSystem that listens (loopback unless told), the Head, and (by
  default) a Node of its own. The embedded default cluster of ``af.init()`` is this, with port 0.
- :func:`start_node`: a Node that joins a head at ``address``: it registers, and the head
  watches it (a node whose link goes silent is declared dead within the transport's
  ``peer_timeout_s``).
- :func:`connect`: a client (a driver, or ``actorflow status``) of a running cluster.

A process that knows only a head's address finds it by dialing once: the authenticated
handshake names the peer system's uid, and the head's actor has the well-known id ``head``.

A process that will run a node starts its worker pool's zygote first (see
:mod:`actorflow.cluster.zygote`), then imports what the head and the node need (the transport,
the Head, the Node, the Placement actor: this module imports them on first use, in a thread, so
the caller's loop is never blocked by them), so that the zygote's imports, which the first
worker waits for, run while this process does the rest of its start.

A process that runs a node also runs a :class:`Sweeper` actor: it holds the node's liveness
lock, and sweeps what dead processes of this machine left behind (their shared-memory segments
and unix socket files: :mod:`actorflow.objects.sweep`) when it starts, every
``SWEEP_INTERVAL_S``, and when it stops, which is after the node (it is spawned before it).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import os
import secrets
import socket
import sys
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actorflow.cluster import zygote as _zygote
from actorflow.cluster.head_store import HeadSaver, SavedHead, open_for, token_identity
from actorflow.cluster.protocol import ClusterInfo, GetClusterInfo, RegisterNode
from actorflow.cluster.services import HeadContext, start_head_services
from actorflow.objects import sweep
from actorflow.objects.spill import open_store
from actorflow.placement.messages import placement_of
from actorflow.placement.resources import Resources
from actorflow.runtime import Actor, ActorRef, ActorSystem, current_system, restore_ref

if TYPE_CHECKING:
    from actorflow.cluster.zygote import Zygote
    from actorflow.transport.config import TransportConfig
    from actorflow.transport.remote import Remoting

log = logging.getLogger("actorflow.bootstrap")

#: What serving a system needs, and what a head or a node adds (imported on first use).
_SERVE_MODULES = ("actorflow.transport.config", "actorflow.transport.remote")
_CLUSTER_MODULES = (*_SERVE_MODULES, "actorflow.placement.actor", "actorflow.cluster.head",
                    "actorflow.cluster.node")
#: Seconds between two sweeps of a running node (it also sweeps when it starts and stops).
SWEEP_INTERVAL_S = 300.0

__all__ = [
    "ClusterProcess",
    "Sweeper",
    "connect",
    "discover_head",
    "placement_of",
    "reachable_host",
    "start_head",
    "start_node",
]


@dataclass
class ClusterProcess:
    """What this process runs for the cluster; :meth:`aclose` stops all of it."""

    system: ActorSystem
    remoting: Remoting
    head: ActorRef
    session: str
    token: str
    node: ActorRef | None = None
    node_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        assert self.system.address is not None
        return self.system.address

    async def aclose(self) -> None:
        try:
            await self.system.shutdown()
        finally:
            await self.remoting.aclose()


class _Sweep:
    """The sweeper's own timer message: sweep now."""


class Sweeper(Actor):
    """What a process running node ``node_id`` does for the machine (see the module doc).

    ``on_start`` takes the node's liveness lock (shared: its workers and drivers take it too),
    so none of the node's segments is swept while any of them lives, and sweeps at once; a
    timer sweeps again every ``interval`` seconds; ``on_stop`` lets the lock go (the last
    holder takes what is left of the node's segments with it) and sweeps once more, for what
    the node's workers killed as it stopped left. Each sweep runs in a thread.
    """

    def __init__(self, node_id: str, interval: float = SWEEP_INTERVAL_S) -> None:
        self.node_id = node_id
        self.interval = interval
        self._held = False
        self._timer: asyncio.TimerHandle | None = None

    async def on_start(self) -> None:
        try:
            self._held = sweep.hold_node(self.node_id)
        except OSError as exc:
            log.warning("cannot take the liveness lock of node %s (%s): its segments will "
                        "not be swept if it dies", self.node_id, exc)
        self.ref.tell_nowait(_Sweep())

    async def receive(self, message: Any) -> Any:
        if not isinstance(message, _Sweep):
            return await super().receive(message)
        self._timer = None
        await asyncio.to_thread(sweep.sweep_machine)
        self._timer = asyncio.get_running_loop().call_later(
            self.interval, self.ref.tell_nowait, _Sweep())
        return None

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held:
            self._held = False
            await asyncio.to_thread(sweep.release_node, self.node_id)
        await asyncio.to_thread(sweep.sweep_machine)


async def _import(names: tuple[str, ...]) -> None:
    """Import ``names`` in a thread, not on the loop (a no-op once they are imported). The
    thread is one of its own that ends with the imports (the loop's default executor would
    keep an idle thread for the loop's life)."""
    missing = [name for name in names if name not in sys.modules]
    if not missing:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():  # the caller was cancelled meanwhile
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def work() -> None:
        error: BaseException | None = None
        try:
            for name in missing:
                importlib.import_module(name)
        except BaseException as exc:  # handed to the awaiting caller
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=work, name="actorflow-import", daemon=True).start()
    await done


async def _launch_zygote(log_to_driver: bool) -> Zygote | None:
    """The zygote of the node this process is about to run, started now; None when workers
    are to be plain processes (or it cannot start: the pool then tries once more itself)."""
    if not _zygote.enabled():
        return None
    try:
        return await _zygote.Zygote.launch(log_to_driver=log_to_driver)
    except Exception as exc:
        log.warning("cannot start a zygote early (%s)", exc)
        return None


def reachable_host(address: str) -> str:
    """The address of this machine that the host of ``address`` (``ws://HOST:PORT``) reaches it
    at: loopback for a head on this machine, else the address of the interface that routes
    there (a UDP socket's connect picks it; nothing is sent). A node or driver that joins a
    cluster listens there, and only there (API.md §9: nothing is opened to every network)."""
    parsed = urllib.parse.urlsplit(address)
    host = parsed.hostname or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(host, parsed.port or 0, type=socket.SOCK_DGRAM)
    except OSError:
        return "127.0.0.1"
    family, _, _, _, sockaddr = infos[0]
    if ipaddress.ip_address(sockaddr[0]).is_loopback:
        return "127.0.0.1"
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(sockaddr)
        except OSError:
            return "127.0.0.1"
        return str(probe.getsockname()[0])


def _config(token: str, host: str, port: int, peer_timeout_s: float | None) -> TransportConfig:
    from actorflow.transport.config import SecretStr, TransportConfig

    extra: dict[str, Any] = {}
    if peer_timeout_s is not None:
        extra["peer_timeout_s"] = peer_timeout_s
    return TransportConfig(token=SecretStr(token), host=host, port=port, **extra)


async def discover_head(remoting: Remoting, address: str) -> ActorRef:
    """The head's ref at ``address`` (dials once to learn the system's uid)."""
    link = await remoting.dial(address)
    try:
        uid = link.peer_hello.get("uid")
    finally:
        await link.aclose()
    if not isinstance(uid, str):
        raise ConnectionError(f"{address} did not say who it is; is it an actorflow head?")
    # (resolved through this remoting's system: the process may run others, a driver's and
    # a JobClient's, say)
    token = current_system.set(remoting.system)
    try:
        return restore_ref(uid, address, "head", "head")
    finally:
        current_system.reset(token)


async def _undo_start(system: ActorSystem, remoting: Remoting, zygote: Zygote | None) -> None:
    """A start failed after the process's system and listener were up: stop them, and the
    zygote (a no-op when the node's pool took it and closed it)."""
    await system.shutdown()
    await remoting.aclose()
    if zygote is not None:
        await zygote.aclose()


async def _spawn_node(
    system: ActorSystem, head: ActorRef, *, session: str, token: str, resources: Resources,
    prestart: int | None, log_to_driver: bool, node_id: str | None = None,
    zygote: Zygote | None = None, options: Mapping[str, Any] | None = None,
) -> tuple[ActorRef, str]:
    from actorflow.cluster.node import Node
    from actorflow.cluster.node_logs import log_dir_from

    node_id = node_id or secrets.token_hex(4)
    log_dir = log_dir_from(options, node_id)
    cpus = resources["CPU"] // 10_000
    workers = prestart if prestart is not None else max(1, min(cpus, 64))
    placement = placement_of(head)
    node = await system.spawn(
        lambda: Node(node_id=node_id, resources=resources, session=session, head=head,
                     placement=placement, token=token, log_to_driver=log_to_driver,
                     prestart=workers, zygote=zygote, log_dir=log_dir),
        name="node", well_known=True,
    )
    await head.ask(RegisterNode(node_id, node, system.address, resources), timeout=30.0)
    return node, node_id


async def start_head(
    *,
    token: str,
    resources: Resources,
    host: str = "127.0.0.1",
    port: int = 0,
    with_node: bool = True,
    prestart: int | None = None,
    log_to_driver: bool = True,
    peer_timeout_s: float | None = None,
    name: str = "head",
    options: Mapping[str, Any] | None = None,
    store: Path | None = None,
) -> ClusterProcess:
    """``options``: what the head's services read (see :mod:`actorflow.cluster.services`).
    ``store``: the head keeps its directory in this file, and takes back what it holds (a
    restart: :mod:`actorflow.cluster.head_store`)."""
    zygote = await _launch_zygote(log_to_driver) if with_node else None
    saver: HeadSaver | None = None
    saved: SavedHead | None = None
    system: ActorSystem | None = None
    try:
        await _import(_CLUSTER_MODULES)
        from actorflow.cluster.head import Head
        from actorflow.placement.actor import Placement
        from actorflow.transport.remote import serve_system

        session, uid = secrets.token_hex(4), None
        if store is not None:
            kept, loaded = await asyncio.to_thread(open_for, store, token)
            saver, saved = HeadSaver(kept), loaded
            if not loaded.empty:
                session, uid = loaded.meta["session"], loaded.meta["uid"]
        system = ActorSystem(f"{name}-{session}", uid=uid)
        # a restarted head's node takes its predecessor's id back: the drivers that joined
        # through it go on naming their shared-memory segments after it, and reading them there
        node_id = (saved.meta.get("node_id") if saved is not None else None) or secrets.token_hex(4)
        # the head and the placement are up before anything is served: the processes that
        # redial a restarted head never find it without them
        if with_node:  # first: it stops last, after the node
            await system.spawn(lambda: Sweeper(node_id), name="sweeper")
        placement = await system.spawn(Placement, name="placement", well_known=True)
        head_actor = Head(session, placement, saver)
        head = await system.spawn(lambda: head_actor, name="head", well_known=True)
        remoting = await serve_system(system, config=_config(token, host, port, peer_timeout_s))
        if saved is not None:  # (at once: no link is served before this returns)
            head_actor.take_back(saved)
    except BaseException:
        if system is not None:
            await system.shutdown()
        if saver is not None:
            await saver.aclose()
        if zygote is not None:
            await zygote.aclose()
        raise
    try:
        if saver is not None:
            saver.meta(session=session, uid=system.uid, token=token_identity(token),
                       node_id=node_id if with_node else "")
        proc = ClusterProcess(system, remoting, head, session, token)
        services = HeadContext(system, head, placement, token, session, dict(options or {}))
        await start_head_services(services)
        proc.info.update(services.info)
        if with_node:
            await asyncio.to_thread(open_store, node_id, session, options)  # objects/spill.py
            proc.node, proc.node_id = await _spawn_node(
                system, head, session=session, token=token, resources=resources,
                prestart=prestart, log_to_driver=log_to_driver, node_id=node_id, zygote=zygote,
                options=options,
            )
    except BaseException:
        await _undo_start(system, remoting, zygote)
        raise
    return proc


async def start_node(
    *,
    address: str,
    token: str,
    resources: Resources,
    host: str | None = None,
    prestart: int | None = None,
    log_to_driver: bool = True,
    peer_timeout_s: float | None = None,
    options: Mapping[str, Any] | None = None,
) -> ClusterProcess:
    """``options``: the node's start options (``actorflow start`` flags), as for a head.
    ``host``: where the node (and its workers) listen; by default :func:`reachable_host` of
    the head's ``address``."""
    host = host or reachable_host(address)
    zygote = await _launch_zygote(log_to_driver)
    try:
        await _import(_CLUSTER_MODULES)
        from actorflow.transport.remote import serve_system

        system = ActorSystem("node")
        remoting = await serve_system(system, config=_config(token, host, 0, peer_timeout_s))
    except BaseException:
        if zygote is not None:
            await zygote.aclose()
        raise
    try:
        node_id = secrets.token_hex(4)
        await system.spawn(lambda: Sweeper(node_id), name="sweeper")  # stops after the node
        head = await discover_head(remoting, address)
        info: ClusterInfo = await head.ask(GetClusterInfo(), timeout=30.0)
        proc = ClusterProcess(system, remoting, head, info.session, token)
        await asyncio.to_thread(open_store, node_id, info.session, options)  # objects/spill.py
        proc.node, proc.node_id = await _spawn_node(
            system, head, session=info.session, token=token, resources=resources,
            prestart=prestart, log_to_driver=log_to_driver, node_id=node_id, zygote=zygote,
            options=options,
        )
    except BaseException:
        await _undo_start(system, remoting, zygote)
        raise
    return proc


async def connect(address: str, token: str, *, host: str | None = None,
                  name: str = "driver") -> ClusterProcess:
    """Join the cluster at ``address`` as a client. Its leases and objects go through the
    first live node the head lists (the head's own node when it has one); the placement
    sends work on from there."""
    await _import(_SERVE_MODULES)
    from actorflow.transport.remote import serve_system

    system = ActorSystem(f"{name}-{os.getpid()}")
    remoting = await serve_system(
        system, config=_config(token, host or reachable_host(address), 0, None))
    try:
        head = await discover_head(remoting, address)
        info: ClusterInfo = await head.ask(GetClusterInfo(), timeout=30.0)
        proc = ClusterProcess(system, remoting, head, info.session, token)
        local = [n for n in info.nodes if n["alive"]]
        if local:
            chosen = local[0]
            proc.node, proc.node_id = chosen["ref"], chosen["node_id"]
        proc.info = {"nodes": info.nodes}
    except BaseException:
        await system.shutdown()
        await remoting.aclose()
        raise
    return proc
