"""API.md §1 and §13, on a CLI-started cluster: the output of a joined driver's tasks and
actors reaches that driver, prefixed ``(name pid=N)`` (``node=ID`` added for another node
than the one it joined through), repeated lines from several processes folded as Ray folds
them; ``log_to_driver=False`` keeps it away; ``actorflow logs`` reads a job's, an actor's and a
worker's lines from the nodes' files."""

from __future__ import annotations

import asyncio
import re
import sys
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


async def _follow_sees(env: dict[str, str], args: list[str], text: str) -> None:
    """``actorflow logs ... --follow`` prints a line holding ``text`` (bounded), and is
    stopped."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actorflow", *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, f"--follow ended before {text!r}: {seen}"
                seen.append(line)
                if text in line:
                    break
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


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
            await _follow_sees(env, ["logs", "--job", job, "--follow", "--tail", "100"],
                               "folded line")

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


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_repeated_across_processes_are_folded_as_ray_folds_them() -> None:
    from actorflow.cluster.log_sink import LineFolder

    clock = _Clock()
    folder = LineFolder(5.0, clock)
    a, b, c = ("n1", 1), ("n1", 2), ("n2", 3)
    first = folder.add(False, "(f pid=1)", "loss 0.5 at step 10", a)
    assert first == "(f pid=1) loss 0.5 at step 10"
    # the same process repeating itself is never folded (its digits differ, its words not)
    assert folder.add(False, "(f pid=1)", "loss 0.4 at step 11", a) is not None
    assert folder.add(False, "(f pid=2)", "loss 0.3 at step 12", b) is None
    assert folder.add(False, "(f pid=3 node=n2)", "loss 0.2 at step 13", c) is None
    assert folder.add(True, "(f pid=2)", "loss 0.3 at step 12", b) is not None  # stderr
    assert folder.add(False, "(f pid=2)", "another line", b) is not None
    assert folder.flush() == []  # the window has not passed
    clock.now += 5.0
    assert folder.flush() == [
        (False, "(f pid=3 node=n2) loss 0.2 at step 13 [repeated 2x across cluster]")]
    assert len(folder) == 0
    # after its window a line is printed again the first time
    assert folder.add(False, "(f pid=2)", "loss 0.1 at step 14", b) is not None
    off = LineFolder(5.0, clock, enabled=False)
    assert off.add(False, "(f pid=1)", "x", a) and off.add(False, "(f pid=2)", "x", b)


async def test_log_files_are_read_back_by_tail_and_offset_and_rotate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from actorflow.cluster import node_logs
    from actorflow.cluster.node_logs import NodeLogs, ReadLogs

    head = None  # (lines of no job: the head is never asked)
    logs = NodeLogs("n1", head, tmp_path, forward=False)  # type: ignore[arg-type]
    try:
        for i in range(50):
            logs.line(7, False, f"\x1e\x1ft\x1fline {i}\n")
        lines, offset = await logs.read(ReadLogs("worker", "7", tail=3))
        assert lines == [f"(t pid=7 node=n1) line {i}" for i in (47, 48, 49)]
        logs.line(7, True, "\x1e\x1ft\x1fline 50\n")
        more, _ = await logs.read(ReadLogs("worker", "7", offset=offset))
        assert more == ["(t pid=7 node=n1) line 50"]
        monkeypatch.setattr(node_logs, "MAX_FILE_BYTES", 100)
        logs.line(7, False, "\x1e\x1ft\x1fafter\n")
        assert (tmp_path / "worker-7.log.1").exists()
        names, _ = await logs.read(ReadLogs("list"))
        assert names == ["worker-7.log", "worker-7.log.1"]
    finally:
        await logs.close()
