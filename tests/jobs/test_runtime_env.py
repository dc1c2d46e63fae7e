"""Runtime environments (API.md §10): packing is deterministic and content-addressed, a
directory over the cluster's limit fails at submission with the size and the limit and runs
nothing, py_modules reach the job's import path."""

from __future__ import annotations

import asyncio
import os
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from job_support import JOB_WAIT, JobHead, write_app

import actorflow as af
from actorflow.cluster import runtime_env as renv

pytestmark = pytest.mark.asyncio(loop_scope="module")
LIMIT = 64 * 1024
HEAD_ARGS = ["--runtime-env-max-bytes", str(LIMIT)]


async def test_packing_is_deterministic_and_content_addressed(tmp_path: Path) -> None:
    tree = write_app(tmp_path / "a", {"m.py": "X = 1\n", "sub/data.txt": "d\n",
                                      "__pycache__/m.cpython-311.pyc": "junk"})
    os.chmod(tree / "sub" / "data.txt", 0o755)
    digest, data, files = renv.pack_dir(tree)
    os.utime(tree / "m.py", (1, 1))  # dates do not count
    assert renv.pack_dir(tree)[:2] == (digest, data)
    assert files == len("X = 1\n") + len("d\n")
    with zipfile.ZipFile(BytesIO(data)) as archive:
        infos = {i.filename: i for i in archive.infolist()}
    assert sorted(infos) == ["m.py", "sub/data.txt"]  # __pycache__ left out
    assert (infos["sub/data.txt"].external_attr >> 16) & 0o777 == 0o755
    (tree / "m.py").write_text("X = 2\n")
    assert renv.pack_dir(tree)[0] != digest
    named = renv.pack_dir(tree, as_package=True)[1]
    with zipfile.ZipFile(BytesIO(named)) as archive:
        assert sorted(archive.namelist()) == ["a/m.py", "a/sub/data.txt"]
    with pytest.raises(af.RuntimeEnvTooLargeError) as caught:
        renv.pack_dir(tree, limit=4)
    assert caught.value.limit == 4 and caught.value.size > 4
    with pytest.raises(TypeError):
        renv.normalize({"workdir": "."})
    with pytest.raises(FileNotFoundError):
        renv.pack_dir(tmp_path / "missing")


async def test_too_large_working_dir_fails_at_submission(job_head: JobHead,
                                                         tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    big = write_app(tmp_path / "big", {"run.py": f"open({str(marker)!r}, 'w').write('x')\n"})
    (big / "blob.bin").write_bytes(os.urandom(LIMIT + 1))
    async with af.JobClient(job_head.address, token=job_head.token) as client:
        before = await client.list()
        with pytest.raises(af.RuntimeEnvTooLargeError) as caught:
            await client.submit(f"{sys.executable} run.py", runtime_env={"working_dir": str(big)})
        assert caught.value.limit == LIMIT
        assert caught.value.size > LIMIT
        assert caught.value.path == str(big.resolve())
        assert await client.list() == before  # nothing was submitted
        assert not marker.exists()
        packages = job_head.state_dir / "packages"
        assert not packages.exists() or not list(packages.iterdir())


async def test_py_modules_and_env_vars_reach_the_job(job_head: JobHead, tmp_path: Path) -> None:
    pkg = write_app(tmp_path / "libs" / "shiny_pkg", {"__init__.py": "NAME = 'shiny'\n",
                                                       "util.py": "def f():\n    return 42\n"})
    code = ("import os, shiny_pkg, shiny_pkg.util as u; "
            "print(shiny_pkg.NAME, u.f(), os.environ['A'], os.environ['B'])")
    async with af.JobClient(job_head.address, token=job_head.token) as client:
        job_id = await client.submit(f"{sys.executable} -c \"{code}\"",
                                     runtime_env={"py_modules": [str(pkg)],
                                                  "env_vars": {"A": "1"}},
                                     env_vars={"B": "2"})
        status = await asyncio.wait_for(client.wait(job_id), JOB_WAIT)
        logs = await client.logs(job_id)
        assert status == "SUCCEEDED", logs
        assert logs == "shiny 42 1 2\n"
