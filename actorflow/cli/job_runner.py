"""A submitted job whose entrypoint asks for resources: run it on a node that has them.

``actorflow job submit --entrypoint-num-cpus N --entrypoint-num-gpus N --entrypoint-resources
JSON`` (and ``af.JobClient.submit(entrypoint_num_cpus=..., ...)``): the head's ``jobs`` actor
(:mod:`actorflow.jobs.manager`) starts, as the job's process on the head's machine (under its
wrapper, in the job's process group, its output into the job's log file),
``python -m actorflow.cli.job_runner --num-cpus N --num-gpus N --resources JSON -- ENTRYPOINT``.

This runner joins the cluster as a driver of its own (a job id of its own; the job's runtime
environment is its own too, as for any driver started as a job) and creates one actor,
:class:`EntrypointHost`, with those resources: the placement puts it on a node that has them,
and it holds them while it lives (``num_cpus`` included, as an actor given ``num_cpus``
does). The actor starts the entrypoint there (``/bin/sh -c`` under the jobs' wrapper,
:mod:`actorflow.jobs.wrapper`, in a session of its own that the wrapper kills whole if the
actor's process dies) as a driver of the cluster with the job's id, in the
job's runtime environment (the actor's), and streams its output back; the runner writes it to
its own stdout, the job's log, which the head's job API serves as for any job. When the
entrypoint ends, the runner exits with its exit status (the same code, or the same signal),
and its ``af.shutdown()`` ends the runner's job, which stops the actor: its resources are
released. ``actorflow job stop`` signals the runner's group: SIGTERM and SIGINT are passed on
to the entrypoint's group on its node; a SIGKILL of the runner ends its job, whose actor is
stopped, and the entrypoint with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from actorflow._errors import ActorflowError
from actorflow.api.remote import remote
from actorflow.api.runtime import get_runtime_context, init, shutdown

__all__ = ["EntrypointHost", "main"]

#: Bytes of output per piece streamed back.
PIECE = 1 << 16
#: What the entrypoint must not inherit from the worker that hosts the actor.
_WORKER_ONLY = ("ACTORFLOW_WORKER_BOOT",)


class EntrypointHost:
    """The actor that runs a job's entrypoint on the node the placement chose. (Defined in
    the runner's ``__main__``: it travels by value, so its worker imports nothing of the
    command line.)"""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None

    async def run(self, entrypoint: str, env: dict[str, str]) -> AsyncIterator[bytes | int]:
        """Run ``entrypoint``; yields its output in pieces, then its exit status (an int)."""
        full = {k: v for k, v in os.environ.items() if k not in _WORKER_ONLY}
        full.update(env)
        # under the jobs' wrapper, which ends the entrypoint's whole group if this process dies
        package = Path(sys.modules[ActorflowError.__module__].__file__ or "").parent
        wrapper = package / "jobs" / "wrapper.py"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", str(wrapper), "-", "--die-with-parent", "--",
            "/bin/sh", "-c", entrypoint, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=full,
            start_new_session=True)
        assert self.proc.stdout is not None
        while piece := await self.proc.stdout.read(PIECE):
            yield piece
        yield await self.proc.wait()

    async def signal(self, signum: int) -> None:
        """Pass ``signum`` on to the entrypoint's process group."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signum)

    async def node_id(self) -> str:
        return get_runtime_context().node_id


async def _run(ns: argparse.Namespace) -> int:
    # the runner is a driver of its own; the entrypoint is the job's driver
    job_id = os.environ.pop("ACTORFLOW_JOB_ID", "")
    address = os.environ["ACTORFLOW_ADDRESS"]
    token = os.environ["ACTORFLOW_TOKEN"]
    await init(address=address, token=token, log_to_driver=False)
    out = sys.stdout.buffer
    passed: list[Any] = []
    loop = asyncio.get_running_loop()
    try:
        host = remote(EntrypointHost).options(
            num_cpus=ns.num_cpus, num_gpus=ns.num_gpus, resources=ns.resources,
            max_restarts=0).remote()
        try:
            node = await host.node_id.remote()
        except ActorflowError as exc:
            print(f"actorflow: the job's entrypoint could not be placed: {exc}", flush=True)
            return 1
        print(f"actorflow: the entrypoint runs on node {node}", file=sys.stderr, flush=True)
        def pass_on(signum: int) -> None:
            passed.append(host.signal.remote(signum))

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, pass_on, signum)
        env = {"ACTORFLOW_ADDRESS": address, "ACTORFLOW_TOKEN": token,
               "ACTORFLOW_JOB_ID": job_id, "PYTHONUNBUFFERED": "1"}
        code = 1
        async for ref in host.run.remote(ns.entrypoint, env):
            item = await ref
            if isinstance(item, int):
                code = item
            else:
                out.write(item)
                out.flush()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        for ref in passed:  # (answered: the entrypoint has ended)
            with contextlib.suppress(ActorflowError):
                await ref
        return code
    except ActorflowError as exc:
        print(f"actorflow: the job's entrypoint was lost: {exc!r}", flush=True)
        return 1
    finally:
        await shutdown()  # its job ends: the actor stops, its resources come back


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m actorflow.cli.job_runner")
    parser.add_argument("--num-cpus", type=float, default=0.0)
    parser.add_argument("--num-gpus", type=float, default=0.0)
    parser.add_argument("--resources", type=json.loads, default=None)
    parser.add_argument("entrypoint")
    ns = parser.parse_args(argv)
    code = asyncio.run(_run(ns))
    if code < 0:  # end as the entrypoint did: killed by the same signal
        sys.stdout.flush()
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    sys.exit(code)


if __name__ == "__main__":
    main()
