"""API.md §1 ``log_to_driver``: worker stdout and stderr reach the driver's, each line
prefixed with the task or actor name and the worker's pid; with ``log_to_driver=False`` they
do not. The driver is a script in a subprocess, so its real stdout is what is checked."""

from __future__ import annotations

import re

import pytest
from cl_support import run_python

SCRIPT = """
import os, sys, threading
import actorflow as af

@af.remote
def shout(word):
    print("task-says", word)
    print("task-err", word, file=sys.stderr)
    # a thread of the task's own starts outside any task: the worker itself speaks
    thread = threading.Thread(target=print, args=("thread-says", word))
    thread.start()
    thread.join()
    return os.getpid()

@af.remote
class Speaker:
    def say(self, word):
        print("actor-says", word)
        return os.getpid()

async def main():
    task_pid = await shout.remote("hello")
    named_pid = await shout.options(name="loud").remote("again")
    speaker = Speaker.remote()
    actor_pid = await speaker.say.remote("hi")
    await af.kill(speaker)
    print("PIDS", task_pid, named_pid, actor_pid, "DRIVER", os.getpid(), flush=True)

af.run(main, num_cpus=1, log_to_driver={flag})
"""


def _pids(stdout: str) -> tuple[int, int, int]:
    match = re.search(r"^PIDS (\d+) (\d+) (\d+) DRIVER \d+$", stdout, re.MULTILINE)
    assert match, stdout
    return int(match[1]), int(match[2]), int(match[3])


def test_worker_output_reaches_the_driver_prefixed_with_name_and_pid() -> None:
    result = run_python(SCRIPT.format(flag=True), timeout=60)
    assert result.returncode == 0, result.stderr
    task_pid, named_pid, actor_pid = _pids(result.stdout)
    assert f"(shout pid={task_pid}) task-says hello\n" in result.stdout
    assert f"(shout pid={task_pid}) task-err hello\n" in result.stderr
    assert f"(loud pid={named_pid}) task-says again\n" in result.stdout
    assert f"(worker pid={task_pid}) thread-says hello\n" in result.stdout
    lines = [line for line in result.stdout.splitlines() if "actor-says hi" in line]
    assert len(lines) == 1
    assert re.fullmatch(rf"\(Speaker\S* pid={actor_pid}\) actor-says hi", lines[0]), lines[0]


@pytest.mark.parametrize("flag", [False])
def test_log_to_driver_false_keeps_worker_output_away(flag: bool) -> None:
    result = run_python(SCRIPT.format(flag=flag), timeout=60)
    assert result.returncode == 0, result.stderr
    _pids(result.stdout)  # the driver's own output is there
    for text in ("task-says", "task-err", "actor-says"):
        assert text not in result.stdout and text not in result.stderr
