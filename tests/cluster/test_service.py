"""API.md §1: ``af.init`` works inside a running service and never blocks its loop.

A real aiohttp server on 127.0.0.1, port 0, built as examples/embed_aiohttp.py builds it (its
startup calls ``af.init()``, its handler awaits a remote task); 200 concurrent requests from a
real aiohttp client (in a thread with its own loop). A ticker coroutine sleeps 5 ms in a loop
the whole time and records how late it wakes: the loop's worst lag, which must stay under
50 ms.
"""

from __future__ import annotations

import asyncio
import sys
import threading

import aiohttp
import cloudpickle
from aiohttp import web
from cl_support import within

import actorflow as af

cloudpickle.register_pickle_by_value(sys.modules[__name__])

TICK_S = 0.005
MAX_LAG_S = 0.050
REQUESTS = 200


RUNTIME = web.AppKey("actorflow", af.Runtime)


@af.remote
def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


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


def _runqueue_wait_s() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat), or 0.0
    where the kernel does not say."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class Ticker:
    """Sleeps TICK_S in a loop and records how late it wakes.

    ``worst`` is the largest overshoot of a tick that the loop itself caused: the wall-clock
    overshoot less the time the loop's thread spent waiting for a CPU meanwhile (on a loaded
    CI machine the OS may hold a runnable process back; that is not the loop being blocked).
    ``worst_wall`` is the raw overshoot, reported alongside.
    """

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_wall = 0.0
        self.ticks = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            start, waited = loop.time(), _runqueue_wait_s()
            await asyncio.sleep(TICK_S)
            over = loop.time() - start - TICK_S
            self.worst_wall = max(self.worst_wall, over)
            self.worst = max(self.worst, over - (_runqueue_wait_s() - waited))
            self.ticks += 1

    def stop(self) -> None:
        self._stop.set()


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _client_in_thread(port: int, count: int) -> list[dict]:
    """``count`` concurrent requests from a client with its own loop in this thread, so that
    the service's loop carries only the service."""

    async def main() -> list[dict]:
        async with aiohttp.ClientSession() as session:
            async def ask(n: int) -> dict:
                async with session.get(f"http://127.0.0.1:{port}/fib", params={"n": n}) as resp:
                    assert resp.status == 200, await resp.text()
                    return await resp.json()

            return await asyncio.wait_for(
                asyncio.gather(*(ask(i % 90) for i in range(count))), 60)

    return asyncio.run(main())


async def test_service_stays_responsive_while_actorflow_starts_and_works() -> None:
    assert not af.is_initialized()
    app = make_app()
    runner = web.AppRunner(app)
    ticker = Ticker()
    tick_task = asyncio.get_running_loop().create_task(ticker.run())
    try:
        await asyncio.sleep(0.05)  # the ticker is running before the service starts
        await within(runner.setup())             # on_startup: af.init() inside the service
        assert af.is_initialized()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await within(site.start())
        port = runner.addresses[0][1]
        lag_during_init, wall_during_init = ticker.worst, ticker.worst_wall
        answers = await within(asyncio.to_thread(_client_in_thread, port, REQUESTS), 60)
        lag_during_work, wall_during_work = ticker.worst, ticker.worst_wall
        assert [a["fib"] for a in answers] == [_fib(i % 90) for i in range(REQUESTS)]
        assert [a["n"] for a in answers] == [i % 90 for i in range(REQUESTS)]
    finally:
        ticker.stop()
        await within(tick_task)
        await within(runner.cleanup())           # on_cleanup: af.shutdown()
    assert not af.is_initialized()
    assert ticker.ticks > 20
    assert lag_during_init < MAX_LAG_S, (
        f"af.init() blocked the loop for {lag_during_init:.3f} s "
        f"(wall-clock overshoot {wall_during_init:.3f} s)")
    assert lag_during_work < MAX_LAG_S, (
        f"the loop lagged {lag_during_work:.3f} s (wall-clock overshoot {wall_during_work:.3f} s)")
