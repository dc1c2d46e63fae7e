"""The other process of the transport tests: ``python tp_peer.py MODE CONFIG_JSON``.

Prints one JSON line (its address and what the test needs), serves until its stdin closes,
then shuts down cleanly and exits 0. Logs go to stderr, which the tests read (to check that
refused connections were logged, and that no secret was).

Modes:

- ``listener``: a bare transport listener (token from ``AF_TEST_TOKEN``) whose links answer
  every message of kind 2 with kind 3, the same cid and the same value.
- ``system``: an ActorSystem served by the remoting layer, with the actors of
  :func:`_spawn_actors`; prints ``refs``: name -> (uid, address, slot id, path).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

import uvloop

from actorflow.runtime import Actor, ActorRef, ActorSystem
from actorflow.runtime.actor import ErrorReply
from actorflow.transport import TransportConfig, WebSocketTransport
from actorflow.transport.base import Link, Listener
from actorflow.transport.remote import serve_system


class Unrebuildable(Exception):
    """Pickles, but cannot be unpickled (its __init__ wants two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


class Echo(Actor):
    """Answers its message; keeps a log of what it got, for order checks."""

    def __init__(self) -> None:
        self.log: list[Any] = []

    async def receive(self, message: Any) -> Any:
        match message:
            case ("log",):
                return list(self.log)
            case ("raise", text):
                return ErrorReply(KeyError(text))
            case ("raise-unrebuildable",):
                try:
                    raise Unrebuildable("x", "y")
                except Unrebuildable as exc:  # raised, so it has a traceback to send along
                    return ErrorReply(exc)
            case ("unpicklable-result",):
                import threading

                return threading.Lock()
            case ("call", ref, payload):  # ask another actor (a ref that came over the link)
                return await ref.ask(payload)
            case ("stop",):
                self.stop()
                return "stopping"
            case ("crash", text):
                raise RuntimeError(text)
            case ("sleep", seconds):
                await asyncio.sleep(seconds)
                return "slept"
            case _:
                self.log.append(message)
                return message


async def _spawn_actors(system: ActorSystem) -> dict[str, ActorRef]:
    return {name: await system.spawn(Echo, name=name) for name in ("echo", "other", "victim")}


def _ref_info(ref: ActorRef) -> list[Any]:
    system = ref._slot.system
    return [system.uid, system.address, ref.id, ref.path]


async def _echo_link(link: Link) -> None:
    try:
        while True:
            for kind, target, _sender, cid, value in await link.receive():
                if kind == 2:
                    link.send(3, target, value, "", cid)
    except Exception as exc:
        logging.getLogger("tp_peer").info("link ended: %s", exc)
    finally:
        await link.aclose()


async def _serve_listener(listener: Listener) -> None:
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            link = await listener.accept()
            task = asyncio.get_running_loop().create_task(_echo_link(link))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


async def main(mode: str, options: dict[str, Any]) -> None:
    token = os.environ["AF_TEST_TOKEN"]
    config = TransportConfig(token=token, **options)
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    if mode == "listener":
        listener = await WebSocketTransport().listen(config, hello={"name": "tp_peer"})
        print(json.dumps({"address": listener.addresses, "pid": os.getpid()}), flush=True)
        serving = asyncio.get_running_loop().create_task(_serve_listener(listener))
        try:
            await stdin_closed
        finally:
            serving.cancel()
            await asyncio.wait([serving])
            await listener.aclose()
        return
    system = ActorSystem("tp_peer")
    remoting = await serve_system(system, config=config)
    try:
        refs = await _spawn_actors(system)
        info = {name: _ref_info(ref) for name, ref in refs.items()}
        print(json.dumps({"address": system.address, "pid": os.getpid(), "refs": info}), flush=True)
        await stdin_closed
    finally:
        await system.shutdown(timeout=2.0)
        await remoting.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    uvloop.run(main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
