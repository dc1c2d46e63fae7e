"""Runtime environments: what a job, a driver, a task or an actor runs with.

``runtime_env={"working_dir": DIR, "py_modules": [DIR, ...], "env_vars": {K: V}}``:

- A directory is **packed** once by the process that names it (:func:`pack_dir`, in a
  thread): a zip whose bytes depend only on the files' relative paths, contents and
  executable bits (sorted entries, fixed dates), so the same tree always gives the same
  package, named by the sha256 of its bytes (``pkg:<hex>``). ``__pycache__`` and ``.git``
  folders are left out. The size of the files is checked against a limit while walking, before
  anything is read: a tree over it fails at once with :class:`RuntimeEnvTooLargeError`.
- It is **uploaded** to the head's ``jobs`` actor over the authenticated link
  (:func:`resolve`): the head is asked whether it holds that package; if not, the packing
  process offers the bytes under a one-time ticket (a bulk pull,
  :mod:`actorflow.transport.bulk`) or, where the transport cannot, sends them in chunks. The
  head checks the digest and keeps the package in ``<state dir>/packages/<hex>.zip``.
- A process that runs with it (the head for a job's driver, a node for a worker) **unpacks**
  it once into ``<state dir>/runtime_envs/<hex>/`` (:func:`ensure_local`), fetching it from the
  head first when this machine does not have it; later uses of the same package reuse that
  folder (an unpack goes to a temporary folder renamed into place, so concurrent users on one
  machine never see half a tree).

A resolved environment (:class:`ResolvedEnv`) names packages only; :func:`apply` turns it into
a process's environment variables, working directory and import path. Its :attr:`key` tells
environments apart: workers of different keys never share a process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actorflow._errors import ActorflowError, RuntimeEnvTooLargeError
from actorflow.cluster import state
from actorflow.runtime import ActorRef, ActorSystem, current_system, restore_ref

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ENV_VAR",
    "FetchPackage",
    "HasPackage",
    "PackageChunk",
    "PackageLimit",
    "PackageOffer",
    "ResolvedEnv",
    "UploadPackage",
    "apply",
    "ensure_local",
    "for_options",
    "head_service",
    "normalize",
    "pack_dir",
    "process_default",
    "resolve",
    "set_process_default",
]

#: The default largest working_dir / py_module, in bytes of files (``runtime_env_max_bytes``).
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
#: The environment variable that hands a resolved environment to a job's driver.
ENV_VAR = "ACTORFLOW_RUNTIME_ENV"
PREFIX = "pkg:"
_KEYS = frozenset({"working_dir", "py_modules", "env_vars"})
_SKIP_DIRS = frozenset({"__pycache__", ".git"})
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
#: Bytes per message when a package travels in chunks (no bulk pull on the transport).
CHUNK_BYTES = 4 * 1024 * 1024


# -- messages to the head's "jobs" actor -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackageLimit:
    """Ask the largest package the cluster takes (bytes of files); answered with an int."""


@dataclass(frozen=True, slots=True)
class HasPackage:
    """Ask whether the head holds package ``digest``; answered with a bool."""

    digest: str


@dataclass(frozen=True, slots=True)
class UploadPackage:
    """Pull package ``digest`` (``size`` bytes, ``files`` bytes of files) from the listener at
    ``address`` under ``ticket``."""

    digest: str
    size: int
    files: int
    address: str
    ticket: str


@dataclass(frozen=True, slots=True)
class PackageChunk:
    """One piece of package ``digest`` (``size`` bytes in all) at ``offset``: the way
    packages travel where there is no bulk pull. The last piece completes it."""

    digest: str
    size: int
    files: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class FetchPackage:
    """Ask the head for package ``digest``: answered with a :class:`PackageOffer`."""

    digest: str
    chunk_offset: int | None = None  # set: answer with the chunk's bytes instead


@dataclass(frozen=True, slots=True)
class PackageOffer:
    size: int
    address: str | None
    ticket: str | None
    data: bytes = b""


# -- the environment itself ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvedEnv:
    """A runtime environment whose directories are uploaded packages (``pkg:<hex>``)."""

    working_dir: str | None = None
    py_modules: tuple[str, ...] = ()
    env_vars: tuple[tuple[str, str], ...] = ()
    key: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        text = json.dumps([self.working_dir, list(self.py_modules), list(self.env_vars)])
        object.__setattr__(self, "key", hashlib.sha256(text.encode()).hexdigest()[:16])

    def to_dict(self) -> dict[str, Any]:
        return {"working_dir": self.working_dir, "py_modules": list(self.py_modules),
                "env_vars": dict(self.env_vars)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ResolvedEnv:
        data = json.loads(text)
        return cls(data.get("working_dir"), tuple(data.get("py_modules") or ()),
                   tuple(sorted((data.get("env_vars") or {}).items())))

    def merged(self, other: ResolvedEnv | None) -> ResolvedEnv:
        """``other`` on top of this one (a task's env over its job's): its working_dir and
        py_modules replace these when given; env_vars are merged, ``other`` winning."""
        if other is None:
            return self
        env = dict(self.env_vars)
        env.update(other.env_vars)
        return ResolvedEnv(other.working_dir or self.working_dir,
                           other.py_modules or self.py_modules, tuple(sorted(env.items())))

    @property
    def packages(self) -> tuple[str, ...]:
        return ((self.working_dir,) if self.working_dir else ()) + self.py_modules


def normalize(runtime_env: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Check a user's ``runtime_env`` (keys, types); a TypeError names what is wrong. Returns a
    plain dict copy, or None for an empty one."""
    if runtime_env is None:
        return None
    if not isinstance(runtime_env, Mapping):
        raise TypeError(f"runtime_env must be a dict, got {type(runtime_env).__name__}")
    unknown = set(runtime_env) - _KEYS
    if unknown:
        raise TypeError(f"runtime_env has unknown keys {sorted(unknown)}; valid keys: "
                        f"{sorted(_KEYS)}")
    out: dict[str, Any] = {}
    working_dir = runtime_env.get("working_dir")
    if working_dir is not None:
        if not isinstance(working_dir, str | os.PathLike):
            raise TypeError("runtime_env['working_dir'] must be a path")
        out["working_dir"] = os.fspath(working_dir)
    modules = runtime_env.get("py_modules")
    if modules is not None:
        if isinstance(modules, str) or not all(
                isinstance(m, str | os.PathLike) for m in modules):
            raise TypeError("runtime_env['py_modules'] must be a list of paths")
        out["py_modules"] = [os.fspath(m) for m in modules]
    env_vars = runtime_env.get("env_vars")
    if env_vars is not None:
        if not isinstance(env_vars, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
            raise TypeError("runtime_env['env_vars'] must be a dict of str to str")
        out["env_vars"] = dict(env_vars)
    return out or None


# -- packing ---------------------------------------------------------------------------------


def _files(root: Path, limit: int) -> tuple[list[tuple[str, Path]], int]:
    """The files under ``root`` (relative name, path), sorted; their total size. Raises
    RuntimeEnvTooLargeError as soon as the total passes ``limit``."""
    found: list[tuple[str, Path]] = []
    total = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(names):
            path = Path(folder) / name
            if not path.is_file():
                continue
            total += path.stat().st_size
            if total > limit:
                raise RuntimeEnvTooLargeError(str(root), total, limit)
            found.append((path.relative_to(root).as_posix(), path))
    found.sort()
    return found, total


def pack_dir(path: str | os.PathLike[str], limit: int = DEFAULT_MAX_BYTES, *,
             as_package: bool = False) -> tuple[str, bytes, int]:
    """``(digest, zip bytes, bytes of files)`` of the directory at ``path`` (blocking: run it
    in a thread). With ``as_package`` the entries sit under the directory's own name (a
    py_module: its parent goes on the import path)."""
    root = Path(path).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"runtime_env directory {os.fspath(path)!r} does not exist "
                                "or is not a directory")
    import io
    import zipfile

    files, total = _files(root, limit)
    prefix = root.name + "/" if as_package else ""

    buffer = io.BytesIO()
    data: bytes
    # deflate at level 1 (much faster than the default, for a slightly larger upload), and
    # files whose start does not compress (archives, media, model weights) stored as they are
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED,
                         compresslevel=1) as archive:
        for name, file in files:
            info = zipfile.ZipInfo(prefix + name, date_time=_ZIP_DATE)
            mode = 0o755 if file.stat().st_mode & stat.S_IXUSR else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            data = file.read_bytes()
            info.compress_type = zipfile.ZIP_DEFLATED if _compresses(data) else zipfile.ZIP_STORED
            archive.writestr(info, data, compresslevel=1)
    data = buffer.getvalue()
    return hashlib.sha256(data).hexdigest(), data, total


def _compresses(data: bytes) -> bool:
    """Is deflate worth it for ``data``? (Judged on its first 64 KiB: the same bytes always
    give the same answer, so packing stays deterministic.)"""
    import zlib

    head = data[:65536]
    return len(head) < 512 or len(zlib.compress(head, 1)) < 0.9 * len(head)


# -- where packages live on a machine --------------------------------------------------------


def _packages_dir() -> Path:
    path = state.state_dir() / "packages"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _envs_dir() -> Path:
    path = state.state_dir() / "runtime_envs"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def package_path(digest: str) -> Path:
    _check_digest(digest)
    return _packages_dir() / f"{digest}.zip"


def _check_digest(digest: str) -> None:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a package digest: {digest!r}")


def save_package(digest: str, data: bytes | bytearray | memoryview) -> Path:
    """Keep package ``digest`` on this machine after checking its bytes (blocking)."""
    import tempfile

    got = hashlib.sha256(data).hexdigest()
    if got != digest:
        raise ValueError(f"package {digest[:12]} arrived with digest {got[:12]}: corrupted")
    path = package_path(digest)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return path


def _unpack(digest: str) -> Path:
    """The folder of package ``digest`` on this machine, unpacked now if needed (blocking)."""
    import shutil
    import tempfile
    import zipfile

    target = _envs_dir() / digest
    if target.is_dir():
        return target
    source = package_path(digest)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{digest[:12]}-"))
    try:
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                name = Path(info.filename)
                if name.is_absolute() or ".." in name.parts:
                    raise ValueError(f"package {digest[:12]} holds a bad path {info.filename!r}")
                archive.extract(info, tmp)
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    os.chmod(tmp / name, mode)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a concurrent unpack that won: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# -- uploading and fetching ------------------------------------------------------------------


def head_service(head: ActorRef, system: ActorSystem, slot_id: str) -> ActorRef:
    """The well-known actor ``slot_id`` in the head's process, as seen from ``system``."""
    where = head.slot.system
    token = current_system.set(system)
    try:
        return restore_ref(where.uid, where.address, slot_id, slot_id)
    finally:
        current_system.reset(token)


#: What this process uploaded: (absolute directory, as a package) -> its package name. Task
#: and actor options name directories through it (they cannot upload: ``.remote()`` never
#: waits).
_UPLOADED: dict[tuple[str, bool], str] = {}


def _absolute(directory: str) -> str:
    return os.path.abspath(directory)


async def _upload(directory: str, jobs: ActorRef, system: ActorSystem, limit: int, *,
                  as_package: bool) -> str:
    name = await _upload_once(directory, jobs, system, limit, as_package=as_package)
    _UPLOADED[(_absolute(directory), as_package)] = name
    return name


#: What this process packed: (absolute directory, as a package) -> (the tree's fingerprint:
#: every file's path, size, modification time and mode; the package's name). An unchanged
#: tree is not packed again.
_PACKED: dict[tuple[str, bool], tuple[str, str]] = {}


def _fingerprint(directory: str, limit: int) -> str:
    """Of the tree at ``directory`` (blocking); RuntimeEnvTooLargeError past ``limit``."""
    root = Path(directory).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"runtime_env directory {directory!r} does not exist or is "
                                "not a directory")
    files, _ = _files(root, limit)
    digest = hashlib.sha256()
    for name, path in files:
        st = path.stat()
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode())
    return digest.hexdigest()


async def _upload_once(directory: str, jobs: ActorRef, system: ActorSystem, limit: int, *,
                       as_package: bool) -> str:
    key = (_absolute(directory), as_package)
    fingerprint = await asyncio.to_thread(_fingerprint, directory, limit)
    known = _PACKED.get(key)
    if known is not None and known[0] == fingerprint and await jobs.ask(
            HasPackage(known[1][len(PREFIX):]), timeout=30.0):
        return known[1]
    digest, data, files = await asyncio.to_thread(pack_dir, directory, limit,
                                                  as_package=as_package)
    _PACKED[key] = (fingerprint, PREFIX + digest)
    if await jobs.ask(HasPackage(digest), timeout=30.0):
        return PREFIX + digest
    remoting = system.remoting
    ticket = remoting.offer([data]) if remoting is not None else None
    if ticket is not None and system.address is not None:
        await jobs.ask(UploadPackage(digest, len(data), files, system.address, ticket),
                       timeout=300.0)
    else:
        for offset in range(0, max(len(data), 1), CHUNK_BYTES):
            await jobs.ask(PackageChunk(digest, len(data), files, offset,
                                        data[offset:offset + CHUNK_BYTES]), timeout=60.0)
    return PREFIX + digest


async def resolve(runtime_env: Mapping[str, Any] | None, jobs: ActorRef, system: ActorSystem,
                  ) -> ResolvedEnv | None:
    """Pack and upload the directories of ``runtime_env`` (each once: the head keeps what
    it has), returning the environment by package names. Raises RuntimeEnvTooLargeError when
    a directory is over the cluster's limit."""
    env = normalize(runtime_env)
    if env is None:
        return None
    limit = 0
    if env.get("working_dir") or env.get("py_modules"):
        limit = await jobs.ask(PackageLimit(), timeout=30.0)

    async def one(directory: str, as_package: bool) -> str:
        if directory.startswith(PREFIX):
            _check_digest(directory[len(PREFIX):])
            return directory
        return await _upload(directory, jobs, system, limit, as_package=as_package)

    working_dir = env.get("working_dir")
    resolved_dir = await one(working_dir, False) if working_dir else None
    modules = tuple([await one(m, True) for m in env.get("py_modules", ())])
    return ResolvedEnv(resolved_dir, modules, tuple(sorted(env.get("env_vars", {}).items())))


_DEFAULT: list[ResolvedEnv | None] = []  # set: af.init's (or none); unset: the variable's
_FROM_VAR: list[Any] = []  # [text, env]: the variable's, read once


def set_process_default(env: ResolvedEnv | None, *, unset: bool = False) -> None:
    """The runtime environment of this process's job (``af.init(runtime_env=...)``, over the
    one this process was started with, if any: a job's driver), which its tasks and actors
    run with unless their options say otherwise; ``unset`` forgets it."""
    _DEFAULT.clear()
    if not unset:
        base = process_default()
        _DEFAULT.append(base.merged(env) if base is not None else env)


def process_default() -> ResolvedEnv | None:
    """The job's runtime environment here: what ``af.init`` set, else the one this process
    was started with (``ACTORFLOW_RUNTIME_ENV``: a job's driver, a worker of an
    environment), else None."""
    if _DEFAULT:
        return _DEFAULT[0]
    text = os.environ.get(ENV_VAR)
    if not text:
        return None
    if _FROM_VAR and _FROM_VAR[0] == text:
        cached: ResolvedEnv = _FROM_VAR[1]
        return cached
    env = ResolvedEnv.from_json(text)
    _FROM_VAR[:] = [text, env]
    return env


def for_options(runtime_env: Mapping[str, Any] | None) -> ResolvedEnv | None:
    """The environment a task or actor runs with: its options' ``runtime_env`` over its
    job's. Options name directories that this process uploaded already (given to
    ``af.init(runtime_env=...)`` or a job), or packages (``pkg:<sha256>``); another
    directory is a ValueError (``.remote()`` cannot wait for an upload)."""
    base = process_default()
    env = normalize(runtime_env)
    if env is None:
        return base

    def known(directory: str, as_package: bool) -> str:
        if directory.startswith(PREFIX):
            _check_digest(directory[len(PREFIX):])
            return directory
        name = _UPLOADED.get((_absolute(directory), as_package))
        if name is None:
            raise ValueError(
                f"runtime_env directory {directory!r} of a task or actor must be uploaded "
                "first: give it to af.init(runtime_env=...) (or the job's runtime_env), then "
                "name it here")
        return name

    working_dir = env.get("working_dir")
    own = ResolvedEnv(known(working_dir, False) if working_dir else None,
                      tuple(known(m, True) for m in env.get("py_modules", ())),
                      tuple(sorted(env.get("env_vars", {}).items())))
    return base.merged(own) if base is not None else own


async def _fetch(digest: str, jobs: ActorRef, system: ActorSystem) -> None:
    offer: PackageOffer = await jobs.ask(FetchPackage(digest), timeout=60.0)
    if offer.ticket is not None and offer.address is not None and system.remoting is not None:
        buffer = bytearray(offer.size)
        await system.remoting.pull(offer.address, offer.ticket, memoryview(buffer))
        data: bytes | bytearray = buffer
    else:
        parts = [offer.data]
        got = len(offer.data)
        while got < offer.size:
            piece: PackageOffer = await jobs.ask(FetchPackage(digest, got), timeout=60.0)
            if not piece.data:
                raise ActorflowError(f"package {digest[:12]} ended early at {got} bytes")
            parts.append(piece.data)
            got += len(piece.data)
        data = b"".join(parts)
    await asyncio.to_thread(save_package, digest, data)


async def ensure_local(env: ResolvedEnv, jobs: ActorRef | None, system: ActorSystem
                       ) -> dict[str, Path]:
    """Package name -> its unpacked folder on this machine, for every package of ``env``
    (fetched from the head through ``jobs`` when this machine lacks it)."""
    out: dict[str, Path] = {}
    for name in env.packages:
        digest = name[len(PREFIX):]
        _check_digest(digest)
        folder = _envs_dir() / digest
        if not await asyncio.to_thread(folder.is_dir):
            if not await asyncio.to_thread(package_path(digest).exists):
                if jobs is None:
                    raise ActorflowError(f"package {digest[:12]} is not on this machine")
                await _fetch(digest, jobs, system)
            folder = await asyncio.to_thread(_unpack, digest)
        out[name] = folder
    return out


def apply(env: ResolvedEnv, folders: Mapping[str, Path], base: Mapping[str, str]
          ) -> tuple[dict[str, str], str | None, list[str]]:
    """``(environment, working directory, import path entries)`` of a process that runs with
    ``env`` (``folders``: from :func:`ensure_local`), its environment built on ``base``."""
    out = dict(base)
    out.update(env.env_vars)
    paths: list[str] = []
    cwd = None
    if env.working_dir:
        cwd = str(folders[env.working_dir])
        paths.append(cwd)
    paths.extend(str(folders[m]) for m in env.py_modules)
    if paths:
        out["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [out.get("PYTHONPATH")])])
    out[ENV_VAR] = env.to_json()
    return out, cwd, paths
