"""The ``actorflow`` command: ``run``, and ``start | stop | status | list`` (cluster_cmds).

``actorflow run app.py [--address ADDR] [--num-cpus N] [--num-gpus N] [-- ARGS...]``
(everything after ``--`` goes to ``main(argv)``):

``run`` loads the app file as a module, finds its ``async def main()`` (or ``main(argv)``),
and runs it on the embedded default cluster (or on ``--address``). The module is shipped to
workers by value (cloudpickle), so functions and classes defined in it work in tasks and actors
although workers cannot import the file. The exit status is 0 when ``main`` returned, 1 when
it raised (the traceback is printed), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import cloudpickle

__all__ = ["load_app", "main"]


def load_app(path: str) -> ModuleType:
    """Import the file at ``path`` as module ``actorflow_app`` (shipped to workers by value)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    name = "actorflow_app"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    cloudpickle.register_pickle_by_value(module)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    spec.loader.exec_module(module)
    return module


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actorflow", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an app's async main() on a cluster")
    run.add_argument("app", help="path of the Python file whose main() to run")
    run.add_argument("--address", default=None, help="join this cluster instead of embedding")
    run.add_argument("--num-cpus", type=float, default=None)
    run.add_argument("--num-gpus", type=float, default=None)

    start = sub.add_parser("start", help="start a head, or a node that joins one")
    start.add_argument("--head", action="store_true", help="start a head (and its own node)")
    start.add_argument("--address", default=None, help="join the head at ws://HOST:PORT")
    start.add_argument("--host", default="127.0.0.1", help="address to listen on")
    start.add_argument("--port", type=int, default=6380, help="the head's port")
    start.add_argument("--token", default=None, help="the cluster token (default: a new one, "
                       "or $ACTORFLOW_TOKEN, or the head's token file)")
    start.add_argument("--num-cpus", type=float, default=None)
    start.add_argument("--num-gpus", type=float, default=None)
    start.add_argument("--resources", default=None, help='custom resources, JSON: {"ssd": 1}')
    start.add_argument("--peer-timeout", type=float, default=None,
                       help="seconds of silence before a peer (node) is declared dead (3)")
    start.add_argument("--block", action="store_true", help="stay in the foreground")

    stop = sub.add_parser("stop", help="stop what `actorflow start` started on this machine")
    stop.add_argument("--timeout", type=float, default=10.0)

    status = sub.add_parser("status", help="nodes, resources, actors and pending work")
    status.add_argument("--address", default=None)
    status.add_argument("--token", default=None)

    lst = sub.add_parser("list", help="list nodes, actors, tasks or objects")
    lst.add_argument("what", choices=["nodes", "actors", "tasks", "objects"])
    lst.add_argument("--address", default=None)
    lst.add_argument("--token", default=None)
    lst.add_argument("--json", action="store_true")
    return parser


def _run(ns: argparse.Namespace) -> int:
    from actorflow.api.runtime import run

    argv = list(ns.args)
    sys.argv = [ns.app, *argv]
    try:
        module = load_app(ns.app)
    except Exception:
        traceback.print_exc()
        return 1
    entry = getattr(module, "main", None)
    if entry is None or not inspect.iscoroutinefunction(entry):
        print(f"actorflow run: {ns.app} must define `async def main()` or "
              "`async def main(argv)`", file=sys.stderr)
        return 2
    params = inspect.signature(entry).parameters
    call_args: tuple[Any, ...] = (argv,) if params else ()
    init_kwargs: dict[str, Any] = {}
    if ns.address:
        init_kwargs["address"] = ns.address
    if ns.num_cpus is not None:
        init_kwargs["num_cpus"] = ns.num_cpus
    if ns.num_gpus is not None:
        init_kwargs["num_gpus"] = ns.num_gpus
    try:
        run(entry, *call_args, **init_kwargs)
    except KeyboardInterrupt:
        return 130
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    app_args: list[str] = []
    if argv and argv[0] == "run" and "--" in argv:  # run's own options may follow the app path
        cut = argv.index("--")
        argv, app_args = argv[:cut], argv[cut + 1:]
    ns = _parser().parse_args(argv)
    if ns.command == "run":
        ns.args = app_args
        return _run(ns)
    from actorflow.cli import cluster_cmds

    commands = {"start": cluster_cmds.cmd_start, "stop": cluster_cmds.cmd_stop,
                "status": cluster_cmds.cmd_status, "list": cluster_cmds.cmd_list}
    return commands[ns.command](ns)
