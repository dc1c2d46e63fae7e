"""The Head's part that keeps actors' lifetimes: handles, death watches, fate-sharing,
supervised restarts.

A mixin of :class:`~actorflow.cluster.head.Head` (its module stays about the directory):

- an anonymous, non-detached actor is stopped once no handle to it is left anywhere
  (``HandleHolds``, :class:`~actorflow.cluster.holds.HoldLedger`), and a holder whose process
  ends holds nothing;
- ``af.watch`` waits (``WatchActor``) are answered when a record turns DEAD, never on a
  restart; they sit in the head's waiter table (``holds.Watches``) until then, or until the
  watcher cancels (``UnwatchActor``) or its process ends;
- fate-sharing: an actor created by another actor (``ActorSpec.creator``) is that creator's
  child unless detached; when the creator's process ends (it died for good, or it is about to
  restart: Ray's rule) its children, and theirs, are stopped as ``af.kill`` stops an actor;
- an ``af.supervise`` tree's actor is restarted (``RestartActor``) or retired
  (``RetireActor``) by its tree, and its proxy waits for the end of an incarnation
  (``WaitActorDown``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from actorflow._errors import ActorDiedError, ActorflowError
from actorflow.cluster.head_records import (
    ActorRecord,
    ActorState,
    Collect,
    HolderGone,
    StartAt,
    unsupervised,
)
from actorflow.cluster.holds import HandleHolds, HoldLedger, Watches
from actorflow.cluster.protocol import ActorDown, ActorSpec, KillActor, WatchActor
from actorflow.runtime import ActorRef, Terminated

__all__ = ["HeadLifetimes"]

log = logging.getLogger("actorflow.head")


class HeadLifetimes:
    """See the module docstring."""

    actors: dict[str, ActorRecord]
    holds: HoldLedger
    watches: Watches
    children: dict[str, set[str]]
    aliases: dict[str, str]
    closing: bool
    ref: ActorRef
    system: Any
    _watched: set[ActorRef]

    if TYPE_CHECKING:  # (the head's own)
        def _id(self, actor_id: str) -> str: ...
        async def _place(self, spec: ActorSpec) -> StartAt: ...
        def _changed(self, record: ActorRecord) -> None: ...
        def _down(self, msg: ActorDown) -> None: ...
        async def _kill(self, msg: KillActor) -> None: ...

    def _handle_holds(self, msg: HandleHolds) -> None:
        holder = msg.holder
        self._watch_process(holder)
        aliases = self.aliases
        if aliases:  # a handle got by get_if_exists names its provisional id
            msg = HandleHolds(
                holder, tuple(self._id(a) for a in msg.held),
                tuple(self._id(a) for a in msg.released),
                tuple((self._id(a), t) for a, t in msg.lent),
                tuple((self._id(a), t) for a, t in msg.taken),
                tuple((self._id(a), t) for a, t in msg.kept),
                tuple((self._id(a), t) for a, t in msg.discarded))
        for actor_id in self.holds.apply(holder, msg.held, msg.released, msg.lent, msg.taken,
                                         msg.kept, msg.discarded):
            self._maybe_collect(actor_id)

    def _watch_process(self, holder: Any) -> None:
        """Listen for the end of ``holder``'s process (a Core's object owner): it then holds
        no handle and waits in no af.watch."""
        if holder in self._watched or not isinstance(holder, ActorRef):
            return
        self._watched.add(holder)

        def gone(_notice: Terminated) -> None:
            try:
                self.ref.tell_nowait(HolderGone(holder))
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
            self.ref.tell_nowait(Collect(actor_id))

    def _stop_for_job(self, record: ActorRecord) -> None:
        """Its job ended: stop it (a pending one once it is up), for good."""
        record.spec = unsupervised(record.spec)  # (its tree, if any, ended with the job)
        if record.state is not ActorState.PENDING:
            self.ref.tell_nowait(Collect(record.spec.actor_id))

    async def _collect(self, actor_id: str) -> None:
        record = self.actors.get(actor_id)
        if record is None or record.state is ActorState.DEAD or self.closing:
            return
        try:
            await self._kill(KillActor(actor_id, True))
        except ActorflowError as exc:  # its node is gone: the node's loss ends it
            log.debug("stopping actor %s, which no handle holds: %s", actor_id, exc)

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
                self.ref.tell_nowait(Collect(child_id))

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
        record.spec = unsupervised(record.spec)
        self._down(ActorDown(actor_id, -1, True, error))
