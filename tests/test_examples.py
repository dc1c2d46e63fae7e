"""Every example runs as its docstring says and exits 0 (STYLE.md habit 11: examples are smoke
tests). Each runs in a fresh interpreter with a timeout; ``embed_aiohttp.py`` serves forever
under ``run_app``, so its ``make_app()`` is driven in-process instead, with a real server and
client."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import cloudpickle
import pytest
from aiohttp import web

import actorflow as af

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
IN_PROCESS = {"embed_aiohttp.py"}
TIMEOUT_S = 90

#: What each example prints when it works (checked where listed).
EXPECTED: dict[str, list[str]] = {
    "actors.py": ["increments: [11, 12, 13, 14, 15]", "value: 15", "fetched: ['A', 'B', 'C', 'D']"],
    "groups_and_guards.py": ["found by name: True", "children placed: 3", "group state: CREATED",
                             "pong", "watched: ActorDiedError", "guard stopped 'hoard'"],
    "pi.py": ["pi ~= 3.1"],
    "quickstart.py": ["squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]", "3^2 + 4^2 = 25",
                      "counter: [11, 12, 13]", "object: [0, 1, 2, 3, 4]", "remote TypeError:"],
    "streaming.py": ["countdown: [3, 2, 1]", "chunks: ['stre', 'amin', 'g!']",
                     "readings: [0, 1, 4, 9, 16] made: 5"],
    "supervision.py": ["parser restarted: True", "writer restarted with the parser: True",
                       "file: ['HELLO', 'WORLD']"],
}


def _scripts() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py") if p.name not in IN_PROCESS)


def test_every_example_is_covered() -> None:
    assert set(_scripts()) | IN_PROCESS == {p.name for p in EXAMPLES.glob("*.py")}
    assert {p.name for p in EXAMPLES.glob("*.py")} >= IN_PROCESS


@pytest.mark.timeout(TIMEOUT_S + 30)
@pytest.mark.parametrize("name", _scripts())
def test_example_runs_and_exits_zero(name: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("ACTORFLOW_ADDRESS", None)
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True,
        timeout=TIMEOUT_S, cwd=str(tmp_path), env=env, check=False,
    )
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stderr}"
    for text in EXPECTED.get(name, []):
        assert text in result.stdout, f"{name} did not print {text!r}:\n{result.stdout}"


def _load(name: str):
    module_name = f"af_example_{Path(name).stem}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    cloudpickle.register_pickle_by_value(module)  # workers cannot import the example file
    spec.loader.exec_module(module)
    return module


async def test_embed_aiohttp_app_serves_fib() -> None:
    assert not af.is_initialized()
    example = _load("embed_aiohttp.py")
    runner = web.AppRunner(example.make_app())
    await asyncio.wait_for(runner.setup(), 30)  # its on_startup runs af.init()
    try:
        assert af.is_initialized()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await asyncio.wait_for(site.start(), 10)
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            async def fib(n: int) -> dict:
                url = f"http://127.0.0.1:{port}/fib"
                async with session.get(url, params={"n": n}) as resp:
                    assert resp.status == 200, await resp.text()
                    return await resp.json()

            answers = await asyncio.wait_for(asyncio.gather(fib(25), fib(10), fib(0)), 30)
        assert answers == [{"n": 25, "fib": 75025}, {"n": 10, "fib": 55}, {"n": 0, "fib": 0}]
    finally:
        await asyncio.wait_for(runner.cleanup(), 30)  # its on_cleanup runs af.shutdown()
    assert not af.is_initialized()
