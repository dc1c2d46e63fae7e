"""Who may see the dashboard: whoever holds the cluster token.

A request is let in when it carries ``Authorization: Bearer <token>`` or the session cookie
that the login form sets. The cookie holds an HMAC (SHA-256) of a per-process random key made
with the token, never the token itself: it is worth nothing once the head restarts, and it
tells nothing about the token. Every comparison is constant-time (:func:`hmac.compare_digest`).

Every route answers 401 without one of the two, except the login page and its form's POST
(which reveal nothing but the form). Pages and data alike: there is no public route.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["COOKIE", "LOGIN_PATH", "Auth", "Handler"]

#: The session cookie's name.
COOKIE = "actorflow_dashboard"
#: The only path served without the token (GET: the form; POST: the form's answer).
LOGIN_PATH = "/login"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}

# The login page's own style, inline (the stylesheet is behind the login); the page's CSP
# allows exactly this block by its hash.
_LOGIN_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;color:#1d2330;background:#f7f8fa;"
    "display:flex;justify-content:center;padding-top:12vh}"
    "main{background:#fff;border:1px solid #e3e6ec;padding:1.5em 2em;max-width:26em}"
    "input{width:100%;margin:.4em 0 .8em;font:inherit;padding:.3em .5em}"
    "button{font:inherit;padding:.3em 1em}.error{color:#c0362c}"
)
_LOGIN_CSP = _SECURITY_HEADERS["Content-Security-Policy"].replace(
    "style-src 'self'",
    "style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(_LOGIN_STYLE.encode()).digest()).decode() + "'")

_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>actorflow dashboard: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><style>""" + _LOGIN_STYLE + """</style></head>
<body><main>
<h1>actorflow</h1>
<p>The dashboard needs the cluster token (the head's token file, or
<code>$ACTORFLOW_TOKEN</code>).</p>
<form method="post" action="/login">
<label for="token">Cluster token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<button id="login" type="submit">Log in</button>
</form>
{error}
</main></body></html>
"""

_UNAUTHORIZED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>401</title><link rel="icon" href="data:,">
</head>
<body><p>The dashboard needs the cluster token: <a href="/login">log in</a>.</p></body></html>
"""


class Auth:
    """The token check and the aiohttp middleware that applies it to every route."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the dashboard needs the cluster token")
        self._token = token.encode()
        self._key = secrets.token_bytes(32)  # this process's: a restart ends every session
        self._cookie = hmac.new(self._token, self._key, hashlib.sha256).hexdigest()

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token)

    def cookie_value(self) -> str:
        return self._cookie

    def allowed(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and given and self.token_ok(given.strip()):
            return True
        cookie = request.cookies.get(COOKIE) or ""
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self._cookie.encode())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == LOGIN_PATH and request.method in ("GET", "POST"):
            response = await handler(request)
        elif not self.allowed(request):
            response = _unauthorized(request)
        else:
            response = await handler(request)
        if not response.prepared:  # a stream (events) set its own headers before it began
            for name, value in _SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    # -- the login page ------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        return _html(_LOGIN_PAGE.replace("{error}", ""))

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        given = form.get("token")
        if not isinstance(given, str) or not self.token_ok(given.strip()):
            return _html(_LOGIN_PAGE.replace(
                "{error}", '<p class="error" id="login-error">Wrong token.</p>'), status=401)
        response = web.Response(status=303, headers={"Location": "/"})
        response.set_cookie(COOKIE, self._cookie, httponly=True, samesite="Strict", path="/")
        return response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.Response(status=303, headers={"Location": LOGIN_PATH})
        response.del_cookie(COOKIE, path="/")
        return response


def _unauthorized(request: web.Request) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="actorflow"'}
    if "text/html" in request.headers.get("Accept", ""):
        return web.Response(status=401, text=_UNAUTHORIZED_PAGE, content_type="text/html",
                            headers=headers)
    return web.json_response({"error": "unauthorized",
                              "detail": "the cluster token is required"},
                             status=401, headers=headers)


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html",
                        headers={"Content-Security-Policy": _LOGIN_CSP})
