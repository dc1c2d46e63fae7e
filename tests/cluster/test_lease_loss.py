"""A lease whose worker died is dropped when the link to that worker is lost, so the next task
of its shape goes to a live worker at once: it never waits for the transport to give up
redialing the dead one (``peer_timeout_s``, 10 s). Before, a task submitted within
``leasing.LINGER_S`` of the one before it was pushed to the idle lease of a worker that had
just been killed, and sat in the backlog of a peer that could not be dialed until the
transport gave up (tests/cluster/test_errors.py lost ~9.6 s to it in most runs)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import cloudpickle
import pytest
from cl_support import pid_alive, until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}


@af.remote
def worker_pid() -> int:
    return os.getpid()


async def test_a_task_after_its_lease_worker_was_killed_does_not_wait_for_it(
    shared_cluster: af.Runtime,
) -> None:
    loop = asyncio.get_running_loop()
    for attempt in range(3):  # (each its own lease: the worker is a new one every time)
        pid = await within(worker_pid.remote())  # the lease on its worker lingers, idle
        os.kill(pid, signal.SIGKILL)
        await until(lambda p=pid: not pid_alive(p), timeout=5, what="the worker to die",
                    every=0.002)
        await asyncio.sleep(0.01)  # (the driver's link to it ends)
        start = loop.time()
        other = await within(worker_pid.remote(), timeout=15)
        waited = loop.time() - start
        assert other != pid
        assert waited < 2.0, f"try {attempt}: the next task waited {waited:.2f} s"
