"""ObjectRef: a handle to a value that a task produced or ``put`` stored.

The process that created the ref is its owner (Ray's ownership model): it holds the value (or
where it lies) and counts the refs to it in its own process. A ref that leaves the owner's
process (pickled into an argument, a result, another object) is a lend, and a process that
unpickles it a borrower: each reports to the owner, which frees the object once no ref is left
anywhere (the rules: :mod:`actorflow.objects.borrows`).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from actorflow.objects.borrows import collecting

if TYPE_CHECKING:
    from actorflow.cluster.core import Core
    from actorflow.runtime import ActorRef

__all__ = ["ObjectRef", "current_core", "set_current_core"]

_CORE: Core | None = None


def set_current_core(core: Core | None) -> None:
    global _CORE
    _CORE = core


def current_core() -> Core:
    core = _CORE
    if core is None:
        raise RuntimeError(
            "actorflow is not initialized in this process: call `await af.init()` first "
            "(or use `af.run(main)` / `actorflow run app.py`)"
        )
    return core


class ObjectRef:
    """A reference to a (possibly future) value in the cluster.

    ``await ref`` (or ``await af.get(ref)``) returns the value. Refs are hashable, picklable,
    and may be passed inside arguments, containers and messages.

    ``core`` is this process's ``Core`` when it owns the object (the ref then counts itself
    there), else None: read it, never set it. ``borrowed`` is the counter a borrowed ref
    counts itself in (this process's, when it has a Core).
    """

    __slots__ = ("__weakref__", "borrowed", "core", "id", "owner")

    def __init__(self, object_id: str, owner: ActorRef, core: Core | None = None) -> None:
        self.id = object_id
        self.owner = owner
        self.core = core
        self.borrowed: Any = None
        if core is not None:
            core.objects.incref(object_id)

    def __del__(self) -> None:
        try:
            core = self.core
            if core is not None:
                core.objects.decref(self.id)
            elif self.borrowed is not None:
                self.borrowed.drop(self.owner, self.id)
        except Exception:  # interpreter shutdown: nothing left to free
            pass

    def __repr__(self) -> str:
        return f"ObjectRef({self.id})"

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other.id == self.id

    def __reduce__(self) -> tuple[Any, ...]:
        refs = collecting()
        core = self.core
        if core is not None:
            if refs is None:  # nobody keeps what it goes into: it stays until its owner ends
                core.objects.pin(self.id)
            else:
                core.objects.borrows.lend(self.id)
        else:
            counter = self.borrowed
            if counter is None and _CORE is not None:
                counter = _CORE.borrowing
            if counter is not None:
                counter.lend(self.owner, self.id)
        if refs is not None:
            refs.append((self.owner, self.id))
        return (_restore, (self.id, self.owner))

    def __await__(self) -> Generator[Any, None, Any]:
        return current_core().reads.get_one(self).__await__()

    def owned_by(self, core: Core) -> bool:
        return self.core is core


def _restore(object_id: str, owner: ActorRef) -> ObjectRef:
    core = _CORE
    if core is None:
        return ObjectRef(object_id, owner)
    if core.owner_ref == owner:
        return ObjectRef(object_id, owner, core)
    ref = ObjectRef(object_id, owner)
    counter = ref.borrowed = core.borrowing
    counter.add(owner, object_id)
    return ref
