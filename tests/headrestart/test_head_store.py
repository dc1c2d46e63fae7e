"""The head's directory on disk (actorflow/cluster/head_store.py): written in batches off the
loop, read back from a real SQLite file after the writer is gone."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from actorflow.cluster.head_store import (
    HeadSaver,
    HeadStore,
    dumps,
    loads,
    open_for,
    saved_token,
    store_path,
    token_identity,
)


def test_write_reopen_read(tmp_path: Path) -> None:
    path = store_path(tmp_path, 6390)
    store = HeadStore(path)
    store.write({"session": "s1", "uid": "u1", "token": token_identity("secret")},
                [("nodes", "n1", dumps({"node_id": "n1"})), ("actors", "a1", b"x"),
                 ("actors", "a2", b"y"), ("jobs", "j1", b"z")])
    store.write({}, [("actors", "a1", None), ("actors", "a2", b"y2")])
    store.close()

    again = HeadStore(path)
    saved = again.load()
    again.close()
    assert saved.meta == {"session": "s1", "uid": "u1", "token": token_identity("secret")}
    assert loads(saved.nodes["n1"]) == {"node_id": "n1"}
    assert saved.actors == {"a2": b"y2"}
    assert saved.jobs == {"j1": b"z"}
    assert not saved.empty
    with sqlite3.connect(path) as db:  # WAL mode, and the token itself is nowhere
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert b"secret" not in path.read_bytes()
    assert path.stat().st_mode & 0o077 == 0


def test_a_store_of_another_token_is_cleared(tmp_path: Path) -> None:
    path = store_path(tmp_path, 6391)
    store = HeadStore(path)
    store.write({"uid": "u1", "token": token_identity("one")}, [("actors", "a", b"1")])
    store.close()
    assert saved_token(path, "one") == "one"
    assert saved_token(path, "two") is None
    kept, saved = open_for(path, "two")
    kept.close()
    assert saved.empty and not saved.actors
    kept, saved = open_for(path, "two")
    kept.close()
    assert saved.empty and not saved.actors  # cleared on disk too


async def test_the_saver_batches_the_last_state_of_each_record(tmp_path: Path) -> None:
    path = store_path(tmp_path, 6392)
    saver = HeadSaver(HeadStore(path), interval=0.05)
    record = {"n": 0}
    for i in range(1, 1001):  # many changes within one interval: one batch, the last value
        record["n"] = i
        saver.mark("actors", "a1", record, lambda r: dumps(dict(r)))
    saver.meta(uid="u9")
    deadline = asyncio.get_running_loop().time() + 10.0
    while saver.batches < 1:
        assert asyncio.get_running_loop().time() < deadline, "no batch written in 10 s"
        await asyncio.sleep(0.02)
    assert saver.batches == 1
    saver.mark("actors", "gone", record, lambda r: None)  # deleted (none there: a no-op)
    saver.mark("nodes", "n1", record, lambda r: b"node")
    await saver.aclose()  # writes what is left

    again = HeadStore(path)
    saved = again.load()
    again.close()
    assert loads(saved.actors["a1"]) == {"n": 1000}
    assert saved.nodes == {"n1": b"node"}
    assert saved.meta["uid"] == "u9"
