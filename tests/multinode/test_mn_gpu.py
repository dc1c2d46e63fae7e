"""API.md §5 with real NVIDIA GPUs: a task given a GPU sees exactly that GPU from CUDA.

One CLI-started node declares the GPUs this machine has (``--num-gpus N``). Skipped where
there is no NVIDIA GPU, or neither torch nor cupy to talk to CUDA with.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import cloudpickle
import pytest
from mn_support import Cluster, within

import actorflow as af

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _physical_gpus() -> list[str]:
    """UUIDs of the GPUs this process may use, by CUDA index (empty without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    uuids = [line.split(",")[1].strip() for line in out.stdout.splitlines() if "," in line]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # this machine's own mask: the node's GPU i is its i-th entry
        keep = [v.strip() for v in visible.split(",") if v.strip()]
        uuids = [u for i, u in enumerate(uuids) if str(i) in keep or u in keep]
    return uuids


HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_CUPY = importlib.util.find_spec("cupy") is not None
GPUS = _physical_gpus()

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not GPUS, reason="no NVIDIA GPU on this machine"),
    pytest.mark.skipif(not (HAS_TORCH or HAS_CUPY), reason="needs torch or cupy to ask CUDA"),
]

NODES = [{"name": "head", "num_cpus": 2, "num_gpus": max(1, len(GPUS)), "resources": {"r_gpu": 1}}]


@af.remote(num_cpus=0, num_gpus=1)
def cuda_view(hold: float) -> dict[str, Any]:
    """What CUDA shows this task: device count, the UUID of device 0, a computation on it."""
    ids = list(af.get_gpu_ids())
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    start = time.monotonic()
    uuid: str | None = None
    try:
        import torch

        count = torch.cuda.device_count()
        value = float((torch.ones(4, device="cuda:0") * 2).sum().item())
        raw = getattr(torch.cuda.get_device_properties(0), "uuid", None)
        if raw is not None:
            uuid = str(raw)
    except ImportError:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        value = float((cupy.ones(4) * 2).sum())
        raw = cupy.cuda.runtime.getDeviceProperties(0).get("uuid")
        if isinstance(raw, bytes) and len(raw) == 16:
            h = raw.hex()
            uuid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    time.sleep(hold)
    return {"ids": ids, "cuda": cuda, "count": count, "value": value, "uuid": uuid,
            "start": start, "end": time.monotonic(), "pid": os.getpid()}


def check_one_gpu(view: dict[str, Any]) -> None:
    assert len(view["ids"]) == 1, view
    (gpu,) = view["ids"]
    assert view["cuda"] == str(gpu), view
    assert view["count"] == 1, f"CUDA shows {view['count']} devices to a one-GPU task"
    assert view["value"] == 8.0
    if view["uuid"] is not None:  # CUDA's device 0 is the GPU the task was given
        assert GPUS[gpu].removeprefix("GPU-") == view["uuid"].removeprefix("GPU-"), view


async def test_a_gpu_task_sees_only_its_gpu(cli_cluster: Cluster) -> None:
    check_one_gpu(await within(cuda_view.remote(0.0), 120))


@pytest.mark.skipif(len(GPUS) < 2, reason="needs two GPUs")
async def test_concurrent_gpu_tasks_get_different_gpus(cli_cluster: Cluster) -> None:
    views = await within(af.get([cuda_view.remote(3.0) for _ in range(2)]), 180)
    for view in views:
        check_one_gpu(view)
    a, b = views
    assert a["start"] < b["end"] and b["start"] < a["end"], "the two tasks did not overlap"
    assert a["ids"] != b["ids"] and a["pid"] != b["pid"]
    if a["uuid"] and b["uuid"]:
        assert a["uuid"] != b["uuid"]
