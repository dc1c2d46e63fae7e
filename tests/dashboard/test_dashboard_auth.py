"""The dashboard lets in only the holders of the cluster token, on every route.

The routes are read from the application's own router (the one the head serves is built by
the same ``make_app``), so a route added later cannot escape the check.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio

import actorflow as af
from actorflow.dashboard.auth import COOKIE, LOGIN_PATH, Auth
from actorflow.dashboard.data import Views
from actorflow.dashboard.server import make_app

TOKEN = "test-token-" + "7" * 20
WAIT = 30.0


@pytest_asyncio.fixture
async def dashboard() -> AsyncIterator[tuple[str, af.Runtime]]:
    rt = await af.init(num_cpus=1, dashboard=True, token=TOKEN, log_to_driver=False)
    try:
        url = rt.dashboard_url
        assert url is not None and url.startswith("http://127.0.0.1:")
        yield url, rt
    finally:
        await af.shutdown()


def routes(rt: af.Runtime) -> list[tuple[str, str]]:
    """(method, path) of every route of the dashboard's application."""
    app = make_app(Auth(TOKEN), Views(rt.core.head))
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path, f"a route whose path this test cannot build: {route}"
        out.append((route.method, re.sub(r"\{[^}]+\}", "x", path)))
    return out


async def test_every_route_needs_the_token(dashboard: tuple[str, af.Runtime]) -> None:
    url, rt = dashboard
    found = routes(rt)
    paths = {path for _, path in found}
    assert {"/", "/api/cluster", "/api/actors", "/api/events", "/metrics"} <= paths, paths
    timeout = aiohttp.ClientTimeout(total=WAIT)
    checked = 0
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for method, path in found:
            if path == LOGIN_PATH or method == "HEAD":
                continue
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": f"Basic {TOKEN}"},
                            {"Cookie": f"{COOKIE}=" + "0" * 64}, {"Cookie": f"{COOKIE}={TOKEN}"}):
                async with http.request(method, url + path, headers=headers,
                                        allow_redirects=False) as r:
                    body = await r.read()
                    assert r.status == 401, (method, path, headers, r.status, body[:200])
                    assert TOKEN.encode() not in body
                    checked += 1
    assert checked >= 5 * 12


async def test_bearer_and_login_cookie_let_in(dashboard: tuple[str, af.Runtime]) -> None:
    url, _ = dashboard
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(url + "/api/cluster",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
            assert isinstance(await r.json(), dict)
        async with http.get(url + LOGIN_PATH) as r:  # the form, nothing else
            assert r.status == 200
            page = await r.text()
            assert 'name="token"' in page and TOKEN not in page
        async with http.post(url + LOGIN_PATH, data={"token": "wrong"},
                             allow_redirects=False) as r:
            assert r.status == 401
            assert COOKIE not in r.cookies
        async with http.post(url + LOGIN_PATH, data={"token": TOKEN},
                             allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/"
            raw = r.headers["Set-Cookie"]
            assert "HttpOnly" in raw and "SameSite=Strict" in raw, raw
            value = r.cookies[COOKIE].value
            assert TOKEN not in value and len(value) == 64
    # a fresh client with only the cookie is in
    async with aiohttp.ClientSession(timeout=timeout, cookies={COOKIE: value}) as http:
        async with http.get(url + "/") as r:
            assert r.status == 200 and "actorflow" in await r.text()
            assert r.headers["X-Frame-Options"] == "DENY"
        async with http.get(url + "/api/actors") as r:
            assert r.status == 200
        async with http.post(url + "/logout", allow_redirects=False) as r:
            assert r.status == 303
