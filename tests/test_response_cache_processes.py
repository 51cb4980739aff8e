"""Cached endpoints with real api processes on a redis-server of the test's own: one fill
across processes, and answers within a bound while Redis is stopped or gone."""

import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.deployments import (
    CACHE_DB,
    QUEUE_DB,
    Deployment,
    delete_what_deployment_created,
    redis_client,
)
from tests.processes import Api, RedisServer, api, child_environment, redis_server

pytestmark = pytest.mark.processes

FAIL_OPEN_SECONDS = 2.0
"""The bound on an answer while Redis does not answer: a few calls of RESPONSE_CACHE_TIMEOUT
(0.2 s) before the breaker opens, plus the endpoint's own time."""
SLOW_ROUNDS = 400_000
"""sha256 rounds that take GET /cached a few tenths of a second: long enough to overlap."""


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        try:
            yield server
        finally:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGCONT)


def api_environment(server: RedisServer, **settings: str) -> dict[str, str]:
    return child_environment(
        {
            "CACHE_BACKEND": "redis",
            "CACHE_NAMESPACE": f"test-{uuid.uuid4().hex[:12]}",
            "CPU_WORKERS": "1",
            "LOG_LEVEL": "INFO",
            **server.settings,
            **settings,
        }
    )


def timed_get(served: Api, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.get(f"{served.url}{path}", timeout=30)
    return response, time.monotonic() - started


def test_requests_missing_together_on_two_api_processes_compute_once(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    environment = api_environment(private_redis)
    path = f"/cached?rounds={SLOW_ROUNDS}&seed=together"
    with ExitStack() as stack:
        apis = [
            stack.enter_context(api(environment, tmp_path / f"api-{number}.log"))
            for number in range(2)
        ]
        with ThreadPoolExecutor(max_workers=20) as pool:
            responses = list(
                pool.map(lambda number: timed_get(apis[number % 2], path)[0], range(20))
            )
    assert {response.status_code for response in responses} == {200}
    assert [response.headers["x-cache"] for response in responses].count("miss") == 1
    assert len({response.json()["digest"] for response in responses}) == 1


def test_cached_endpoints_answer_within_a_bound_while_redis_is_stopped_then_gone(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    environment = api_environment(
        private_redis, RESPONSE_CACHE_NEAR_SECONDS="0.1", RESPONSE_CACHE_BREAKER_SECONDS="3"
    )
    with api(environment, tmp_path / "api.log") as served:
        stored, _ = timed_get(served, "/cached?rounds=1000&seed=kept")
        assert stored.headers["x-cache"] == "miss"

        private_redis.process.send_signal(signal.SIGSTOP)  # Redis hangs: every call times out
        stopped = [timed_get(served, f"/cached?rounds=1000&seed=s{n}") for n in range(6)]
        for response, seconds in stopped:
            assert response.status_code == 200, response.text
            assert response.headers["x-cache"] == "miss"
            assert seconds < FAIL_OPEN_SECONDS, f"answered after {seconds:.2f}s"
        # Once the breaker is open, a request costs no timeout (0.2 s) at all.
        assert all(seconds < 0.2 for _, seconds in stopped[-3:]), stopped
        assert "response cache: Redis is not answering" in served.output()

        private_redis.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while timed_get(served, "/cached?rounds=1000&seed=kept")[0].headers["x-cache"] != "hit":
            assert time.monotonic() < deadline, "the cache did not come back with Redis"
            time.sleep(0.1)

        private_redis.process.kill()  # Redis is gone: connections are refused
        private_redis.process.wait(10)
        gone = [timed_get(served, f"/cached?rounds=1000&seed=g{n}") for n in range(4)]
        for response, seconds in gone:
            assert response.status_code == 200, response.text
            assert seconds < FAIL_OPEN_SECONDS, f"answered after {seconds:.2f}s"


def test_the_cache_can_live_on_its_own_redis_apart_from_the_queue(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    """The queue on the shared Redis, the cache (cached responses, job records) on a private
    one, as CACHE_REDIS_* set it."""
    deployment = Deployment(f"test-{uuid.uuid4().hex[:12]}", tmp_path)
    environment = deployment.environment(
        CACHE_REDIS_HOST=private_redis.host,
        CACHE_REDIS_PORT=str(private_redis.port),
        REDIS_CACHE_DB="0",
    )
    cache = private_redis.client(db=0)
    try:
        with (
            api(environment, tmp_path / "api.log") as served,
            httpx.Client(base_url=served.url, timeout=10) as client,
        ):
            client.get("/cached?rounds=1000&seed=split")
            assert client.get("/cached?rounds=1000&seed=split").headers["x-cache"] == "hit"
            job_id = deployment.submit(client, "echo", {"message": "split"})
        assert cache.exists(f"{deployment.name}:job:{job_id}")
        assert list(cache.scan_iter(match=f"{deployment.name}:response:*"))
        with redis_client(QUEUE_DB) as queue:
            assert queue.zscore(f"{deployment.name}:queue:default", job_id) is not None
        for db in (QUEUE_DB, CACHE_DB):
            with redis_client(db) as shared:
                assert not list(shared.scan_iter(match=f"{deployment.name}:response:*"))
                assert not list(shared.scan_iter(match=f"{deployment.name}:job:*"))
    finally:
        cache.close()
        delete_what_deployment_created(deployment)
