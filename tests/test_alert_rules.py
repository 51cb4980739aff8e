"""The alert rules an operator starts from (monitoring/alerts.yml): Prometheus loads them, they
fire on the series that show each problem, and they read only series jobcache exports.

promtool comes with Debian's `prometheus` package, which .ci/run installs."""

import re
import shutil
import subprocess
from typing import Any

import httpx
import yaml

from tests.conftest import finished_record
from tests.exposition import families
from tests.processes import REPO_ROOT

RULES = REPO_ROOT / "monitoring" / "alerts.yml"
RULE_TESTS = REPO_ROOT / "tests" / "alerts.test.yml"


def promtool(*arguments: str) -> str:
    """promtool's output; fails the test if it refuses."""
    executable = shutil.which("promtool")
    assert executable is not None, (
        "promtool is not installed: `apt-get install prometheus` (Debian's package has it)"
    )
    result = subprocess.run(
        [executable, *arguments], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_alert_rules_load_in_prometheus_and_each_says_how_bad_and_what() -> None:
    assert "SUCCESS" in promtool("check", "rules", str(RULES))
    for rule in rules():
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_a_worker_gone_and_a_rate_of_errors_fire_their_alerts() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(RULE_TESTS))
    checked = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in checked
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert {"JobcacheWorkerGone", "JobcacheHttpErrors", "JobcacheHttp503"} <= fired


async def test_every_series_an_alert_reads_is_one_jobcache_exports(
    local_client: httpx.AsyncClient,
) -> None:
    # The local mode's api exports every family (it runs the jobs too); one job gives the
    # histograms their first series.
    job_id = (await local_client.post("/jobs/echo", json={"message": "m"})).json()["id"]
    await finished_record(local_client, job_id)
    exported = families((await local_client.get("/metrics")).text)
    read = {name for rule in rules() for name in re.findall(r"jobcache_\w+", rule["expr"])}
    assert read, "no jobcache series in the rules"
    assert read <= exported, read - exported
