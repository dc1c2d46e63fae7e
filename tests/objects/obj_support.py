"""Helpers of the object store tests (tests/objects): bounded waits, the node's store figures,
a tmpfs of a given size (a full disk), and CLI-started clusters with store flags."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "multinode"))

from mn_support import CliCluster, cli  # noqa: E402
from wait_support import WAIT, until  # noqa: E402

__all__ = ["MIB", "WAIT", "StoreCluster", "cli", "files_in", "small_tmpfs", "store_figures",
           "until"]

MIB = 1 << 20


async def store_figures(node_ref: Any) -> dict[str, Any]:
    """The store figures of one node, from its NodeInfo answer."""
    from actorflow.cluster.protocol import NodeInfo

    info: dict[str, Any] = await asyncio.wait_for(node_ref.ask(NodeInfo()), 10.0)
    return info


def files_in(path: str | Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (a disk that fills): needs root; skips the
    test where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


class StoreCluster(CliCluster):
    """A CLI cluster whose processes get extra ``actorflow start`` flags."""

    def start_head_with(self, extra: list[str], num_cpus: float = 1) -> Any:
        return self._spawn("head", ["--head", "--port", "0", "--host", "127.0.0.1",
                                    "--num-cpus", str(num_cpus), *extra])

    def start_node_with(self, name: str, extra: list[str], num_cpus: float = 1) -> Any:
        assert self.address is not None, "start the head first"
        return self._spawn(name, ["--address", self.address, "--num-cpus", str(num_cpus),
                                  *extra])
