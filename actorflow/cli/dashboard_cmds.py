"""The dashboard's flags of ``actorflow start --head``: ``--dashboard-port``,
``--dashboard-host`` and ``--no-dashboard`` (see :mod:`actorflow.dashboard`)."""

from __future__ import annotations

from typing import Any

from actorflow.dashboard import DEFAULT_HOST, DEFAULT_PORT

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the dashboard's flags to ``start`` (registered before this module)."""
    start = sub.choices["start"]
    start.add_argument("--dashboard-port", type=int, default=None,
                       help=f"the dashboard's port (default {DEFAULT_PORT}, or a free one when "
                       "that is taken; 0: any free one)")
    start.add_argument("--dashboard-host", default=None,
                       help=f"the address the dashboard listens on (default {DEFAULT_HOST})")
    start.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                       help="do not serve the dashboard")
