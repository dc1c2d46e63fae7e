"""A process that died never makes others wait for the transport to give up redialing it
(``peer_timeout_s``, 10 s): what runs elsewhere goes on, and what needed it fails at once.

Both were seen in tests/cluster/test_errors.py, which lost ~9.6 s in most runs: a task submitted
within ``leasing.LINGER_S`` of the one before it was pushed to the idle lease of a worker that
had just been killed; and a read of an object whose owner had been killed waited for the
transport before it raised OwnerDiedError. Each waited in the backlog of a peer that could not
be dialed."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys

import cloudpickle
import pytest
from cl_support import pid_alive, until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}
#: Far below the 10 s the transport takes to give up on a peer, far above a healthy answer.
PROMPT_S = 2.0


@af.remote
def worker_pid() -> int:
    return os.getpid()


@af.remote
def put_in_worker(value: str) -> tuple[list[af.ObjectRef], int]:
    return [af.put(value)], os.getpid()  # the worker owns the object


async def killed(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    await until(lambda: not pid_alive(pid), timeout=5, what="the worker to die", every=0.002)
    await asyncio.sleep(0.01)  # (the driver's link to it ends)


async def test_a_task_after_its_lease_worker_was_killed_does_not_wait_for_it(
    shared_cluster: af.Runtime,
) -> None:
    loop = asyncio.get_running_loop()
    for attempt in range(3):  # (each its own lease: the worker is a new one every time)
        pid = await within(worker_pid.remote())  # the lease on its worker lingers, idle
        await killed(pid)
        start = loop.time()
        other = await within(worker_pid.remote(), timeout=15)
        waited = loop.time() - start
        assert other != pid
        assert waited < PROMPT_S, f"try {attempt}: the next task waited {waited:.2f} s"


async def test_a_read_after_the_owner_was_killed_fails_at_once(
    shared_cluster: af.Runtime,
) -> None:
    loop = asyncio.get_running_loop()
    (ref,), pid = await within(put_in_worker.remote("owned by a worker"))
    assert await within(ref) == "owned by a worker"
    await killed(pid)
    await asyncio.sleep(0.05)  # (and stays ended: a read now would dial it again)
    lost = pickle.loads(pickle.dumps(ref))  # a fresh copy: its value is not cached here
    start = loop.time()
    with pytest.raises(af.OwnerDiedError) as info:
        await within(lost, timeout=15)
    waited = loop.time() - start
    assert info.value.object_id == ref.id
    assert waited < PROMPT_S, f"the read waited {waited:.2f} s"
    # and a task after it runs at once (nothing of this process waits for that owner)
    start = loop.time()
    assert await within(worker_pid.remote(), timeout=15) != pid
    assert loop.time() - start < PROMPT_S
