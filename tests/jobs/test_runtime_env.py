"""Runtime environments (API.md §10): packing is deterministic and content-addressed, a
directory over the cluster's limit fails at submission with the size and the limit and runs
nothing, py_modules reach the job's import path."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from job_support import JOB_WAIT, JobHead, start_extra_node, write_app

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


TASK_APP = """\
import asyncio, os
import actorflow as af

@af.remote
def in_env():
    import wd_helper  # importable only from the job's working_dir
    return wd_helper.VALUE, os.environ.get("JOB_COLOR"), os.environ.get("MODE"), os.getpid()

@af.remote
class Probe:
    def env(self):
        import wd_helper
        return wd_helper.VALUE, os.environ.get("MODE"), os.getpid()

async def main():
    async with af.init():
        value, color, mode, pid = await in_env.remote()
        print("task", value, color, mode)
        fast = await in_env.options(runtime_env={"env_vars": {"MODE": "fast"}}).remote()
        print("fast", fast[0], fast[1], fast[2])
        again = await in_env.remote()
        print("shared", fast[3] not in (pid, again[3]))
        probe = Probe.options(runtime_env={"env_vars": {"MODE": "actor"}}).remote()
        print("actor", *(await probe.env.remote())[:2])

asyncio.run(main())
"""


async def test_job_env_reaches_its_tasks_and_actors(job_head: JobHead, tmp_path: Path) -> None:
    """The job's working_dir and env_vars are its tasks' and actors' too; a task's own
    env_vars add to them, in a worker process of its own."""
    wd = write_app(tmp_path / "tasks", {"app.py": TASK_APP, "wd_helper.py": "VALUE = 'wd'\n"})
    async with af.JobClient(job_head.address, token=job_head.token) as client:
        job_id = await client.submit(f"{sys.executable} app.py", runtime_env={
            "working_dir": str(wd), "env_vars": {"JOB_COLOR": "blue"}})
        status = await asyncio.wait_for(client.wait(job_id), JOB_WAIT)
        logs = await client.logs(job_id)
    assert status == "SUCCEEDED", logs
    lines = [line for line in logs.splitlines() if not line.startswith("(")]
    assert "task wd blue None" in lines, logs
    assert "fast wd blue fast" in lines, logs
    assert "shared True" in lines, logs  # workers of different environments: other processes
    assert "actor wd actor" in lines, logs


async def test_init_runtime_env_of_a_joined_driver(job_head: JobHead, tmp_path: Path) -> None:
    wd = write_app(tmp_path / "drv", {"drv_helper.py": "import os\nCWD = os.getcwd()\n"})

    @af.remote
    def probe() -> tuple[str, str | None]:
        import drv_helper  # type: ignore[import-not-found]

        return drv_helper.CWD, os.environ.get("DRV")

    async with af.init(address=job_head.address, token=job_head.token, log_to_driver=False,
                       runtime_env={"working_dir": str(wd), "env_vars": {"DRV": "1"}}):
        cwd, var = await asyncio.wait_for(probe.remote(), JOB_WAIT)
        assert var == "1"
        assert Path(cwd).parent == job_head.state_dir / "runtime_envs"
        assert (Path(cwd) / "drv_helper.py").exists()
        with pytest.raises(ValueError):  # a directory not uploaded: .remote() cannot wait
            probe.options(runtime_env={"working_dir": str(tmp_path)}).remote()
        # the one given to init is known: naming it again is fine
        again = await probe.options(runtime_env={"working_dir": str(wd)}).remote()
        assert again == (cwd, "1")


async def test_a_node_of_another_machine_fetches_the_package(job_head: JobHead,
                                                             tmp_path: Path) -> None:
    """A node whose state folder is not the head's (as on another machine) fetches the
    package from the head over its link and unpacks it in its own folder."""
    other_state = tmp_path / "other-machine"
    node = start_extra_node(job_head, other_state, '{"far": 1}', tmp_path / "node.log")
    wd = write_app(tmp_path / "far", {"far_helper.py": "import os\nCWD = os.getcwd()\n"})

    @af.remote(resources={"far": 1})
    def far_probe() -> str:
        import far_helper  # type: ignore[import-not-found]

        return str(far_helper.CWD)

    try:
        async with af.init(address=job_head.address, token=job_head.token,
                           log_to_driver=False, runtime_env={"working_dir": str(wd)}):
            async def joined() -> bool:
                return any(n["alive"] and "far" in n["resources"] for n in await af.nodes())

            deadline = time.monotonic() + JOB_WAIT
            while not await joined():
                assert node.proc.poll() is None, node.log_path.read_text()
                assert time.monotonic() < deadline, "the node did not join"
                await asyncio.sleep(0.1)
            cwd = Path(await asyncio.wait_for(far_probe.remote(), JOB_WAIT))
        assert cwd.parent == other_state / "runtime_envs"
        assert (other_state / "packages" / f"{cwd.name}.zip").exists()  # fetched, kept
        assert (job_head.state_dir / "packages" / f"{cwd.name}.zip").exists()
    finally:
        node.stop()
