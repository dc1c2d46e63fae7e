"""The liveness locks and the sweep (``actorflow/objects/sweep.py``), on real processes, real
files in ``/dev/shm`` and real unix sockets: what a process killed with SIGKILL leaves is swept,
what a live process owns never is, and a listener leaves nothing when it closes.

Each test names its segments after node ids of its own (``t<random>``), so other clusters on
the machine are never counted; sweeps here may also remove what other dead processes left,
which is what they are for.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actorflow.objects import shm, sweep
from actorflow.objects.serialization import serialize
from actorflow.transport import liveness
from actorflow.transport.config import SecretStr, TransportConfig
from actorflow.transport.ws import WebSocketTransport

ROOT = Path(__file__).resolve().parent.parent.parent
WAIT = 30.0


class Child:
    """A Python process running ``code``, which prints one line per fact it reports."""

    def __init__(self, code: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     text=True)

    def line(self, timeout: float = WAIT) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise AssertionError(f"no line from the child within {timeout} s")
        text = self.proc.stdout.readline()
        if not text:
            assert self.proc.stderr is not None
            raise AssertionError(f"the child ended: {self.proc.wait(WAIT)}\n"
                                 f"{self.proc.stderr.read()}")
        return text.strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        child.kill()


def _segments(node_id: str) -> set[str]:
    return {n for n in os.listdir(shm.SHM_DIR) if n.startswith(f"af-{node_id}-")}


def _node_lock(node_id: str) -> Path:
    directory = sweep.node_lock_dir()
    assert directory is not None
    return Path(directory) / f"node-{node_id}.lock"


_WRITER = """
    import os, sys, time
    from actorflow.objects import shm
    from actorflow.objects.serialization import serialize
    for name in sys.argv[1:] or {names!r}:
        shm.write_segment(name, serialize(bytes(300_000)))
    print("written", flush=True)
    time.sleep(600)
"""


def test_segments_of_a_killed_process_go_and_a_live_ones_stay(children: list[Child]) -> None:
    dead, live = f"t{secrets.token_hex(4)}", f"t{secrets.token_hex(4)}"
    dead_names = [f"af-{dead}-{i}" for i in range(3)]
    live_names = [f"af-{live}-{i}" for i in range(2)]
    victim = Child(_WRITER.format(names=dead_names))
    keeper = Child(_WRITER.format(names=live_names))
    children += [victim, keeper]
    assert victim.line() == "written" and keeper.line() == "written"
    assert _segments(dead) == set(dead_names) and _node_lock(dead).exists()

    sweep.sweep_segments()  # both alive: nothing of theirs goes
    assert _segments(dead) == set(dead_names) and _segments(live) == set(live_names)

    victim.kill()
    report = sweep.sweep_segments()
    assert _segments(dead) == set()
    assert not _node_lock(dead).exists()
    assert report.segments >= 3 and report.segment_bytes >= 3 * 300_000
    assert _segments(live) == set(live_names) and _node_lock(live).exists()
    keeper.kill()
    sweep.sweep_segments()
    assert _segments(live) == set() and not _node_lock(live).exists()


def test_a_segment_without_a_lock_file_or_of_another_user_is_never_swept() -> None:
    """Nothing proves the owner of a segment with no lock file dead (an older actorflow made
    it, or its lock folder was unusable): it stays. Nor is another user's segment touched."""
    orphan = f"t{secrets.token_hex(4)}"
    path = Path(shm.SHM_DIR) / f"af-{orphan}-1"
    path.write_bytes(b"x")
    try:
        sweep.sweep_segments()
        assert path.exists()
    finally:
        path.unlink()
    if os.getuid() != 0:
        return  # only root can make a file of another user's
    other = f"t{secrets.token_hex(4)}"
    shm.write_segment(f"af-{other}-1", serialize(b"y"))  # this process holds its lock...
    foreign = Path(shm.SHM_DIR) / f"af-{other}-1"
    os.chown(foreign, 65534, 65534)
    try:
        sweep.release_node(other)  # ...and lets it go: the last holder sweeps what is left
        assert foreign.exists()
    finally:
        foreign.unlink()


def test_the_last_holder_takes_what_is_left_with_it(children: list[Child]) -> None:
    node = f"t{secrets.token_hex(4)}"
    other = Child(_WRITER.format(names=[f"af-{node}-other"]))
    children.append(other)
    assert other.line() == "written"
    assert sweep.hold_node(node)
    shm.write_segment(f"af-{node}-mine", serialize(b"z"))  # a claim: a second hold
    assert sweep.release_node(node) == 0 and sweep.release_node(node) == 0  # other holds
    assert _segments(node) == {f"af-{node}-mine", f"af-{node}-other"}
    assert sweep.hold_node(node)
    other.kill()
    assert sweep.release_node(node) == 2  # the last one out
    assert _segments(node) == set() and not _node_lock(node).exists()


def test_a_forked_child_does_not_let_its_parents_lock_go(children: list[Child]) -> None:
    """A flock belongs to the open file, which fork shares: a child that exits (atexit runs)
    must not unlock or sweep what its parent still owns."""
    node = f"t{secrets.token_hex(4)}"
    parent = Child(f"""
        import os, sys, time
        from actorflow.objects import shm
        from actorflow.objects.serialization import serialize
        shm.write_segment("af-{node}-1", serialize(bytes(1000)))
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a normal exit: atexit handlers run
        os.waitpid(pid, 0)
        print("forked", flush=True)
        time.sleep(600)
    """)
    children.append(parent)
    assert parent.line() == "forked"
    sweep.sweep_segments()
    assert _segments(node) == {f"af-{node}-1"} and _node_lock(node).exists()
    parent.kill()
    sweep.sweep_segments()
    assert _segments(node) == set()


# -- sockets -------------------------------------------------------------------------------------


def _config(unix_path: str | None = "auto") -> TransportConfig:
    return TransportConfig(token=SecretStr("t" * 32), host="127.0.0.1", port=0,
                           unix_path=unix_path)


def _guarded(path: str) -> bool:
    """A socket at ``path`` with its lock file beside it."""
    return Path(path).is_socket() and Path(path + ".lock").exists()


def _nothing_at(path: str) -> bool:
    return not Path(path).exists() and not Path(path + ".lock").exists()


async def test_a_listener_leaves_neither_its_socket_nor_its_lock() -> None:
    listener = await WebSocketTransport().listen(_config(), hello={})
    try:
        _, unix = listener.addresses
        path = unix.removeprefix("ws+unix://")
        assert _guarded(path)
        liveness.sweep_sockets()  # it is alive: kept
        assert _guarded(path)
    finally:
        await listener.aclose()
    assert _nothing_at(path)


_LISTENER = """
    import asyncio
    from actorflow.transport.config import SecretStr, TransportConfig
    from actorflow.transport.ws import WebSocketTransport

    async def main():
        config = TransportConfig(token=SecretStr("t" * 32), host="127.0.0.1", port=0)
        listener = await WebSocketTransport().listen(config, hello={})
        print(listener.addresses[1].removeprefix("ws+unix://"), flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
"""


def _accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5.0)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def test_sockets_of_killed_listeners_go_and_live_ones_stay(children: list[Child],
                                                            tmp_path: Path) -> None:
    victim, keeper = Child(_LISTENER), Child(_LISTENER)
    children += [victim, keeper]
    dead_path, live_path = victim.line(), keeper.line()
    victim.kill()
    assert Path(dead_path).is_socket()  # a process killed hard runs no clean-up
    # what an older actorflow left: a socket with no lock file, dead or alive
    directory = liveness.socket_dir()
    assert directory is not None
    stale = os.path.join(directory, f"t{secrets.token_hex(4)}.sock")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(stale)
    live_old = os.path.join(directory, f"t{secrets.token_hex(4)}.sock")
    with socket.socket(socket.AF_UNIX) as listening, contextlib.ExitStack() as undo:
        listening.bind(live_old)
        listening.listen(1)
        undo.callback(lambda: Path(live_old).unlink(missing_ok=True))
        sockets, _ = liveness.sweep_sockets()
        assert sockets >= 2
        assert _nothing_at(dead_path) and _nothing_at(stale)
        assert Path(live_old).is_socket() and not Path(live_old + ".lock").exists()
        assert _guarded(live_path)
        assert _accepts(live_path)
    # a lock file whose socket is gone, and whose holder too
    left = os.path.join(directory, f"t{secrets.token_hex(4)}.sock.lock")
    Path(left).touch()
    liveness.sweep_sockets()
    assert not Path(left).exists()
    assert liveness.lock_socket(live_path) is None  # the keeper holds it: nobody else binds


async def test_a_unix_path_held_by_a_live_listener_is_not_taken(tmp_path: Path) -> None:
    path = str(tmp_path / "given.sock")
    config = _config(path)
    first = await WebSocketTransport().listen(config, hello={})
    try:
        with pytest.raises(FileExistsError):
            await WebSocketTransport().listen(config, hello={})
        assert _accepts(path)  # the first one still has it
    finally:
        await first.aclose()
    assert _nothing_at(path)
    started = time.monotonic()
    second = await WebSocketTransport().listen(config, hello={})
    await second.aclose()
    assert time.monotonic() - started < 5.0
