"""The ``chaos`` soak (``python -m benchmarks chaos --minutes N``; not in the default set).

A 3-node cluster (2 CPUs each) started through the CLI in a private temporary state folder
(``actorflow start --head ... --block`` and two ``actorflow start --address ... --block``),
this process joined as its driver. Rounds run until ``--minutes`` (default 1) have passed; each
round is the suite's bounded chaos test at soak length:

- 20 actors (``max_restarts=-1, max_task_retries=-1``, ``num_cpus=0``), 25 plain-def calls of
  0.2 s each, and 2,000 tasks (``max_retries=-1``, a third SPREAD) submitted in 20 waves 0.3 s
  apart;
- meanwhile a worker that holds a lease (found through the live nodes' ``NodeInfo`` lease
  lists) is SIGKILLed every 0.5 s, and 2 s in, one non-head node (its ``actorflow start``
  process alone) is SIGKILLed; after the round a fresh node joins in its place, so every round
  starts with 3 nodes.

Every run of a task or call appends a line to the round's ledger file, so re-runs are counted;
every result is checked against what it must be. One record per round: ``round``,
``elapsed_s`` (the round's workload), ``worker_kills``, ``node_kills``, ``tasks``,
``task_reruns``, ``calls``, ``call_reruns`` (runs beyond each one's first), ``lost`` (results
that never came, or came as an error, within the round's deadline; ``lost_errors`` counts them
by cause), ``wrong``, ``resources_settled_s`` (from the last result
to ``af.available_resources() == af.cluster_resources()`` with the killed node gone, the
actors killed meanwhile; None if not within 30 s after the kills), ``orphans`` (processes of
the killed node alive 5 s after that), ``rejoin_s``, ``soak_s``. A record with ``lost`` or
``wrong`` makes the harness exit non-zero.

At the end the nodes get SIGTERM, then (bounded waits) SIGKILL for their process groups and
for any process left with this soak's tag; the temporary folder is removed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import cloudpickle

import actorflow as af
from actorflow.cluster.protocol import ListState, NodeInfo
from actorflow.objects.ref import current_core
from benchmarks._common import TAG_VAR, CliNodes, log, loop_kind, reap_tagged, run_on

WORKLOADS = ("chaos",)

NODE_CPUS = 2
N_NODES = 3
N_TASKS = 2000
N_ACTORS = 20
CALLS_PER_ACTOR = 25
TASK_S = 0.005
WAVES = 20
WAVE_S = 0.3
CALL_S = 0.2
KILL_EVERY_S = 0.5
NODE_KILL_AFTER_S = 2.0
PEER_TIMEOUT_S = 2.0
ROUND_DEADLINE_S = 180.0  # results not in by then count as lost
SETTLE_TIMEOUT_S = 30.0
ORPHAN_GRACE_S = 5.0
JOIN_TIMEOUT_S = 60.0


# -- the workload's remote code ---------------------------------------------------------------


def _note(ledger: str, line: str) -> None:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@af.remote(max_retries=-1)
def square(ledger: str, i: int) -> int:
    _note(ledger, f"t {i}\n")
    time.sleep(TASK_S)
    return i * i


@af.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
class Keeper:
    def __init__(self, ledger: str, k: int) -> None:
        self.ledger = ledger
        self.k = k

    def work(self, i: int) -> tuple[int, int, int]:  # plain def: one call at a time
        _note(self.ledger, f"a {self.k} {i}\n")
        time.sleep(CALL_S)
        return (self.k, i, i * 7 + self.k)


# -- the nodes: ``actorflow start`` processes -------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from ``/proc``; empty where it is gone)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for kid in children.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


class _Nodes(CliNodes):
    """The soak's cluster: every node with ``NODE_CPUS`` and ``PEER_TIMEOUT_S``, in ``tmp``."""

    def __init__(self, tmp: Path, tag: str) -> None:
        super().__init__(tmp / "state", log_dir=tmp, env={TAG_VAR: tag},
                         extra_args=["--num-cpus", str(NODE_CPUS),
                                     "--peer-timeout", str(PEER_TIMEOUT_S)],
                         label="chaos")
        self.tmp = tmp
        self.address = self.token = ""

    def start_head(self) -> None:
        self.start("head", ["--head", "--port", "0", "--host", "127.0.0.1"])
        self.wait_ready("head", JOIN_TIMEOUT_S)
        self.address, self.token = self.head_info()

    def join(self, name: str) -> None:
        """Blocking: start a node joining the head and wait until it is ready."""
        self.start(name, ["--address", self.address])
        self.wait_ready(name, JOIN_TIMEOUT_S)

    def live_workers(self) -> list[str]:
        return [n for n, p in self.procs.items() if n != "head" and p.poll() is None]


# -- one round --------------------------------------------------------------------------------


def _nonzero(amounts: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in amounts.items() if abs(v) > 1e-9}


async def _live_views() -> list[dict[str, Any]]:
    views: list[dict[str, Any]] = await current_core().head.ask(ListState("nodes"),
                                                                timeout=5.0)
    return [v for v in views if v.get("alive")]


async def busy_workers() -> list[int]:
    """The pids of the worker processes holding a lease now, as the live nodes report them."""
    pids: list[int] = []
    for view in await _live_views():
        try:
            info = await view["ref"].ask(NodeInfo(), timeout=2.0)
        except af.ActorflowError:
            continue  # it died meanwhile
        pids += [lease["worker_pid"] for lease in info["lease_list"]]
    return pids


async def _wait_for(check: Any, timeout: float) -> float | None:
    """Seconds until ``await check()`` is true, or None if not within ``timeout``."""
    start = time.monotonic()
    while True:
        if await asyncio.wait_for(check(), 10.0):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        await asyncio.sleep(0.1)


async def _collect(refs: list[Any], deadline: float, errors: dict[str, int]
                   ) -> tuple[list[Any], int]:
    """The results of ``refs`` in order (None for a missing one) and how many are missing:
    never came before ``deadline``, or came as an error (counted in ``errors`` by text)."""
    ready, _ = await af.wait(refs, num_returns=len(refs),
                             timeout=max(0.0, deadline - time.monotonic()))
    done = {id(r) for r in ready}
    if len(ready) == len(refs):
        try:
            return await af.get(refs, timeout=60.0), 0
        except Exception:  # an error among them: count them one by one below
            pass
    out: list[Any] = []
    lost = 0
    for ref in refs:
        if id(ref) not in done:
            out.append(None)
            lost += 1
            errors["never came"] = errors.get("never came", 0) + 1
            continue
        try:
            out.append(await af.get(ref, timeout=10.0))
        except Exception as exc:  # an error where a result was promised: lost
            text = f"{type(exc).__name__}: {exc}"[:400]
            errors[text] = errors.get(text, 0) + 1
            out.append(None)
            lost += 1
    return out, lost


class _Round:
    def __init__(self, nodes: _Nodes, number: int, ledger: Path, victim: str) -> None:
        self.nodes, self.number, self.ledger, self.victim = nodes, number, ledger, victim
        self.rng = random.Random(1234 + number)
        self.kills = 0
        self.node_killed = False
        self.victim_procs: set[int] = set()
        self.errors: dict[str, int] = {}

    async def _killer(self, done: asyncio.Event, start: float) -> None:
        victim = self.nodes.procs[self.victim]
        self.victim_procs = set(await asyncio.to_thread(_descendants, victim.pid))
        while not done.is_set():
            await asyncio.sleep(KILL_EVERY_S)
            if not self.node_killed and time.monotonic() - start >= NODE_KILL_AFTER_S:
                self.victim_procs |= set(await asyncio.to_thread(_descendants, victim.pid))
                victim.send_signal(signal.SIGKILL)
                self.node_killed = True
                continue
            try:
                busy = await busy_workers()
            except af.ActorflowError:
                continue
            if busy:
                try:
                    os.kill(self.rng.choice(busy), signal.SIGKILL)
                    self.kills += 1
                except ProcessLookupError:
                    pass

    async def _workload(self) -> tuple[int, int, int, list[Any]]:
        """(lost, wrong, calls, keepers) of the round's tasks and calls; why results were lost
        goes to ``self.errors``."""
        ledger = str(self.ledger)
        keepers = [Keeper.remote(ledger, k) for k in range(N_ACTORS)]
        calls = [(k, i, keepers[k].work.remote(i))
                 for i in range(CALLS_PER_ACTOR) for k in range(N_ACTORS)]
        spread = square.options(scheduling_strategy="SPREAD")
        tasks: list[Any] = []
        for wave in range(WAVES):
            if wave:
                await asyncio.sleep(WAVE_S)
            tasks += [(spread if i % 3 == 0 else square).remote(ledger, i)
                      for i in range(len(tasks), len(tasks) + N_TASKS // WAVES)]
        deadline = time.monotonic() + ROUND_DEADLINE_S
        squares, lost_t = await _collect(tasks, deadline, self.errors)
        results, lost_c = await _collect([ref for _, _, ref in calls], deadline, self.errors)
        wrong = sum(1 for i, v in enumerate(squares) if v is not None and v != i * i)
        wrong += sum(1 for (k, i, _), v in zip(calls, results, strict=True)
                     if v is not None and v != (k, i, i * 7 + k))
        return lost_t + lost_c, wrong, len(calls), keepers

    async def run(self) -> dict[str, Any]:
        start = time.monotonic()
        done = asyncio.Event()
        killing = asyncio.ensure_future(self._killer(done, start))
        try:
            lost, wrong, n_calls, keepers = await self._workload()
        finally:
            done.set()
            await asyncio.wait_for(killing, 15.0)
        elapsed = time.monotonic() - start
        for keeper in keepers:
            try:
                await asyncio.wait_for(af.kill(keeper, no_restart=True), 30.0)
            except (af.ActorflowError, TimeoutError) as exc:
                log(f"[chaos] af.kill of an actor failed: {exc!r}")
        runs = Counter((await asyncio.to_thread(self.ledger.read_text)).splitlines())
        task_reruns = sum(n - 1 for line, n in runs.items() if line.startswith("t "))
        call_reruns = sum(n - 1 for line, n in runs.items() if line.startswith("a "))
        if not self.node_killed:  # the workload ended before the node kill: kill it now
            self.victim_procs |= set(await asyncio.to_thread(
                _descendants, self.nodes.procs[self.victim].pid))
            self.nodes.procs[self.victim].send_signal(signal.SIGKILL)
            self.node_killed = True
        await asyncio.to_thread(self.nodes.procs[self.victim].wait, 10)
        settled = await _wait_for(self._settled, SETTLE_TIMEOUT_S)
        if settled is not None:  # counted from the last result
            settled = time.monotonic() - (start + elapsed)
        orphans = await self._orphans()
        return {
            "workload": "chaos", "unit": "s", "value": round(elapsed, 2),
            "round": self.number, "elapsed_s": round(elapsed, 2),
            "worker_kills": self.kills, "node_kills": 1,
            "tasks": N_TASKS, "task_reruns": task_reruns,
            "calls": n_calls, "call_reruns": call_reruns,
            "lost": lost, "wrong": wrong, **({"lost_errors": self.errors} if lost else {}),
            "resources_settled_s": None if settled is None else round(settled, 2),
            "orphans": orphans,
        }

    async def _settled(self) -> bool:
        views = await _live_views()
        if len(views) != N_NODES - 1:
            return False
        total = _nonzero(await af.cluster_resources())
        return total == _nonzero(await af.available_resources())

    async def _orphans(self) -> int:
        """How many processes of the killed node are alive ``ORPHAN_GRACE_S`` after it settled;
        they are then SIGKILLed, so that they cannot count again."""
        deadline = time.monotonic() + ORPHAN_GRACE_S
        while True:
            left = [p for p in self.victim_procs if _alive(p)]
            if not left or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            log(f"[chaos] round {self.number}: {len(left)} process(es) of the killed node "
                f"outlived it: {sorted(left)[:10]}")
        return len(left)


# -- the soak ---------------------------------------------------------------------------------


async def _wait_nodes(count: int) -> None:
    async def enough() -> bool:
        return len(await _live_views()) == count

    if await _wait_for(enough, JOIN_TIMEOUT_S) is None:
        raise RuntimeError(f"the cluster did not reach {count} live nodes in "
                           f"{JOIN_TIMEOUT_S:.0f} s")


async def _soak(nodes: _Nodes, minutes: float) -> list[dict[str, Any]]:
    await af.init(address=nodes.address, token=nodes.token, log_to_driver=False)
    records: list[dict[str, Any]] = []
    try:
        await _wait_nodes(N_NODES)
        start = time.monotonic()
        joined = N_NODES
        number = 0
        while number == 0 or time.monotonic() - start < minutes * 60:
            number += 1
            live = nodes.live_workers()
            victim = live[number % len(live)]
            ledger = nodes.tmp / f"ledger-{number}"
            rec = await _Round(nodes, number, ledger, victim).run()
            ledger.unlink(missing_ok=True)
            joined += 1
            t0 = time.monotonic()
            await asyncio.to_thread(nodes.join, f"node{joined}")
            await _wait_nodes(N_NODES)
            rec["rejoin_s"] = round(time.monotonic() - t0, 2)
            rec["soak_s"] = round(time.monotonic() - start, 1)
            records.append(rec)
            log("[chaos] " + json.dumps(rec))
            if rec["lost"] or rec["wrong"]:
                break  # the verdict is in: stop here
        return records
    finally:
        await asyncio.wait_for(af.shutdown(), 30.0)


def run(quick: bool, reps: int, only: set[str] | None = None,
        minutes: float = 1.0) -> list[dict[str, Any]]:
    """The harness's entry: rounds until ``minutes`` have passed (``quick``/``reps`` do not
    apply to a soak); one record per round."""
    tmp = Path(tempfile.mkdtemp(prefix="af-bench-chaos-"))
    tag = uuid.uuid4().hex  # the nodes' and their workers'
    nodes = _Nodes(tmp, tag)
    try:
        nodes.start_head()
        for k in range(2, N_NODES + 1):
            nodes.start(f"node{k}", ["--address", nodes.address])
        for k in range(2, N_NODES + 1):
            nodes.wait_ready(f"node{k}", JOIN_TIMEOUT_S)
        return run_on(loop_kind(), lambda: _soak(nodes, minutes))
    finally:
        nodes.stop()
        reap_tagged(tag, what="chaos")
        shutil.rmtree(tmp, ignore_errors=True)


# Workers must not need this module: pickle its remote code by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
