"""After ``af.shutdown()`` nothing of the session is left: no child process of this process
(psutil's view of the process tree, before and after) and no shared-memory segment of the
session (``/dev/shm/af-<session>-*``)."""

from __future__ import annotations

import asyncio
import os
import sys

import cloudpickle
import numpy as np
import psutil
from cl_support import child_pids, run_python, runtime_segments, session_segments, until, within

import actorflow as af

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@af.remote
def big(n: int) -> np.ndarray:
    return np.ones(n)


@af.remote
async def forever() -> None:
    await asyncio.sleep(60)


@af.remote
class Holder:
    def __init__(self) -> None:
        self.kept = None

    def keep(self, arr: np.ndarray) -> int:
        self.kept = arr
        return os.getpid()

    async def forever(self) -> None:
        await asyncio.sleep(60)


async def test_shutdown_leaves_no_process_and_no_segment() -> None:
    before = child_pids()
    async with af.init(num_cpus=2, log_to_driver=False) as rt:
        # work of every kind: tasks, an actor (its own process) with a call running, a task
        # still running at shutdown, large objects in shared memory
        arr_ref = af.put(np.zeros(500_000))
        made_ref = big.remote(500_000)         # kept: its segment stays until shutdown
        made = await within(made_ref)
        holder = Holder.remote()
        holder_pid = await within(holder.keep.remote(arr_ref))
        running = [forever.remote(), holder.forever.remote()]
        during = child_pids() - before
        assert holder_pid in during
        assert len(during) >= 3               # two task workers and the actor
        segments = runtime_segments(rt)
        assert len(segments) >= 2, segments
        assert made.sum() == 500_000
        del made
    assert not af.is_initialized()
    await until(lambda: not (child_pids() - before), timeout=15,
                what="every process the session started to end")
    assert not runtime_segments(rt), runtime_segments(rt)
    assert not any(os.path.exists(s) for s in segments)  # noqa: ASYNC240 - a stat
    del running  # their values were never asked for


def test_a_driver_script_leaves_nothing_when_it_exits() -> None:
    result = run_python("""
        import os
        import numpy as np
        import actorflow as af

        @af.remote
        async def pid_and_array():
            return os.getpid(), np.ones(300_000)

        async def main():
            pid, arr = await pid_and_array.remote()
            rt = await af.init(num_cpus=2, log_to_driver=False)  # the same: idempotent
            print("KEYS", rt.session, rt.node_id, "WORKER", pid, flush=True)

        af.run(main, num_cpus=2, log_to_driver=False)
    """, timeout=60)
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    at = words.index("KEYS")
    session, node_id, worker = words[at + 1], words[at + 2], int(words[at + 4])
    try:
        assert psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        pass
    assert not session_segments(session, node_id)
