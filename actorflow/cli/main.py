"""The actorflow command line: run, start, stop, status, list and more.

``run`` is here; the other subcommands come from the modules of :data:`COMMAND_MODULES`.

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
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import cloudpickle

__all__ = ["COMMAND_MODULES", "load_app", "main"]

#: The modules that add the other subcommands: each has ``register(subparsers)``, which adds
#: its parsers and sets ``handler`` (a function of the parsed namespace that returns the exit
#: status) with ``set_defaults``. Imported only when the command line is parsed.
COMMAND_MODULES: tuple[str, ...] = (
    "actorflow.cli.cluster_cmds",
    "actorflow.cli.memory_cmds",
    "actorflow.cli.job_cmds",
    "actorflow.cli.state_cmds",
    "actorflow.cli.logs_cmds",
    "actorflow.cli.dashboard_cmds",
    "actorflow.cli.metrics_cmds",
)


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

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
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
    if getattr(ns, "progress", False):
        from actorflow.api.progress import with_run_bar

        entry = with_run_bar(entry)
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
    handler: Any = ns.handler
    return int(handler(ns))
