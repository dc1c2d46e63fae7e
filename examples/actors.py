"""Actors: a counter with plain methods, and an async actor whose calls interleave.

Run: actorflow run examples/actors.py   (or: python examples/actors.py)
"""

from __future__ import annotations

import asyncio

import actorflow as af


@af.remote
class Counter:
    """A counter: calls from one caller run in the order they were made."""

    def __init__(self, start: int = 0) -> None:
        self.n = start

    def incr(self, k: int = 1) -> int:
        self.n += k
        return self.n

    def value(self) -> int:
        return self.n


@af.remote
class Fetcher:
    """An async actor: while one call awaits, others run (max_concurrency defaults to 1000)."""

    async def fetch(self, key: str, delay: float) -> str:
        await asyncio.sleep(delay)  # stands in for I/O
        return key.upper()


async def main() -> None:
    counter = Counter.remote(10)
    refs = [counter.incr.remote() for _ in range(5)]
    print("increments:", await af.get(refs))  # [11, 12, 13, 14, 15]: in order
    print("value:", await counter.value.remote())

    fetcher = Fetcher.remote()
    started = asyncio.get_running_loop().time()
    words = await af.get([fetcher.fetch.remote(w, 0.2) for w in ("a", "b", "c", "d")])
    elapsed = asyncio.get_running_loop().time() - started
    print("fetched:", words, f"in {elapsed:.2f} s (concurrently, not 4 x 0.2 s)")
    await af.kill(counter)


if __name__ == "__main__":
    af.run(main)
