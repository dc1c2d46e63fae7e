"""The dashboard in a real headless Chromium, on a 2-node cluster started with the CLI.

A user logs in with the token, sees both nodes, opens an actor and reads the line its worker
printed, reads the same line in that worker's log, and watches a task count change while the
page stays loaded (no reload: a mark set in the page survives). Skipped, with the reason, only
where playwright or Chromium is missing.

Screenshots of the main views go to the test's temporary folder, or to the folder named by
``AF_DASHBOARD_SCREENSHOTS`` (``AF_DASHBOARD_SCREENSHOTS=docs/images`` remakes the guide's).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import pytest_asyncio

import actorflow as af

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "multinode"))
from mn_support import CliCluster, start_cluster, until

cloudpickle.register_pickle_by_value(sys.modules[__name__])

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NODES: list[dict[str, Any]] = [
    {"name": "head", "num_cpus": 1, "resources": {"r_a": 1}},
    {"name": "node2", "num_cpus": 1, "resources": {"r_b": 1}},
]
WAIT_MS = 30_000

try:
    from playwright.async_api import Page, async_playwright, expect
except ImportError:  # pragma: no cover - the skip below says why
    async_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(async_playwright is None,
                       reason="the browser test needs the playwright package"),
    pytest.mark.skipif(shutil.which(CHROMIUM) is None and not os.path.exists(CHROMIUM),
                       reason=f"the browser test needs Chromium at {CHROMIUM} (Debian's "
                              "chromium package)"),
]


@af.remote(num_cpus=0, resources={"r_b": 0.5})
class Greeter:
    def say(self, text: str) -> int:
        print(text, flush=True)
        return os.getpid()


@af.remote
def nop(i: int) -> int:
    return i


@af.remote(max_retries=0)
def boom(tag: str) -> None:
    raise ValueError(f"boom {tag}")


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[CliCluster, str]]:
    cli = CliCluster(tmp_path, peer_timeout=2.0)
    try:
        await start_cluster(cli, NODES)
        head_log = cli.started["head"]
        found: list[str] = []

        def printed() -> bool:
            found[:] = re.findall(r"dashboard: (http://127\.0\.0\.1:\d+)", head_log.log_text())
            return bool(found)

        await until(printed, what="the head to print the dashboard's URL")
        yield cli, found[0]
    finally:
        survivors = cli.stop()
        assert not survivors, survivors


def shots_dir(tmp_path: Path) -> Path:
    where = os.environ.get("AF_DASHBOARD_SCREENSHOTS")
    path = Path(where) if where else tmp_path / "shots"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def text_of(page: Page, selector: str) -> str:
    return await page.locator(selector).first.inner_text(timeout=WAIT_MS)


async def test_log_in_see_nodes_actor_log_and_live_task_count(
        cluster: tuple[CliCluster, str], tmp_path: Path) -> None:
    cli, url = cluster
    shots = shots_dir(tmp_path)
    marker = f"dashboard-line-{uuid.uuid4().hex[:10]}"
    name = f"greeter-{uuid.uuid4().hex[:6]}"
    assert cli.address is not None and cli.token is not None
    async with af.JobClient(cli.address, token=cli.token) as jobs:
        job_id = await jobs.submit(f"echo job-said-{marker}")
        assert await jobs.wait(job_id, timeout=60) == "SUCCEEDED"
    async with af.init(address=cli.address, token=cli.token, log_to_driver=False):
        greeter = Greeter.options(name=name).remote()
        pid = await asyncio.wait_for(greeter.say.remote(marker), 30)
        assert await asyncio.wait_for(af.get([nop.remote(i) for i in range(5)]), 30) == list(
            range(5))
        with pytest.raises(ValueError):
            await asyncio.wait_for(boom.remote(marker), 30)
        kept = await af.put(b"x" * (4 << 20))  # a segment for the objects view
        assert async_playwright is not None
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                # under the page's own CSP: the waits below use locators, never eval
                page = await browser.new_page(viewport={"width": 1280, "height": 760})
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error"
                        else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.set_default_timeout(WAIT_MS)
                # nothing without the token, the page included
                first = await page.goto(url + "/")
                assert first is not None and first.status == 401
                await page.goto(url + "/login")
                await page.screenshot(path=str(shots / "dashboard-login.png"))
                await page.fill("#token", cli.token)
                await page.click("#login")
                await page.wait_for_url(url + "/")
                await expect(page.locator("#nodes-table tr.node")).to_have_count(2, timeout=WAIT_MS)
                nodes = await page.locator("#nodes-table tr.node").all_inner_texts()
                assert all("ALIVE" in row for row in nodes), nodes
                await page.evaluate("window.__stillHere = 'yes'")  # gone on a reload
                await page.screenshot(path=str(shots / "dashboard-cluster.png"))

                # an actor: found by its name, opened, its worker's line read
                await page.click("#tabs a[data-view=actors]")
                await page.fill("#search", name)
                actors = page.locator("#actors-table tr.actor")
                await expect(actors).to_have_count(1, timeout=WAIT_MS)
                row = await text_of(page, "#actors-table tr.actor")
                assert name in row and "ALIVE" in row and str(pid) in row, row
                await page.click("#actors-table tr.actor")
                await expect(page.locator("#actor-log")).to_contain_text(marker, timeout=WAIT_MS)
                await page.screenshot(path=str(shots / "dashboard-actor.png"), full_page=True)

                # the task count changes while the page stays loaded
                await page.click("#tabs a[data-view=tasks]")
                cell = "#task-states td[data-state=FINISHED]"
                await page.wait_for_selector(cell)
                before = int((await text_of(page, cell)).replace(",", ""))
                await asyncio.wait_for(af.get([nop.remote(i) for i in range(25)]), 30)

                async def finished() -> int:
                    return int((await text_of(page, cell)).replace(",", ""))

                deadline = asyncio.get_running_loop().time() + WAIT_MS / 1000
                while await finished() < before + 25:  # pushed by the server, no reload
                    assert asyncio.get_running_loop().time() < deadline, await finished()
                    await asyncio.sleep(0.2)
                assert await page.evaluate("window.__stillHere") == "yes"
                failure = await text_of(page, "#task-failures tr.failure")
                assert "boom" in failure and "ValueError" in failure and marker in failure
                await page.screenshot(path=str(shots / "dashboard-tasks.png"), full_page=True)

                # the worker's own log, from the logs view
                await page.click("#tabs a[data-view=logs]")
                await page.click(f"#workers-table tr.worker[data-pid='{pid}']")
                await expect(page.locator("#worker-log")).to_contain_text(marker, timeout=WAIT_MS)
                await page.screenshot(path=str(shots / "dashboard-logs.png"))

                # a submitted job and its output
                await page.click("#tabs a[data-view=jobs]")
                await page.click(f"#jobs-table tr.job[data-job-id='{job_id}']")
                await expect(page.locator("#job-log")).to_contain_text(
                    f"job-said-{marker}", timeout=WAIT_MS)
                assert "SUCCEEDED" in await text_of(page, "#jobs-table tr.job")
                await page.screenshot(path=str(shots / "dashboard-jobs.png"))

                await page.click("#tabs a[data-view=objects]")
                await expect(page.locator("#objects-largest tr.object")).not_to_have_count(
                    0, timeout=WAIT_MS)
                await page.screenshot(path=str(shots / "dashboard-objects.png"))
                assert await page.evaluate("window.__stillHere") == "yes"
                # the 401 of the first visit is the only error the console saw
                assert [p for p in problems if "401" not in p] == [], problems
            finally:
                await browser.close()
        await af.kill(greeter)
        del kept
