"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real api
and worker: it loads, follows a job submitted during the test to succeeded, shows its record on
click, and logs no error to the console. In both modes (the api running its jobs itself, and an
api with a worker process on Redis), a page loaded after jobs ran draws the backend's hour of
history from its first paint, with its axes, health, a breakdown by job type, a queue whose
workers are busy with another queue's job, the oldest waiting job, and each API key's own
recent jobs beside another key's batch. Screenshots are kept in test-artifacts/."""

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from tests.deployments import Deployment, start_all, wait_finished
from tests.processes import REPO_ROOT, api, wait_for

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


ALICE = "alice-key-of-the-dashboard-browser-test"
BOB = "bob-key-of-the-dashboard-browser-test"
BATCH = 150
FINISHED_COLOR = (0x2F, 0x6F, 0xDE)
# Pixels of the chart's `finished` colour above its zero line: the line drawn where jobs ended.
PIXELS_ABOVE_ZERO = """([id, color]) => {
  const canvas = document.getElementById(id);
  const ratio = canvas.width / canvas.clientWidth;
  const zero = Number(canvas.dataset.zeroLine) * ratio;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let found = 0;
  for (let index = 0; index < data.length; index += 4) {
    const row = Math.floor(index / 4 / canvas.width);
    const near = [0, 1, 2].every((c) => Math.abs(data[index + c] - color[c]) < 40);
    if (near && data[index + 3] > 0 && row < zero - 3 * ratio) found += 1;
  }
  return found;
}"""


@contextmanager
def dashboard_stack(deployment: Deployment, mode: str) -> Iterator[str]:
    """The api of `mode` with two API keys and one job slot: `local` runs its jobs itself,
    `redis` has one worker process. Yields its base URL."""
    settings = {"API_KEYS": f"{ALICE},{BOB}", "WORKER_CONCURRENCY": "1"}
    with ExitStack() as stack:
        if mode == "local":
            environment = deployment.environment(CACHE_BACKEND="local", **settings)
            served = stack.enter_context(api(environment, deployment.logs / "api.log"))
        else:
            served = start_all(stack, deployment, workers=1, **settings)
        yield served.url


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def hour_of_types(client: httpx.Client) -> dict[str, dict[str, int]]:
    state = client.get("/dashboard/state").raise_for_status().json()
    totals: dict[str, dict[str, int]] = {}
    for interval in state["history"]["intervals"]:
        for name, figures in interval["types"].items():
            total = totals.setdefault(name, {"finished": 0, "failed": 0})
            total["finished"] += figures["finished"]
            total["failed"] += figures["failed"]
    return totals


def chart_totals(page: Page, chart: str) -> dict[str, float]:
    totals: dict[str, float] = json.loads(
        page.locator(f"#{chart}").get_attribute("data-totals") or "{}"
    )
    return totals


@pytest.mark.parametrize("mode", ["local", "redis"])
def test_the_dashboard_draws_the_backends_hour_from_its_first_paint_health_and_each_keys_jobs(
    deployment: Deployment, browser_page: tuple[Page, list[str]], mode: str
) -> None:
    page, problems = browser_page
    with (
        dashboard_stack(deployment, mode) as url,
        httpx.Client(base_url=url, timeout=10, headers=bearer(ALICE)) as alice,
        httpx.Client(base_url=url, timeout=10, headers=bearer(BOB)) as bob,
    ):
        own = [deployment.submit(alice, "echo", {"message": f"mine {n}"}) for n in range(3)]
        own.append(deployment.submit(alice, "fail", {"message": "the disk is on fire"}))
        batch = bob.post("/jobs/echo/batch", json=[{"message": f"busy {n}"} for n in range(BATCH)])
        assert batch.status_code == 202, batch.text
        theirs = [job["id"] for job in batch.json()["jobs"]]
        deployment.job_ids.extend(theirs)
        expected = {
            "echo": {"finished": 3 + BATCH, "failed": 0},
            "fail": {"finished": 1, "failed": 1},
        }
        wait_for(
            lambda: hour_of_types(alice) == expected,
            timeout=90,
            what="every job is in the backend's history",
        )

        # A page that loads after the jobs ran draws them at once: its first answer holds the
        # hour, kept by the backend. Its later polls are refused here, so what it draws can
        # only come from that first answer; then the page is reloaded and draws it again.
        # The key is where the page's form keeps it, so that its first request carries it.
        page.add_init_script(f"sessionStorage.setItem('jobcache-api-key', {json.dumps(ALICE)})")
        page.route("**/dashboard/state?history_since=*", lambda route: route.abort())
        for load in (lambda: page.goto(f"{url}/dashboard"), page.reload):
            with page.expect_response(lambda r: "/dashboard/state" in r.url) as first:
                load()
            assert first.value.ok and "history_since" not in first.value.url
            page.wait_for_selector('#connection[data-state="offline"]')  # its second poll
            interval = int(first.value.json()["history"]["interval_seconds"])
            finished = chart_totals(page, "throughput-chart")["finished"]
            assert round(finished * interval) == 4 + BATCH
            assert page.evaluate(PIXELS_ABOVE_ZERO, ["throughput-chart", FINISHED_COLOR]) > 0
            assert re.fullmatch(r"\d+(\.\d)?", page.locator("#throughput").inner_text())
            # The axes: a time axis over the hour, ending now, and a zero line.
            for chart in ("throughput-chart", "queue-chart"):
                canvas = page.locator(f"#{chart}")
                ticks = json.loads(canvas.get_attribute("data-time-ticks") or "[]")
                assert len(ticks) == 5 and ticks[-1] == "now", ticks
                assert all(re.fullmatch(r"\d\d:\d\d", tick) for tick in ticks[:-1]), ticks
                zero = float(canvas.get_attribute("data-zero-line") or "nan")
                assert 0 < zero < canvas.bounding_box()["height"]  # type: ignore[index]
        page.unroute("**/dashboard/state?history_since=*")
        # The refused polls, and nothing else, were logged as failed loads.
        refused = [problem for problem in problems if "net::ERR_FAILED" in problem]
        assert refused and problems == refused
        problems.clear()
        page.wait_for_selector('#connection[data-state="live"]')

        # Health, and the breakdown by job type.
        assert page.locator("#health").inner_text() == "ok"
        assert page.locator("#health-api").inner_text() == "api up"
        redis_health = "local mode, no Redis" if mode == "local" else "Redis reachable"
        assert page.locator("#health-redis").inner_text() == redis_health
        echo_row, fail_row = '#types tr[data-type="echo"]', '#types tr[data-type="fail"]'
        assert page.locator(f"{echo_row} .finished").inner_text() == str(3 + BATCH)
        assert page.locator(f"{fail_row} .failed").inner_text() == "1"
        assert page.locator(f"{fail_row} td").nth(3).inner_text() == "100%"
        assert page.locator('#queues tr[data-queue="default"] .finished').inner_text() == str(
            4 + BATCH
        )

        # Alice's jobs are listed although Bob submitted 150 after them; none of his are.
        for job_id in own:
            page.wait_for_selector(f'#jobs tr[data-job-id="{job_id}"]')
        listed = page.eval_on_selector_all(
            "#jobs tr[data-job-id]", "rows => rows.map(row => row.dataset.jobId)"
        )
        assert listed == own[::-1]
        assert not set(listed) & set(theirs)

        # The one slot is busy with a default job: the cpu queue's job waits, and says why.
        deployment.submit(alice, "sleep", {"seconds": 8})
        page.wait_for_selector('#queues tr[data-queue="default"] td:nth-child(4):text-is("1")')
        primes = deployment.submit(alice, "primes", {"limit": 100})
        cpu_row = '#queues tr[data-queue="cpu"][data-busy-elsewhere="true"]'
        page.wait_for_selector(cpu_row)
        assert page.locator(f"{cpu_row} .note").inner_text() == "workers busy with other queues"
        page.wait_for_function(
            "() => /^\\d+(\\.\\d)? s$/.test(document.getElementById('oldest-waiting').textContent)"
        )
        assert page.locator(f"{cpu_row} .oldest").inner_text().endswith(" s")
        assert wait_finished(alice, primes, timeout=30)["status"] == "succeeded"
        page.wait_for_selector('#queues tr[data-queue="cpu"][data-busy-elsewhere="false"]')
        assert page.locator("#oldest-waiting").inner_text() == "none"

        page.screenshot(path=str(SCREENSHOT.with_name(f"dashboard-{mode}.png")), full_page=True)
    assert problems == []
