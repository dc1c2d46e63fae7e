"""Fixtures of the metrics and progress tests: real embedded clusters, real worker processes,
real `actorflow start` processes; each module ends every process it started."""

from __future__ import annotations

from proc_support import no_process_left

from actorflow.testing import af_cluster

__all__ = ["af_cluster", "no_process_left"]
