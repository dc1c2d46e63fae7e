"""Group ``transport``: actorflow across two processes against the raw websocket floor.

Every repetition measures actorflow and its floor back to back, against the same server child
process (started by this module, bound to 127.0.0.1), on uvloop on both sides: that is
``value`` and ``baseline_value``. The pass is then repeated with the default asyncio loop on
both sides (a second child) and reported as ``asyncio_loop_value`` /
``asyncio_loop_baseline_value``, as the peer floor benchmark does.

- ``transport_ask`` (us): n sequential ``await ref.ask(i)`` from this process to an echo actor
  (``receive`` returns its message) in the child, through a ``RemoteActorRef``: the actor
  kernel, the remoting layer and an authenticated websocket link on both sides, dialed as
  actorflow dials any peer on the same host (its listener's unix socket). Results are
  checked. Extra ``tcp_value``: the same over loopback TCP. Floor ``ws_rpc_sync``
  (floor_bench.py, reimplemented here line for line): pickled ``(call_id, "noop", (i,))`` over
  one aiohttp websocket, a future per call, a reader task resolving futures from pickled
  ``(call_id, result)`` replies; the server unpickles, calls, pickles the reply. Both timed by
  the same per-call loop (extras ``per_s``, ``p50_us``, ``p99_us``). Target: value <= 1.5 x
  baseline.
- ``transport_oneway`` (msgs/s): n messages of 64 random bytes sent with ``Link.send`` on an
  authenticated actorflow link to the child (the real codec: each message has its header of
  kind, target, sender and call id; dialed on the listener's unix socket, as the remoting
  layer dials a same-host peer; extra ``tcp_value``: over loopback TCP). The producer lets
  the loop turn (``await asyncio.sleep(0)``) and awaits ``drain()`` after every 1,000 sends,
  so frames leave while it produces; the child's receiver counts the messages and answers
  "done" after the n-th; timed from the first send to "done". Floor ``ws_oneway_batched``: n
  64-byte messages, 100 per websocket frame (u32 length prefixes, frames built inside the
  timed loop), the server splitting every frame; timed the same way. Target: value >= 0.6 x
  baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    CpuMeter,
    alatency_loop,
    attach_baseline,
    have_uvloop,
    log,
    meta,
    run_on,
    summarize,
)

WORKLOADS = ("transport_ask", "transport_oneway")

# name: (unit, n, quick n, floor name, target op, target factor)
_SPEC: dict[str, tuple[str, int, int, str, str, float]] = {
    "transport_ask": ("us", 5_000, 500, "ws_rpc_sync", "<=", 1.5),
    "transport_oneway": ("msgs/s", 100_000, 10_000, "ws_oneway_batched", ">=", 0.6),
}
_TOKEN = "benchmark-token"
_MSG_BYTES = 64  # the floor's "small binary message"
_BATCH = 100  # messages per frame in the floor's batched variant
_YIELD_EVERY = 1_000  # sends between loop turns in transport_oneway
_LEN = struct.Struct("<I")
_ROOT = Path(__file__).resolve().parent.parent

# Link message kinds of the oneway workload (the child's counting receiver).
_DATA, _EXPECT, _DONE = 1, 5, 4


# -- the floor, as floor_bench.py has it ---------------------------------------------------------


def _split_frame(buf: bytes) -> list[memoryview]:
    """Parse a batched frame: repeated [u32 little-endian length][payload]."""
    mv = memoryview(buf)
    out = []
    off, end = 0, len(buf)
    while off < end:
        (ln,) = _LEN.unpack_from(mv, off)
        off += 4
        out.append(mv[off : off + ln])
        off += ln
    return out


def _build_frame(msgs: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(m)) + m for m in msgs)


_RPC_METHODS = {"noop": lambda i: i}


class _MiniRpc:
    """floor_bench.py's MiniRpc (coalesce=False): the smallest honest asyncio RPC client."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 0
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        from aiohttp import WSMsgType

        while True:
            msg = await self.ws.receive()
            if msg.type != WSMsgType.BINARY:
                return
            for m in _split_frame(msg.data):
                cid, res = pickle.loads(m)
                self.pending.pop(cid).set_result(res)

    async def call(self, method: str, *args: Any) -> Any:
        cid = self.next_id
        self.next_id += 1
        fut = self.loop.create_future()
        self.pending[cid] = fut
        data = pickle.dumps((cid, method, args), protocol=5)
        await self.ws.send_bytes(_build_frame([data]))
        return await fut

    async def close(self) -> None:
        self.reader.cancel()
        await asyncio.wait([self.reader])


async def _floor_ws_handler(request: Any) -> Any:
    """floor_bench.py's server handler (modes rpc and sink_batched)."""
    from aiohttp import WSMsgType, web

    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    mode, expect, count = "rpc", 0, 0
    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.BINARY:
            if mode == "rpc":
                replies = []
                for m in _split_frame(msg.data):
                    cid, method, args = pickle.loads(m)
                    replies.append(pickle.dumps((cid, _RPC_METHODS[method](*args)), protocol=5))
                await ws.send_bytes(_build_frame(replies))
                continue
            count += len(_split_frame(msg.data))
            if count >= expect:
                await ws.send_str("done")
                count = 0
        elif msg.type == WSMsgType.TEXT:
            cfg = json.loads(msg.data)
            mode, expect, count = cfg["mode"], cfg.get("n", 0), 0
            await ws.send_str("ok")
        else:
            break
    return ws


async def _floor_rpc_sync(port: int, n: int) -> dict[str, float]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as sess,
        sess.ws_connect(f"http://127.0.0.1:{port}/ws", max_msg_size=0) as ws,
    ):
        await ws.send_str(json.dumps({"mode": "rpc"}))
        assert (await ws.receive()).data == "ok"
        rpc = _MiniRpc(ws)
        try:
            await asyncio.gather(*[rpc.call("noop", i) for i in range(200)])

            async def one(i: int) -> None:
                assert await rpc.call("noop", i) == i

            return await alatency_loop(one, n)
        finally:
            await rpc.close()


async def _floor_oneway_batched(port: int, n: int) -> float:
    import aiohttp

    payload = os.urandom(_MSG_BYTES)
    async with (
        aiohttp.ClientSession() as sess,
        sess.ws_connect(f"http://127.0.0.1:{port}/ws", max_msg_size=0) as ws,
    ):

        async def control(mode: str, k: int = 0) -> None:
            await ws.send_str(json.dumps({"mode": mode, "n": k}))
            assert (await ws.receive()).data == "ok"

        msgs = [payload] * _BATCH
        await control("sink_batched", 10 * _BATCH)
        for _ in range(10):
            await ws.send_bytes(_build_frame(msgs))
        assert (await ws.receive()).data == "done"
        await control("sink_batched", n)
        t0 = time.perf_counter()
        for _ in range(n // _BATCH):
            await ws.send_bytes(_build_frame(msgs))  # encoding is part of the cost
        assert (await ws.receive()).data == "done"
        return time.perf_counter() - t0


# -- actorflow -----------------------------------------------------------------------------------


async def _af_ask(ref_info: list[Any], n: int, *, tcp: bool = False) -> dict[str, float]:
    from actorflow.runtime import ActorSystem, restore_ref
    from actorflow.transport import TransportConfig
    from actorflow.transport.remote import serve_system

    system = ActorSystem("bench-driver")
    # By default a same-host peer is dialed on its unix socket; tcp=True forces loopback TCP.
    config = TransportConfig(token=_TOKEN, unix_path=None if tcp else "auto")
    remoting = await serve_system(system, config=config)
    try:
        ref = restore_ref(*ref_info)
        ask = ref.ask
        for i in range(200):
            assert await ask(i) == i

        async def one(i: int) -> None:
            assert await ask(i) == i

        return await alatency_loop(one, n)
    finally:
        await system.shutdown()
        await remoting.aclose()


async def _af_oneway(address: str, n: int, *, tcp: bool = False) -> float:
    from actorflow.transport import TransportConfig, WebSocketTransport
    from actorflow.transport.ws import same_host_unix

    if not tcp:  # the path the remoting layer takes to a listener on this host
        address = same_host_unix(address) or address
    link = await WebSocketTransport().connect(address, TransportConfig(token=_TOKEN), hello={})
    payload = os.urandom(_MSG_BYTES)
    send = link.send

    async def once(count: int) -> float:
        send(_EXPECT, "", count)
        t0 = time.perf_counter()
        for start in range(0, count, _YIELD_EVERY):
            for i in range(start, min(start + _YIELD_EVERY, count)):
                send(_DATA, "sink", payload, "", i)
            await asyncio.sleep(0)  # a loop turn: the writer ships what is queued
            await link.drain()
        batch = await link.receive()
        dt = time.perf_counter() - t0
        [(kind, _, _, _, total)] = list(batch)
        assert (kind, total) == (_DONE, count), (kind, total)
        return dt

    try:
        await once(10 * _BATCH)  # warm-up
        return await once(n)
    finally:
        await link.aclose()


# -- the server child ----------------------------------------------------------------------------


async def _serve() -> None:
    """Child: the floor's websocket server, an actorflow system with an echo actor, and a
    counting actorflow link listener. Serves until stdin closes."""
    from aiohttp import web

    from actorflow.runtime import Actor, ActorSystem
    from actorflow.transport import Link, TransportConfig, WebSocketTransport
    from actorflow.transport.remote import serve_system

    class Echo(Actor):
        async def receive(self, message: Any) -> Any:
            return message

    async def count(link: Link) -> None:
        expect = seen = 0
        try:
            while True:
                for kind, _target, _sender, _cid, value in await link.receive():
                    if kind == _DATA:
                        seen += 1
                        if seen == expect:
                            link.send(_DONE, "", seen)
                    elif kind == _EXPECT:
                        expect, seen = value, 0
        except Exception:  # the driver closed the link
            pass
        finally:
            await link.aclose()

    app = web.Application()
    app.router.add_get("/ws", _floor_ws_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    floor_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    config = TransportConfig(token=_TOKEN)
    system = ActorSystem("bench-server")
    remoting = await serve_system(system, config=config)
    echo = await system.spawn(Echo, name="echo")
    listener = await WebSocketTransport().listen(config, hello={})
    loop = asyncio.get_running_loop()
    counters: set[asyncio.Task[None]] = set()

    async def accept() -> None:
        while True:
            task = loop.create_task(count(await listener.accept()))
            counters.add(task)
            task.add_done_callback(counters.discard)

    acceptor = loop.create_task(accept())
    print(
        json.dumps(
            {
                "floor_port": floor_port,
                "ref": [system.uid, system.address, echo.id, echo.path],
                "link_address": listener.addresses[0],
            }
        ),
        flush=True,
    )
    try:
        await loop.run_in_executor(None, sys.stdin.read)
    finally:
        acceptor.cancel()
        for task in counters:
            task.cancel()
        await asyncio.wait([acceptor, *counters])
        await listener.aclose()
        await system.shutdown()
        await remoting.aclose()
        await runner.cleanup()


class _Child:
    def __init__(self, loop_kind: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(_ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.transport", "--serve", "--loop", loop_kind],
            cwd=_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError("the transport benchmark's server child did not start")
        self.info: dict[str, Any] = json.loads(line)

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by handle
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- the group's entry point ---------------------------------------------------------------------


def _ask_pass(kind: str, child: _Child, n: int, meter: CpuMeter | None) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        floor = await _floor_rpc_sync(child.info["floor_port"], n)
        before = meter.snap() if meter is not None else {}
        out: dict[str, Any] = await _af_ask(child.info["ref"], n)
        after = meter.snap(end=True) if meter is not None else {}
        if meter is not None:  # extra, on the uvloop pass: the same over loopback TCP
            out["tcp_value"] = (await _af_ask(child.info["ref"], n, tcp=True))["value"]
        out["baseline_value"] = floor["value"]
        out["baseline_p50_us"] = floor["p50_us"]
        out["baseline_p99_us"] = floor["p99_us"]
        if meter is not None:
            meter.add(out, before, after, n)
        return out

    return run_on(kind, main)


def _oneway_pass(kind: str, child: _Child, n: int, meter: CpuMeter | None) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        floor_s = await _floor_oneway_batched(child.info["floor_port"], n)
        before = meter.snap() if meter is not None else {}
        af_s = await _af_oneway(child.info["link_address"], n)
        after = meter.snap(end=True) if meter is not None else {}
        out: dict[str, Any] = {"value": n / af_s, "baseline_value": n / floor_s}
        if meter is not None:  # extra, on the uvloop pass: the same over loopback TCP
            out["tcp_value"] = n / await _af_oneway(child.info["link_address"], n, tcp=True)
        if meter is not None:
            meter.add(out, before, after, n)
        return out

    return run_on(kind, main)


_PASSES = {"transport_ask": _ask_pass, "transport_oneway": _oneway_pass}


def run(quick: bool, reps: int, only: set[str] | None = None) -> list[dict[str, Any]]:
    """Run the selected transport workloads (all by default); one summarized record each."""
    provenance = meta(quick)
    if not have_uvloop():
        raise ImportError("the transport group compares against the uvloop floor: install uvloop")
    meter = CpuMeter()
    children = {kind: _Child(kind) for kind in ("uvloop", "asyncio")}
    records = []
    try:
        for name in WORKLOADS:
            if only is not None and name not in only:
                continue
            unit, n_full, n_quick, floor, op, factor = _SPEC[name]
            n = n_quick if quick else n_full
            one_pass = _PASSES[name]
            runs = []
            for r in range(reps):
                rep = one_pass("uvloop", children["uvloop"], n, meter)
                plain = one_pass("asyncio", children["asyncio"], n, None)
                rep["asyncio_loop_value"] = plain["value"]
                rep["asyncio_loop_baseline_value"] = plain["baseline_value"]
                runs.append(rep)
                log(
                    f"[{name}] rep {r + 1}/{reps}: {rep['value']:.4g} {unit} "
                    f"(floor {floor} {rep['baseline_value']:.4g}); asyncio loop "
                    f"{plain['value']:.4g} (floor {plain['baseline_value']:.4g})"
                )
            rec = summarize(name, unit, n, runs, {**provenance, "loop": "uvloop"})
            attach_baseline(rec, floor, op, factor)
            attach_baseline(rec, floor, op, factor, prefix="asyncio_loop_")
            records.append(rec)
    finally:
        for child in children.values():
            child.close()
    return records


def _main() -> None:
    ap = argparse.ArgumentParser(description="the transport benchmark's server child")
    ap.add_argument("--serve", action="store_true", required=True)
    ap.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    args = ap.parse_args()
    run_on(args.loop, _serve)


if __name__ == "__main__":
    _main()
