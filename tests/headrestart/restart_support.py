"""Helpers of the head-restart tests: a CLI cluster whose head can be started again."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

from mn_support import CliCluster, Started, live_nodes, until

import actorflow as af

__all__ = ["REJOIN_S", "RestartableCluster", "nodes_back"]

#: A restarted head must have every node back this soon (it starts, the nodes redial it with a
#: backoff of at most 2 s and register again).
REJOIN_S = 45.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RestartableCluster(CliCluster):
    """A CLI cluster whose head listens on a fixed port, so it can be started again there."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, peer_timeout=10.0)
        self.port = _free_port()
        self.head_starts = 0

    def start_fixed_head(self) -> Started:
        self.head_starts += 1
        name = "head" if self.head_starts == 1 else f"head{self.head_starts}"
        return self._spawn(name, ["--head", "--port", str(self.port), "--host", "127.0.0.1",
                                  "--num-cpus", "0", "--resources", json.dumps({"r_head": 1})])


async def nodes_back(node_ids: set[str], timeout: float = REJOIN_S) -> list[dict[str, Any]]:
    """Until af.nodes() shows ``node_ids`` alive, and a live head node."""

    async def check() -> list[dict[str, Any]] | None:
        try:
            views = live_nodes(await asyncio.wait_for(af.nodes(), 5.0))
        except (af.ActorflowError, TimeoutError):
            return None  # the head is still starting
        ids = {v["node_id"] for v in views}
        heads = [v for v in views if "r_head" in v["resources"]]
        return views if node_ids <= ids and heads else None

    return await until(check, timeout, "every node alive at the restarted head")
