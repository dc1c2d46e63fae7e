"""Creating an actor: the head is asked once the constructor's ObjectRef arguments are ready.

While the link to the head is lost (it restarts) the ask is made again, within the grace period
of :func:`~actorflow.cluster.head_link.retry_while_head_away`; the head takes an actor id it
knows as the same creation. The answer goes to the actor's :class:`ActorClient`, whose calls
wait for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from actorflow._errors import ActorDiedError
from actorflow.cluster.head_link import head_answered, retry_while_head_away
from actorflow.cluster.protocol import ActorSpec, CreateActor, Failed

if TYPE_CHECKING:
    from actorflow.cluster.actor_client import ActorClient
    from actorflow.objects.ref import ObjectRef

__all__ = ["ActorCreation"]


class ActorCreation:
    """The creation of ``spec``'s actor for ``client`` (see the module docstring)."""

    def __init__(self, client: ActorClient, spec: ActorSpec, get_if_exists: bool) -> None:
        self.client = client
        self.core = client.core
        self.spec = spec
        self.get_if_exists = get_if_exists
        self.resolved: tuple[Any, ...] = ()

    def start(self, deps: list[ObjectRef]) -> None:
        if not deps:
            self._send()
            return

        def on_deps(payloads: list[Any]) -> None:
            for payload in payloads:
                if type(payload) is Failed:
                    self.client.not_created(payload.error)
                    return
            self.core.sending(payloads)  # the actor's process reads them: never reused
            self.resolved = tuple(payloads)
            self._send()

        self.core.reads.when_all_ready(deps, on_deps)

    def _send(self) -> None:
        try:
            fut = self.core.head.ask_nowait(
                CreateActor(replace(self.spec, resolved=self.resolved), self.get_if_exists))
        except Exception as exc:
            self._failed(exc)
            return
        fut.add_done_callback(self._answered)

    def _answered(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            self.client.not_created(ActorDiedError(self.client.class_name,
                                                   "its creation was cancelled"))
            return
        exc = fut.exception()
        if exc is not None:
            self._failed(exc)
            return
        head_answered(self)
        real_id, _spec = fut.result()
        self.client.created(real_id)

    def _failed(self, exc: BaseException) -> None:
        error = retry_while_head_away(self, self.core.head, exc, self._send)
        if error is not None:  # (None: asked again soon, the head being away)
            self.client.not_created(error)
