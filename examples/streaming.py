"""Streaming generators: a task and an actor method that yield, read while they run.

Run: actorflow run examples/streaming.py   (or: python examples/streaming.py)
"""

from __future__ import annotations

import asyncio

import actorflow as af


@af.remote
async def countdown(n: int):
    for i in range(n, 0, -1):
        await asyncio.sleep(0.05)  # values arrive as they are made, not at the end
        yield i


@af.remote
def chunks(text: str, size: int):  # a plain generator works too (it runs on a thread)
    for start in range(0, len(text), size):
        yield text[start:start + size]


@af.remote
class Sensor:
    def __init__(self) -> None:
        self.reads = 0

    async def readings(self, n: int):
        for i in range(n):
            self.reads += 1
            yield {"reading": i, "value": i * i}

    def count(self) -> int:
        return self.reads


async def main() -> None:
    gen = countdown.remote(3)  # an af.ObjectRefGenerator, at once
    print("countdown:", [await ref async for ref in gen])

    print("chunks:", [await ref async for ref in chunks.remote("streaming!", 4)])

    sensor = Sensor.remote()
    # backpressure: the actor makes at most 2 readings ahead of what this loop has taken
    gen = sensor.readings.options(generator_backpressure=2).remote(5)
    values = [(await ref)["value"] async for ref in gen]
    print("readings:", values, "made:", await sensor.count.remote())


if __name__ == "__main__":
    af.run(main, num_cpus=2)
