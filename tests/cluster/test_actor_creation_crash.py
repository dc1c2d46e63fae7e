"""An actor whose process dies while its constructor runs (a crash, not an error of the
constructor) is started again within ``max_restarts``, as a crash later would be; without
restarts left it is dead with the crash as the cause."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from cl_support import until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@af.remote(num_cpus=0)
class SlowStart:
    def __init__(self, marker_dir: str) -> None:
        Path(marker_dir, f"{os.getpid()}.pid").write_text("")
        time.sleep(1.5)

    def pid(self) -> int:
        return os.getpid()


def _starts(marker_dir: Path) -> list[int]:
    return sorted(int(p.stem) for p in marker_dir.glob("*.pid"))


async def _kill_first_start(marker_dir: Path) -> int:
    await until(lambda: bool(_starts(marker_dir)), what="the constructor to start")
    first = _starts(marker_dir)[0]
    os.kill(first, signal.SIGKILL)
    return first


async def test_a_crash_during_creation_is_restarted(shared_cluster: af.Runtime,
                                                    tmp_path: Path) -> None:
    actor = SlowStart.options(max_restarts=1).remote(str(tmp_path))
    first = await _kill_first_start(tmp_path)
    pid = await within(actor.pid.remote(), 30.0)
    assert pid != first and _starts(tmp_path) == sorted([first, pid])
    await af.kill(actor)


async def test_without_restarts_a_crash_during_creation_is_its_death(
        shared_cluster: af.Runtime, tmp_path: Path) -> None:
    actor = SlowStart.options(max_restarts=0).remote(str(tmp_path))
    await _kill_first_start(tmp_path)
    with pytest.raises(af.ActorDiedError) as info:
        await within(actor.pid.remote(), 30.0)
    assert isinstance(info.value.cause, af.WorkerCrashedError)
