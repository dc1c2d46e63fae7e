"""The dashboard's web application: its routes, and the actor that serves it.

Routes (every one behind :class:`~actorflow.dashboard.auth.Auth`, the login form aside):

- ``/`` the page; ``/static/{name}`` its script and style (package files, no build step);
- ``/api/summary|cluster|actors|tasks|objects|placement_groups|jobs|workers`` JSON views,
  ``/api/actors/{actor_id}``, ``/api/jobs/{job_id}/logs``, ``/api/logs`` (a worker's lines);
- ``/api/events``: server-sent events, the summary once a second (the page redraws its view
  from it, no reload);
- ``/metrics``: the Prometheus text of the cluster's metrics;
- ``/login`` (GET, POST), ``/logout`` (POST).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from actorflow.dashboard.auth import LOGIN_PATH, Auth, Handler
from actorflow.dashboard.data import Views
from actorflow.runtime import Actor

__all__ = ["DashboardActor", "DashboardServer", "make_app"]

log = logging.getLogger("actorflow.dashboard")

#: Seconds between two summaries on the events stream.
PUSH_INTERVAL_S = 1.0
_STATIC = {"app.js": "application/javascript", "style.css": "text/css"}
_VIEWS: web.AppKey[Views] = web.AppKey("views", Views)
_CLOSING: web.AppKey[asyncio.Event] = web.AppKey("closing", asyncio.Event)


def _static(name: str) -> bytes:
    return resources.files("actorflow.dashboard").joinpath("static", name).read_bytes()


def _int(request: web.Request, key: str, default: int) -> int:
    try:
        return int(request.query.get(key, default))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{key} must be an integer") from None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, default=str))


async def _index(request: web.Request) -> web.Response:
    return web.Response(body=_static("index.html"), content_type="text/html")


async def _static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=_STATIC[name])


async def _summary(request: web.Request) -> web.Response:
    return _json(await request.app[_VIEWS].summary())


async def _cluster(request: web.Request) -> web.Response:
    return _json(await request.app[_VIEWS].cluster())


async def _actors(request: web.Request) -> web.Response:
    q = request.query
    return _json(await request.app[_VIEWS].actors(
        state=q.get("state", ""), query=q.get("q", ""), page=_int(request, "page", 0),
        size=_int(request, "size", 50)))


async def _actor(request: web.Request) -> web.Response:
    row = await request.app[_VIEWS].actor(request.match_info["actor_id"])
    if row is None:
        return _json({"error": "no such actor"}, status=404)
    return _json(row)


async def _tasks(request: web.Request) -> web.Response:
    return _json(await request.app[_VIEWS].tasks(
        query=request.query.get("q", ""), page=_int(request, "page", 0),
        size=_int(request, "size", 50)))


async def _objects(request: web.Request) -> web.Response:
    return _json(await request.app[_VIEWS].objects(
        page=_int(request, "page", 0), size=_int(request, "size", 50)))


async def _placement_groups(request: web.Request) -> web.Response:
    return _json(await request.app[_VIEWS].placement_groups())


async def _jobs(request: web.Request) -> web.Response:
    return _json(await request.app[_VIEWS].jobs())


async def _job_logs(request: web.Request) -> web.Response:
    try:
        return _json(await request.app[_VIEWS].job_logs(request.match_info["job_id"]))
    except KeyError:
        return _json({"error": "no such job"}, status=404)


async def _workers(request: web.Request) -> web.Response:
    return _json(await request.app[_VIEWS].workers())


async def _logs(request: web.Request) -> web.Response:
    q = request.query
    pid = _int(request, "pid", -1)
    try:
        data = await request.app[_VIEWS].logs(
            actor_id=q.get("actor_id") or None, node_id=q.get("node_id") or None,
            pid=pid if pid >= 0 else None, job_id=q.get("job_id") or None)
    except ValueError as exc:
        return _json({"error": str(exc)}, status=404)
    return _json(data)


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[_VIEWS].metrics()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``summary`` once a second until the client or the server leaves."""
    views = request.app[_VIEWS]
    closing = request.app[_CLOSING]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff"})
    await response.prepare(request)
    while not closing.is_set():
        try:
            data: Any = await views.summary()
        except Exception as exc:  # the page shows it; the stream goes on
            data = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            await response.write(f"event: summary\ndata: {json.dumps(data)}\n\n".encode())
        except ConnectionError:
            break
        try:
            await asyncio.wait_for(closing.wait(), PUSH_INTERVAL_S)
        except TimeoutError:
            pass
    return response


@web.middleware
async def _failures(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A view whose source failed (a node or service that does not answer) answers 503 with
    the cause, which the page shows, instead of a bare 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.warning("dashboard: %s %s failed: %s: %s", request.method, request.path,
                    type(exc).__name__, exc)
        return _json({"error": f"{type(exc).__name__}: {exc}"}, status=503)


def make_app(auth: Auth, views: Views) -> web.Application:
    """The dashboard's application (its routes: see the module doc)."""
    app = web.Application(middlewares=[auth.middleware, _failures])
    app[_VIEWS] = views
    app[_CLOSING] = asyncio.Event()
    app.router.add_get(LOGIN_PATH, auth.login_page)
    app.router.add_post(LOGIN_PATH, auth.login)
    app.router.add_post("/logout", auth.logout)
    app.router.add_get("/", _index)
    app.router.add_get("/static/{name}", _static_file)
    app.router.add_get("/api/summary", _summary)
    app.router.add_get("/api/cluster", _cluster)
    app.router.add_get("/api/actors", _actors)
    app.router.add_get("/api/actors/{actor_id}", _actor)
    app.router.add_get("/api/tasks", _tasks)
    app.router.add_get("/api/objects", _objects)
    app.router.add_get("/api/placement_groups", _placement_groups)
    app.router.add_get("/api/jobs", _jobs)
    app.router.add_get("/api/jobs/{job_id}/logs", _job_logs)
    app.router.add_get("/api/workers", _workers)
    app.router.add_get("/api/logs", _logs)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/metrics", _metrics)
    return app


class DashboardServer:
    """The application bound to ``host:port``. Port 0: any free one; with ``fallback``, a
    taken port falls back to a free one (the default port, which another cluster on the
    machine may hold), else a taken port fails the start."""

    def __init__(self, app: web.Application, host: str, port: int, *,
                 fallback: bool = False) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.fallback = fallback
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                if not (self.fallback and exc.errno == errno.EADDRINUSE):
                    raise
                log.warning("dashboard: port %d is taken; using a free one", self.port)
                sock.bind((self.host, 0))
        except BaseException:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        return sock

    async def start(self) -> None:
        sock = self._bind()
        try:
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()
        except BaseException:
            sock.close()
            await self._runner.cleanup()
            raise

    async def close(self) -> None:
        self.app[_CLOSING].set()
        try:
            await self._runner.cleanup()
        finally:
            await self.app[_VIEWS].close()


class DashboardActor(Actor):
    """Owns the server in the head's system: serves from ``on_start``, stops in ``on_stop``.
    Asked anything, it answers the dashboard's URL."""

    def __init__(self, server: DashboardServer) -> None:
        self.server = server

    async def on_start(self) -> None:
        await self.server.start()
        log.info("dashboard at %s", self.server.url)

    async def receive(self, message: Any) -> Any:
        return self.server.url

    async def on_stop(self) -> None:
        await self.server.close()

