"""An actor pool: work spread over a few actors, each set up once, one call per actor at a time.

Run: actorflow run examples/actor_pool.py   (or: python examples/actor_pool.py)
"""

from __future__ import annotations

import asyncio
import os

import actorflow as af


@af.remote
class Tokenizer:
    """Stands in for an actor with costly state (a model, a connection) made once."""

    def __init__(self, lowercase: bool) -> None:
        self.lowercase = lowercase

    async def count_words(self, text: str) -> dict[str, int]:
        await asyncio.sleep(0.05 * (len(text) % 3))  # calls take different times
        words = (text.lower() if self.lowercase else text).split()
        return {"words": len(words), "pid": os.getpid()}


TEXTS = [f"the quick brown fox jumps {i} times" for i in range(12)]


async def main() -> None:
    pool = af.util.ActorPool([Tokenizer.remote(True) for _ in range(3)])

    # map: results in the order of the inputs, computed on the three actors at once
    counts = [out async for out in pool.map(lambda a, t: a.count_words.remote(t), TEXTS)]
    print("words:", [c["words"] for c in counts])
    print("actors used:", len({c["pid"] for c in counts}))

    # map_unordered: each result as soon as it is ready
    total = 0
    async for out in pool.map_unordered(lambda a, t: a.count_words.remote(t), TEXTS):
        total += out["words"]
    print("total words:", total)

    # submit / get_next: feed the pool by hand
    for text in ("one two", "three four five"):
        pool.submit(lambda a, t: a.count_words.remote(t), text)
    firsts = []
    while pool.has_next():
        firsts.append((await pool.get_next())["words"])
    print("submitted:", firsts)

    if [c["words"] for c in counts] != [7] * 12 or total != 84 or firsts != [2, 3]:
        raise SystemExit("unexpected results")
    while (actor := pool.pop_idle()) is not None:  # every actor is idle again: take them out
        await af.kill(actor)


if __name__ == "__main__":
    af.run(main)
