"""``af.JobClient``: hand programs to a running cluster, follow them, stop them.

The client joins the cluster the way a driver does (:func:`actorflow.cluster.bootstrap.connect`:
its own listener, an authenticated link to the head) and talks to the head's ``jobs`` actor
(:mod:`actorflow.jobs.manager`). Every request travels on that link, so a client without the
cluster token is refused at the handshake (``af.AuthenticationError``) before it can ask for
anything.
"""

from __future__ import annotations

import asyncio
import builtins
import codecs
import os
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

from actorflow._errors import AuthenticationError, GetTimeoutError
from actorflow.cluster import bootstrap, state
from actorflow.cluster import runtime_env as renv
from actorflow.jobs.messages import (
    FINAL,
    GetJob,
    JobLogs,
    ListJobs,
    ReadLogs,
    StopJob,
    SubmitJob,
    entrypoint_demand,
)
from actorflow.runtime import ActorRef

__all__ = ["JobClient"]

#: How long one log read waits at the head for new output before asking again.
_FOLLOW_WAIT_S = 5.0


def _where(address: str | None, token: str | None) -> tuple[str, str]:
    address = address or os.environ.get("ACTORFLOW_ADDRESS") or "auto"
    token = token or os.environ.get("ACTORFLOW_TOKEN") or None
    if address == "auto":
        info = state.read_cluster()
        if info is None:
            raise ConnectionError("address='auto' found no cluster started on this machine; "
                                  "run `actorflow start --head` first, or pass the head's "
                                  "ws:// address")
        address = str(info["address"])
        token = token or state.read_token()
    if token is None:
        raise AuthenticationError(f"no token for the cluster at {address}: pass token=..., set "
                                  "ACTORFLOW_TOKEN, or use address='auto' on the head's machine")
    return address, token


class JobClient:
    """An async client of a cluster's jobs (API.md §10). ``address``: ``ws://HOST:PORT``,
    ``"auto"`` (the cluster started on this machine) or None (``$ACTORFLOW_ADDRESS``, else
    ``"auto"``); ``token``: the cluster token (default ``$ACTORFLOW_TOKEN``, or the head's
    token file with ``"auto"``). It connects on first use; :meth:`close` (or ``async with``)
    lets the connection go."""

    def __init__(self, address: str | None = None, *, token: str | None = None) -> None:
        self._address = address
        self._token = token
        self._proc: bootstrap.ClusterProcess | None = None
        self._jobs: ActorRef | None = None
        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> JobClient:
        await self._connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _connect(self) -> ActorRef:
        if self._jobs is not None:
            return self._jobs
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._jobs is None:
                address, token = _where(self._address, self._token)
                proc = await bootstrap.connect(address, token, name="job-client")
                self._proc = proc
                self._jobs = renv.head_service(proc.head, proc.system, "jobs")
        return self._jobs

    async def close(self) -> None:
        """Let the connection go (the jobs run on)."""
        proc, self._proc, self._jobs = self._proc, None, None
        if proc is not None:
            await proc.aclose()

    async def submit(
        self,
        entrypoint: str,
        *,
        runtime_env: Mapping[str, Any] | None = None,
        env_vars: Mapping[str, str] | None = None,
        submission_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_num_gpus: float | None = None,
        entrypoint_resources: Mapping[str, float] | None = None,
    ) -> str:
        """Run ``entrypoint`` (a shell command) as a driver on the head's machine; returns
        the job id. ``runtime_env``'s directories are packed and uploaded first (once per
        content); ``env_vars`` are added to its ``env_vars``. Raises
        ``af.RuntimeEnvTooLargeError`` (nothing is run) when a directory is over the
        cluster's limit.

        ``entrypoint_num_cpus``, ``entrypoint_num_gpus``, ``entrypoint_resources``: the
        entrypoint runs instead on a node that has these resources, which it holds while it
        runs (its output is served here all the same); a demand no node can ever meet fails
        the job (status FAILED, the reason in its output)."""
        demand = entrypoint_demand(
            entrypoint_num_cpus, entrypoint_num_gpus,
            None if entrypoint_resources is None else dict(entrypoint_resources))
        jobs = await self._connect()
        env = dict(renv.normalize(runtime_env) or {})
        if env_vars:
            env["env_vars"] = {**env.get("env_vars", {}), **dict(env_vars)}
        assert self._proc is not None
        resolved = await renv.resolve(env or None, jobs, self._proc.system)
        job_id: str = await jobs.ask(
            SubmitJob(entrypoint, resolved, submission_id, dict(metadata or {}), demand),
            timeout=60.0)
        return job_id

    async def info(self, job_id: str) -> dict[str, Any]:
        """The job's row: job_id, status, entrypoint, submit/start/end times (epoch seconds),
        exit_code, message, pid, metadata, log_path, runtime_env, entrypoint_num_cpus,
        entrypoint_num_gpus, entrypoint_resources."""
        jobs = await self._connect()
        row: dict[str, Any] = await jobs.ask(GetJob(job_id), timeout=30.0)
        return row

    async def status(self, job_id: str) -> str:
        """``"PENDING" | "RUNNING" | "SUCCEEDED" | "FAILED" | "STOPPED"``."""
        return str((await self.info(job_id))["status"])

    async def list(self) -> builtins.list[dict[str, Any]]:
        """Every job's row (see :meth:`info`), oldest first."""
        jobs = await self._connect()
        rows: builtins.list[dict[str, Any]] = await jobs.ask(ListJobs(), timeout=30.0)
        return rows

    async def stop(self, job_id: str) -> bool:
        """SIGTERM the job's process group (SIGKILL after the cluster's grace period) and
        return once its driver is gone: True, or False when the job had ended already."""
        jobs = await self._connect()
        stopped: bool = await jobs.ask(StopJob(job_id), timeout=120.0)
        return stopped

    async def logs(self, job_id: str) -> str:
        """The job's output so far (stdout and stderr together)."""
        jobs = await self._connect()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        parts, offset = [], 0
        while True:
            piece: JobLogs = await jobs.ask(ReadLogs(job_id, offset), timeout=60.0)
            if not piece.data:
                break
            parts.append(decoder.decode(piece.data))
            offset = piece.offset
        parts.append(decoder.decode(b"", final=True))
        return "".join(parts)

    async def tail(self, job_id: str) -> AsyncIterator[str]:
        """The job's output line by line (without the line ends), from its start, following it
        until the job has ended and every line is out."""
        jobs = await self._connect()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending, offset = "", 0
        while True:
            piece: JobLogs = await jobs.ask(ReadLogs(job_id, offset, _FOLLOW_WAIT_S),
                                            timeout=_FOLLOW_WAIT_S + 60.0)
            offset = piece.offset
            pending += decoder.decode(piece.data, final=piece.ended)
            *lines, pending = pending.split("\n")
            for line in lines:
                yield line
            if piece.ended:
                break
        if pending:
            yield pending

    async def wait(self, job_id: str, timeout: float | None = None) -> str:
        """Wait until the job has ended (at most ``timeout`` seconds: then
        ``af.GetTimeoutError``); returns its final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = await self.status(job_id)
            if status in FINAL:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise GetTimeoutError(f"job {job_id} is still {status} after {timeout} s")
            await asyncio.sleep(0.1)
