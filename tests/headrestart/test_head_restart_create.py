"""Creating an actor while the head is away (SIGKILLed, started again on the same port): the
creation waits for the head within the grace period (``$ACTORFLOW_HEAD_GRACE_S``) instead of
failing after the transport's connect timeout (5 s), and past the grace period its calls fail
with ``af.ActorDiedError`` whose cause is the error every lookup raises then: an
``af.PeerUnreachableError`` naming the head (``address``, ``waited_s``)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from mn_support import ROOT, within
from restart_support import RestartableCluster

import actorflow as af

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(180)

#: Longer than the transport's connect timeout (5 s), after which a creation used to fail.
AWAY_S = 6.0
#: The grace period of the driver that waits in vain.
SHORT_GRACE_S = 3.0
#: The transport's default connect timeout: how long one try to reach the head may take.
CONNECT_TIMEOUT_S = 5.0

DRIVER = """\
import asyncio, json, os, sys, time
import actorflow as af

class A:
    def ping(self):
        return "pong"

async def main():
    await af.init(address=sys.argv[1], token=sys.argv[2], log_to_driver=False)
    Remote = af.remote(num_cpus=0)(A)
    assert await Remote.remote().ping.remote() == "pong"
    print("ready", flush=True)
    sys.stdin.readline()  # the head is gone now
    start = time.monotonic()
    try:
        await Remote.remote().ping.remote()
        out = {"created": True}
    except af.ActorDiedError as exc:
        cause = exc.cause
        out = {"created": False, "cause": type(cause).__name__,
               "peer_unreachable": isinstance(cause, af.PeerUnreachableError),
               "waited_s": getattr(cause, "waited_s", None),
               "address": getattr(cause, "address", None)}
    out["elapsed"] = time.monotonic() - start
    print(json.dumps(out), flush=True)
    os._exit(0)  # (no head to say goodbye to)

asyncio.run(main())
"""


@af.remote(num_cpus=0)
class Echo:
    def ping(self) -> str:
        return "pong"


async def test_creation_waits_for_the_head_then_fails_clearly(tmp_path: Path) -> None:
    cluster = RestartableCluster(tmp_path)
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver: asyncio.subprocess.Process | None = None
    try:
        head = cluster.start_fixed_head()
        await cluster.wait_head(head)
        node = cluster.start_node("node2", num_cpus=1)
        await cluster.wait_ready(node)
        assert cluster.address is not None and cluster.token is not None
        await within(af.init(address=cluster.address, token=cluster.token,
                             log_to_driver=False))
        assert await within(Echo.remote().ping.remote()) == "pong"

        # made while the head is away longer than the connect timeout: it waits, and is made
        head.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(head.proc.wait, 10)
        waiting = Echo.remote()
        call = waiting.ping.remote()
        await asyncio.sleep(AWAY_S)
        head = cluster.start_fixed_head()
        await cluster.wait_ready(head, 60.0)
        assert await within(call, 60.0) == "pong"
        await within(af.shutdown(), 30.0)

        # a driver whose grace period is short: past it, a clear error naming the head
        env = dict(cluster.env, ACTORFLOW_HEAD_GRACE_S=str(SHORT_GRACE_S))
        driver = await asyncio.create_subprocess_exec(
            sys.executable, str(script), cluster.address, cluster.token, env=env,
            cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert driver.stdin is not None and driver.stdout is not None
        line = await within(driver.stdout.readline(), 60.0)
        assert line.strip() == b"ready", line
        head.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(head.proc.wait, 10)
        killed = time.monotonic()
        driver.stdin.write(b"go\n")
        await driver.stdin.drain()
        out = json.loads(await within(driver.stdout.readline(), 60.0))
        assert out["created"] is False, out
        assert out["cause"] == "HeadUnreachableError" and out["peer_unreachable"], out
        assert out["address"] == cluster.address
        # past the grace period, at the end of the try then in flight (each try redials for
        # up to the transport's connect timeout, 5 s)
        assert SHORT_GRACE_S <= out["waited_s"] <= out["elapsed"], out
        assert out["elapsed"] < SHORT_GRACE_S + 2 * CONNECT_TIMEOUT_S + 2.0, out
        assert time.monotonic() - killed < SHORT_GRACE_S + 2 * CONNECT_TIMEOUT_S + 5.0
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        if driver is not None and driver.returncode is None:
            driver.kill()
        if driver is not None:
            await within(driver.wait(), 10.0)
        if af.is_initialized():
            await within(af.shutdown(), 30.0)
        survivors = await asyncio.to_thread(cluster.stop)
        assert not survivors, f"processes left behind: {survivors}"
