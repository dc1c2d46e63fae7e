"""actorflow's own benchmarks: ``python -m benchmarks [NAMES...] [--json] [--quick] [--reps N]``.

Each group is a module of this package exposing ``WORKLOADS`` (its workload names) and
``run(quick, reps, only=None) -> list[dict]`` returning records in the peer benchmarks' format
(see ``docs/performance.md``). ``GROUPS`` in ``__main__`` lists them; adding a group is one line.
"""
