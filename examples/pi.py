"""Monte Carlo estimate of pi over remote tasks.

Run: actorflow run examples/pi.py -- 2000000   (or: python examples/pi.py)
"""

from __future__ import annotations

import random
import sys

import actorflow as af


@af.remote
def sample(n: int, seed: int) -> int:
    """Count how many of n random points of the unit square fall inside the quarter circle."""
    rng = random.Random(seed)
    inside = 0
    for _ in range(n):
        x, y = rng.random(), rng.random()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


async def main(argv: list[str]) -> float:
    total = int(argv[0]) if argv else 400_000
    chunks = 8
    per = total // chunks
    counts = await af.get([sample.remote(per, seed) for seed in range(chunks)])
    estimate = 4.0 * sum(counts) / (per * chunks)
    print(f"pi ~= {estimate:.4f} from {per * chunks:,} samples in {chunks} tasks")
    return estimate


if __name__ == "__main__":
    af.run(main, sys.argv[1:])
