"""Embedding: an aiohttp web service that offloads CPU work to actorflow tasks.

``af.init()`` runs inside the service's own event loop and never blocks it; handlers await
remote tasks like any other coroutine.

Run: python examples/embed_aiohttp.py   then: curl 'http://127.0.0.1:8080/fib?n=25'
"""

from __future__ import annotations

from aiohttp import web

import actorflow as af


@af.remote
def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


RUNTIME = web.AppKey("actorflow", af.Runtime)


async def handle_fib(request: web.Request) -> web.Response:
    n = int(request.query.get("n", "20"))
    return web.json_response({"n": n, "fib": await fib.remote(n)})


async def start_actorflow(app: web.Application) -> None:
    app[RUNTIME] = await af.init(log_to_driver=False)


async def stop_actorflow(app: web.Application) -> None:
    await af.shutdown()


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/fib", handle_fib)
    app.on_startup.append(start_actorflow)
    app.on_cleanup.append(stop_actorflow)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=8080)
