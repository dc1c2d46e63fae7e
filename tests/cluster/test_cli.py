"""API.md §8 ``actorflow run app.py``: runs the app's ``async def main()`` (or ``main(argv)``)
on the embedded cluster; exit status 0, or non-zero when main raised; the arguments after
``--`` reach ``main(argv)``; functions and classes defined in the app run on workers."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from cl_support import run_command

APP = """
import os
import actorflow as af

@af.remote
def where(x):
    return os.getpid(), x * 2

@af.remote
class Keeper:
    def __init__(self, v):
        self.v = v
    def get(self):
        return self.v, os.getpid()

async def main(argv):
    pid, doubled = await where.remote(21)
    kept, actor_pid = await Keeper.remote("kept").get.remote()
    print("DRIVER", os.getpid(), "TASK", pid, "ACTOR", actor_pid, flush=True)
    print("RESULTS", doubled, kept, flush=True)
    print("ARGV", argv, flush=True)
    print("CPUS", (await af.cluster_resources())["CPU"], flush=True)
    if argv and argv[0] == "fail":
        raise RuntimeError("main failed on purpose")
"""


def _app(tmp_path: Path, text: str = APP) -> str:
    path = tmp_path / "app.py"
    path.write_text(textwrap.dedent(text))
    return str(path)


def _run(*args: str, cwd: Path) -> tuple[int, str, str]:
    result = run_command([sys.executable, "-m", "actorflow", "run", *args], timeout=90,
                         cwd=str(cwd))
    return result.returncode, result.stdout, result.stderr


def _value(stdout: str, key: str) -> list[str]:
    for line in stdout.splitlines():
        if line.startswith(key + " "):
            return line.split()[1:]
    raise AssertionError(f"no {key} line in:\n{stdout}")


def test_run_app_exit_zero_argv_and_functions_on_workers(tmp_path: Path) -> None:
    code, out, err = _run(_app(tmp_path), "--", "a", "b", "--c", cwd=tmp_path)
    assert code == 0, err
    driver, _, task, _, actor = _value(out, "DRIVER")
    assert task != driver and actor != driver and task.isdigit() and actor.isdigit()
    assert _value(out, "RESULTS") == ["42", "kept"]
    assert " ".join(_value(out, "ARGV")) == "['a', 'b', '--c']"


def test_run_options_after_the_app_path_are_options(tmp_path: Path) -> None:
    # the synopsis of API.md §8: actorflow run app.py [--num-cpus N] ... [-- ARGS...]
    code, out, err = _run(_app(tmp_path), "--num-cpus", "1", "--", "x", cwd=tmp_path)
    assert code == 0, err
    assert " ".join(_value(out, "ARGV")) == "['x']"
    assert _value(out, "CPUS") == ["1.0"]


def test_run_options_before_the_app_path(tmp_path: Path) -> None:
    result = run_command([sys.executable, "-m", "actorflow", "run", "--num-cpus", "1",
                          _app(tmp_path), "--", "y"], timeout=90, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert " ".join(_value(result.stdout, "ARGV")) == "['y']"
    assert _value(result.stdout, "CPUS") == ["1.0"]


def test_run_app_exits_non_zero_when_main_raises(tmp_path: Path) -> None:
    code, out, err = _run(_app(tmp_path), "--", "fail", cwd=tmp_path)
    assert code != 0
    assert "main failed on purpose" in err
    assert _value(out, "RESULTS") == ["42", "kept"]  # it ran up to the raise


def test_run_app_with_main_without_argv(tmp_path: Path) -> None:
    app = _app(tmp_path, """
        import actorflow as af

        @af.remote
        async def one():
            return 1

        async def main():
            print("GOT", await one.remote())
    """)
    code, out, err = _run(app, "--num-cpus", "1", cwd=tmp_path)
    assert code == 0, err
    assert _value(out, "GOT") == ["1"]


def test_run_app_without_main_is_a_usage_error(tmp_path: Path) -> None:
    app = _app(tmp_path, "x = 1\n")
    code, _, err = _run(app, cwd=tmp_path)
    assert code == 2
    assert "main" in err


def test_run_missing_file_fails(tmp_path: Path) -> None:
    code, _, err = _run(str(tmp_path / "missing.py"), cwd=tmp_path)
    assert code != 0
    assert "missing.py" in err
