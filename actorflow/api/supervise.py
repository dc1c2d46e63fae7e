"""``af.supervise`` and ``af.child``: supervision trees of user actors (API.md §6).

A tree is a kernel :class:`~actorflow.supervision.Supervisor` in the calling process whose
children are small proxies (:class:`_UserChild`), one per user actor. A proxy's incarnation
starts a generation of its user actor through the head, then waits for that generation to end
and turns its end into a crash, so the kernel supervisor applies the strategy, the restart kinds
and the intensity exactly as for any actor. The user actor keeps one actor id for the tree's
whole life, so ``tree["name"]`` is a handle that stays valid across restarts; calls made while
it restarts wait for the next generation.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from actorflow._errors import ActorDiedError, SupervisionError
from actorflow.api.remote import ActorClass, ActorHandle, _split_refs, remote
from actorflow.cluster.core import Core
from actorflow.cluster.protocol import (
    ActorSpec,
    CreateActor,
    Failed,
    KillActor,
    ResolveActor,
    RestartActor,
    RetireActor,
    WaitActorDown,
)
from actorflow.objects.ref import current_core
from actorflow.objects.serialization import dumps
from actorflow.runtime import Actor, Terminated
from actorflow.supervision import ChildSpec, Supervisor
from actorflow.supervision.supervisor import Tree as KernelTree

__all__ = ["Child", "SupervisionTree", "child", "supervise"]


@dataclass(frozen=True)
class Child:
    """One child of a tree (made by :func:`child`)."""

    actor_class: ActorClass[Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    name: str
    restart: Literal["permanent", "transient", "temporary"] = "permanent"
    options: dict[str, Any] = field(default_factory=dict)


def child(
    actor_class: Any,
    *args: Any,
    name: str,
    restart: Literal["permanent", "transient", "temporary"] = "permanent",
    options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Child:
    """A child spec for :func:`supervise`: ``actor_class(*args, **kwargs)`` named ``name``.

    ``actor_class`` is an ``@af.remote`` class (a plain class is made remote); ``options`` are
    actor options (``num_cpus``, ...). ``restart`` is the OTP restart kind.
    """
    if not isinstance(actor_class, ActorClass):
        if not isinstance(actor_class, type):
            raise TypeError(f"af.child takes an actor class, got {type(actor_class).__name__}")
        actor_class = remote(actor_class)
    if restart not in ("permanent", "transient", "temporary"):
        raise ValueError(f"restart must be permanent, transient or temporary, not {restart!r}")
    return Child(actor_class, args, kwargs, name, restart, dict(options or {}))


@dataclass(frozen=True, slots=True)
class _Down:
    error: BaseException | None


class _UserChild(Actor):
    """Proxy of one user actor in a tree (see the module docstring)."""

    def __init__(self, core: Core, spec: ActorSpec, deps: list[Any], state: dict[str, Any],
                 restart: str = "permanent") -> None:
        self.core = core
        self.spec = spec
        self.deps = deps
        self.state = state  # shared across incarnations: {"created": bool}
        self.restart = restart
        self.generation = 0

    async def on_start(self) -> None:
        head = self.core.head
        if not self.state.get("created"):
            spec = self.spec
            if self.deps:
                payloads = await self.core.reads.payloads(self.deps)
                self.core.sending(payloads)  # the actor's process reads them: never reused
                for payload in payloads:
                    if isinstance(payload, Failed):
                        raise payload.error
                spec = dataclasses.replace(spec, resolved=tuple(payloads))
            await head.ask(CreateActor(spec))
            self.state["created"] = True
            after = 0
        else:
            after = await head.ask(RestartActor(self.spec.actor_id))
        location = await head.ask(ResolveActor(self.spec.actor_id, after, fail_if_down=True))
        self.generation = location.incarnation
        watch = head.ask_nowait(WaitActorDown(self.spec.actor_id, self.generation))
        watch.add_done_callback(self._ended)

    def _ended(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        error = fut.exception() or fut.result()
        try:
            self.ref.tell_nowait(_Down(error))
        except Exception:
            pass  # this incarnation has stopped already: nothing to report to

    async def receive(self, message: Any) -> Any:
        if isinstance(message, _Down):
            error = ActorDiedError(self.spec.class_name, "its process ended", message.error)
            if self.restart == "temporary":  # no restart will come: callers must not wait
                self.core.head.tell_nowait(RetireActor(self.spec.actor_id, error))
            raise error
        raise TypeError(f"tree proxy got an unexpected {type(message).__name__}")

    async def on_stop(self) -> None:
        try:
            await self.core.head.ask(KillActor(self.spec.actor_id, True), timeout=10.0)
        except Exception:
            pass  # the head is going away too


class SupervisionTree:
    """A running tree: ``tree[name]`` handles, ``await tree.wait()``, ``await tree.stop()``."""

    def __init__(self, kernel: KernelTree, handles: dict[str, ActorHandle]) -> None:
        self._kernel = kernel
        self._handles = handles

    def __getitem__(self, name: str) -> ActorHandle:
        try:
            return self._handles[name]
        except KeyError:
            raise KeyError(f"this tree has no child {name!r}; it has {sorted(self._handles)}"
                           ) from None

    def __repr__(self) -> str:
        return f"<SupervisionTree {self._kernel.ref.path} {sorted(self._handles)}>"

    async def wait(self) -> None:
        """Return when the tree has stopped; raise SupervisionError if it gave up."""
        await self._kernel.wait()

    async def stop(self) -> None:
        """Stop the tree: its actors in reverse start order, for good."""
        await self._kernel.stop()


async def supervise(
    children: Sequence[Child],
    *,
    strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = "one_for_one",
    max_restarts: int = 3,
    within_s: float = 10.0,
    name: str | None = None,
) -> SupervisionTree:
    """Start a supervision tree of user actors; returns once every child is up (API.md §6).

    Raises SupervisionError if a child cannot be started.
    """
    core = current_core()
    names = [c.name for c in children]
    if len(set(names)) != len(names):
        raise ValueError(f"child names must be unique, got {names}")
    handles: dict[str, ActorHandle] = {}
    specs: list[ChildSpec] = []
    actor_ids: list[str] = []
    for c in children:
        cls = c.actor_class.options(**c.options) if c.options else c.actor_class
        spec, deps = _child_spec(core, cls, c)
        handles[c.name] = ActorHandle.from_spec(spec.actor_id, spec)
        actor_ids.append(spec.actor_id)
        state: dict[str, Any] = {}
        specs.append(ChildSpec(factory=_UserChild, args=(core, spec, deps, state, c.restart),
                               name=c.name, restart=c.restart, shutdown=15.0))
    tree_name = name or f"tree-{core.new_id()}"
    try:
        ref = await core.system.spawn(
            lambda: Supervisor(specs, strategy=strategy, max_restarts=max_restarts,
                               within_s=within_s),
            name=tree_name,
        )
    except SupervisionError:
        _retire(core, actor_ids, None)
        raise
    kernel = KernelTree(core.system, ref)

    def ended(notice: Terminated) -> None:
        _retire(core, actor_ids, notice.cause)

    core.system.on_terminated(ref, ended)
    return SupervisionTree(kernel, handles)


def _retire(core: Core, actor_ids: list[str], cause: BaseException | None) -> None:
    for actor_id in actor_ids:
        try:
            core.head.tell_nowait(RetireActor(actor_id, cause))
        except Exception:
            pass  # the head is gone: so is every actor


def _child_spec(core: Core, cls: ActorClass[Any], c: Child) -> tuple[ActorSpec, list[Any]]:
    args, kwargs, deps = _split_refs(c.args, c.kwargs)
    blob = dumps((args, kwargs), f"an argument of {c.name!r}")
    spec = cls._spec(core, blob)
    return dataclasses.replace(spec, supervised=True, max_restarts=0), deps
