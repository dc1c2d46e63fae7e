"""``af.util``: helpers built on actorflow's public API (API.md §11).

- :class:`ActorPool` spreads calls over a fixed set of actors (``map``, ``map_unordered``,
  ``submit`` and ``get_next``), as Ray's ``ray.util.ActorPool`` does, with coroutines.
- :class:`Queue` is a FIFO queue held by an actor, shared by every task, actor and driver that
  has it (it pickles with its actor's handle), with ``asyncio.Queue``'s methods as coroutines
  and ``maxsize`` backpressure. :class:`Full` and :class:`Empty` are its errors.

Reached as ``af.util`` after ``import actorflow as af`` (imported on first use); nothing here
reaches into actorflow's private modules.
"""

from actorflow.util.pool import ActorPool
from actorflow.util.queue import Empty, Full, Queue, QueueStatistics

__all__ = ["ActorPool", "Empty", "Full", "Queue", "QueueStatistics"]
