"""Starting the cluster's processes and joining them.

- :func:`start_head`: an ActorSystem that listens (loopback unless told), the Head, and (by
  default) a Node of its own. The embedded default cluster of ``af.init()`` is this, with port 0.
- :func:`start_node`: a Node that joins a head at ``address``: it registers, and the head
  watches it (a node whose link goes silent is declared dead within the transport's
  ``peer_timeout_s``).
- :func:`connect`: a client (a driver, or ``actorflow status``) of a running cluster.

A process that knows only a head's address finds it by dialing once: the authenticated
handshake names the peer system's uid, and the head's actor has the well-known id ``head``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from actorflow.cluster.head import Head
from actorflow.cluster.node import Node
from actorflow.cluster.protocol import ClusterInfo, GetClusterInfo, RegisterNode
from actorflow.placement.actor import Placement
from actorflow.placement.resources import Resources
from actorflow.runtime import ActorRef, ActorSystem, restore_ref
from actorflow.transport.config import TransportConfig
from actorflow.transport.remote import Remoting, serve_system

__all__ = [
    "ClusterProcess",
    "connect",
    "discover_head",
    "placement_of",
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


def _config(token: str, host: str, port: int, peer_timeout_s: float | None) -> TransportConfig:
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
    return restore_ref(uid, address, "head", "head")


def placement_of(head: ActorRef) -> ActorRef:
    """The Placement actor beside ``head`` (same process, well-known id ``placement``)."""
    system = head._slot.system
    return restore_ref(system.uid, system.address, "placement", "placement")


async def _spawn_node(
    system: ActorSystem, head: ActorRef, *, session: str, token: str, resources: Resources,
    prestart: int | None, log_to_driver: bool, node_id: str | None = None,
) -> tuple[ActorRef, str]:
    node_id = node_id or secrets.token_hex(4)
    cpus = resources["CPU"] // 10_000
    workers = prestart if prestart is not None else max(1, min(cpus, 64))
    placement = placement_of(head)
    node = await system.spawn(
        lambda: Node(node_id=node_id, resources=resources, session=session, head=head,
                     placement=placement, token=token, log_to_driver=log_to_driver,
                     prestart=workers),
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
) -> ClusterProcess:
    session = secrets.token_hex(4)
    system = ActorSystem(f"{name}-{session}")
    remoting = await serve_system(system, config=_config(token, host, port, peer_timeout_s))
    try:
        placement = await system.spawn(Placement, name="placement", well_known=True)
        head = await system.spawn(lambda: Head(session, placement), name="head", well_known=True)
        proc = ClusterProcess(system, remoting, head, session, token)
        if with_node:
            proc.node, proc.node_id = await _spawn_node(
                system, head, session=session, token=token, resources=resources,
                prestart=prestart, log_to_driver=log_to_driver,
            )
    except BaseException:
        await system.shutdown()
        await remoting.aclose()
        raise
    return proc


async def start_node(
    *,
    address: str,
    token: str,
    resources: Resources,
    host: str = "127.0.0.1",
    prestart: int | None = None,
    log_to_driver: bool = True,
    peer_timeout_s: float | None = None,
) -> ClusterProcess:
    system = ActorSystem("node")
    remoting = await serve_system(system, config=_config(token, host, 0, peer_timeout_s))
    try:
        head = await discover_head(remoting, address)
        info: ClusterInfo = await head.ask(GetClusterInfo(), timeout=30.0)
        proc = ClusterProcess(system, remoting, head, info.session, token)
        proc.node, proc.node_id = await _spawn_node(
            system, head, session=info.session, token=token, resources=resources,
            prestart=prestart, log_to_driver=log_to_driver,
        )
    except BaseException:
        await system.shutdown()
        await remoting.aclose()
        raise
    return proc


async def connect(address: str, token: str, *, host: str = "127.0.0.1",
                  name: str = "driver") -> ClusterProcess:
    """Join the cluster at ``address`` as a client. Its leases and objects go through the
    first live node the head lists (the head's own node when it has one); the placement
    sends work on from there."""
    system = ActorSystem(f"{name}-{os.getpid()}")
    remoting = await serve_system(system, config=_config(token, host, 0, None))
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
