"""The per-process core: the owner of objects and the submitter of tasks and actor calls.

Every process that uses the API has one :class:`Core`: the driver, and every worker (tasks may
submit tasks). It owns

- the object table: the values of the refs it created (``put`` and task returns), each entry a
  :data:`Payload` (or the callbacks waiting for it) plus a local reference count, and the
  refs to them outside this process (borrowers and lends: :mod:`actorflow.objects.borrows`);
- the borrow counter: its refs to other processes' objects, reported to their owners;
- the :class:`ObjectOwner` actor, which answers other processes' fetches of those objects;
- the task submitter (:mod:`actorflow.cluster.submitter`) and the actor clients
  (:mod:`actorflow.cluster.actor_client`);
- its reads (:mod:`actorflow.cluster.reads`): from a ref to a payload readable here.

Values are encoded once: small ones inline, large ones into a shared-memory segment of the
node, read back zero-copy by every process of the node.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pickle import dumps as pickle_dumps
from pickle import loads as pickle_loads
from typing import TYPE_CHECKING, Any, TypeVar

from actorflow._errors import (
    ObjectStoreFullError,
    SerializationError,
    TaskCancelledError,
    TaskError,
)
from actorflow.cluster import streaming
from actorflow.cluster.borrowing import BorrowCounter
from actorflow.cluster.lineage import Lineage
from actorflow.cluster.object_table import (
    ObjectOwner,
    ObjectTable,
)
from actorflow.cluster.protocol import (
    Args,
    Failed,
    Fetched,
    Inline,
    InShm,
    Payload,
)
from actorflow.cluster.reads import Reads
from actorflow.cluster.remote_segments import RemoteSegments
from actorflow.cluster.segment_upkeep import SegmentUpkeep
from actorflow.objects import shm, spill
from actorflow.objects.borrows import Lends, lending
from actorflow.objects.ref import ObjectRef
from actorflow.objects.serialization import (
    INLINE_LIMIT,
    Serialized,
    deserialize,
    dumps,
    is_plain,
    serialize,
)
from actorflow.objects.store import SegmentStore
from actorflow.runtime import ActorRef, ActorSystem

if TYPE_CHECKING:
    from actorflow.cluster.actor_client import ActorClient
    from actorflow.cluster.submitter import TaskSubmitter

__all__ = ["Core"]

MIB = 1 << 20
#: The largest value copied into shared memory on the event loop's thread (by ``af.put`` or a
#: ``.remote()`` argument). The copy holds the loop for as long as it takes: about 30 ms per
#: 256 MiB into kept pages here, several times that into fresh ones. Larger values go through
#: ``await af.put_async(value)``, which copies off the loop.
SYNC_COPY_LIMIT = 256 * MIB
#: How long a closing process waits to tell other nodes to free the segments it owned there.
REMOTE_FREE_WAIT_S = 2.0

log = logging.getLogger("actorflow.cluster")

T = TypeVar("T")

_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})
_NO_REFS: list[tuple[Any, str]] = []  # (never appended to: only read)


class Core:
    """The process's owner and submitter (see the module docstring)."""

    def __init__(
        self,
        system: ActorSystem,
        *,
        node: ActorRef,
        head: ActorRef,
        node_id: str,
        job_id: str,
        session: str,
        namespace: str = "",
        worker_id: str | None = None,
    ) -> None:
        from actorflow.cluster.submitter import TaskSubmitter

        self.system = system
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self.node = node
        self.head = head
        self.node_id = node_id
        self.job_id = job_id
        self.session = session
        self.namespace = namespace
        self.worker_id = worker_id
        self.objects = ObjectTable(self)
        self.borrowing = BorrowCounter(self)
        self.lineage = Lineage(self)
        self.submitter: TaskSubmitter = TaskSubmitter(self)
        self.actors: dict[str, ActorClient] = {}
        self.owner_ref: ActorRef | None = None
        self._prefix = secrets.token_hex(5)
        self._ids = itertools.count(1)
        self.upkeep = SegmentUpkeep(self)
        self.store = SegmentStore(lambda: f"af-{self.node_id}-{self.new_id()}",
                                  make_spare=self.upkeep.make_spare,
                                  on_pooled=self.upkeep.on_pooled,
                                  on_pinned=self.upkeep.on_pinned)
        self.remote = RemoteSegments(self)  # other nodes' segments: reads and frees
        self.reads = Reads(self)  # from a ref to a payload readable here
        self.closed = False
        #: Awaited first when this Core closes, in order (a last flush of what a process
        #: recorded, such as its metrics); one that raises is logged and the rest still run.
        self.on_close: list[Callable[[], Awaitable[None]]] = []

    async def start(self) -> None:
        self.owner_ref = await self.system.spawn(ObjectOwner, self, name="object-owner")

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._ids):x}"

    # -- objects -------------------------------------------------------------------------------

    def encode(self, value: Any, what: str = "value", *, owned: bool = True,
               caller: bool = False, job: str = "") -> Payload:
        """Serialize once: inline when small, else into a shared-memory segment. ``owned``:
        this process owns the object (a put); a task's result belongs to its caller, and this
        process keeps no record of its segment (``job``: the caller's, whose end frees it)."""
        if is_plain(value):  # the common small case: one C pickle, kept as is
            meta = pickle_dumps(value, 5)
            if len(meta) < INLINE_LIMIT:
                return meta
            return self._to_segment(Serialized(meta), owned, caller, job)
        ser = serialize(value, what)
        if not ser.buffers:
            if len(ser.meta) < INLINE_LIMIT:
                return ser.meta
        elif ser.nbytes < INLINE_LIMIT:
            return Inline(ser.meta, tuple(bytes(b) for b in ser.buffers))
        return self._to_segment(ser, owned, caller, job)

    def _to_segment(self, ser: Serialized, owned: bool = True, caller: bool = False,
                    job: str = "") -> InShm:
        """``caller``: for a synchronous API (``af.put``, a call's arguments), which refuses a
        value too large to copy on the loop's thread (see SYNC_COPY_LIMIT)."""
        size = ser.nbytes
        if caller and size > SYNC_COPY_LIMIT and threading.get_ident() == self.loop_thread:
            raise SerializationError(
                f"a value of {size / MIB:.0f} MiB would be copied into shared memory on the "
                f"event loop's thread, holding the loop for that long (more than "
                f"{SYNC_COPY_LIMIT / MIB:.0f} MiB is refused): store it with "
                "`ref = await af.put_async(value)`, which copies it off the loop, and pass the "
                "ref instead", size, SYNC_COPY_LIMIT)
        spill.check_room(self.node_id, size)  # the node's limit (object_store_memory)
        free = shm.free_bytes()
        if size > free:
            raise ObjectStoreFullError(
                size, free, f"this machine's shared memory ({shm.SHM_DIR})")
        name, nbytes, generation = self.store.write(ser, keep=owned)
        self.on_loop_thread(self.tell_node, spill.Stored(
            name, nbytes, generation, os.getpid(), "put" if owned else "task result", job))
        return InShm(name, self.node_id, nbytes, generation)

    def tell_node(self, message: Any) -> None:
        """Tell this process's node (its object store: see objects/spill.py); a node that
        is gone has no store to tell."""
        try:
            self.node.tell_nowait(message)
        except Exception:
            pass

    def on_loop_thread(self, fn: Callable[..., None], *args: Any) -> None:
        """Call ``fn(*args)`` on the loop's thread: now when already there, else soon. (The
        store calls back from wherever a value was written: the loop, or a sync task's
        thread.)"""
        if threading.get_ident() == self.loop_thread:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def sending(self, payloads: Iterable[Any]) -> None:
        """These payloads leave this process (to readers that do not report back): a segment
        among them is never reused."""
        for payload in payloads:
            if type(payload) is InShm:
                self.store.shared(payload.name)

    def pack_args(self, args: tuple[Any, ...], kwargs: dict[str, Any], what: str
                  ) -> tuple[Args, Any]:
        """A call's arguments, serialized once. Large ones go to shared memory (one copy)
        under an object this process owns. The second value (None, or what keeps that
        object and the lends of the refs inside the arguments) must be held until the call
        is done."""
        if is_plain(args) and (not kwargs or is_plain(kwargs)):  # the common small case
            data = pickle_dumps((args, kwargs), 5)
            if len(data) < INLINE_LIMIT:
                return data, None
        with lending() as lent:
            ser = serialize((args, kwargs), what)
            if ser.nbytes < INLINE_LIMIT:
                blob = ser.meta if not ser.buffers else dumps((args, kwargs), what)
                return blob, self.lends(lent)
        assert self.owner_ref is not None
        object_id = self.new_id()
        self.objects.create(object_id)
        ref = ObjectRef(object_id, self.owner_ref, self)
        payload = self._to_segment(ser, caller=True)
        self.objects.resolve(object_id, payload, self.lends(lent))
        return payload, ref

    def lends(self, refs: list[tuple[Any, str]]) -> Lends | None:
        """The record of the lends a value kept here carries (None: it carries no ref)."""
        return Lends(refs, self.borrowing.discard) if refs else None

    def kept_lends(self, nested: Sequence[tuple[int, Any, str]], n: int
                   ) -> list[Lends | None]:
        """For each of ``n`` values that came back from a call, the lends of the refs inside
        it (``nested``: ``(index, owner, object id)``), now kept by this process."""
        out: list[Lends | None] = [None] * n
        if not nested:
            return out
        per: list[list[tuple[Any, str]]] = [[] for _ in range(n)]
        for i, owner, object_id in nested:
            per[i].append((owner, object_id))
        for i, refs in enumerate(per):
            if refs:
                self.borrowing.keep(refs)
                out[i] = Lends(refs, self.borrowing.discard)
        return out

    def encode_lending(self, value: Any, what: str, *, owned: bool = True,
                       caller: bool = False, job: str = ""
                       ) -> tuple[Payload, list[tuple[Any, str]]]:
        """:meth:`encode`, with the ``(owner, object id)`` of the refs pickled into it."""
        if type(value) in _SCALARS:  # the commonest case: nothing in it can be a ref
            return self.encode(value, what, owned=owned, caller=caller, job=job), _NO_REFS
        with lending() as lent:
            return self.encode(value, what, owned=owned, caller=caller, job=job), lent

    def materialize(self, payload: Payload) -> Any:
        """Payload to value; raises the error a failed task left."""
        if type(payload) is bytes:
            return pickle_loads(payload)
        if type(payload) is Inline:
            return deserialize(payload.meta, payload.buffers)
        if type(payload) is Fetched:
            return deserialize(payload.meta, payload.buffers)
        if type(payload) is InShm:
            if payload.node_id != self.node_id:
                raise RuntimeError(f"segment {payload.name} must be localized first (a bug)")
            meta, buffers = self.store.read(payload.name, payload.generation)
            return deserialize(meta, buffers)
        if type(payload) is Failed:
            error = payload.error
            if isinstance(error, TaskError):
                raise error.as_instanceof_cause()
            raise error
        raise TypeError(f"not an object payload: {payload!r}")

    def free_remote(self, payload: InShm) -> None:
        """Free a segment of another node owned here (see RemoteSegments.free)."""
        self.remote.free(payload)

    def put(self, value: Any) -> ObjectRef:
        assert self.owner_ref is not None
        object_id = self.new_id()
        self.objects.create(object_id)
        ref = ObjectRef(object_id, self.owner_ref, self)
        if type(value) in _SCALARS:  # the commonest case: nothing in it can be a ref
            self.objects.resolve(object_id, self.encode(value, "the value given to put()",
                                                        caller=True))
            return ref
        payload, lent = self.encode_lending(value, "the value given to put()", caller=True)
        self.objects.resolve(object_id, payload, self.lends(lent))
        return ref

    async def put_async(self, value: Any) -> ObjectRef:
        """:meth:`put` with the copy into shared memory done off the event loop (any size);
        the caller must not change ``value`` until this returns."""
        assert self.owner_ref is not None
        object_id = self.new_id()
        self.objects.create(object_id)
        ref = ObjectRef(object_id, self.owner_ref, self)
        copy = self.loop.run_in_executor(
            None, functools.partial(self.encode_lending, value, "the value given to put()"))
        try:
            payload, lent = await asyncio.shield(copy)  # a thread cannot be stopped: let it end
        except asyncio.CancelledError:
            copy.add_done_callback(self._drop_late_copy)  # (its segment, when it has one)
            self.objects.resolve(object_id, Failed(TaskCancelledError(
                "put_async was cancelled before the value was stored")))
            raise
        except Exception as exc:
            self.objects.resolve(object_id, Failed(exc))
            raise
        self.objects.resolve(object_id, payload, self.lends(lent))
        return ref

    def _drop_late_copy(self, copy: asyncio.Future[tuple[Payload, Any]]) -> None:
        """A cancelled put_async's copy ended: nothing will read it, so its segment is freed
        (and the lends of the refs inside it go with it)."""
        if copy.cancelled() or copy.exception() is not None:
            return
        payload, lent = copy.result()
        self.lends(lent)
        if type(payload) is InShm:
            self.store.free(payload.name)
            self.tell_node(spill.Freed(payload.name, payload.generation))

    def new_pending(self, object_id: str) -> ObjectRef:
        assert self.owner_ref is not None
        self.objects.create(object_id)
        return ObjectRef(object_id, self.owner_ref, self)

    # -- lifetime ------------------------------------------------------------------------------

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for hook in self.on_close:
            try:
                await hook()
            except Exception:
                log.exception("a close hook of this process's runtime failed")
        streaming.close(self)
        await self.submitter.close()
        for client in list(self.actors.values()):
            client.close()
        self.objects.clear()
        await self.borrowing.close()
        await self.upkeep.close()
        await self.remote.close(REMOTE_FREE_WAIT_S)
        self.store.close()

    def describe(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "job_id": self.job_id,
            "worker_pid": os.getpid(),
            "objects": len(self.objects.entries),
            **self.borrowing.describe(),
        }
