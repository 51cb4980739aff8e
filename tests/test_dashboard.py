"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real api
and worker: it loads, follows a job submitted during the test to succeeded, shows its record on
click, and logs no error to the console. A screenshot is kept in test-artifacts/."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from tests.deployments import Deployment, start_all
from tests.processes import REPO_ROOT

pytestmark = pytest.mark.processes

SCREENSHOT = REPO_ROOT / "test-artifacts" / "dashboard.png"
# The flags our machines need: no sandbox (root in a container), no GPU, no network of its own.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "the dashboard test needs Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def browser_page() -> Iterator[tuple[Page, list[str]]]:
    """A page in a fresh Chromium profile, and the console errors and page errors it logs."""
    executable = chromium_path()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "assert"):
            problems.append(f"console {message.type}: {message.text}")

    with (
        tempfile.TemporaryDirectory(prefix="jobcache-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            yield page, problems
        finally:
            context.close()


def test_dashboard_shows_a_submitted_job_reach_succeeded_without_console_errors(
    deployment: Deployment, browser_page: tuple[Page, list[str]]
) -> None:
    page, problems = browser_page
    with ExitStack() as stack:
        served = start_all(stack, deployment, workers=1)
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=5))

        page.goto(f"{served.url}/dashboard")
        page.wait_for_selector('#connection[data-state="live"]')
        page.wait_for_selector("#workers tbody tr[data-worker-id]")
        assert page.locator("#workers-alive").inner_text() == "1"
        assert "redis mode" in page.locator("#deployment").inner_text()

        job_id = deployment.submit(client, "sleep", {"seconds": 1.5})
        row = f'#jobs tr[data-job-id="{job_id}"]'
        page.wait_for_selector(row)
        page.wait_for_selector(f'{row}[data-status="succeeded"]')
        assert page.locator(f"{row} .status").inner_text() == "succeeded"

        page.locator(f"{row} .job-link").click()
        page.wait_for_function(
            "text => document.getElementById('detail-record').textContent.includes(text)",
            arg='"slept": 1.5',
        )
        record = page.locator("#detail-record").inner_text()
        assert job_id in record and '"status": "succeeded"' in record
        assert page.locator("#detail-id").inner_text() == job_id
        assert page.locator("#key-form").is_hidden()

        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert problems == []
