"""Every job request is authenticated with the cluster token (API.md §9, §10): a client with a
wrong token, or none, is refused at the handshake and nothing it asked for runs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from job_support import JOB_WAIT, JobHead, run_cli

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")


def side_effect(path: Path) -> str:
    return f"{sys.executable} -c \"open({str(path)!r}, 'w').write('ran')\""


async def test_wrong_token_is_refused_and_nothing_runs(job_head: JobHead,
                                                       tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    wrong = af.JobClient(job_head.address, token="not-the-" + job_head.token)
    with pytest.raises(af.AuthenticationError):
        await asyncio.wait_for(wrong.submit(side_effect(marker)), JOB_WAIT)
    with pytest.raises(af.AuthenticationError):
        await asyncio.wait_for(wrong.list(), JOB_WAIT)
    await wrong.close()

    env = dict(job_head.env)
    env.pop("ACTORFLOW_STATE_DIR")  # no token file to fall back on
    cli = await run_cli(["job", "submit", "--address", job_head.address, "--token", "wrong",
                         "--", side_effect(marker)], env)
    assert cli.returncode == 1 and "refused the cluster token" in cli.stderr, cli.stderr
    none = await run_cli(["job", "submit", "--address", job_head.address, "--",
                          side_effect(marker)], env)
    assert none.returncode == 1 and "token" in none.stderr, none.stderr

    # the right token shows what ran: nothing. A job submitted with it does run (so the
    # check above could have seen a side effect).
    async with af.JobClient(job_head.address, token=job_head.token) as client:
        assert await client.list() == []
        await asyncio.sleep(1.0)  # time enough for a job that was started to have run
        assert not marker.exists()
        job_id = await client.submit(side_effect(marker))
        assert await client.wait(job_id, JOB_WAIT) == "SUCCEEDED"
        assert marker.read_text() == "ran"
        assert [r["job_id"] for r in await client.list()] == [job_id]


async def test_no_token_is_refused(job_head: JobHead, monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: Path) -> None:
    monkeypatch.delenv("ACTORFLOW_TOKEN", raising=False)
    monkeypatch.setenv("ACTORFLOW_STATE_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(af.AuthenticationError) as caught:
        await af.JobClient(job_head.address).list()
    assert "token" in str(caught.value)
