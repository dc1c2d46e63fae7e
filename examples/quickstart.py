"""Quick start: remote tasks, an actor and an object on the embedded default cluster.

Run: python examples/quickstart.py   (or: actorflow run examples/quickstart.py)
"""

from __future__ import annotations

import actorflow as af


@af.remote
async def square(x: int) -> int:
    return x * x


@af.remote
def add(a: int, b: int) -> int:  # plain def runs in a worker thread, off the loop
    return a + b


@af.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def incr(self, k: int = 1) -> int:
        self.n += k
        return self.n


async def main() -> None:
    # tasks run in worker processes; .remote() returns an ObjectRef at once
    squares = await af.get([square.remote(i) for i in range(10)])
    print("squares:", squares)
    # refs can be arguments: they are resolved to values before the task runs
    total = await add.remote(square.remote(3), square.remote(4))
    print("3^2 + 4^2 =", total)
    # an actor keeps state between calls; calls from one caller run in order
    counter = Counter.remote(10)
    print("counter:", await af.get([counter.incr.remote() for _ in range(3)]))
    # objects: put once, read anywhere on the node without a copy
    ref = af.put(list(range(5)))
    print("object:", await ref)
    try:
        await add.remote("a", 1)
    except TypeError as exc:  # remote errors keep their type (and carry the remote traceback)
        print("remote TypeError:", str(exc).splitlines()[0])


if __name__ == "__main__":
    af.run(main)
