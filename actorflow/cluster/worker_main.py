"""The worker process: ``python -m actorflow.cluster.worker_main`` (started by a node).

A node's pool forks most workers from its zygote (:mod:`actorflow.cluster.zygote`), which has
this module imported and calls :func:`main` in the child; this module is also the plain entry
point the pool falls back to. Either way:

Its boot facts come in the environment (``ACTORFLOW_WORKER_BOOT``, JSON; ``ACTORFLOW_TOKEN``).
It starts an ActorSystem that listens on loopback, a Core (so tasks can submit tasks), the
Worker and WorkerControl actors, reports WorkerReady to its node, and runs until the node tells
it to stop, the link to the node is lost, or a signal ends it. On Linux it also asks the kernel
to SIGKILL it when its parent (its node, or the zygote, which dies with the node) dies, so a
node killed hard leaves no orphan workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import io
import json
import os
import signal
import sys
from typing import Any, TextIO

from actorflow.cluster.core import Core
from actorflow.cluster.protocol import CONTROL_ID, WorkerReady
from actorflow.cluster.task_context import task_context
from actorflow.cluster.worker import Worker, WorkerControl
from actorflow.objects.ref import set_current_core
from actorflow.runtime import ActorSystem, Terminated, restore_ref
from actorflow.runtime.loop import run_main


class _PrefixedLines(io.TextIOBase):
    """Writes each line as ``\x1e JOB \x1f NAME \x1f line``: the job and the name of the
    task or actor that wrote it. The node sends it to the job's driver, which prints it
    prefixed ``(name pid=N)`` (see actorflow.cluster.node_logs)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        data = self._partial + text
        lines = data.split("\n")
        self._partial = lines.pop()
        if lines:
            ctx = task_context.get()
            # outside any task or actor (starting, stopping) it is the worker itself speaking
            if ctx.task_id is not None or ctx.actor_id is not None:
                prefix = f"\x1e{ctx.job_id or ''}\x1f{ctx.name}\x1f"
            else:
                prefix = "\x1e\x1fworker\x1f"
            self._out.write("".join(prefix + line + "\n" for line in lines))
            self._out.flush()
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self.write("\n")
        self._out.flush()


def _die_with_parent() -> None:
    if sys.platform != "linux":
        return
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the parent already died before we asked
            os._exit(1)


async def _main(boot: dict[str, Any], token: str) -> None:
    from actorflow.transport.config import TransportConfig
    from actorflow.transport.remote import serve_system

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    system = ActorSystem(f"worker-{boot['worker_id']}")
    server = await serve_system(system, token=token,
                                config=TransportConfig(host=boot.get("host", "127.0.0.1")))
    try:
        node = restore_ref(*boot["node"])
        head = restore_ref(*boot["head"])
        core = Core(system, node=node, head=head, node_id=boot["node_id"], job_id="",
                    session=boot["session"], worker_id=boot["worker_id"])
        await core.start()
        set_current_core(core)
        worker = Worker(core)
        worker_ref = await system.spawn(lambda: worker, name="worker")
        # well-known: a caller of the actor this process may host reaches it by its address
        control = await system.spawn(lambda: WorkerControl(worker), name=CONTROL_ID,
                                     well_known=True)

        def node_lost(notice: Terminated) -> None:
            request_stop()

        system.on_terminated(node, node_lost)
        # what exists now (modules, the runtime) lives as long as the process: keep it out of
        # every cyclic collection (profiles put the GC at 10-20% of a busy process's time)
        gc.freeze()
        if not stop.done():  # told to stop while starting (its node is closing): stay quiet,
            # rather than dial a node that is going away and hang up on it mid-handshake
            node.tell_nowait(WorkerReady(boot["worker_id"], worker_ref, os.getpid(), control))
        await stop
        await core.close()
    finally:
        await system.shutdown(timeout=2.0)
        await server.aclose()


def prepare_fork_server() -> None:
    """In the zygote, before it forks any worker: do once the start-up work whose results
    every worker would otherwise build for itself, in pages of its own. No event loop and no
    thread (the zygote must fork from a clean state). Measured: about 0.9 MiB less private
    memory per idle worker (docs/performance.md, many_actors).

    - resolve the loopback address a worker listens on (numeric: nothing leaves the machine):
      the C library's resolver state (and Python's ``idna`` codec) load here, once, shared;
    - build (and drop) a web application with the routes a worker's listener has, so that
      aiohttp's route regexes are compiled into ``re``'s cache and its code has warmed up.
    """
    import socket

    from aiohttp import web

    from actorflow.transport.bulk import BULK_PATH
    from actorflow.transport.ws import PATH

    with contextlib.suppress(OSError):
        socket.getaddrinfo("127.0.0.1", 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response()  # (never called)

    app = web.Application()
    app.router.add_get(PATH, handler)
    app.router.add_get(BULK_PATH + "/{ticket}", handler)


def main() -> None:
    _die_with_parent()
    boot = json.loads(os.environ["ACTORFLOW_WORKER_BOOT"])
    runtime_env = boot.get("runtime_env")
    if runtime_env:  # a worker of a runtime environment: its working_dir and import path
        if runtime_env.get("cwd"):
            os.chdir(runtime_env["cwd"])
        sys.path[:0] = runtime_env.get("paths") or []
    token = os.environ.pop("ACTORFLOW_TOKEN", "")
    sys.stdout = _PrefixedLines(sys.__stdout__)  # type: ignore[arg-type]
    sys.stderr = _PrefixedLines(sys.__stderr__)  # type: ignore[arg-type]
    run_main(_main(boot, token))


if __name__ == "__main__":
    main()
