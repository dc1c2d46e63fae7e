"""Flags of the metrics' scrape endpoint (``actorflow start``) and of ``actorflow run
--progress``.

``actorflow start --head --metrics-export-port N [--metrics-host H] [--metrics-no-auth]``
serves ``GET /metrics`` (Prometheus text) on ``H:N`` from the head's process, besides the
dashboard's own ``/metrics``: for a scraper inside a private network (``--metrics-host
10.0.0.5``). It wants the cluster token as a bearer token (Prometheus:
``authorization: {credentials_file: ...}``) unless ``--metrics-no-auth`` is given, which
anyone who can reach ``H:N`` then reads freely. The defaults serve nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    start: argparse.ArgumentParser = sub.choices["start"]
    group = start.add_argument_group("metrics (head only)")
    group.add_argument("--metrics-export-port", type=int, default=None, metavar="PORT",
                       help="also serve GET /metrics on this port (0: any free port), "
                            "for a Prometheus scraper")
    group.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                       help="the address that port listens on (default 127.0.0.1)")
    group.add_argument("--metrics-no-auth", action="store_true",
                       help="serve that port without the cluster token (only on a network "
                            "you trust)")
    run: argparse.ArgumentParser = sub.choices["run"]
    run.add_argument("--progress", action="store_true",
                     help="show a bar of the app's tasks, settled over submitted")
