"""The dashboard's pause and resume of a queue in a real headless Chromium against a real api
(the local mode, and Redis with a worker process): an admin pauses the default queue from its
row, a job submitted then stays queued, and resuming it from the row lets the job run; an
ordinary key is told it may not."""

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest
from playwright.sync_api import Page

from tests.deployments import Deployment, start_all, wait_finished
from tests.processes import api
from tests.test_dashboard import SCREENSHOT, browser_page  # noqa: F401 (the fixture)

pytestmark = pytest.mark.processes

ADMIN = "admin-key-of-the-pause-browser-test"
USER = "user-key-of-the-pause-browser-test"
HELD_SECONDS = 1.0
"""How long the paused queue's job is watched not to start."""


@contextmanager
def served(deployment: Deployment, mode: str) -> Iterator[str]:
    settings = {"API_KEYS": USER, "ADMIN_API_KEYS": ADMIN}
    with ExitStack() as stack:
        if mode == "local":
            environment = deployment.environment(CACHE_BACKEND="local", **settings)
            url = stack.enter_context(api(environment, deployment.logs / "api.log")).url
        else:
            url = start_all(stack, deployment, workers=1, **settings).url
        yield url


def open_dashboard(page: Page, url: str, key: str) -> None:
    page.add_init_script(f"sessionStorage.setItem('jobcache-api-key', {key!r})")
    page.goto(f"{url}/dashboard")


@pytest.mark.parametrize("mode", ["local", "redis"])
def test_an_admin_pauses_and_resumes_a_queue_from_the_dashboard(
    deployment: Deployment,
    browser_page: tuple[Page, list[str]],  # noqa: F811 (the fixture)
    mode: str,
) -> None:
    page, problems = browser_page
    with (
        served(deployment, mode) as url,
        httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as admin,
    ):
        open_dashboard(page, url, ADMIN)
        row = '#queues tr[data-queue="default"]'
        page.wait_for_selector(f'{row}[data-paused="false"]')
        page.locator(f"{row} button.steer").click()
        page.wait_for_selector('#queues-message[data-state="ok"]')
        page.wait_for_selector(f'{row}[data-paused="true"]')
        assert "paused" in page.locator(f"{row} .note").inner_text()
        assert admin.get("/queues").json()[0]["paused"] is True

        job_id = deployment.submit(admin, "echo", {"message": "held by the dashboard"})
        deadline = time.monotonic() + HELD_SECONDS
        while time.monotonic() < deadline:
            assert admin.get(f"/jobs/{job_id}").json()["status"] == "queued"
            time.sleep(0.1)

        page.locator(f"{row} button.steer").click()
        page.wait_for_selector(f'{row}[data-paused="false"]')
        assert "resumed" in page.locator("#queues-message").inner_text()
        assert wait_finished(admin, job_id, timeout=30)["status"] == "succeeded"
        page.screenshot(
            path=str(SCREENSHOT.with_name(f"dashboard-pause-{mode}.png")), full_page=True
        )
    assert problems == []


def test_an_ordinary_key_is_told_it_may_not_pause_a_queue(
    deployment: Deployment,
    browser_page: tuple[Page, list[str]],  # noqa: F811 (the fixture)
) -> None:
    page, problems = browser_page
    with served(deployment, "local") as url:
        open_dashboard(page, url, USER)
        row = '#queues tr[data-queue="default"]'
        page.locator(f"{row} button.steer").click()
        page.wait_for_selector('#queues-message[data-state="bad"]')
        assert "admin key" in page.locator("#queues-message").inner_text()
        assert page.locator(row).get_attribute("data-paused") == "false"
    # The refused POST is logged by the browser as a failed resource (403): expected here.
    assert all("403" in problem for problem in problems), problems
