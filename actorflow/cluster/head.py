"""The Head actor: the cluster's directory of nodes, actors, names and namespaces.

It decides nothing per task (leases go to nodes directly). For actors it keeps the record that
callers resolve: where the actor's current incarnation runs, or why it is dead. Each record
moves through::

    PENDING --ActorUp--> ALIVE --ActorDown(final=False)--> RESTARTING --ActorUp--> ALIVE ...
       |                   |                                   |
       +-------------------+----ActorDown(final=True)----------+--> DEAD (with the cause)

``af.watch`` waits (WatchActor) are answered when a record turns DEAD, never on a restart;
they sit in the head's waiter table (``holds.Watches``) until then, or until the watcher
cancels (UnwatchActor) or its process ends.

Fate-sharing: an actor created by another actor (``ActorSpec.creator``) is that creator's
child unless detached. When the creator's process ends (it died for good, or it is about to
restart: Ray's rule, the children were owned by the process that is gone) its children, and
theirs, are stopped as ``af.kill`` stops an actor; detached ones live on.

Jobs (every driver is one) are kept by :class:`~actorflow.cluster.jobs_table.HeadJobs`: when a
job ends, its non-detached actors are stopped as ``af.kill`` stops them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from dataclasses import dataclass, field
from typing import Any

from actorflow._errors import ActorDiedError, ActorflowError, NodeDiedError
from actorflow.cluster import head_restore
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
    NodeInfo,
    PlaceTask,
    RegisterNode,
    ResolveActor,
    RestartActor,
    RetireActor,
    StartActor,
    UnwatchActor,
    WaitActorDown,
    WatchActor,
)
from actorflow.placement.messages import AddNode, NodeGone
from actorflow.placement.resources import Resources
from actorflow.runtime import ActorRef, ServiceActor, Terminated

__all__ = ["ActorRecord", "ActorState", "Head"]

log = logging.getLogger("actorflow.head")


def _unsupervised(spec: ActorSpec) -> ActorSpec:
    return dataclasses.replace(spec, supervised=False)


class ActorState(enum.Enum):
    PENDING = "PENDING"
    ALIVE = "ALIVE"
    RESTARTING = "RESTARTING"
    DEAD = "DEAD"


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where the placement put an actor: a node, and maybe a placement group bundle."""

    node: ActorRef
    bundle: tuple[str, int] | None

    def start(self, spec: ActorSpec) -> None:
        self.node.tell_nowait(StartActor(spec, self.bundle))


@dataclass(frozen=True, slots=True)
class _HolderGone:
    holder: ActorRef


@dataclass(frozen=True, slots=True)
class _Collect:
    actor_id: str


@dataclass(frozen=True, slots=True)
class _NodeLost:
    node_id: str
    notice: Terminated


@dataclass(slots=True)
class _NodeRecord:
    node_id: str
    ref: ActorRef
    address: str | None
    resources: Resources
    alive: bool = True


@dataclass(slots=True)
class ActorRecord:
    spec: ActorSpec
    state: ActorState = ActorState.PENDING
    location: ActorLocation | None = None
    death: ActorDiedError | None = None
    node_id: str | None = None
    pid: int | None = None
    restarts: int = 0
    generation: int = 0  # counts incarnations cluster-wide (the head is the authority)
    last_error: BaseException | None = None
    failed_attempt: BaseException | None = None  # a supervised start that ended
    collecting: bool = False  # no handle to it is left: it is being stopped
    orphaned: BaseException | None = None  # its creator's process ended (why): being stopped
    job_ended: bool = False  # its job ended: being stopped
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Head(HeadJobs, ServiceActor):
    """See the module docstring."""

    max_concurrency = 100_000  # ResolveActor waits for actors to come up
    mailbox_size = 1 << 16

    def __init__(self, session: str, placement: ActorRef, saver: HeadSaver | None = None
                 ) -> None:
        self.session = session
        self.saver = saver  # the directory on disk (head_store.py), for a head that restarts
        self.placement = placement
        self.nodes: dict[str, _NodeRecord] = {}
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
                ActorRecord, ActorState, _NodeRecord, _NodeLost))
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
        if kind is _NodeLost:
            await self._node_lost(message.node_id, message.notice)
            return None
        if kind is _HolderGone:
            self._watched.discard(message.holder)
            self.watches.drop_watcher(message.holder)
            for actor_id in self.holds.holder_gone(message.holder):
                self._maybe_collect(actor_id)
            return None
        if kind is _Collect:
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

    # -- membership ----------------------------------------------------------------------------

    def _register(self, msg: RegisterNode, held: tuple[tuple[str, int], ...] | None) -> None:
        known = self.nodes.get(msg.node_id)
        if msg.rejoin and known is not None and not known.alive:  # fenced: never comes back
            raise NodeDiedError(f"node {msg.node_id} was declared dead; its actors run elsewhere")
        record = _NodeRecord(msg.node_id, msg.node, msg.address, msg.resources)
        self.nodes[msg.node_id] = record
        head_restore.save_node(self, record)
        self.placement.tell_nowait(AddNode(msg.node_id, msg.node, msg.resources, held))
        if msg.rejoin:  # again, after a restart of the head: its actors run on
            head_restore.rejoin(self, msg)
        if known is None or not known.alive or known.ref != msg.node:
            self.watch_node(msg.node_id, msg.node)

    def watch_node(self, node_id: str, node: ActorRef) -> None:
        """Declare the node lost when its process ends or its link goes silent."""

        def lost(notice: Terminated) -> None:
            try:
                self.placement.tell_nowait(NodeGone(node_id))
                self.ref.tell_nowait(_NodeLost(node_id, notice))
            except ActorflowError:
                pass  # the cluster is stopping: the placement or the head itself is gone

        self.system.on_terminated(node, lost)

    async def _node_lost(self, node_id: str, notice: Terminated) -> None:
        """A node stopped or went silent: its resources leave the cluster; its actors restart
        elsewhere while their max_restarts allows, else die with NodeDiedError."""
        record = self.nodes.get(node_id)
        if record is None or not record.alive:
            return
        record.alive = False
        head_restore.save_node(self, record)
        if notice.reason.abnormal and not self.closing:
            log.warning("node %s is gone (%s)", node_id, notice.reason.value)
        # a snapshot: actors are created (and placed) while this awaits their new places
        for actor in list(self.actors.values()):
            if actor.node_id != node_id or actor.state is ActorState.DEAD:
                continue
            spec = actor.spec
            cause = NodeDiedError(f"node {node_id} died ({notice.reason.value})")
            left = spec.max_restarts < 0 or actor.restarts < spec.max_restarts
            if left and not self.closing and any(n.alive for n in self.nodes.values()):
                if spec.max_restarts >= 0:  # restarts count cluster-wide, as in Ray
                    spec = dataclasses.replace(
                        spec, max_restarts=max(0, spec.max_restarts - actor.restarts - 1))
                actor.state = ActorState.RESTARTING
                actor.location = None
                actor.node_id = None
                self._changed(actor)
                self._orphan(spec.actor_id,
                             ActorDiedError(spec.class_name, "its node died", cause))
                try:
                    (await self._place(spec)).start(spec)
                except Exception as exc:
                    self._down(ActorDown(spec.actor_id, -1, True, exc))
            else:
                self._down(ActorDown(spec.actor_id, -1, True, cause))

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

    def _fenced(self, node_id: str) -> bool:
        """Is ``node_id`` a node this head declared dead? What it says of its actors is stale:
        they were restarted elsewhere or died with it (DESIGN.md, fencing)."""
        node = self.nodes.get(node_id) if node_id else None
        return node is not None and not node.alive

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
            self.ref.tell_nowait(_Collect(msg.actor_id))  # dropped (or its creator or job
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

    # -- lifetimes: actors nobody holds a handle of ----------------------------------------------

    def _handle_holds(self, msg: HandleHolds) -> None:
        holder = msg.holder
        self._watch_process(holder)
        aliases = self.aliases
        if aliases:  # a handle got by get_if_exists names its provisional id
            msg = HandleHolds(
                holder, tuple(self._id(a) for a in msg.held),
                tuple(self._id(a) for a in msg.released),
                tuple((self._id(a), t) for a, t in msg.lent),
                tuple((self._id(a), t) for a, t in msg.taken))
        for actor_id in self.holds.apply(holder, msg.held, msg.released, msg.lent, msg.taken):
            self._maybe_collect(actor_id)

    def _watch_process(self, holder: Any) -> None:
        """Listen for the end of ``holder``'s process (a Core's object owner): it then holds
        no handle and waits in no af.watch."""
        if holder in self._watched or not isinstance(holder, ActorRef):
            return
        self._watched.add(holder)

        def gone(_notice: Terminated) -> None:
            try:
                self.ref.tell_nowait(_HolderGone(holder))
            except ActorflowError:
                pass  # the head itself is stopping

        self.system.on_terminated(holder, gone)

    def _maybe_collect(self, actor_id: str) -> None:
        """Stop the actor if no handle to it is left anywhere and it is one that lives only
        as long as its handles: anonymous, not detached, not in an af.supervise tree."""
        record = self.actors.get(actor_id)
        if record is None or record.collecting or record.state is ActorState.DEAD:
            return  # (not created yet: its creation checks again)
        spec = record.spec
        if (spec.name is not None or spec.lifetime == "detached" or spec.supervised
                or not self.holds.unheld(actor_id)):
            return
        record.collecting = True
        if record.state is not ActorState.PENDING:  # a pending one is stopped once up
            self.ref.tell_nowait(_Collect(actor_id))

    def _stop_for_job(self, record: ActorRecord) -> None:
        """Its job ended: stop it (a pending one once it is up), for good."""
        record.spec = _unsupervised(record.spec)  # (its tree, if any, ended with the job)
        if record.state is not ActorState.PENDING:
            self.ref.tell_nowait(_Collect(record.spec.actor_id))

    async def _collect(self, actor_id: str) -> None:
        record = self.actors.get(actor_id)
        if record is None or record.state is ActorState.DEAD or self.closing:
            return
        try:
            await self._kill(KillActor(actor_id, True))
        except ActorflowError as exc:  # its node is gone: the node's loss ends it
            log.debug("stopping actor %s, which no handle holds: %s", actor_id, exc)

    # -- death watch and fate-sharing ------------------------------------------------------------

    async def _watch(self, msg: WatchActor) -> ActorDiedError | None:
        actor_id = self._id(msg.actor_id)
        record = self.actors.get(actor_id)
        if record is None:
            return ActorDiedError(msg.actor_id, "no such actor in this cluster")
        if record.state is ActorState.DEAD:
            d = record.death
            assert d is not None
            return ActorDiedError(d.actor, d.reason, d.cause)
        if self.closing:
            return ActorDiedError(record.spec.class_name, "the cluster is shutting down")
        answer = self.watches.add(msg.watch_id, actor_id, msg.watcher)
        self._watch_process(msg.watcher)
        try:
            return await answer
        finally:
            self.watches.remove(msg.watch_id)

    def _adopt(self, spec: ActorSpec) -> None:
        """Note ``spec``'s actor as its creator's child (a detached one is nobody's)."""
        creator = self.actors.get(self._id(spec.creator))
        if creator is not None and creator.state is ActorState.DEAD:
            raise ActorDiedError(spec.class_name, "its creator is dead", creator.death)
        if creator is not None and spec.lifetime != "detached":
            self.children.setdefault(creator.spec.actor_id, set()).add(spec.actor_id)

    def _orphan(self, creator_id: str, cause: ActorDiedError) -> None:
        """The process of actor ``creator_id`` ended (``cause`` says how): stop its children,
        and theirs (the error they die with names their creator's end as its cause)."""
        for child_id in self.children.pop(creator_id, ()):
            record = self.actors.get(child_id)
            if record is None or record.state is ActorState.DEAD or record.orphaned:
                continue
            record.orphaned = cause
            self._orphan(child_id, ActorDiedError(record.spec.class_name,
                                                  "its creator's process ended", cause))
            if record.state is not ActorState.PENDING:  # a pending one is stopped once up
                self.ref.tell_nowait(_Collect(child_id))

    async def _wait_down(self, actor_id: str, generation: int) -> BaseException | None:
        while True:
            record = self.actors.get(actor_id)
            if record is None:
                return ActorDiedError(actor_id, "no such actor in this cluster")
            if self.closing:
                return ActorDiedError(record.spec.class_name, "the cluster is shutting down")
            if record.generation > generation or record.state is not ActorState.ALIVE:
                return record.last_error if record.state is not ActorState.DEAD else record.death
            await record.changed.wait()

    async def _restart(self, actor_id: str) -> int:
        record = self.actors.get(actor_id)
        if record is None or record.state is ActorState.DEAD:
            raise ActorDiedError(actor_id, "it cannot be restarted: it is dead for good")
        record.state = ActorState.RESTARTING
        record.location = None
        record.failed_attempt = None
        self._changed(record)
        (await self._place(record.spec)).start(record.spec)
        return record.generation

    def _retire(self, actor_id: str, error: BaseException | None) -> None:
        record = self.actors.get(actor_id)
        if record is None or record.state is ActorState.DEAD:
            return
        record.spec = _unsupervised(record.spec)
        self._down(ActorDown(actor_id, -1, True, error))

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

    async def _list(self, what: str) -> Any:
        if what == "nodes":
            # a snapshot: nodes may join or leave while their live figures are asked for
            nodes = list(self.nodes.values())
            lives = await asyncio.gather(
                *(self._live_info(node) for node in nodes), return_exceptions=True)
            out = []
            for node, live in zip(nodes, lives, strict=True):
                info: dict[str, Any] = {
                    "node_id": node.node_id, "address": node.address, "alive": node.alive,
                    "resources": node.resources.to_amounts(), "ref": node.ref,
                }
                if isinstance(live, dict):
                    info["available"] = live["available"]
                elif live is not None:
                    info["alive"] = False
                out.append(info)
            return out
        if what == "watches":
            return self.watches.counts()
        if what == "jobs":
            return self.jobs.views()
        if what == "actors":
            return [
                {
                    "actor_id": aid, "class_name": r.spec.class_name, "name": r.spec.name,
                    "namespace": r.spec.namespace, "state": r.state.value,
                    "node_id": r.node_id, "pid": r.pid, "restarts": r.restarts,
                    "job_id": r.spec.job_id, "lifetime": r.spec.lifetime,
                }
                for aid, r in self.actors.items()
            ]
        raise ValueError(f"unknown view {what!r}; use nodes, actors, jobs or watches")

    @staticmethod
    async def _live_info(node: _NodeRecord) -> dict[str, Any] | None:
        """A live node's own figures; None for a node known to be gone."""
        if not node.alive:
            return None
        result: dict[str, Any] = await node.ref.ask(NodeInfo(), timeout=5.0)
        return result
