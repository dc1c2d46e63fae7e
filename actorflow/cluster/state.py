"""What ``actorflow start`` leaves on this machine, so ``auto``, ``stop`` and ``status`` find it.

The state folder is ``$ACTORFLOW_STATE_DIR`` (default ``~/.actorflow``), mode 0700:

- ``cluster.json``: the head's address and where its token file is (written by the head);
- ``token``: the cluster token, mode 0600 (never printed, never passed on a command line);
- ``procs/<pid>.json``: one file per process that ``actorflow start`` started (head or node),
  removed when that process exits cleanly; ``actorflow stop`` signals each.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "clear_cluster",
    "forget_process",
    "read_cluster",
    "read_processes",
    "read_token",
    "record_process",
    "state_dir",
    "write_cluster",
    "write_token",
]


def state_dir() -> Path:
    path = Path(os.environ.get("ACTORFLOW_STATE_DIR") or Path.home() / ".actorflow")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    (path / "procs").mkdir(mode=0o700, exist_ok=True)
    return path


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_token(token: str) -> Path:
    path = state_dir() / "token"
    _write_private(path, token)
    return path


def read_token() -> str | None:
    with contextlib.suppress(OSError):
        return (state_dir() / "token").read_text().strip() or None
    return None


def write_cluster(info: dict[str, Any]) -> Path:
    path = state_dir() / "cluster.json"
    _write_private(path, json.dumps(info, indent=2))
    return path


def read_cluster() -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        data: dict[str, Any] = json.loads((state_dir() / "cluster.json").read_text())
        return data
    return None


def clear_cluster(address: str) -> None:
    info = read_cluster()
    if info is not None and info.get("address") == address:
        with contextlib.suppress(OSError):
            (state_dir() / "cluster.json").unlink()


def record_process(kind: str, address: str | None) -> None:
    _write_private(state_dir() / "procs" / f"{os.getpid()}.json",
                   json.dumps({"pid": os.getpid(), "kind": kind, "address": address}))


def forget_process(pid: int | None = None) -> None:
    with contextlib.suppress(OSError):
        (state_dir() / "procs" / f"{pid or os.getpid()}.json").unlink()


def read_processes() -> list[dict[str, Any]]:
    out = []
    for entry in sorted((state_dir() / "procs").glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(entry.read_text()))
    return out
