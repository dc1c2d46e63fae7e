"""Fixtures of the multi-node tests: clusters of real processes started through the CLI.

``cli_cluster`` (module scope) starts the nodes that the module lists in ``NODES`` (default:
three nodes of one CPU each, told apart by a custom resource: head ``r_a``, node2 ``r_b``,
node3 ``r_c``) with ``python -m actorflow start ... --block``, connects this process as the
driver (``af.init(address=...)``), waits until ``af.nodes()`` shows them all alive, and at the
end stops everything and fails if any process of that cluster (a worker included) survives.
Modules using it set ``pytestmark = pytest.mark.asyncio(loop_scope="module")``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from mn_support import CliCluster, Cluster, live_nodes, start_cluster, until, within

import actorflow as af

DEFAULT_NODES: list[dict[str, Any]] = [
    {"name": "head", "num_cpus": 1, "resources": {"r_a": 1}},
    {"name": "node2", "num_cpus": 1, "resources": {"r_b": 1}},
    {"name": "node3", "num_cpus": 1, "resources": {"r_c": 1}},
]

def _node_of(spec: dict[str, Any], views: list[dict[str, Any]]) -> str:
    """The id of the node started from ``spec``: the one live node with its custom resources
    (each spec of a module has a custom resource of its own)."""
    names = set(spec.get("resources") or {})
    assert names, f"node {spec['name']} needs a custom resource of its own"
    found = [v["node_id"] for v in views if names <= set(v["resources"])]
    assert len(found) == 1, (spec, views)
    return found[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cli_cluster(request: pytest.FixtureRequest,
                      tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    specs: list[dict[str, Any]] = list(getattr(request.module, "NODES", DEFAULT_NODES))
    cli = CliCluster(tmp_path_factory.mktemp("mn"), peer_timeout=2.0)
    try:
        await start_cluster(cli, specs)
        assert cli.address is not None and cli.token is not None
        runtime = await within(af.init(address=cli.address, token=cli.token,
                                       log_to_driver=False))

        async def all_alive() -> list[dict[str, Any]] | None:
            views = live_nodes(await af.nodes())
            return views if len(views) == len(specs) else None

        views = await until(all_alive, what=f"{len(specs)} live nodes")
        cluster = Cluster(cli, runtime)
        cluster.ids = {spec["name"]: _node_of(spec, views) for spec in specs}
        cluster.resources = {v["node_id"]: v["resources"] for v in views}
        assert set(cluster.ids.values()) == set(cluster.resources), (cluster.ids, views)
    except BaseException:
        print(cli.logs())  # shown with the failure
        if af.is_initialized():
            await within(af.shutdown())
        cli.stop()
        raise
    try:
        yield cluster
    finally:
        if af.is_initialized():
            await within(af.shutdown())
        survivors = cli.stop()
    assert not survivors, "processes of the cluster survived its stop:\n" + "\n".join(
        survivors) + "\n" + cli.logs()
