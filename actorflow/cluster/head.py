"""The Head actor: the cluster's directory of nodes, actors, names and namespaces.

It decides nothing per task (leases go to nodes directly). For actors it keeps the record that
callers resolve: where the actor's current incarnation runs, or why it is dead (its records,
and their states: :mod:`actorflow.cluster.head_records`). Its other parts are mixins, one
concern each:

- :class:`~actorflow.cluster.head_nodes.HeadNodes`: nodes joining, rejoining and lost, and
  the cluster's views;
- :class:`~actorflow.cluster.head_lifetimes.HeadLifetimes`: handles, ``af.watch``,
  fate-sharing, supervised restarts;
- :class:`~actorflow.cluster.jobs_table.HeadJobs`: jobs (every driver is one): when a job
  ends, its non-detached actors are stopped as ``af.kill`` stops them;
- what a restart of the head keeps and takes back: :mod:`actorflow.cluster.head_restore`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actorflow._errors import ActorDiedError, NodeDiedError
from actorflow.cluster import head_restore
from actorflow.cluster.head_lifetimes import HeadLifetimes
from actorflow.cluster.head_nodes import HeadNodes
from actorflow.cluster.head_records import (
    ActorRecord,
    ActorState,
    Collect,
    HolderGone,
    NodeLost,
    NodeRecord,
    StartAt,
)
from actorflow.cluster.head_store import HeadSaver, SavedHead
from actorflow.cluster.holds import HandleHolds, HoldLedger, Watches
from actorflow.cluster.jobs_table import (
    DriverGone,
    EndJob,
    HeadJobs,
    JobsTable,
    KeepSubmitted,
    KeptSubmitted,
    RegisterJob,
)
from actorflow.cluster.protocol import (
    ActorDown,
    ActorLocation,
    ActorSpec,
    ActorStatus,
    ActorUp,
    ClusterInfo,
    CreateActor,
    GetClusterInfo,
    GetNamedActor,
    KillActor,
    ListState,
    PlaceTask,
    RegisterNode,
    ResolveActor,
    RestartActor,
    RetireActor,
    UnwatchActor,
    WaitActorDown,
    WatchActor,
)
from actorflow.runtime import ActorRef, ServiceActor

__all__ = ["ActorRecord", "ActorState", "Head"]

log = logging.getLogger("actorflow.head")


class Head(HeadLifetimes, HeadNodes, HeadJobs, ServiceActor):
    """See the module docstring."""

    max_concurrency = 100_000  # ResolveActor waits for actors to come up
    mailbox_size = 1 << 16

    def __init__(self, session: str, placement: ActorRef, saver: HeadSaver | None = None
                 ) -> None:
        self.session = session
        self.saver = saver  # the directory on disk (head_store.py), for a head that restarts
        self.placement = placement
        self.nodes: dict[str, NodeRecord] = {}
        self.actors: dict[str, ActorRecord] = {}
        self.names: dict[tuple[str, str], str] = {}
        self.aliases: dict[str, str] = {}  # get_if_exists hits: provisional id -> existing id
        self.closing = False
        self.holds = HoldLedger()  # who holds a handle of each actor (docs: actor lifetimes)
        self._watched: set[ActorRef] = set()  # holders whose end the head listens for
        self.watches = Watches()  # af.watch waits
        self.children: dict[str, set[str]] = {}  # creator id -> its non-detached children
        self.jobs = JobsTable()
        self.restored = False  # taken back from a store: nodes that register are asked more
        self.submitted: dict[str, bytes] = {}  # submitted jobs' rows a store kept (jobs service)

    def take_back(self, saved: SavedHead) -> None:
        """Take the cluster back from the store (once the system is served; a store that is
        empty: a head that starts afresh), and hand the placement its groups."""
        if not saved.empty:
            self.restored = True
            head_restore.restore(self, saved, head_restore.Kinds(
                ActorRecord, ActorState, NodeRecord, NodeLost))
        head_restore.keep_groups(self, saved)
        self.submitted = dict(saved.submitted)

    async def on_stop(self) -> None:
        if self.saver is not None:
            await self.saver.aclose()  # what is left is written

    def on_stop_requested(self) -> None:
        # resolvers waiting for actors to come up would hold the stop up: wake them to fail
        self.closing = True
        for actor_id, record in self.actors.items():
            self._changed(record)
            self.watches.settle(actor_id, ActorDiedError(record.spec.class_name,
                                                         "the cluster is shutting down"))

    def _id(self, actor_id: str) -> str:
        return self.aliases.get(actor_id, actor_id)


    async def handle(self, message: Any) -> Any:
        kind = type(message)
        if kind is HandleHolds:
            self._handle_holds(message)
            return None
        if kind is ResolveActor:
            return await self._resolve(
                self._id(message.actor_id), message.after_incarnation, message.fail_if_down
            )
        if kind is ActorUp:
            self._up(message)
            return None
        if kind is ActorDown:
            self._down(message)
            return None
        if kind is CreateActor:
            return await self._create(message.spec, message.get_if_exists)
        if kind is GetNamedActor:
            return self._named(message.name, message.namespace)
        if kind is ActorStatus:
            record = self.actors.get(self._id(message.actor_id))
            if record is None:
                return ("DEAD", ActorDiedError(message.actor_id, "no such actor"))
            return (record.state.value, record.death)
        if kind is KillActor:
            await self._kill(message)
            return None
        if kind is WatchActor:
            return await self._watch(message)
        if kind is UnwatchActor:
            self.watches.drop(message.watch_id)
            return None
        if kind is WaitActorDown:
            return await self._wait_down(self._id(message.actor_id), message.generation)
        if kind is RestartActor:
            return await self._restart(self._id(message.actor_id))
        if kind is RetireActor:
            self._retire(self._id(message.actor_id), message.error)
            return None
        if kind is NodeLost:
            await self._node_lost(message.node_id, message.notice)
            return None
        if kind is HolderGone:
            self._watched.discard(message.holder)
            self.watches.drop_watcher(message.holder)
            for actor_id in self.holds.holder_gone(message.holder):
                self._maybe_collect(actor_id)
            return None
        if kind is Collect:
            await self._collect(message.actor_id)
            return None
        if kind is RegisterNode:
            held = await head_restore.bundles_held(self, message) if self.restored else None
            self._register(message, held)
            return None
        if kind is GetClusterInfo:
            return ClusterInfo(self.session, [
                {"node_id": n.node_id, "ref": n.ref, "address": n.address, "alive": n.alive}
                for n in self.nodes.values()
            ])
        if kind is ListState:
            return await self._list(message.what)
        if kind is KeepSubmitted:
            head_restore.save_submitted(self, message.job_id, message.row)
            return None
        if kind is KeptSubmitted:
            return tuple(self.submitted.values())
        if kind is EndJob:
            await self.end_job(message.job_id, "SUCCEEDED", "its driver called af.shutdown()")
            head_restore.save_job(self, message.job_id)
            return None
        if kind is DriverGone:
            await self.end_job(message.job_id, "FAILED",
                               "its driver's process ended without af.shutdown()")
            head_restore.save_job(self, message.job_id)
            return None
        handled, answer = self._jobs_message(message)
        if handled:
            if kind is RegisterJob:
                head_restore.save_job(self, message.job_id)
            return answer
        raise TypeError(f"head got an unexpected {kind.__name__}")

    # -- actors --------------------------------------------------------------------------------

    async def _create(self, spec: ActorSpec, get_if_exists: bool) -> tuple[str, ActorSpec]:
        known = self.actors.get(spec.actor_id)
        if known is not None:  # asked again (its answer was lost with a head that restarted)
            return spec.actor_id, known.spec
        if spec.name is not None:
            key = (spec.namespace, spec.name)
            existing = self.names.get(key)
            if existing is not None:
                if get_if_exists:
                    self.aliases[spec.actor_id] = existing
                    self.holds.forget(spec.actor_id)  # (named: its handles do not count)
                    return existing, self.actors[existing].spec
                raise ValueError(
                    f"an actor named {spec.name!r} already exists in namespace "
                    f"{spec.namespace!r}; pass get_if_exists=True to get it, or pick another name"
                )
        if spec.creator:
            self._adopt(spec)  # (raises if the creator is dead: nothing is registered yet)
        if spec.name is not None:
            self.names[(spec.namespace, spec.name)] = spec.actor_id
        # the record exists before the placement is awaited: a lookup by name meanwhile
        # finds the actor (PENDING), and calls wait for it to come up
        self.actors[spec.actor_id] = ActorRecord(spec)
        try:
            node = await self._place(spec)
        except BaseException:
            del self.actors[spec.actor_id]
            if spec.name is not None:
                self.names.pop((spec.namespace, spec.name), None)
            self.children.get(spec.creator, set()).discard(spec.actor_id)
            raise
        node.start(spec)
        self._maybe_collect(spec.actor_id)  # its creator may have dropped it already
        return spec.actor_id, spec

    async def _place(self, spec: ActorSpec) -> StartAt:
        _, node, bundle = await self.placement.ask(
            PlaceTask(spec.demand, spec.strategy, None, f"actor {spec.class_name}")
        )
        return StartAt(node, bundle)

    def _named(self, name: str, namespace: str) -> tuple[str, ActorSpec]:
        actor_id = self.names.get((namespace, name))
        record = self.actors.get(actor_id) if actor_id is not None else None
        if record is None or record.job_ended:  # (one being stopped with its job is gone)
            raise ValueError(
                f"no actor named {name!r} in namespace {namespace!r}; check the name and the "
                "namespace (af.init(namespace=...) or .options(namespace=...))"
            )
        assert actor_id is not None
        return actor_id, record.spec

    def _up(self, msg: ActorUp) -> None:
        record = self.actors.get(msg.actor_id)
        if record is None or record.state is ActorState.DEAD or self._fenced(msg.node_id):
            return
        if record.generation > 0:
            record.restarts += 1
        record.generation += 1
        record.state = ActorState.ALIVE
        record.location = ActorLocation(msg.actor_id, msg.worker, record.generation, msg.node_id)
        record.node_id = msg.node_id
        record.pid = msg.pid
        self._changed(record)
        if record.collecting or record.orphaned or record.job_ended:  # its handles were all
            self.ref.tell_nowait(Collect(msg.actor_id))  # dropped (or its creator or job
            # ended) while it started

    def _down(self, msg: ActorDown) -> None:
        record = self.actors.get(msg.actor_id)
        if record is None or record.state is ActorState.DEAD or self._fenced(msg.node_id):
            return
        record.last_error = msg.error
        if msg.final and record.spec.supervised:
            # its tree decides: restart it (RestartActor) or retire it (RetireActor)
            if record.state is not ActorState.ALIVE:
                record.failed_attempt = msg.error or ActorDiedError(
                    record.spec.class_name, "it ended while starting")
            record.state = ActorState.RESTARTING
            record.location = None
        elif msg.final:
            record.state = ActorState.DEAD
            error = msg.error
            if not isinstance(error, ActorDiedError):
                reason = ("its node died" if isinstance(error, NodeDiedError)
                          else "its creator's process ended"
                          if error is None and record.orphaned
                          else "its job ended" if error is None and record.job_ended
                          else "every handle to it was dropped"
                          if error is None and record.collecting
                          else "it was killed" if error is None else "it ended")
                error = ActorDiedError(record.spec.class_name, reason,
                                       error if error is not None else record.orphaned)
            record.death = error
            self.watches.settle(msg.actor_id, error)
            self.children.get(record.spec.creator, set()).discard(msg.actor_id)
            self.holds.forget(msg.actor_id)
            record.location = None
            spec = record.spec
            key = (spec.namespace, spec.name or "")
            if spec.name is not None and self.names.get(key) == spec.actor_id:
                del self.names[key]
        else:
            record.state = ActorState.RESTARTING
        self._changed(record)
        # an ActorDown says the actor's process ended (or never began): its children go too
        why = record.death or msg.error
        self._orphan(msg.actor_id, why if isinstance(why, ActorDiedError) else ActorDiedError(
            record.spec.class_name, "its process ended", why))

    def _changed(self, record: ActorRecord) -> None:
        record.changed.set()
        record.changed = asyncio.Event()
        head_restore.save_actor(self, record)

    async def _resolve(self, actor_id: str, after: int, fail_if_down: bool = False
                       ) -> ActorLocation:
        while True:
            record = self.actors.get(actor_id)
            if record is None:
                raise ActorDiedError(actor_id, "no such actor in this cluster")
            if self.closing:
                raise ActorDiedError(record.spec.class_name, "the cluster is shutting down")
            if record.state is ActorState.DEAD:
                d = record.death
                assert d is not None
                raise ActorDiedError(d.actor, d.reason, d.cause)
            if fail_if_down and record.failed_attempt is not None:
                raise ActorDiedError(record.spec.class_name, "it failed to start",
                                     record.failed_attempt)
            loc = record.location
            if record.state is ActorState.ALIVE and loc is not None and loc.incarnation > after:
                return loc
            await record.changed.wait()

    async def _kill(self, msg: KillActor) -> None:
        record = self.actors.get(self._id(msg.actor_id))
        if record is None or record.state is ActorState.DEAD:
            return
        node = self.nodes.get(record.node_id or "") if record.node_id else None
        targets = [node] if node is not None else list(self.nodes.values())
        for target in targets:
            await target.ref.ask(KillActor(record.spec.actor_id, msg.no_restart))

    # -- views ---------------------------------------------------------------------------------
