"""Quick start: in-process actors and a supervision tree on the actorflow kernel.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from actorflow.runtime import Actor, ActorSystem
from actorflow.supervision import ChildSpec, start_supervisor


class Counter(Actor):
    """Counts what it is told; answers asks with the total. Crashes on a negative number."""

    def __init__(self) -> None:
        self.total = 0

    async def receive(self, message: Any) -> Any:
        if message < 0:
            raise ValueError(f"negative increment {message}")
        self.total += message
        return self.total


async def main() -> None:
    async with ActorSystem("quickstart") as system:
        tree = await start_supervisor(
            system, [ChildSpec(factory=Counter, name="counter")], max_restarts=3, within_s=10
        )
        counter = tree["counter"]
        for i in range(1, 4):
            await counter.tell(i)
        print("total:", await counter.ask(0))  # 6
        try:
            await counter.ask(-1)  # crashes the actor; its supervisor restarts it
        except ValueError as exc:
            print("crashed:", exc)
        print("after restart:", await counter.ask(10))  # 10: a fresh incarnation
        await tree.stop()


if __name__ == "__main__":
    asyncio.run(main())
