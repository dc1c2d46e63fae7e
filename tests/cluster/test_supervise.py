"""API.md §6, supervision trees of user actors, with real actor processes.

One cluster serves the module; each test builds and stops its own tree.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
import pytest
from cl_support import pid_alive, until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}


@af.remote
class Parser:
    def __init__(self) -> None:
        self.parsed = 0

    def parse(self, text: str) -> str:
        self.parsed += 1
        return text.strip().upper()

    def count(self) -> int:
        return self.parsed

    def pid(self) -> int:
        return os.getpid()

    async def crash(self) -> None:
        os._exit(5)


@af.remote
class Writer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lines = 0

    def write(self, line: str) -> int:
        with open(self.path, "a") as f:
            f.write(line + "\n")
        self.lines += 1
        return self.lines

    def pid(self) -> int:
        return os.getpid()


async def test_sample_of_section_6(shared_cluster: af.Runtime, tmp_path: Path) -> None:
    out = str(tmp_path / "out.txt")  # the sample's "out.txt", made absolute (workers' cwd is ours)
    tree = await within(af.supervise(
        [af.child(Parser, name="parser"), af.child(Writer, out, name="writer")],
        strategy="rest_for_one",               # "one_for_one" | "one_for_all" | "rest_for_one"
        max_restarts=3, within_s=10.0,  # more restarts than that in the window: the tree fails
        name="pipeline"))
    parser = tree["parser"]                    # ActorHandle, valid across restarts
    assert isinstance(parser, af.ActorHandle)
    writer = tree["writer"]
    assert await within(writer.write.remote(await within(parser.parse.remote(" a ")))) == 1
    with pytest.raises(KeyError, match="no child 'nope'"):
        tree["nope"]
    await within(tree.stop())
    await within(tree.wait())                  # returns when the tree stops
    assert Path(out).read_text() == "A\n"  # noqa: ASYNC240 - a tiny local file
    with pytest.raises(af.ActorDiedError):
        await within(parser.parse.remote("b"))


async def test_handles_stay_valid_across_restarts_rest_for_one(
    shared_cluster: af.Runtime, tmp_path: Path,
) -> None:
    out = str(tmp_path / "out.txt")
    tree = await within(af.supervise(
        [af.child(Parser, name="parser"), af.child(Writer, out, name="writer")],
        strategy="rest_for_one", max_restarts=3, within_s=10.0, name="restarting"))
    try:
        parser, writer = tree["parser"], tree["writer"]
        assert await within(parser.parse.remote("x")) == "X"
        assert await within(writer.write.remote("X")) == 1
        parser_pid = await within(parser.pid.remote())
        writer_pid = await within(writer.pid.remote())
        await within(af.kill(parser, no_restart=False))   # its process dies; the tree restarts it
        # the same handles reach the new incarnations, which start from __init__ (API.md §4:
        # calls made while an actor restarts wait for the new incarnation)
        assert await within(parser.count.remote()) == 0
        new_parser_pid = await within(parser.pid.remote())
        assert new_parser_pid != parser_pid
        # rest_for_one: the writer, started after the parser, was restarted too
        assert await within(writer.write.remote("Y")) == 1
        assert await within(writer.pid.remote()) != writer_pid
        await until(lambda: not pid_alive(parser_pid) and not pid_alive(writer_pid),
                    what="the old incarnations' processes to end")
        assert Path(out).read_text() == "X\nY\n"  # noqa: ASYNC240 - a tiny local file
    finally:
        await within(tree.stop())


async def test_one_for_one_restarts_only_the_crashed_child(
    shared_cluster: af.Runtime, tmp_path: Path,
) -> None:
    tree = await within(af.supervise(
        [af.child(Parser, name="parser"), af.child(Writer, str(tmp_path / "o"), name="writer")],
        strategy="one_for_one", max_restarts=3, within_s=10.0))
    try:
        parser, writer = tree["parser"], tree["writer"]
        assert await within(writer.write.remote("1")) == 1
        parser_pid = await within(parser.pid.remote())
        with pytest.raises(af.ActorUnavailableError):  # the call that was running when it died
            await within(parser.crash.remote())
        assert await within(parser.pid.remote()) != parser_pid
        assert await within(writer.write.remote("2")) == 2  # the writer kept its state
    finally:
        await within(tree.stop())


async def test_wait_raises_supervision_error_past_the_restart_intensity(
    shared_cluster: af.Runtime,
) -> None:
    tree = await within(af.supervise(
        [af.child(Parser, name="parser")], strategy="one_for_one",
        max_restarts=1, within_s=30.0, name="fragile-tree"))
    parser = tree["parser"]
    pid1 = await within(parser.pid.remote())
    with pytest.raises(af.ActorUnavailableError):
        await within(parser.crash.remote())    # restart 1 of 1
    pid2 = await within(parser.pid.remote())
    assert pid2 != pid1
    with pytest.raises((af.ActorUnavailableError, af.ActorDiedError)):
        await within(parser.crash.remote())    # restart 2 of 1: the tree gives up
    with pytest.raises(af.SupervisionError, match="fragile-tree"):
        await within(tree.wait())
    # its child is dead for good, and says why
    with pytest.raises(af.ActorDiedError) as info:
        await within(parser.pid.remote())
    assert isinstance(info.value.cause, af.SupervisionError)
    await within(tree.stop())                  # stopping a failed tree is harmless


async def test_stop_ends_the_children_and_their_processes(shared_cluster: af.Runtime,
                                                          tmp_path: Path) -> None:
    tree = await within(af.supervise(
        [af.child(Parser, name="parser"), af.child(Writer, str(tmp_path / "o"), name="writer")],
        strategy="one_for_all", max_restarts=3, within_s=10.0))
    pids = [await within(tree["parser"].pid.remote()), await within(tree["writer"].pid.remote())]
    await within(tree.stop())
    await within(tree.wait())                  # a stopped tree did not give up: no error
    for name in ("parser", "writer"):
        with pytest.raises(af.ActorDiedError):
            await within(tree[name].pid.remote())
    await until(lambda: not any(pid_alive(p) for p in pids), what="the children's processes to end")


async def test_a_temporary_child_is_not_restarted(shared_cluster: af.Runtime) -> None:
    tree = await within(af.supervise(
        [af.child(Parser, name="parser", restart="temporary")], max_restarts=3, within_s=10.0))
    try:
        parser = tree["parser"]
        await within(parser.pid.remote())
        with pytest.raises((af.ActorUnavailableError, af.ActorDiedError)):
            await within(parser.crash.remote())
        with pytest.raises(af.ActorDiedError):
            await within(parser.pid.remote())
    finally:
        await within(tree.stop())


async def test_child_options_and_arguments(shared_cluster: af.Runtime, tmp_path: Path) -> None:
    # a plain class is made remote by af.child; options are actor options
    class Plain:
        def __init__(self, a: int, b: int = 0) -> None:
            self.total = a + b

        def total_(self) -> int:
            return self.total

    tree = await within(af.supervise(
        [af.child(Plain, 1, b=2, name="plain", options={"max_task_retries": 1})]))
    try:
        assert await within(tree["plain"].total_.remote()) == 3
    finally:
        await within(tree.stop())
    with pytest.raises(ValueError, match="unique"):
        await af.supervise([af.child(Plain, 1, name="x"), af.child(Plain, 2, name="x")])
