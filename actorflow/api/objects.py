"""Objects: put, get, wait, as_completed, cancel."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

from actorflow._errors import GetTimeoutError
from actorflow.api.progress import Progress, get_bar
from actorflow.cluster.core import Core
from actorflow.cluster.protocol import Payload
from actorflow.cluster.streaming import ObjectRefGenerator
from actorflow.objects.ref import ObjectRef, current_core

__all__ = ["as_completed", "cancel", "get", "put", "put_async", "wait"]


def put(value: Any) -> ObjectRef:
    """Store ``value`` in the cluster and return its ref (synchronous). The value is serialized
    now (later changes to it are not seen); a large numpy array is copied once, into shared
    memory, and read back without a copy."""
    return current_core().put(value)


async def put_async(value: Any) -> ObjectRef:
    """:func:`put` for values of any size, without holding the event loop: the copy into
    shared memory runs in a thread while the loop serves others. Do not change ``value``
    until this returns. ``af.put`` and ``.remote()`` refuse, with
    :class:`~actorflow.SerializationError`, to copy a value larger than 256 MiB on the
    event loop's thread; put it with this and pass the ref."""
    return await current_core().put_async(value)


def _check(refs: Sequence[Any], what: str) -> None:
    for ref in refs:
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"{what} takes ObjectRefs, got {type(ref).__name__}: {ref!r}")


async def _values(core: Core, refs: Sequence[ObjectRef]) -> list[Any]:
    payloads = await core.reads.payloads(refs)
    if not all(core.reads.is_local(p) for p in payloads):
        payloads = await core.reads.localize_refs(refs, payloads)
    return [core.materialize(p) for p in payloads]


async def get(refs: ObjectRef | Sequence[ObjectRef], *, timeout: float | None = None,
              progress: Progress = False) -> Any:
    """The value of a ref, or the values of a list of refs (same order).

    Raises the task's error (a TaskError that is also the original exception's type),
    GetTimeoutError after ``timeout`` seconds. ``progress``: show a tqdm bar that advances as
    each value arrives (``True``; a string, its description; a mapping, tqdm's keyword
    arguments such as ``file``).
    """
    core = current_core()
    single = isinstance(refs, ObjectRef)
    seq: Sequence[ObjectRef] = [refs] if isinstance(refs, ObjectRef) else list(refs)
    _check(seq, "get()")
    bar = get_bar(core, seq, progress) if progress else None
    try:
        if timeout is None:
            values = await _values(core, seq)
        else:
            try:
                async with asyncio.timeout(timeout):
                    values = await _values(core, seq)
            except TimeoutError:
                raise GetTimeoutError(
                    f"get() of {len(seq)} object(s) timed out after {timeout} s; the tasks may "
                    "still be running: raise the timeout, or use af.wait() to take what is ready"
                ) from None
    finally:
        if bar is not None:
            bar.close()
    return values[0] if single else values


async def wait(
    refs: Sequence[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
    progress: Progress = False,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Wait until ``num_returns`` of ``refs`` are ready (or ``timeout`` passes); returns
    ``(ready, not_ready)``, each in the order of ``refs``. A failed task counts as ready.
    ``progress``: a bar of the refs ready, out of ``num_returns`` (as for :func:`get`)."""
    core = current_core()
    refs = list(refs)
    _check(refs, "wait()")
    if num_returns < 0 or num_returns > len(refs):
        raise ValueError(f"num_returns must be between 0 and {len(refs)}, got {num_returns}")
    if progress:
        bar = get_bar(core, refs, progress, total=num_returns)
        try:
            return await wait(refs, num_returns=num_returns, timeout=timeout,
                              fetch_local=fetch_local)
        finally:
            bar.close()
    pairs = [(ref, core.reads.payload_future(ref)) for ref in refs]
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    pending = {fut for _, fut in pairs if not fut.done()}
    while len(refs) - _undone(pairs) < num_returns and pending:
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            break
        finished, pending = await asyncio.wait(pending, timeout=remaining,
                                               return_when=asyncio.FIRST_COMPLETED)
        if not finished:
            break
    ready: list[ObjectRef] = []
    not_ready: list[ObjectRef] = []
    for ref, fut in pairs:
        if fut.done() and len(ready) < num_returns:
            ready.append(ref)
        else:
            not_ready.append(ref)
    return ready, not_ready


def _undone(pairs: list[tuple[ObjectRef, asyncio.Future[Payload]]]) -> int:
    return sum(1 for _, fut in pairs if not fut.done())


async def as_completed(refs: Sequence[ObjectRef]) -> AsyncIterator[ObjectRef]:
    """Yield each ref as soon as its value is ready (or its task failed), in the order they
    became ready."""
    core = current_core()
    refs = list(refs)
    _check(refs, "as_completed()")
    ready: deque[ObjectRef] = deque()
    loop = asyncio.get_running_loop()
    wake: asyncio.Future[None] | None = None

    def arrived(ref: ObjectRef, _: Payload) -> None:
        ready.append(ref)
        if wake is not None and not wake.done():
            wake.set_result(None)

    for ref in refs:
        core.reads.when_ready(ref, functools.partial(arrived, ref))
    for _ in refs:
        while not ready:
            wake = loop.create_future()
            await wake
        yield ready.popleft()


async def cancel(ref: ObjectRef | ObjectRefGenerator, *, force: bool = False,
                 recursive: bool = True) -> None:
    """Cancel the task or actor call that produces ``ref``; ``get`` then raises
    TaskCancelledError (unless it had finished: its value stays).

    A queued one never runs. A running ``async def`` one gets CancelledError inside. A running
    plain-``def`` task gets TaskCancelledError raised in its thread (when it next runs Python
    code), or with ``force`` its worker process is ended; a running plain-``def`` actor method
    is not interrupted: ``af.get_runtime_context().is_cancelled()`` turns True in it, and its
    caller gets TaskCancelledError at once. ``recursive``: the tasks and actor calls it
    submitted are cancelled too. ``force`` is for tasks only (end an actor with ``af.kill``).
    Only the process that made the call can cancel it."""
    core = current_core()
    if isinstance(ref, ObjectRefGenerator):  # its task: the values it made stay readable
        ref = ref.task_ref
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef or an ObjectRefGenerator, got "
                        f"{type(ref).__name__}")
    if core.submitter.cancel(ref.id, force, recursive):
        return
    for client in list(core.actors.values()):
        if client.pending(ref.id):
            if force:
                raise ValueError("force=True cannot cancel an actor call (it would end the "
                                 "actor's process); use af.kill(actor) for that")
            client.cancel(ref.id, recursive)
            return
