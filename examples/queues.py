"""A queue shared by producer tasks and a consumer actor, with backpressure (maxsize).

Run: actorflow run examples/queues.py   (or: python examples/queues.py)

(Not named queue.py: a script's folder comes first on sys.path, and a queue.py there would
hide the standard library's queue module from everything the script imports.)
"""

from __future__ import annotations

import asyncio

import actorflow as af


@af.remote
async def produce(q: af.util.Queue, name: str, n: int) -> int:
    for i in range(n):
        await q.put(f"{name}-{i}")  # waits while the queue is full
    return n


@af.remote
class Consumer:
    async def consume(self, q: af.util.Queue) -> list[str]:
        taken = []
        while (item := await q.get(timeout=30)) is not None:  # None: the end
            taken.append(item)
            await asyncio.sleep(0.01)  # slower than the producers
        return taken


async def main() -> None:
    q = af.util.Queue(maxsize=3)  # the queue lives in an actor; q can be passed anywhere
    producers = [produce.remote(q, name, 5) for name in ("a", "b")]

    # no consumer yet: 3 items fit, then both producers wait for room (backpressure)
    done, _ = await af.wait(producers, num_returns=2, timeout=1.0)
    print("producers finished without a consumer:", len(done))

    consumer = Consumer.remote()
    taken_ref = consumer.consume.remote(q)
    print("produced:", sum(await af.get(producers)))
    await q.put(None)
    taken = await taken_ref
    print("consumed:", len(taken), "in order per producer:",
          [t for t in taken if t.startswith("a")] == [f"a-{i}" for i in range(5)])

    # without waiting: typed errors that are also asyncio's
    try:
        await q.get_nowait()
    except af.util.Empty:
        print("empty now")
    try:
        await q.get(timeout=0.1)
    except af.util.Empty as exc:
        print("nothing within", exc.timeout, "s")

    if len(taken) != 10 or await q.qsize() != 0:
        raise SystemExit("unexpected results")
    await q.shutdown()
    await af.kill(consumer)


if __name__ == "__main__":
    af.run(main)
