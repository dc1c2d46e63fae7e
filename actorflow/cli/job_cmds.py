"""``actorflow job submit | status | logs | stop | list``: programs handed to a cluster.

``actorflow job submit [--address ADDR] [--token T] [--working-dir DIR] [--env K=V]...
[--entrypoint-num-cpus N] [--entrypoint-num-gpus N] [--entrypoint-resources JSON] [--no-wait]
-- CMD...`` runs CMD (one shell command: several words are quoted and joined) as a driver on
the head's machine (or, with entrypoint resources, on a node that has them, holding them
while it runs) and prints ``submitted job <id>``; without ``--no-wait`` it
follows the job's output to its end and exits 0 when the job SUCCEEDED, 1 otherwise
(Ctrl-C stops following, not the job). ``status``, ``logs [--follow]`` and ``stop`` take a job
id; ``list`` shows every job. Each talks to the head over the cluster's authenticated link
(``--address``/``$ACTORFLOW_ADDRESS``, else the cluster started on this machine; the token
from ``--token``, ``$ACTORFLOW_TOKEN`` or the head's token file).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actorflow._errors import ActorflowError
from actorflow.jobs.client import JobClient
from actorflow.runtime.loop import run_main

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``job`` (with its subcommands) to the ``actorflow`` parser, and the head's job
    options to ``start``."""
    start = sub.choices.get("start")
    if start is not None:
        start.add_argument("--runtime-env-max-bytes", type=int, default=None,
                           help="largest working_dir / py_module, in bytes of files (100 MiB)")
        start.add_argument("--job-stop-grace", dest="job_stop_grace_s", type=float,
                           default=None, help="seconds between SIGTERM and SIGKILL when a job "
                           "is stopped (5)")

    job = sub.add_parser("job", help="submit programs to a cluster and follow them")
    jobs = job.add_subparsers(dest="job_command", required=True)

    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--address", default=None, help="the head's ws://HOST:PORT")
        parser.add_argument("--token", default=None, help="the cluster token")
        return parser

    submit = common(jobs.add_parser("submit", help="run a command as a driver of the cluster"))
    submit.add_argument("--working-dir", default=None,
                        help="a directory shipped to the cluster; the job runs in it")
    submit.add_argument("--py-module", action="append", default=[], dest="py_modules",
                        help="a package directory put on the job's import path (repeatable)")
    submit.add_argument("--env", action="append", default=[], metavar="K=V",
                        help="an environment variable of the job (repeatable)")
    submit.add_argument("--submission-id", default=None, help="the job's id (default: new)")
    submit.add_argument("--entrypoint-num-cpus", type=float, default=None, metavar="N",
                        help="run the entrypoint on a node with N CPUs free, held while it runs")
    submit.add_argument("--entrypoint-num-gpus", type=float, default=None, metavar="N",
                        help="run the entrypoint on a node with N GPUs free, held while it runs")
    submit.add_argument("--entrypoint-resources", type=_resources, default=None,
                        metavar="JSON", help='custom resources the entrypoint\'s node must have '
                        'free, held while it runs: \'{"accel": 1}\'')
    submit.add_argument("--no-wait", action="store_true",
                        help="return once submitted instead of following the job")
    submit.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD...")
    submit.set_defaults(handler=_submit)

    status = common(jobs.add_parser("status", help="a job's status"))
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)

    logs = common(jobs.add_parser("logs", help="a job's output"))
    logs.add_argument("job_id")
    logs.add_argument("--follow", "-f", action="store_true", help="follow until the job ends")
    logs.set_defaults(handler=_logs)

    stop = common(jobs.add_parser("stop", help="stop a job (SIGTERM, then SIGKILL)"))
    stop.add_argument("job_id")
    stop.set_defaults(handler=_stop)

    lst = common(jobs.add_parser("list", help="every job of the cluster"))
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=_list)


def _call(ns: argparse.Namespace, work: Callable[[JobClient], Awaitable[int]]) -> int:
    async def main() -> int:
        async with JobClient(ns.address, token=ns.token) as client:
            return await work(client)

    try:
        return run_main(main())
    except KeyboardInterrupt:
        return 130
    except (ActorflowError, ConnectionError, KeyError, ValueError, TypeError, OSError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"actorflow job {ns.job_command}: {text}", file=sys.stderr)
        return 1


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env takes K=V, got {pair!r}")
        out[key] = value
    return out


def _resources(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('a JSON object such as {"accel": 1}')
    return value


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _describe(row: dict[str, Any]) -> str:
    text = f"job {row['job_id']}: {row['status']}"
    if row.get("exit_code") is not None:
        text += f" (exit code {row['exit_code']})"
    if row.get("message"):
        text += f": {row['message']}"
    return text


async def _follow(client: JobClient, job_id: str) -> None:
    async for line in client.tail(job_id):
        print(line, flush=True)


def _submit(ns: argparse.Namespace) -> int:
    cmd = list(ns.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise SystemExit("actorflow job submit needs a command: actorflow job submit -- CMD...")
    entrypoint = cmd[0] if len(cmd) == 1 else shlex.join(cmd)
    runtime_env: dict[str, Any] = {}
    if ns.working_dir:
        runtime_env["working_dir"] = ns.working_dir
    if ns.py_modules:
        runtime_env["py_modules"] = list(ns.py_modules)
    if ns.env:
        runtime_env["env_vars"] = _env(ns.env)

    async def work(client: JobClient) -> int:
        job_id = await client.submit(
            entrypoint, runtime_env=runtime_env or None, submission_id=ns.submission_id,
            entrypoint_num_cpus=ns.entrypoint_num_cpus,
            entrypoint_num_gpus=ns.entrypoint_num_gpus,
            entrypoint_resources=ns.entrypoint_resources)
        print(f"submitted job {job_id}", flush=True)
        if ns.no_wait:
            return 0
        try:
            await _follow(client, job_id)
        except KeyboardInterrupt:  # pragma: no cover - interactive
            print(f"stopped following; job {job_id} runs on (`actorflow job stop {job_id}`)",
                  file=sys.stderr)
            raise
        row = await client.info(job_id)
        print(_describe(row), flush=True)
        return 0 if row["status"] == "SUCCEEDED" else 1

    return _call(ns, work)


def _status(ns: argparse.Namespace) -> int:
    async def work(client: JobClient) -> int:
        row = await client.info(ns.job_id)
        print(json.dumps(row) if ns.json else _describe(row))
        return 0

    return _call(ns, work)


def _logs(ns: argparse.Namespace) -> int:
    async def work(client: JobClient) -> int:
        if ns.follow:
            await _follow(client, ns.job_id)
        else:
            sys.stdout.write(await client.logs(ns.job_id))
            sys.stdout.flush()
        return 0

    return _call(ns, work)


def _stop(ns: argparse.Namespace) -> int:
    async def work(client: JobClient) -> int:
        stopped = await client.stop(ns.job_id)
        row = await client.info(ns.job_id)
        print(_describe(row) if stopped else f"job {ns.job_id} had ended: {row['status']}")
        return 0

    return _call(ns, work)


def _list(ns: argparse.Namespace) -> int:
    async def work(client: JobClient) -> int:
        rows = await client.list()
        if ns.json:
            print(json.dumps(rows))
            return 0
        print(f"{'JOB ID':<18} {'STATUS':<10} {'START':<19} {'END':<19} ENTRYPOINT")
        for row in rows:
            print(f"{row['job_id']:<18} {row['status']:<10} {_when(row['start_time']):<19} "
                  f"{_when(row['end_time']):<19} {row['entrypoint']}")
        return 0

    return _call(ns, work)
