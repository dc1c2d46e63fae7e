"""Worker processes and their node's zygote do not import pydantic: it costs every process
about 16 MiB and 100-150 ms, and what they build (the default transport settings, option
records of nested work) is checked without it. Real clusters, real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import actorflow as af
from actorflow.cluster import zygote as zygote_mod
from actorflow.cluster.node import Node
from actorflow.testing import cluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT = 30.0


def _pydantic_modules() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core"))


@af.remote
def inner() -> list[str]:
    return _pydantic_modules()


@af.remote
async def probe() -> dict[str, Any]:
    # nested work from a worker: its options are checked there too
    nested = await inner.options(num_cpus=0.5, name="inner").remote()
    return {"ppid": os.getppid(), "modules": _pydantic_modules(), "nested": nested}


@af.remote
class Prober:
    def probe(self) -> dict[str, Any]:
        return {"ppid": os.getppid(), "modules": _pydantic_modules()}


def test_what_the_zygote_preloads_does_not_import_pydantic() -> None:
    """The zygote imports exactly ``PRELOAD`` (and nothing after: it serves fork requests)."""
    code = textwrap.dedent("""
        import importlib, sys
        from actorflow.cluster import zygote_main
        for name in zygote_main.PRELOAD:
            importlib.import_module(name)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _zygote_pid(rt: af.Runtime) -> int | None:
    ref = rt.system.lookup("node")
    assert ref is not None and ref._slot.cell is not None
    node = ref._slot.cell.actor
    assert isinstance(node, Node) and node.pool is not None
    zygote = node.pool.zygote
    return zygote.pid if zygote is not None and zygote.usable else None


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("forked", [True, False], ids=["zygote", "plain-workers"])
async def test_workers_and_the_zygote_do_not_import_pydantic(
        forked: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if forked and not zygote_mod.supported():
        pytest.skip("the zygote needs Linux")
    monkeypatch.setenv("ACTORFLOW_ZYGOTE", "1" if forked else "0")
    async with cluster(num_cpus=2) as rt:
        task = await asyncio.wait_for(probe.remote(), WAIT)
        prober = Prober.remote()
        actor = await asyncio.wait_for(prober.probe.remote(), WAIT)
        assert task["modules"] == []
        assert task["nested"] == []
        assert actor["modules"] == []
        zygote_pid = _zygote_pid(rt)
        if forked:
            # forked by the zygote: their modules include all the zygote had at the fork
            assert zygote_pid is not None
            assert task["ppid"] == actor["ppid"] == zygote_pid
            assert "pydantic" not in _maps(zygote_pid)  # (nor its compiled core now)
        else:
            assert zygote_pid is None
            assert task["ppid"] == actor["ppid"] == os.getpid()
        await af.kill(prober)
