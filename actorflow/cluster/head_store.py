"""The head's directory on disk, so that a head started again takes its cluster back.

A head started by ``actorflow start --head`` keeps, in an SQLite file (the standard library's,
WAL mode) under the state folder, one per port (``head-<port>.sqlite``):

- ``meta``: the session, the head system's uid (a restarted head takes it back, so the refs
  other processes hold to the head's actors reach the new ones), and the token's identity
  (a salted SHA-256 of it: the token itself is never written here);
- ``nodes``: each node's id, ref, address, resources and whether it is alive;
- ``actors``: each actor that is not dead: its spec, state, location (the ref of the worker
  that hosts it), node, pid, restarts and incarnation number;
- ``jobs``: each job's row (its driver's ref, status, times);
- ``groups``: each placement group that is not removed (the placement's row: bundles,
  strategy, name, namespace, lifetime, job, state and the node of each bundle);
- ``submitted``: each submitted job's row (the ``jobs`` service's: entrypoint, status, driver
  pid, log file).

Rows are pickled (refs pickle to their system uid, address and id). Writes never happen on the
event loop: the head marks what changed (:class:`HeadSaver`), and every ``interval`` seconds
the changed records are pickled and handed, as one batch, to a thread that writes them in one
transaction. What changed in the last interval before a SIGKILL is lost; the nodes' reports
when they register again (:mod:`actorflow.cluster.head_link`) fill that in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import pickle
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "HeadSaver",
    "HeadStore",
    "SavedHead",
    "store_path",
    "token_identity",
]

log = logging.getLogger("actorflow.head")

TABLES = ("nodes", "actors", "jobs", "groups", "submitted")
#: Seconds between two batches of writes.
SAVE_INTERVAL_S = 0.05


def store_path(state_dir: Path, port: int) -> Path:
    """The store of the head that listens on ``port``."""
    return state_dir / f"head-{port}.sqlite"


def token_identity(token: str) -> str:
    """What the store keeps of the token: enough to tell it again, not to learn it."""
    return hashlib.sha256(b"actorflow-head-token\0" + token.encode()).hexdigest()


@dataclass
class SavedHead:
    """What a store holds (rows still pickled: refs are rebuilt where a system runs)."""

    meta: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, bytes] = field(default_factory=dict)
    actors: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, bytes] = field(default_factory=dict)
    groups: dict[str, bytes] = field(default_factory=dict)
    submitted: dict[str, bytes] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.meta.get("uid")


class HeadStore:
    """One SQLite file (see the module docstring). Its methods block: call them in a thread.
    A store is used by one thread at a time (the connection allows any one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        path.chmod(0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        for table in TABLES:
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, row BLOB)")

    def load(self) -> SavedHead:
        saved = SavedHead()
        saved.meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        for table in TABLES:
            rows = self._db.execute(f"SELECT key, row FROM {table}").fetchall()
            setattr(saved, table, {str(k): bytes(v) for k, v in rows})
        return saved

    def write(self, meta: dict[str, str], rows: list[tuple[str, str, bytes | None]]) -> None:
        """One transaction: ``meta`` entries set, and each ``(table, key, row)`` put (a row
        of None: deleted)."""
        db = self._db
        db.execute("BEGIN")
        try:
            for key, value in meta.items():
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            for table, key, row in rows:
                if table not in TABLES:
                    raise ValueError(f"no table {table!r} in a head store")
                if row is None:
                    db.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
                else:
                    db.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", (key, row))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def clear(self) -> None:
        """Forget everything (a head that starts afresh on this port)."""
        db = self._db
        db.execute("BEGIN")
        for table in ("meta", *TABLES):
            db.execute(f"DELETE FROM {table}")
        db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


#: A record's row, or None when it is to be deleted.
Encoder = Callable[[Any], "bytes | None"]


class HeadSaver:
    """The head's side of a store: marks what changed, writes it in batches off the loop.

    ``mark(table, key, record, encode)``: ``record`` changed; within ``interval`` seconds
    ``encode(record)`` (on the loop: a pickle of one record) is written, or the row deleted when
    it gives None. Only the last mark of a key in an interval is encoded.
    """

    def __init__(self, store: HeadStore, interval: float = SAVE_INTERVAL_S) -> None:
        self.store = store
        self.interval = interval
        self._dirty: dict[tuple[str, str], tuple[Any, Encoder]] = {}
        self._meta: dict[str, str] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._writing: concurrent.futures.Future[None] | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="actorflow-head-store")
        self._closed = False
        self.batches = 0  # written so far (for tests and figures)

    def meta(self, **values: str) -> None:
        self._meta.update(values)
        self._soon()

    def mark(self, table: str, key: str, record: Any, encode: Encoder) -> None:
        if self._closed:
            return
        self._dirty[(table, key)] = (record, encode)
        self._soon()

    def _soon(self) -> None:
        if self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._writing is not None and not self._writing.done():
            self._soon()  # the last batch is still being written: this one waits its turn
            return
        batch = self._take()
        if batch is None:
            return
        self._writing = self._thread.submit(self._write, *batch)

    def _take(self) -> tuple[dict[str, str], list[tuple[str, str, bytes | None]]] | None:
        if not self._dirty and not self._meta:
            return None
        dirty, self._dirty = self._dirty, {}
        meta, self._meta = self._meta, {}
        rows: list[tuple[str, str, bytes | None]] = []
        for (table, key), (record, encode) in dirty.items():
            try:
                row = encode(record)
            except Exception as exc:  # (an unpicklable argument): kept in memory only
                log.warning("cannot save %s %s of the head's directory: %s", table, key, exc)
                continue
            rows.append((table, key, row))
        return meta, rows

    def _write(self, meta: dict[str, str], rows: list[tuple[str, str, bytes | None]]) -> None:
        try:
            self.store.write(meta, rows)
            self.batches += 1
        except sqlite3.Error as exc:
            log.error("cannot write the head's directory to %s: %s", self.store.path, exc)

    async def aclose(self) -> None:
        """Write what is left, then close the file."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        if self._writing is not None:
            await asyncio.wrap_future(self._writing)
        batch = self._take()
        if batch is not None:
            await loop.run_in_executor(self._thread, self._write, *batch)
        await loop.run_in_executor(self._thread, self.store.close)
        self._thread.shutdown(wait=False)


def dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=5)


def loads(row: bytes) -> Any:
    return pickle.loads(row)


def open_for(path: Path, token: str) -> tuple[HeadStore, SavedHead]:
    """Open the store at ``path`` for a head with ``token`` (blocks: call it in a thread).
    A store kept by a head of another token is another cluster's: it is cleared."""
    store = HeadStore(path)
    saved = store.load()
    if not saved.empty and saved.meta.get("token") != token_identity(token):
        log.warning("%s was kept by a head with another token: starting afresh", path)
        store.clear()
        saved = SavedHead()
    return store, saved


def saved_token(path: Path, candidate: str | None) -> str | None:
    """``candidate`` (the token file's token) when the store at ``path`` was kept by a head
    with that token (so a restarted head keeps its token, and its nodes' links), else None."""
    if candidate is None or not path.exists():
        return None
    store = HeadStore(path)
    try:
        meta = store.load().meta
    finally:
        store.close()
    return candidate if meta.get("token") == token_identity(candidate) else None
