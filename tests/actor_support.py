"""Actors that the tests of several folders share. This module is pickled by value (a cluster's
workers cannot import the tests), as the test modules that use it are."""

from __future__ import annotations

import sys

import cloudpickle

import actorflow as af

__all__ = ["Counter"]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@af.remote(num_cpus=0)
class Counter:
    """Counts its calls: ``incr()`` answers 1, 2, 3..."""

    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n
