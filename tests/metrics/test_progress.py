"""Progress bars: af.get(refs, progress=...) advances as values arrive; `actorflow run
--progress` shows the app's tasks settled over submitted; without them tqdm is never imported."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest

import actorflow as af

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


@af.remote
async def after(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def _python(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("ACTORFLOW_ADDRESS", None)
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=90,
                          cwd=cwd, env=env, check=False)


async def test_get_bar_advances_as_values_arrive(af_cluster: af.Runtime) -> None:
    out = io.StringIO()
    delays = [0.0, 0.4, 0.8, 1.2]
    refs = [after.remote(d) for d in delays]
    seen: list[str] = []

    async def watch() -> None:  # what the bar shows while the get waits
        while True:
            seen.append(out.getvalue())
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        values = await af.get(refs, timeout=30,
                              progress={"file": out, "mininterval": 0, "desc": "loading"})
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert values == delays
    shown = out.getvalue()
    assert "loading" in shown
    counts = [int(n) for n in re.findall(r"(\d)/4", shown)]
    assert counts[0] == 0 and counts[-1] == 4 and counts == sorted(counts)
    assert {1, 2, 3} <= set(counts)  # one step per value, not one jump at the end
    # it advanced while the get still waited: a snapshot with some but not all of them
    assert any(re.search(r"[123]/4", s) and "4/4" not in s for s in seen)


async def test_wait_bar_counts_to_num_returns(af_cluster: af.Runtime) -> None:
    out = io.StringIO()
    refs = [after.remote(d) for d in (0.0, 0.3, 3.0)]
    ready, not_ready = await af.wait(refs, num_returns=2, timeout=30,
                                     progress={"file": out, "mininterval": 0})
    assert ready == refs[:2] and not_ready == refs[2:]
    counts = [int(n) for n in re.findall(r"(\d)/2", out.getvalue())]
    assert counts[-1] == 2 and 1 in counts, out.getvalue()


def test_no_bar_no_tqdm(tmp_path: Path) -> None:
    """Off (the default), af.get and a run import no tqdm at all."""
    code = textwrap.dedent("""
        import sys
        import actorflow as af

        @af.remote
        def one(i):
            return i

        async def main():
            assert await af.get([one.remote(i) for i in range(20)]) == list(range(20))
            assert "tqdm" not in sys.modules, "tqdm imported without a progress bar"
            print("ok")

        af.run(main, num_cpus=1, log_to_driver=False)
    """)
    result = _python(["-c", code], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout
    assert "it/s" not in result.stderr and "/20" not in result.stderr


def test_actorflow_run_progress(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent("""
        import asyncio
        import actorflow as af

        @af.remote
        async def step(i):
            await asyncio.sleep(0.1)
            return i

        async def main():
            first = [step.remote(i) for i in range(3)]
            await af.get(first)
            await asyncio.sleep(0.5)  # a refresh shows 3/3 before the rest are submitted
            assert await af.get([step.remote(i) for i in range(4)]) == [0, 1, 2, 3]
    """))
    started = time.monotonic()
    result = _python(["-m", "actorflow", "run", "--num-cpus", "1", "--progress", str(app)],
                     tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = re.findall(r"(\d)/(\d) \[", result.stderr)
    assert shown[-1] == ("7", "7"), result.stderr  # the last figures: all 7 settled
    assert ("3", "3") in shown, result.stderr  # and on the way, 3 of the first 3
    assert time.monotonic() - started < 90

    plain = _python(["-m", "actorflow", "run", "--num-cpus", "1", str(app)], tmp_path)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert not re.search(r"\d/\d \[", plain.stderr), plain.stderr
