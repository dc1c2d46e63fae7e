"""API.md §1 and §13, on a CLI-started cluster: the output of a joined driver's tasks and
actors reaches that driver, prefixed ``(name pid=N)`` (``node=ID`` added for another node
than the one it joined through), repeated lines from several processes folded as Ray folds
them; ``log_to_driver=False`` keeps it away; ``actorflow logs`` reads a job's, an actor's and a
worker's lines from the nodes' files."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from lc_support import Driver, head_cluster
from mn_support import cli

pytestmark = pytest.mark.timeout(240)

SCRIPT = """
import asyncio, os, sys
import actorflow as af

@af.remote(num_cpus=0)
def shout(word):
    print("says", word)
    print("warns", word, file=sys.stderr)
    return os.getpid()

@af.remote(num_cpus=0)
class Talker:
    def talk(self):
        print("folded line")
        return os.getpid()

async def main():
    rt = await af.init(namespace="lc", log_to_driver={flag})
    here = await shout.options(resources={"r_head": 0.1}).remote("from-head")
    there = await shout.options(resources={"r_node0": 0.1}).remote("from-node")
    named = Talker.options(name="talker", resources={"r_node0": 0.1}).remote()
    others = [Talker.remote() for _ in range(3)]
    pids = [await t.talk.remote() for t in [named, *others]]
    nodes = {n["node_id"]: n for n in await af.nodes()}
    node0 = [nid for nid, n in nodes.items() if "r_node0" in n["resources"]][0]
    print("READY", rt.job_id, here, there, node0, pids[0], flush=True)
    while not os.path.exists("{tmp}/go"):
        await asyncio.sleep(0.05)
    await af.shutdown()
    print("DONE", flush=True)

asyncio.run(main())
"""


async def _run_cli(args: list[str], env: dict[str, str]) -> str:
    out = await asyncio.to_thread(cli, args, env, 60.0)
    assert out.returncode == 0, f"actorflow {args}: {out.stdout}\n{out.stderr}"
    return out.stdout


async def test_a_joined_driver_sees_its_workers_output_and_actorflow_logs_reads_it(
        tmp_path: Path) -> None:
    async with head_cluster(tmp_path, num_cpus=1, nodes=1) as cluster:
        loud = Driver(cluster, tmp_path, "loud",
                      SCRIPT.replace("{flag}", "True").replace("{tmp}", str(tmp_path)))
        try:
            ready = (await loud.expect("READY")).split()
            job, here, there, node0, talker_pid = ready[1], int(ready[2]), int(ready[3]), \
                ready[4], int(ready[5])
            # (the folded copies are reported once the 5 s window passes)
            await asyncio.sleep(6.0)

            env = dict(cluster.env, ACTORFLOW_ADDRESS=cluster.address or "",
                       ACTORFLOW_TOKEN=cluster.token or "")
            job_lines = await _run_cli(["logs", "--job", job], env)
            assert f"(shout pid={here} node=" in job_lines
            assert f"(shout pid={there} node={node0}) says from-node" in job_lines
            actor_lines = await _run_cli(["logs", "--actor", "talker", "--namespace", "lc"],
                                         env)
            assert f"(Talker pid={talker_pid} node={node0}) folded line" in actor_lines
            worker_lines = await _run_cli(["logs", "--pid", str(there), "--node", node0], env)
            assert "warns from-node" in worker_lines
            listing = await _run_cli(["logs"], env)
            assert f"job-{job}.log" in listing and f"worker-{there}.log" in listing

            (tmp_path / "go").touch()
            await loud.expect("DONE")
            loud.proc.wait(30)
            out = "\n".join(loud.lines)
            err = loud.stderr()
            assert f"(shout pid={here}) says from-head" in out  # the node it joined through
            assert f"(shout pid={there} node={node0}) says from-node" in out
            assert f"(shout pid={there} node={node0}) warns from-node" in err
            folded = [line for line in out.splitlines() if "folded line" in line]
            assert len(folded) == 2, folded
            assert re.search(r"folded line \[repeated 3x across cluster\]$", folded[1]), folded
        finally:
            loud.close()


async def test_log_to_driver_false_keeps_the_output_in_the_files(tmp_path: Path) -> None:
    async with head_cluster(tmp_path, num_cpus=1, nodes=1) as cluster:
        quiet = Driver(cluster, tmp_path, "quiet",
                       SCRIPT.replace("{flag}", "False").replace("{tmp}", str(tmp_path)))
        try:
            ready = (await quiet.expect("READY")).split()
            job, there = ready[1], int(ready[3])
            env = dict(cluster.env, ACTORFLOW_ADDRESS=cluster.address or "",
                       ACTORFLOW_TOKEN=cluster.token or "")
            job_lines = await _run_cli(["logs", "--job", job], env)
            assert f"(shout pid={there} " in job_lines
            (tmp_path / "go").touch()
            await quiet.expect("DONE")
            quiet.proc.wait(30)
            out, err = "\n".join(quiet.lines), quiet.stderr()
            for text in ("says", "warns", "folded line"):
                assert text not in out and text not in err
        finally:
            quiet.close()
