"""The head's side of a restart: what it saves, what it takes back, how nodes rejoin.

:class:`~actorflow.cluster.head.Head` calls these (its module stays about the directory):

- :func:`save_actor`, :func:`save_node`, :func:`save_job` mark a record changed in the head's
  :class:`~actorflow.cluster.head_store.HeadSaver` (written in batches, off the loop);
- :func:`restore` rebuilds the directory from a store as the head starts: nodes (watched again:
  one that is gone is declared lost, as any lost node), actors (ALIVE ones keep their location,
  so the handles that callers hold go on reaching them), names, creators' children, jobs (a
  running job's driver is watched again). The head's own node of the last run died with it:
  its actors restart elsewhere within their ``max_restarts``, as after any node's death;
- :func:`rejoin` applies a node's report of its live actors when it registers again;
- :func:`keep_groups` hands the placement the way to keep its placement groups in the store,
  and the groups kept there; :func:`bundles_held` asks a node that registers with a restarted
  head which bundles it holds (the placement checks its groups against them).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actorflow._errors import ActorDiedError, ActorflowError
from actorflow.cluster.head_store import SavedHead, dumps, loads
from actorflow.cluster.jobs_table import DriverGone, JobRow
from actorflow.cluster.protocol import ActorDown, ActorLocation, ActorUp, NodeInfo, RegisterNode
from actorflow.placement.messages import KeepGroups
from actorflow.runtime import ActorRef, ExitReason, Terminated, current_system

if TYPE_CHECKING:
    from actorflow.cluster.head import Head
    from actorflow.cluster.head_records import ActorRecord, ActorState, NodeRecord

__all__ = [
    "Kinds",
    "bundles_held",
    "keep_groups",
    "rejoin",
    "restore",
    "save_actor",
    "save_job",
    "save_node",
    "save_submitted",
]

log = logging.getLogger("actorflow.head")

#: The holder of the handles of the anonymous actors a restarted head takes back.
RESTORED_HOLDER = "held before the head restarted"
#: Seconds a restarted head gives the nodes to register again before it restarts the actors
#: of its own node of the last run (which died with it) on them.
REJOIN_WAIT_S = 5.0


# -- saving -------------------------------------------------------------------------------------


def _actor_row(record: ActorRecord) -> bytes | None:
    if record.state.value == "DEAD":
        return None
    loc = record.location
    return dumps({
        "spec": record.spec, "state": record.state.value, "node_id": record.node_id,
        "pid": record.pid, "restarts": record.restarts, "generation": record.generation,
        "worker": loc.worker if loc is not None else None,
        "incarnation": loc.incarnation if loc is not None else 0,
    })


def _node_row(record: NodeRecord) -> bytes:
    return dumps({"node_id": record.node_id, "ref": record.ref, "address": record.address,
                  "resources": record.resources, "alive": record.alive})


def _job_row(row: JobRow) -> bytes:
    return dumps(row)


def save_actor(head: Head, record: ActorRecord) -> None:
    if head.saver is not None:
        head.saver.mark("actors", record.spec.actor_id, record, _actor_row)


def save_node(head: Head, record: NodeRecord) -> None:
    if head.saver is not None:
        head.saver.mark("nodes", record.node_id, record, _node_row)


def _as_is(row: bytes | None) -> bytes | None:
    return row


def save_submitted(head: Head, job_id: str, row: bytes | None) -> None:
    """A submitted job's row, pickled by the ``jobs`` service (None: forget it)."""
    if row is None:
        head.submitted.pop(job_id, None)
    else:
        head.submitted[job_id] = row
    if head.saver is not None:
        head.saver.mark("submitted", job_id, row, _as_is)


def save_job(head: Head, job_id: str) -> None:
    row = head.jobs.rows.get(job_id)
    if head.saver is not None and row is not None:
        head.saver.mark("jobs", job_id, row, _job_row)


# -- taking it back -----------------------------------------------------------------------------


def _load_all(rows: dict[str, bytes], what: str) -> list[Any]:
    out = []
    for key, row in rows.items():
        try:
            out.append(loads(row))
        except Exception as exc:  # a class that cannot be imported here any more
            log.warning("the saved %s %s cannot be read back (%s): left out", what, key, exc)
    return out


@dataclass(frozen=True, slots=True)
class Kinds:
    """The head's record classes (passed in: this module does not import the head's)."""

    actor: type[ActorRecord]
    state: type[ActorState]
    node: type[NodeRecord]
    node_lost: Callable[[str, Terminated], Any]


def restore(head: Head, saved: SavedHead, kinds: Kinds) -> None:
    """Rebuild ``head``'s directory from ``saved`` (see the module docstring). The nodes that
    died with the last run of the head are declared lost :data:`REJOIN_WAIT_S` later, when
    the other nodes have registered again (their actors then restart there)."""
    context = current_system.set(head.system)  # (refs are rebuilt in the head's system)
    try:
        _restore(head, saved, kinds)
    finally:
        current_system.reset(context)


def _restore(head: Head, saved: SavedHead, kinds: Kinds) -> None:
    own_uid = head.system.uid
    dead_nodes: list[str] = []
    renamed: dict[str, str] = {}
    for n in _load_all(saved.nodes, "node"):
        ref: ActorRef = n["ref"]
        record = kinds.node(n["node_id"], ref, n["address"], n["resources"],
                            alive=bool(n["alive"]))
        if record.alive and ref.slot.system.uid == own_uid:
            # the head's own node died with it; the new one takes its id back (bootstrap.py)
            # and registers itself: the old one is kept as a node of its own that is lost
            record.node_id = renamed[n["node_id"]] = f"{n['node_id']}-before-restart"
            dead_nodes.append(record.node_id)
        elif record.alive:
            head.watch_node(record.node_id, ref)
        head.nodes[record.node_id] = record
    for a in _load_all(saved.actors, "actor"):
        spec = a["spec"]
        node_id = renamed.get(a["node_id"], a["node_id"])
        actor = kinds.actor(spec, state=kinds.state(a["state"]), node_id=node_id,
                            pid=a["pid"], restarts=a["restarts"], generation=a["generation"])
        if a["worker"] is not None and node_id is not None:
            actor.location = ActorLocation(spec.actor_id, a["worker"], a["incarnation"],
                                           node_id)
        head.actors[spec.actor_id] = actor
        if spec.name is None and spec.lifetime != "detached" and not spec.supervised:
            # who holds its handles was not kept: it is held for good (until its job ends, or
            # af.kill), never taken for dropped by the first release heard of
            head.holds.apply(RESTORED_HOLDER, held=(spec.actor_id,))
        if spec.name is not None:
            head.names[(spec.namespace, spec.name)] = spec.actor_id
        if spec.creator and spec.lifetime != "detached":
            head.children.setdefault(spec.creator, set()).add(spec.actor_id)
    for row in _load_all(saved.jobs, "job"):
        head.jobs.rows[row.job_id] = row
        if row.status == "RUNNING":
            _watch_driver(head, row)
    loop = asyncio.get_running_loop()
    for node_id in dead_nodes:
        notice = Terminated(head.nodes[node_id].ref, ExitReason.PEER_LOST, None, 0)
        loop.call_later(REJOIN_WAIT_S, _tell, head, kinds.node_lost(node_id, notice))
    log.info("head directory restored: %d node(s), %d actor(s), %d job(s)",
             len(head.nodes), len(head.actors), len(head.jobs.rows))


def _tell(head: Head, message: Any) -> None:
    try:
        head.ref.tell_nowait(message)
    except ActorflowError:
        pass  # the head is stopping


def _watch_driver(head: Head, row: JobRow) -> None:
    job_id = row.job_id

    def gone(_notice: Terminated) -> None:
        try:
            head.ref.tell_nowait(DriverGone(job_id))
        except ActorflowError:
            pass  # the head itself is stopping

    head.system.on_terminated(row.driver, gone)


def rejoin(head: Head, msg: RegisterNode) -> None:
    """A node registered again after a restart of the head, naming the actors it runs
    (``msg.actors``: ``(actor_id, worker ref or None while it restarts, pid)``): their records
    are ALIVE there again; the head's records of actors on that node that it does not run
    any more end (their process ended while the head was away)."""
    reported = {actor_id: (worker, pid) for actor_id, worker, pid in msg.actors}
    for actor_id, (worker, pid) in reported.items():
        record = head.actors.get(actor_id)
        if record is None or record.state.value == "DEAD":
            continue  # unknown here (made in the head's last moments): it runs on unseen
        if worker is None:  # restarting there: its ActorUp follows
            if record.state.value == "ALIVE":
                head._down(ActorDown(actor_id, -1, False))
            continue
        loc = record.location
        if (record.state.value == "ALIVE" and loc is not None and record.pid == pid
                and loc.worker == worker):
            continue  # as saved
        record.state = record.state.__class__("RESTARTING")
        head._up(ActorUp(actor_id, worker, 0, msg.node_id, pid))
    for actor_id, record in list(head.actors.items()):
        if (record.node_id == msg.node_id and actor_id not in reported
                and record.state.value == "ALIVE"):
            head._down(ActorDown(actor_id, -1, True, ActorDiedError(
                record.spec.class_name,
                f"its process on node {msg.node_id} ended while the head was away")))


# -- placement groups -----------------------------------------------------------------------------


def keep_groups(head: Head, saved: SavedHead) -> None:
    """Hand the placement (in this process) the way to mark its groups in the store, and the
    groups the store kept."""
    saver = head.saver
    if saver is None:
        return
    head.placement.tell_nowait(KeepGroups(functools.partial(saver.mark, "groups"),
                                          tuple(saved.groups.values()), not saved.empty))


#: Seconds a restarted head waits for a node that registers to say which bundles it holds.
HELD_ASK_S = 5.0


async def bundles_held(head: Head, msg: RegisterNode) -> tuple[tuple[str, int], ...] | None:
    """The placement group bundles ``(group_id, index)`` the registering node holds (None when
    it could not say: its kept bundles are then taken as held)."""
    try:
        info: dict[str, Any] = await msg.node.ask(NodeInfo(), timeout=HELD_ASK_S)
    except Exception as exc:
        log.warning("node %s could not say which bundles it holds: %s", msg.node_id, exc)
        return None
    held = []
    for key in info.get("bundles", {}):
        group_id, _, index = str(key).rpartition("[")
        held.append((group_id, int(index.rstrip("]"))))
    return tuple(held)
