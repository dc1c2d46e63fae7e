"""A worker shows each task exactly the GPUs it was given: a CPU task that runs on a worker
after a GPU task does not see that task's GPUs (issue 12). The node declares GPUs it does not
have (API.md §5), so this runs without a GPU."""

from __future__ import annotations

import os
import sys

import cloudpickle
import pytest
from cl_support import within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 1, "num_gpus": 1}


@af.remote(num_gpus=1)
def on_gpu() -> tuple[int, str | None]:
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


@af.remote
def on_cpu() -> tuple[int, str | None]:
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


async def test_a_cpu_task_after_a_gpu_task_on_the_same_worker_sees_no_gpu(
        shared_cluster: af.Runtime) -> None:
    start_value = os.environ.get("CUDA_VISIBLE_DEVICES")  # workers inherit the driver's
    reused = 0
    for _ in range(10):
        gpu_pid, gpu_env = await within(on_gpu.remote())
        assert gpu_env == "0"
        cpu_pid, cpu_env = await within(on_cpu.remote())
        assert cpu_env == start_value, (gpu_pid, cpu_pid)
        reused += gpu_pid == cpu_pid
    assert reused, "no worker ran both kinds: the test proved nothing"
