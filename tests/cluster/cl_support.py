"""Helpers of the cluster tests: bounded waits, child scripts, process and shm views.

Every wait is bounded (``within``): only a bug makes one run out. Child scripts run with a
timeout and are killed when it passes; their workers die with them (they ask the kernel for
SIGKILL when their parent dies).
"""

from __future__ import annotations

import asyncio
import glob
import os
import subprocess
import sys
import textwrap
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import psutil
from proc_support import child_pids  # noqa: F401  (the tests of this folder use it from here)
from wait_support import until  # noqa: F401  (the tests of this folder use it from here)

from actorflow.objects.shm import SHM_DIR

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
#: The bound on every wait expected to succeed.
WAIT = 20.0


async def within(aw: Awaitable[T], timeout: float = WAIT) -> T:
    return await asyncio.wait_for(aw, timeout)


def run_python(code: str, *args: str, timeout: float = 60.0, cwd: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter; its stdout and stderr are returned."""
    return run_command([sys.executable, "-c", textwrap.dedent(code), *args], timeout=timeout,
                       cwd=cwd, env=env)


def run_command(argv: list[str], *, timeout: float = 60.0, cwd: str | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p
    )
    full_env.pop("ACTORFLOW_ADDRESS", None)
    full_env.update(env or {})
    # subprocess.run kills the child when the timeout passes (its workers die with it)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=full_env, check=False)


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def session_segments(*keys: str) -> list[str]:
    """Shared-memory segments named after any of ``keys`` (the session, the node id):
    ``/dev/shm/af-<key>-*``."""
    found: set[str] = set()
    for key in keys:
        found.update(glob.glob(os.path.join(SHM_DIR, f"af-{key}-*")))
    return sorted(found)


def runtime_segments(rt: Any) -> list[str]:
    """The segments of a runtime's session and of its node."""
    return session_segments(rt.session, rt.node_id)
