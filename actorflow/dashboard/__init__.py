"""The dashboard: a web page served by the head's process (a head service).

``actorflow start --head`` serves it by default on ``127.0.0.1:8265`` (``--dashboard-port N``,
``--dashboard-host H``, ``--no-dashboard``); ``af.init(dashboard=True)`` serves it beside the
embedded cluster. Its URL is in the start's info (``actorflow start`` prints it, ``af.init``
logs it, ``af.dashboard_url()`` returns it). Every route needs the cluster token: see
:mod:`actorflow.dashboard.auth`. Its data comes from the shared state layer only: see
:mod:`actorflow.dashboard.data`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actorflow.cluster.services import HeadContext

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "WELL_KNOWN_ID", "start"]

#: Where the dashboard listens unless told (Ray's port, so habits carry over).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8265
#: The dashboard actor's id in the head's system.
WELL_KNOWN_ID = "dashboard"


async def start(ctx: HeadContext) -> None:
    """The head service: serve the dashboard when the options ask for it (``dashboard``),
    on ``dashboard_host``:``dashboard_port``; put its URL in ``ctx.info["dashboard"]``.

    No port given: :data:`DEFAULT_PORT`, or a free one when another process holds it (the URL
    says which). A port given and taken fails the head's start."""
    if not ctx.options.get("dashboard"):
        return
    from actorflow.dashboard.auth import Auth
    from actorflow.dashboard.data import Views
    from actorflow.dashboard.server import DashboardActor, DashboardServer, make_app

    port = ctx.options.get("dashboard_port")
    host = ctx.options.get("dashboard_host") or DEFAULT_HOST
    app = make_app(Auth(ctx.token), Views(ctx.head))
    server = DashboardServer(app, str(host), DEFAULT_PORT if port is None else int(port),
                             fallback=port is None)
    await ctx.system.spawn(lambda: DashboardActor(server), name=WELL_KNOWN_ID,
                           well_known=True)
    ctx.info["dashboard"] = server.url
