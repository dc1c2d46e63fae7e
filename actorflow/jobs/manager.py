"""The head's ``jobs`` actor: submitted jobs and the packages of runtime environments.

A job is a shell command (its entrypoint) run by ``/bin/sh -c`` on the head's machine, in a
process group of its own (a new session) led by a small wrapper that notes its exit status
(:mod:`actorflow.jobs.wrapper`), as a driver of this cluster: its environment has
``ACTORFLOW_ADDRESS`` and ``ACTORFLOW_TOKEN`` (so ``af.init()`` in it joins the cluster),
``ACTORFLOW_JOB_ID`` (its job id, which ``af.init`` takes as the driver's), the job's
runtime environment (``ACTORFLOW_RUNTIME_ENV``, its env_vars, ``PYTHONPATH`` with its
working_dir and py_modules first) and ``PYTHONUNBUFFERED=1``; it runs in the unpacked
working_dir (else in the head's own directory). Its stdout and stderr go to
``<state dir>/jobs/<job id>.log``, which :class:`ReadLogs` serves.

A job whose entrypoint asks for resources (``entrypoint_num_cpus``, ``entrypoint_num_gpus``,
``entrypoint_resources``) runs, in that same place, the runner of
:mod:`actorflow.cli.job_runner` instead: it places the entrypoint on a node that has them,
holds them while it runs there as the job's driver, and brings its output back into the log.

Statuses: ``PENDING`` (its environment is being made ready), ``RUNNING``, then
``SUCCEEDED`` (exit code 0), ``FAILED`` (another code, a signal, or it could not start: the
message says which) or ``STOPPED`` (:class:`StopJob`: SIGTERM to the group, SIGKILL after a
grace period). The driver is an asyncio child process whose end a task of this actor awaits,
so nothing blocks the loop. When the head stops, the jobs still running are stopped the same
way.

A head that keeps a store (``actorflow start --head``) keeps the jobs' rows there (each change
is sent to the head, :class:`~actorflow.cluster.jobs_table.KeepSubmitted`, and written in its
batches). Started again after its process died, it takes them back: a job that was running is
followed again when its process lives on (:mod:`actorflow.jobs.follow`: its end is seen
through a pidfd, its exit status read from the wrapper's file); one whose process ended while
the head was away ends with the status its wrapper wrote, or ``FAILED`` saying the head
restarted when there is none; one still ``PENDING`` (its process never started) is ``FAILED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from actorflow._errors import RuntimeEnvTooLargeError
from actorflow.cluster import runtime_env as renv
from actorflow.cluster import state
from actorflow.cluster.jobs_table import KeepSubmitted, KeptSubmitted
from actorflow.cluster.services import HeadContext
from actorflow.jobs import follow, wrapper
from actorflow.jobs.messages import (
    FINAL,
    GetJob,
    JobLogs,
    ListJobs,
    ReadLogs,
    StopJob,
    SubmitJob,
)
from actorflow.runtime import ActorRef, OwnedTasks, ServiceActor

__all__ = ["JobManager", "start"]

log = logging.getLogger("actorflow.jobs")

#: Seconds between SIGTERM and SIGKILL when a job is stopped (``job_stop_grace_s``).
STOP_GRACE_S = 5.0
#: Largest piece of output one ReadLogs answer carries.
LOG_PIECE = 1 << 20
#: How often a waiting ReadLogs looks for new output.
_POLL_S = 0.1


@dataclass
class _Job:
    job_id: str
    entrypoint: str
    env: renv.ResolvedEnv | None
    metadata: dict[str, str]
    log_path: Path
    submission_id: str | None
    demand: dict[str, Any] | None = None  # the entrypoint's resources (None: none)
    status: str = "PENDING"
    submit_time: float = field(default_factory=time.time)
    start_time: float | None = None
    end_time: float | None = None
    exit_code: int | None = None
    message: str = ""
    pid: int | None = None
    pid_start: int | None = None  # when its process started (follow.process_start)
    proc: asyncio.subprocess.Process | None = None
    stopping: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def exit_path(self) -> Path:
        """Where its wrapper writes its exit status."""
        return self.log_path.with_suffix(".exit")

    def kept(self) -> bytes:
        """Its row for the head's store."""
        return pickle.dumps({
            "job_id": self.job_id, "entrypoint": self.entrypoint, "env": self.env,
            "metadata": self.metadata, "log_path": str(self.log_path),
            "submission_id": self.submission_id, "demand": self.demand,
            "status": self.status,
            "submit_time": self.submit_time, "start_time": self.start_time,
            "end_time": self.end_time, "exit_code": self.exit_code, "message": self.message,
            "pid": self.pid, "pid_start": self.pid_start,
        }, protocol=5)

    @classmethod
    def from_kept(cls, row: bytes) -> _Job:
        d: dict[str, Any] = pickle.loads(row)
        return cls(d["job_id"], d["entrypoint"], d["env"], d["metadata"], Path(d["log_path"]),
                   d["submission_id"], d["demand"], d["status"], d["submit_time"], d["start_time"],
                   d["end_time"], d["exit_code"], d["message"], d["pid"], d["pid_start"])

    def stop_requested(self) -> bool:
        return self.stopping  # (a call: mypy would take an earlier check for good)

    def row(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "submission_id": self.submission_id, "status": self.status,
            "entrypoint": self.entrypoint, "submit_time": self.submit_time,
            "start_time": self.start_time, "end_time": self.end_time,
            "exit_code": self.exit_code, "message": self.message, "pid": self.pid,
            "metadata": dict(self.metadata), "log_path": str(self.log_path),
            "runtime_env": None if self.env is None else self.env.to_dict(),
            "entrypoint_num_cpus": None if self.demand is None else self.demand["num_cpus"],
            "entrypoint_num_gpus": None if self.demand is None else self.demand["num_gpus"],
            "entrypoint_resources": None if self.demand is None else self.demand["resources"],
        }


class JobManager(ServiceActor):
    """The ``jobs`` actor (see the module docstring)."""

    max_concurrency: ClassVar[int] = 256
    expected = (ValueError, TypeError, KeyError, FileNotFoundError)

    def __init__(self, token: str, *, head: ActorRef | None = None,
                 max_package_bytes: int = renv.DEFAULT_MAX_BYTES,
                 stop_grace_s: float = STOP_GRACE_S) -> None:
        self.token = token
        self.head = head  # keeps the jobs' rows in its store (None: nothing is kept)
        self.max_package_bytes = max_package_bytes
        self.stop_grace_s = stop_grace_s
        self.jobs: dict[str, _Job] = {}
        self._tasks = OwnedTasks("the jobs actor", log)
        self._chunks: dict[str, bytearray] = {}
        self._dir = state.state_dir() / "jobs"
        self._closing = False

    async def on_start(self) -> None:
        if self.head is not None:
            rows: tuple[bytes, ...] = await self.head.ask(KeptSubmitted())
            self._take_back(rows)

    def on_stop_requested(self) -> None:
        self._closing = True  # waiting log reads answer now: the stop waits for them

    async def on_stop(self) -> None:
        running = [job for job in self.jobs.values() if job.status not in FINAL]
        await asyncio.gather(*(self._stop(job, min(self.stop_grace_s, 2.0)) for job in running))
        await self._tasks.close()

    async def handle(self, message: Any) -> Any:
        if isinstance(message, SubmitJob):
            return self._submit(message)
        if isinstance(message, GetJob):
            return self._job(message.job_id).row()
        if isinstance(message, ListJobs):
            return [job.row() for job in self.jobs.values()]
        if isinstance(message, StopJob):
            job = self._job(message.job_id)
            grace = self.stop_grace_s if message.grace_s is None else message.grace_s
            return await self._stop(job, grace)
        if isinstance(message, ReadLogs):
            return await self._read_logs(message)
        return await self._package(message)

    def _job(self, job_id: str) -> _Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r} on this cluster")
        return job

    # -- running jobs --------------------------------------------------------------------------

    def _submit(self, msg: SubmitJob) -> str:
        if not isinstance(msg.entrypoint, str) or not msg.entrypoint.strip():
            raise ValueError("a job needs an entrypoint (a shell command)")
        job_id = msg.submission_id or secrets.token_hex(4)
        if not job_id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"a submission id is letters, digits, '-' and '_': {job_id!r}")
        if job_id in self.jobs:
            raise ValueError(f"a job with id {job_id!r} was submitted already")
        job = _Job(job_id, msg.entrypoint, msg.runtime_env, dict(msg.metadata),
                   self._dir / f"{job_id}.log", msg.submission_id, msg.entrypoint_demand)
        self.jobs[job_id] = job
        self._keep(job)
        if self._tasks.spawn(self._run(job), f"job {job_id}") is None:
            self._end(job, "FAILED", None, "the head is stopping")
        return job_id

    async def _run(self, job: _Job) -> None:
        try:
            env, cwd = await self._environment(job)
            if job.stopping:
                self._end(job, "STOPPED", None, "stopped before it started")
                return
            self._dir.mkdir(mode=0o700, exist_ok=True)
            job.exit_path.unlink(missing_ok=True)
            with open(job.log_path, "ab") as out:  # noqa: ASYNC230 - opening is quick
                job.proc = await asyncio.create_subprocess_exec(
                    *self._command(job), stdin=asyncio.subprocess.DEVNULL,
                    stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=cwd, env=env,
                    start_new_session=True)
        except asyncio.CancelledError:
            self._end(job, "STOPPED", None, "the head stopped before the job started")
            raise
        except Exception as exc:
            self._end(job, "FAILED", None, f"the job could not start: {exc}")
            return
        job.pid = job.proc.pid
        job.pid_start = follow.process_start(job.pid)
        job.start_time = time.time()
        job.status = "RUNNING"
        self._keep(job)
        if job.stop_requested():  # stopped while its process was being made: it never gets going
            _signal_group(job.pid, signal.SIGKILL)
        log.info("job %s started (pid %d): %s", job.job_id, job.pid, job.entrypoint)
        code = await job.proc.wait()
        self._ended_with(job, code)

    @staticmethod
    def _command(job: _Job) -> list[str]:
        """The job's process: its wrapper (by path, ``-I -S``: it imports nothing of ours, nor
        the site's) and the entrypoint under ``/bin/sh -c``, or the runner that places it."""
        lead = [sys.executable, "-I", "-S", wrapper.__file__, str(job.exit_path), "--"]
        demand = job.demand
        if demand is None:
            return [*lead, "/bin/sh", "-c", job.entrypoint]
        return [*lead, sys.executable, "-m", "actorflow.cli.job_runner",
                "--num-cpus", str(demand["num_cpus"]), "--num-gpus", str(demand["num_gpus"]),
                "--resources", json.dumps(demand["resources"]), "--", job.entrypoint]

    def _ended_with(self, job: _Job, code: int, when: str = "") -> None:
        """Its process group's leader ended with ``code`` (negative: a signal)."""
        if job.stop_requested():
            if job.pid is not None:
                _signal_group(job.pid, signal.SIGKILL)  # what the driver left in its group
            self._end(job, "STOPPED", code, "stopped by request")
        elif code == 0:
            self._end(job, "SUCCEEDED", code, when.strip())
        elif code < 0:
            self._end(job, "FAILED", code, f"the driver was killed by {_signal_name(-code)}{when}")
        else:
            self._end(job, "FAILED", code, f"the driver exited with code {code}{when}")

    # -- a restarted head's jobs ---------------------------------------------------------------

    def _keep(self, job: _Job) -> None:
        if self.head is None:
            return
        try:
            self.head.tell_nowait(KeepSubmitted(job.job_id, job.kept()))
        except Exception as exc:  # the head is stopping
            log.debug("job %s not kept: %s", job.job_id, exc)

    def _take_back(self, rows: tuple[bytes, ...]) -> None:
        """The jobs a restarted head's store kept (see the module docstring)."""
        for row in rows:
            try:
                job = _Job.from_kept(row)
            except Exception as exc:  # a row of another version
                log.warning("a kept job cannot be read back (%s): left out", exc)
                continue
            self.jobs[job.job_id] = job
            if job.status in FINAL:
                job.done.set()
            elif job.status == "PENDING" or job.pid is None:
                self._end(job, "FAILED", None, "the head restarted before the job's process "
                          "started; submit it again")
            elif follow.same_process(job.pid, job.pid_start):
                log.info("job %s (pid %d) runs on: followed again", job.job_id, job.pid)
                if self._tasks.spawn(self._follow(job), f"job {job.job_id}") is None:
                    self._end(job, "FAILED", None, "the head is stopping")
            else:
                self._after_restart(job)
        if rows:
            log.info("jobs taken back: %d", len(rows))

    async def _follow(self, job: _Job) -> None:
        assert job.pid is not None
        await follow.wait_pid(job.pid, job.pid_start)
        self._after_restart(job)

    def _after_restart(self, job: _Job) -> None:
        """The job's process, not this head's child, has ended: how, its wrapper wrote."""
        code = follow.read_exit(job.exit_path)
        if code is not None:
            self._ended_with(job, code, " (it ran on while the head restarted)")
        else:
            self._end(job, "FAILED", None, "the head restarted, and the job's process ended "
                      "without an exit status (it died with the head, or was killed)")

    async def _environment(self, job: _Job) -> tuple[dict[str, str], str | None]:
        assert self.system.address is not None
        base = dict(os.environ)
        base.update({"ACTORFLOW_ADDRESS": self.system.address, "ACTORFLOW_TOKEN": self.token,
                     "ACTORFLOW_JOB_ID": job.job_id})
        base.setdefault("PYTHONUNBUFFERED", "1")
        base.pop(renv.ENV_VAR, None)
        if job.env is None:
            return base, None
        folders = await renv.ensure_local(job.env, None, self.system)
        env, cwd, _ = renv.apply(job.env, folders, base)
        return env, cwd

    def _end(self, job: _Job, status: str, code: int | None, message: str) -> None:
        job.status, job.exit_code, job.message = status, code, message
        job.end_time = time.time()
        job.proc = None
        job.done.set()
        self._keep(job)
        log.info("job %s ended: %s %s", job.job_id, status, message)

    async def _stop(self, job: _Job, grace_s: float) -> bool:
        """SIGTERM the job's group; SIGKILL it when the driver or anything else of its group
        is still there after ``grace_s``. Returns once the driver is gone (and its group, within
        a bound)."""
        if job.status in FINAL:
            return False
        job.stopping = True
        pgid = job.pid if job.status == "RUNNING" else None  # (its own child, or followed)
        if pgid is not None:
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while not (job.done.is_set() and not _group_alive(pgid)):
                if time.monotonic() >= deadline:
                    _signal_group(pgid, signal.SIGKILL)
                    break
                await asyncio.sleep(_POLL_S / 2)
        await job.done.wait()  # a SIGKILLed group ends at once; a PENDING job at its start
        if pgid is not None:  # what was left in the group had its SIGKILL: a bounded wait
            for _ in range(100):
                if not _group_alive(pgid):
                    break
                await asyncio.sleep(_POLL_S / 2)
        return True

    async def _read_logs(self, msg: ReadLogs) -> JobLogs:
        job = self._job(msg.job_id)
        deadline = time.monotonic() + max(0.0, min(msg.wait_s, 60.0))
        while True:
            final = job.status in FINAL  # before the size: output written before the end counts
            size = await asyncio.to_thread(_size, job.log_path)
            if (size > msg.offset or final or self._closing
                    or time.monotonic() >= deadline):
                break
            await asyncio.sleep(_POLL_S)
        data = b""
        if size > msg.offset:
            data = await asyncio.to_thread(_read, job.log_path, msg.offset, LOG_PIECE)
        offset = msg.offset + len(data)
        return JobLogs(data, offset, final and offset >= size, job.row())

    # -- packages ------------------------------------------------------------------------------

    async def _package(self, message: Any) -> Any:
        if isinstance(message, renv.PackageLimit):
            return self.max_package_bytes
        if isinstance(message, renv.HasPackage):
            return await asyncio.to_thread(renv.package_path(message.digest).exists)
        if isinstance(message, renv.UploadPackage):
            self._check_size(message.digest, message.files)
            remoting = self.system.remoting
            if remoting is None:
                raise ValueError("this head cannot pull packages")
            buffer = bytearray(message.size)
            await remoting.pull(message.address, message.ticket, memoryview(buffer))
            await asyncio.to_thread(renv.save_package, message.digest, buffer)
            return True
        if isinstance(message, renv.PackageChunk):
            return await self._chunk(message)
        if isinstance(message, renv.FetchPackage):
            return await self._offer(message)
        raise TypeError(f"the jobs actor does not handle {type(message).__name__}")

    def _check_size(self, digest: str, files: int) -> None:
        if files > self.max_package_bytes:
            raise RuntimeEnvTooLargeError(f"package {digest[:12]}", files,
                                               self.max_package_bytes)

    async def _chunk(self, msg: renv.PackageChunk) -> bool:
        self._check_size(msg.digest, msg.files)
        buffer = self._chunks.get(msg.digest)
        if buffer is None or msg.offset == 0:
            buffer = self._chunks[msg.digest] = bytearray()
        if msg.offset != len(buffer) or len(buffer) + len(msg.data) > msg.size:
            self._chunks.pop(msg.digest, None)
            raise ValueError(f"package {msg.digest[:12]}: chunk at {msg.offset} out of order")
        buffer += msg.data
        if len(buffer) == msg.size:
            del self._chunks[msg.digest]
            await asyncio.to_thread(renv.save_package, msg.digest, buffer)
        return True

    async def _offer(self, msg: renv.FetchPackage) -> renv.PackageOffer:
        path = renv.package_path(msg.digest)
        data = await asyncio.to_thread(path.read_bytes)
        if msg.chunk_offset is not None:
            return renv.PackageOffer(len(data), None, None,
                                     data[msg.chunk_offset:msg.chunk_offset + renv.CHUNK_BYTES])
        remoting = self.system.remoting
        ticket = remoting.offer([data]) if remoting is not None else None
        if ticket is None:
            return renv.PackageOffer(len(data), None, None, data[:renv.CHUNK_BYTES])
        return renv.PackageOffer(len(data), self.system.address, ticket)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read(path: Path, offset: int, most: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(most)


async def start(ctx: HeadContext) -> None:
    """The head service: spawn the ``jobs`` actor (options ``runtime_env_max_bytes``,
    ``job_stop_grace_s``)."""
    limit = ctx.options.get("runtime_env_max_bytes") or renv.DEFAULT_MAX_BYTES
    grace = ctx.options.get("job_stop_grace_s") or STOP_GRACE_S
    await ctx.system.spawn(
        lambda: JobManager(ctx.token, head=ctx.head, max_package_bytes=int(limit),
                           stop_grace_s=float(grace)),
        name="jobs", well_known=True)
