"""The Supervisor actor (OTP semantics) and the Tree handle to a running one.

A supervisor starts its children in order, watches each incarnation, and when one ends decides
by the child's restart kind whether it comes back and by its strategy which siblings come back
with it:

- ``one_for_one``: only the child that ended is restarted;
- ``one_for_all``: every other child is stopped (in reverse order), then all are started again
  in order;
- ``rest_for_one``: the children started after it are stopped (in reverse order), then it and
  they are started again in order.

Every restart counts against the restart intensity (``max_restarts`` within ``within_s``).
One more and the supervisor gives up: it stops all its children in reverse order and crashes
with :class:`~actorflow.SupervisionError`, which its own supervisor handles in turn (escalation).
A supervisor that ends in any other abnormal way (killed) takes its children with it, as an OTP
link does.

Restart timers (with a backoff) are loop timer handles owned by the supervisor and cancelled
when it ends; the supervisor never polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from actorflow._errors import GetTimeoutError, SupervisionError
from actorflow.runtime import (
    Actor,
    ActorRef,
    ActorSystem,
    ErrorReply,
    ExitReason,
    Slot,
    Terminated,
)
from actorflow.runtime.cell import Cell
from actorflow.runtime.ref import SlotState
from actorflow.supervision.spec import (
    Backoff,
    ChildSpec,
    Strategy,
    SupervisorOptions,
    add_restart,
    backoff_delay,
    should_restart,
)

__all__ = [
    "ChildInfo",
    "StartChild",
    "Supervisor",
    "TerminateChild",
    "Tree",
    "WhichChildren",
    "start_supervisor",
    "supervisor_spec",
]

log = logging.getLogger("actorflow.supervision")


# -- the supervisor's messages ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartChild:
    """Ask: start a dynamic child (appended after the others); answers its ActorRef."""

    spec: ChildSpec


@dataclass(frozen=True, slots=True)
class TerminateChild:
    """Ask: stop a child for good and forget its spec."""

    name: str


@dataclass(frozen=True, slots=True)
class WhichChildren:
    """Ask: answers a list of ChildInfo, in start order."""


@dataclass(frozen=True, slots=True)
class ChildInfo:
    name: str
    ref: ActorRef
    running: bool
    restart: str


@dataclass(frozen=True, slots=True)
class _RestartDue:
    names: tuple[str, ...]


@dataclass(slots=True)
class _Child:
    spec: ChildSpec
    slot: Slot
    cell: Cell | None = None
    incarnation: int = -1
    running: bool = False
    ref: ActorRef = field(init=False)

    def __post_init__(self) -> None:
        self.ref = ActorRef(self.slot)


# -- the actor -----------------------------------------------------------------------------


class Supervisor(Actor):
    """Supervises children given as :class:`ChildSpec`; see the module docstring.

    ``clock`` (default ``time.monotonic``) is injectable so intensity logic can be driven by a
    test clock.
    """

    def __init__(
        self,
        children: Iterable[ChildSpec] = (),
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        within_s: float = 5.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = SupervisorOptions(
            strategy=strategy, max_restarts=max_restarts, within_s=within_s, backoff=backoff
        )
        self._initial = list(children)
        names = [spec.name for spec in self._initial]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique, got {names}")
        self._children: dict[str, _Child] = {}  # in start order
        self._by_slot: dict[str, _Child] = {}
        self._restarts: tuple[float, ...] = ()
        self._timers: set[asyncio.TimerHandle] = set()
        self._clock = clock

    # -- lifecycle -----------------------------------------------------------------------------

    async def on_start(self) -> None:
        self.system.on_terminated(self.ref, self._on_own_end)
        for spec in self._initial:
            child = self._add(spec)
            try:
                await self._start(child)
            except Exception as exc:
                await self._stop_all(f"a sibling ({spec.name!r}) failed to start", exc)
                raise SupervisionError(
                    f"supervisor {self.ref.path!r} could not start child {spec.name!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

    async def on_stop(self) -> None:
        self._cancel_timers()
        await self._stop_all("its supervisor stopped")

    def _on_own_end(self, notice: Terminated) -> None:
        """Runs synchronously when this incarnation ends for any reason: after a normal stop
        the children are already stopped; otherwise they are killed (OTP link semantics)."""
        self._cancel_timers()
        for child in self._children.values():
            cell = child.cell
            child.running = False
            if cell is not None and not cell.terminated.done() and cell.task is not None:
                # still running (or still in on_stop while we were stopping it): kill it; its
                # own end tells its watchers (KILLED) once it has really ended
                child.slot.mark_dead("its supervisor ended", notice.cause)
                cell.task.cancel()
            else:
                child.slot.mark_dead("its supervisor ended", notice.cause, notify=True)

    # -- messages ------------------------------------------------------------------------------

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Terminated):
            await self._child_ended(message)
            return None
        if isinstance(message, _RestartDue):
            targets = [self._children[n] for n in message.names if n in self._children]
            failure = await self._start_targets(targets)
            if failure is not None:  # a delayed start failed: that is one more crash
                await self._restart(failure[0], ExitReason.CRASHED, failure[1])
            return None
        # rejected requests are answered with an error; the tree carries on (as OTP does)
        if isinstance(message, StartChild):
            if message.spec.name in self._children:
                return ErrorReply(ValueError(
                    f"supervisor {self.ref.path!r} already has a child {message.spec.name!r}"
                ))
            child = self._add(message.spec)
            try:
                await self._start(child)
            except Exception as exc:
                self._remove(child, "it failed to start", exc)
                return ErrorReply(exc)
            return child.ref
        if isinstance(message, TerminateChild):
            found = self._children.get(message.name)
            if found is None:
                return ErrorReply(KeyError(
                    f"supervisor {self.ref.path!r} has no child {message.name!r}"
                ))
            await self._stop_child(found, keep=False)
            self._remove(found, "it was terminated by its supervisor")
            return None
        if isinstance(message, WhichChildren):
            return [
                ChildInfo(c.spec.name, c.ref, c.running, c.spec.restart)
                for c in self._children.values()
            ]
        log.warning(
            "supervisor %s ignored an unexpected %s message", self.ref.path,
            type(message).__name__,
        )
        return None

    # -- children ------------------------------------------------------------------------------

    def _add(self, spec: ChildSpec) -> _Child:
        slot = self.system.new_slot(f"{self.ref.path}/{spec.name}")
        child = _Child(spec, slot)
        self._children[spec.name] = child
        self._by_slot[slot.id] = child
        return child

    def _remove(self, child: _Child, reason: str, cause: BaseException | None = None) -> None:
        self._children.pop(child.spec.name, None)
        self._by_slot.pop(child.slot.id, None)
        child.slot.mark_dead(reason, cause, notify=True)

    async def _start(self, child: _Child) -> None:
        spec = child.spec
        kind = spec.restart
        cell = await self.system.start_incarnation(
            child.slot,
            spec.build,
            (),
            restartable=lambda reason: should_restart(kind, reason),
            watch=self._notice,
            max_concurrency=spec.max_concurrency,
            mailbox_size=spec.mailbox_size,
        )
        child.cell = cell
        child.incarnation = cell.incarnation
        child.running = True

    def _notice(self, notice: Terminated) -> None:
        cell = self.ref.slot.cell
        if cell is not None and not cell.mailbox.closed:
            cell.mailbox.put_system((notice, None))

    async def _stop_child(self, child: _Child, *, keep: bool) -> None:
        cell = child.cell
        if not child.running or cell is None:
            return
        child.running = False
        shutdown = child.spec.shutdown
        await self.system.end_incarnation(
            cell,
            timeout=None if shutdown == "brutal_kill" else float(shutdown),
            restartable=keep,
        )

    async def _stop_all(self, reason: str, cause: BaseException | None = None) -> None:
        for child in reversed(list(self._children.values())):
            if child.running:
                child.slot.mark_dead(reason, cause)  # the death says why; its end notifies
                await self._stop_child(child, keep=False)
            else:
                child.slot.mark_dead(reason, cause, notify=True)

    # -- restarts ------------------------------------------------------------------------------

    async def _child_ended(self, notice: Terminated) -> None:
        child = self._by_slot.get(notice.ref.id)
        if child is None or not child.running or notice.incarnation != child.incarnation:
            return  # stale: an incarnation we stopped ourselves, or one already handled
        child.running = False
        if child.slot.state is SlotState.DEAD:  # stopped for good from outside
            self._remove(child, "it was stopped")
            return
        if not should_restart(child.spec.restart, notice.reason):
            self._remove(child, f"it ended ({notice.reason.value}) and is {child.spec.restart}",
                         notice.cause)
            return
        await self._restart(child, notice.reason, notice.cause)

    async def _restart(
        self, failed: _Child, reason: ExitReason, cause: BaseException | None
    ) -> None:
        opts = self.options
        while True:
            self._restarts, exceeded = add_restart(
                self._restarts, self._clock(), opts.max_restarts, opts.within_s
            )
            if exceeded:
                await self._give_up(failed, reason, cause)
            targets = self._targets(failed)
            for child in reversed(targets):
                if child is not failed:
                    await self._stop_child(child, keep=True)
            delay = backoff_delay(opts.backoff, len(self._restarts))
            if delay > 0:
                self._schedule(delay, tuple(c.spec.name for c in targets))
                return
            failure = await self._start_targets(targets)
            if failure is None:
                return
            failed, cause = failure
            reason = ExitReason.CRASHED

    def _targets(self, failed: _Child) -> list[_Child]:
        order = list(self._children.values())
        strategy = self.options.strategy
        if strategy == "one_for_one":
            return [failed]
        if strategy == "one_for_all":
            return order
        return order[order.index(failed):]

    async def _start_targets(
        self, targets: list[_Child]
    ) -> tuple[_Child, BaseException] | None:
        """Start the targets in order; temporary siblings stopped by the strategy are dropped
        (OTP). Returns the first child that failed to start, with the error."""
        ordered = self.options.strategy != "one_for_one"
        for child in targets:
            if child.running or child.spec.name not in self._children:
                continue
            if child.slot.state is SlotState.DEAD:  # stopped for good while it waited
                self._remove(child, "it was stopped")
                continue
            if ordered and self._earlier_sibling_down(child):
                continue  # that sibling's own pending restart starts this one after it
            if child.spec.restart == "temporary":
                self._remove(child, "a sibling restarted and it is temporary")
                continue
            try:
                await self._start(child)
            except Exception as exc:
                child.running = False
                return child, exc
        return None

    def _earlier_sibling_down(self, child: _Child) -> bool:
        for sibling in self._children.values():
            if sibling is child:
                return False
            if not sibling.running:
                return True
        return False

    def _schedule(self, delay: float, names: tuple[str, ...]) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def due() -> None:
            self._timers.discard(handle)
            cell = self.ref.slot.cell
            if cell is not None and not cell.mailbox.closed:
                cell.mailbox.put_system((_RestartDue(names), None))

        handle = loop.call_later(delay, due)
        self._timers.add(handle)

    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    async def _give_up(
        self, child: _Child, reason: ExitReason, cause: BaseException | None
    ) -> None:
        opts = self.options
        last = f"{type(cause).__name__}: {cause}" if cause is not None else reason.value
        error = SupervisionError(
            f"supervisor {self.ref.path!r} gave up: more than {opts.max_restarts} restarts "
            f"within {opts.within_s} s; the last was child {child.spec.name!r} ({last}). "
            "Fix the failing child, or raise max_restarts / within_s."
        )
        error.__cause__ = cause
        self._cancel_timers()
        await self._stop_all("its supervisor gave up", error)
        raise error


# -- building and handling trees ---------------------------------------------------------------


def supervisor_spec(
    name: str,
    children: Iterable[ChildSpec],
    *,
    restart: str = "permanent",
    shutdown: float = 30.0,
    **options: Any,
) -> ChildSpec:
    """A ChildSpec for a nested supervisor (``options``: strategy, max_restarts, ...)."""
    return ChildSpec(
        factory=Supervisor,
        args=(tuple(children),),
        kwargs=options,
        name=name,
        restart=restart,  # type: ignore[arg-type]
        shutdown=shutdown,
    )


class Tree:
    """A handle to a running supervisor: its children by name, and its end."""

    def __init__(self, system: ActorSystem, ref: ActorRef) -> None:
        self.system = system
        self.ref = ref
        self._ended: asyncio.Future[Terminated] = asyncio.get_running_loop().create_future()
        system.on_terminated(ref, self._on_end)

    def _on_end(self, notice: Terminated) -> None:
        if not self._ended.done():
            self._ended.set_result(notice)

    def __getitem__(self, name: str) -> ActorRef:
        ref = self.system.lookup(f"{self.ref.path}/{name}")
        if ref is None:
            raise KeyError(f"supervisor {self.ref.path!r} has no live child {name!r}")
        return ref

    async def start_child(self, spec: ChildSpec) -> ActorRef:
        ref: ActorRef = await self.ref.ask(StartChild(spec))
        return ref

    async def terminate_child(self, name: str) -> None:
        await self.ref.ask(TerminateChild(name))

    async def which_children(self) -> list[ChildInfo]:
        children: list[ChildInfo] = await self.ref.ask(WhichChildren())
        return children

    async def wait(self, timeout: float | None = None) -> None:
        """Return when the tree has stopped; raise SupervisionError if it gave up (or ended
        abnormally in another way)."""
        try:
            notice = await asyncio.wait_for(asyncio.shield(self._ended), timeout)
        except TimeoutError:
            raise GetTimeoutError(
                f"supervisor {self.ref.path!r} was still running after {timeout} s"
            ) from None
        if notice.reason.abnormal or notice.cause is not None:
            if isinstance(notice.cause, SupervisionError):
                raise notice.cause
            raise SupervisionError(
                f"supervisor {self.ref.path!r} ended abnormally ({notice.reason.value}"
                + (f": {notice.cause!r}" if notice.cause is not None else "") + ")"
            ) from notice.cause

    async def stop(self, timeout: float | None = None) -> None:
        await self.system.stop(self.ref, timeout)


async def start_supervisor(
    system: ActorSystem,
    children: Iterable[ChildSpec],
    *,
    name: str | None = None,
    strategy: Strategy = "one_for_one",
    max_restarts: int = 3,
    within_s: float = 5.0,
    backoff: Backoff | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Tree:
    """Start a supervision tree as a top-level actor of ``system``; returns its Tree."""
    specs = tuple(children)
    ref = await system.spawn(
        lambda: Supervisor(
            specs, strategy=strategy, max_restarts=max_restarts, within_s=within_s,
            backoff=backoff, clock=clock,
        ),
        name=name,
    )
    return Tree(system, ref)
