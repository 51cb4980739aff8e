"""The dashboard's kept failures in a real headless Chromium against a real api (the local
mode, and Redis with a worker process): a job of the caller's that failed is listed with a
Retry button; clicking it queues the job again under its id, and the page follows it to
succeeded. Another key's failures are not listed."""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from tests.conftest import write_module
from tests.deployments import Deployment, start_all, wait_finished
from tests.processes import api
from tests.test_dashboard import SCREENSHOT, browser_page  # noqa: F401 (the fixture)
from tests.test_kept_failures import FLAKY_JOBS

pytestmark = pytest.mark.processes

ALICE = "alice-key-of-the-retry-browser-test"
BOB = "bob-key-of-the-retry-browser-test"


@contextmanager
def served(deployment: Deployment, mode: str, job_directory: Path) -> Iterator[str]:
    module = write_module(job_directory, FLAKY_JOBS)
    settings = {
        "API_KEYS": f"{ALICE},{BOB}",
        "JOBCACHE_JOBS": f"shared.builtin_jobs,{module}",
        "PYTHONPATH": str(job_directory),
    }
    with ExitStack() as stack:
        if mode == "local":
            environment = deployment.environment(CACHE_BACKEND="local", **settings)
            url = stack.enter_context(api(environment, deployment.logs / "api.log")).url
        else:
            url = start_all(stack, deployment, workers=1, **settings).url
        yield url


@pytest.mark.parametrize("mode", ["local", "redis"])
def test_a_kept_failure_runs_again_from_the_dashboards_retry_button(
    deployment: Deployment,
    browser_page: tuple[Page, list[str]],  # noqa: F811 (the fixture)
    job_directory: Path,
    tmp_path: Path,
    mode: str,
) -> None:
    page, problems = browser_page
    with (
        served(deployment, mode, job_directory) as url,
        httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {ALICE}"}
        ) as alice,
        httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {BOB}"}) as bob,
    ):
        job_id = deployment.submit(alice, "flaky", {"path": str(tmp_path / "marker")})
        assert wait_finished(alice, job_id, timeout=30)["status"] == "failed"
        theirs = deployment.submit(bob, "fail", {"message": "not Alice's"})
        assert wait_finished(bob, theirs, timeout=30)["status"] == "failed"

        page.add_init_script(f"sessionStorage.setItem('jobcache-api-key', {ALICE!r})")
        page.goto(f"{url}/dashboard")
        row = f'#kept tr[data-job-id="{job_id}"]'
        page.wait_for_selector(f'{row}[data-status="failed"]')
        assert "the partner's API was down" in page.locator(f"{row} .error").inner_text()
        assert page.locator(f'#kept tr[data-job-id="{theirs}"]').count() == 0

        page.locator(f"{row} button.retry").click()
        page.wait_for_selector('#kept-message[data-state="ok"]')
        assert job_id in page.locator("#kept-message").inner_text()
        # It leaves the kept failures, and the page follows it in its detail to succeeded.
        page.wait_for_selector(row, state="detached")
        page.wait_for_function(
            "text => document.getElementById('detail-record').textContent.includes(text)",
            arg='"status": "succeeded"',
        )
        record = page.locator("#detail-record").inner_text()
        assert '"previous_errors": [\n    "the partner\'s API was down"\n  ]' in record
        page.wait_for_selector(f'#jobs tr[data-job-id="{job_id}"][data-status="succeeded"]')
        assert wait_finished(alice, job_id)["status"] == "succeeded"
        page.screenshot(
            path=str(SCREENSHOT.with_name(f"dashboard-retry-{mode}.png")), full_page=True
        )
    assert problems == []
