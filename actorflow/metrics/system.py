"""actorflow's own metrics, named after Ray's with the ``actorflow_`` prefix.

Read at each scrape through the state API (:class:`~actorflow.state.client.StateClient`):
the head's actors, and each live node's own figures (resources in use, shared-memory segments
and spilled bytes, the machine's CPU and memory from ``/proc``); tasks come from the head's
event store (:mod:`.tasks`). What each family holds:

=====================================  ===========================================  ========
name                                   labels                                       kind
=====================================  ===========================================  ========
``actorflow_cluster_active_nodes``     (none)                                       gauge
``actorflow_node_cpu_utilization``     ``NodeId`` (percent of all CPUs, 0-100)      gauge
``actorflow_node_mem_used``            ``NodeId`` (bytes)                           gauge
``actorflow_node_mem_total``           ``NodeId`` (bytes)                           gauge
``actorflow_resources``                ``Name``, ``State`` (USED | AVAILABLE)       gauge
``actorflow_object_store_memory``      ``Location`` (MMAP_SHM | SPILLED), ``NodeId``  gauge
``actorflow_actors``                   ``Name`` (class), ``State``                  gauge
``actorflow_tasks``                    ``Name``, ``State``                          gauge
``actorflow_task_duration_seconds``    ``Name``                                     histogram
=====================================  ===========================================  ========
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from actorflow._limits import UNLIMITED
from actorflow.runtime import ActorRef
from actorflow.state.client import StateClient

__all__ = ["SystemSnapshot", "gather", "system_families"]

#: How long a scrape waits for the head's views and for each node's figures.
ASK_TIMEOUT_S = 5.0


@dataclass
class SystemSnapshot:
    """What one scrape read of the cluster."""

    nodes: list[dict[str, Any]] = field(default_factory=list)  # live nodes' own figures
    active_nodes: int = 0
    actors: list[dict[str, Any]] = field(default_factory=list)


async def gather(head: ActorRef) -> SystemSnapshot:
    """Read the cluster's state for one scrape, through the state API (as the CLI and the
    dashboard do): each live node's own figures, and the head's actors."""
    client = StateClient(head, timeout=ASK_TIMEOUT_S)
    nodes, actors = await asyncio.gather(client.node_details(),
                                         client.list_actors(limit=UNLIMITED))
    return SystemSnapshot(nodes=nodes, active_nodes=len(nodes), actors=actors)


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def system_families(snap: SystemSnapshot) -> Iterator[Metric]:
    """The cluster's families of one snapshot (tasks come from :mod:`.tasks`)."""
    yield GaugeMetricFamily("actorflow_cluster_active_nodes",
                            "Nodes alive in the cluster", value=snap.active_nodes)

    cpu = _gauge("actorflow_node_cpu_utilization",
                 "CPU use of the node's machine since the previous reading, percent of all "
                 "its CPUs", ["NodeId"])
    mem = _gauge("actorflow_node_mem_used", "Memory in use on the node's machine, bytes",
                 ["NodeId"])
    mem_total = _gauge("actorflow_node_mem_total", "Memory of the node's machine, bytes",
                       ["NodeId"])
    store = _gauge("actorflow_object_store_memory",
                   "Bytes of objects by where they lie: MMAP_SHM (shared-memory segments "
                   "of the node's processes), SPILLED (on disk)", ["Location", "NodeId"])
    used: defaultdict[str, float] = defaultdict(float)
    available: defaultdict[str, float] = defaultdict(float)
    for node in snap.nodes:
        node_id = str(node.get("node_id"))
        host = node.get("host") or {}
        if host.get("cpu_percent") is not None:
            cpu.add_metric([node_id], float(host["cpu_percent"]))
        if host.get("mem_used") is not None:
            mem.add_metric([node_id], float(host["mem_used"]))
        if host.get("mem_total") is not None:
            mem_total.add_metric([node_id], float(host["mem_total"]))
        shm_bytes = sum(int(o.get("bytes", 0)) for o in node.get("object_list") or ())
        store.add_metric(["MMAP_SHM", node_id], float(shm_bytes))
        spilled = node.get("spilled_bytes")
        if isinstance(spilled, int | float):
            store.add_metric(["SPILLED", node_id], float(spilled))
        total = node.get("resources") or {}
        free = node.get("available") or {}
        for name, amount in total.items():
            left = float(free.get(name, 0.0))
            available[name] += left
            used[name] += float(amount) - left
    yield from (cpu, mem, mem_total, store)

    resources = _gauge("actorflow_resources", "Logical resources of the live nodes, by state",
                       ["Name", "State"])
    for name in sorted(used.keys() | available.keys()):
        resources.add_metric([name, "USED"], used[name])
        resources.add_metric([name, "AVAILABLE"], available[name])
    yield resources

    actors = _gauge("actorflow_actors", "Actors by class and state", ["Name", "State"])
    by_state: Tally[tuple[str, str]] = Tally(
        (str(a.get("class_name")), str(a.get("state"))) for a in snap.actors)
    for (name, state), count in sorted(by_state.items()):
        actors.add_metric([name, state], float(count))
    yield actors
