"""The HTTP api in the embedded (local) mode: one process, no Redis, jobs run in the api."""

import json
import time

import httpx

from shared.settings import Settings
from tests.conftest import client_for, eventually, finished_record, settings_for_test
from tests.exposition import total

JSON = {"Content-Type": "application/json"}


async def test_echo_job_is_accepted_then_its_result_is_served(
    local_client: httpx.AsyncClient,
) -> None:
    response = await local_client.post("/jobs/echo", json={"message": "héllo\nwörld"})
    assert response.status_code == 202
    submitted = response.json()
    assert submitted["status"] == "queued"
    assert response.headers["Location"] == f"/jobs/{submitted['id']}"

    record = await finished_record(local_client, submitted["id"])
    assert record["status"] == "succeeded"
    assert record["result"] == {"message": "héllo\nwörld"}
    assert record["attempts"] == 1
    assert record["started_at"] is not None and record["finished_at"] is not None


async def test_text_stats_counts_words_and_lines(local_client: httpx.AsyncClient) -> None:
    text = "the cat and the hat\nThe end"
    response = await local_client.post("/jobs/text_stats", json={"text": text, "top": 1})
    record = await finished_record(local_client, response.json()["id"])
    assert record["result"] == {
        "characters": len(text),
        "words": 7,
        "lines": 2,
        "unique_words": 5,
        "most_common": [{"word": "the", "count": 3}],
    }


async def test_failing_job_shows_failed_with_a_readable_error(
    local_client: httpx.AsyncClient,
) -> None:
    response = await local_client.post("/jobs/fail", json={"message": "the disk is full"})
    record = await finished_record(local_client, response.json()["id"])
    assert record["status"] == "failed"
    assert record["error"] == "the disk is full"
    assert record["result"] is None


async def test_sleep_job_reports_progress_while_it_runs(local_client: httpx.AsyncClient) -> None:
    job_id = (await local_client.post("/jobs/sleep", json={"seconds": 1.5})).json()["id"]

    async def partly_done() -> dict[str, object] | None:
        record = (await local_client.get(f"/jobs/{job_id}")).json()
        progress = record["progress"]
        if record["status"] == "running" and progress and 0 < progress["current"] < 1.5:
            return record
        return None

    running = await eventually(partly_done)
    assert running["progress"]["total"] == 1.5
    record = await finished_record(local_client, job_id)
    assert record["result"] == {"slept": 1.5}
    assert record["progress"]["current"] == 1.5


async def test_cpu_bound_job_runs_off_the_event_loop(local_client: httpx.AsyncClient) -> None:
    """While a CPU-bound job computes, later jobs and health checks are still served."""
    primes = (await local_client.post("/jobs/primes", json={"limit": 40_000_000})).json()["id"]

    async def running() -> bool:
        record = (await local_client.get(f"/jobs/{primes}")).json()
        return bool(record["status"] == "running")

    await eventually(running)
    assert (await local_client.get("/health")).status_code == 200
    echo = (await local_client.post("/jobs/echo", json={"message": "meanwhile"})).json()["id"]
    await finished_record(local_client, echo)
    assert (await local_client.get(f"/jobs/{primes}")).json()["status"] == "running"

    record = await finished_record(local_client, primes, within=60)
    assert record["result"]["count"] == 2_433_654


async def test_primes_counts_small_limits_exactly(local_client: httpx.AsyncClient) -> None:
    response = await local_client.post("/jobs/primes", json={"limit": 100})
    record = await finished_record(local_client, response.json()["id"])
    assert record["result"] == {"limit": 100, "count": 25, "largest": 97}


async def test_malformed_json_is_a_400_that_says_so(local_client: httpx.AsyncClient) -> None:
    response = await local_client.post("/jobs/echo", content=b'{"message": ', headers=JSON)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


async def test_form_body_is_refused_with_a_hint_to_send_json(
    local_client: httpx.AsyncClient,
) -> None:
    response = await local_client.post("/jobs/echo", data={"message": "hi"})
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


async def test_unknown_job_type_is_404_listing_the_known_ones(
    local_client: httpx.AsyncClient,
) -> None:
    response = await local_client.post("/jobs/resize_image", json={})
    assert response.status_code == 404
    body = response.json()
    assert "resize_image" in body["detail"]
    assert body["known_job_types"] == ["echo", "fail", "primes", "sleep", "text_stats"]


async def test_invalid_parameters_are_422_with_field_errors(
    local_client: httpx.AsyncClient,
) -> None:
    response = await local_client.post("/jobs/sleep", json={"seconds": "soon", "extra": 1})
    assert response.status_code == 422
    problems = {tuple(error["loc"]): error["type"] for error in response.json()["detail"]}
    assert problems[("body", "seconds")] == "float_type"  # strict: a string is not a number
    assert problems[("body", "extra")] == "extra_forbidden"

    too_long = await local_client.post("/jobs/sleep", json={"seconds": 10_000})
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["body", "seconds"]


async def test_unknown_or_malformed_job_id_is_404(local_client: httpx.AsyncClient) -> None:
    for job_id in ("A" * 22, "not-an-id", "x" * 300):
        response = await local_client.get(f"/jobs/{job_id}")
        assert response.status_code == 404
        assert "no job with id" in response.json()["detail"]


def one_second_ttl(namespace: str) -> Settings:
    return settings_for_test(
        cache_backend="local", cache_namespace=namespace, cache_ttl=1, cpu_workers=1
    )


async def test_record_expires_after_its_ttl(namespace: str) -> None:
    async with client_for(one_second_ttl(namespace)) as client:
        job_id = (await client.post("/jobs/echo", json={"message": "brief"})).json()["id"]
        await finished_record(client, job_id)

        async def gone() -> bool:
            return (await client.get(f"/jobs/{job_id}")).status_code == 404

        await eventually(gone, within=5)


async def test_unfinished_job_keeps_its_record_past_the_ttl(namespace: str) -> None:
    """CACHE_TTL counts from the end of the job: a job running longer keeps its record."""
    async with client_for(one_second_ttl(namespace)) as client:
        job_id = (await client.post("/jobs/sleep", json={"seconds": 2.5})).json()["id"]
        record = (await client.get(f"/jobs/{job_id}", params={"wait": 1.8})).json()
        assert record["status"] == "running"
        assert (await finished_record(client, job_id))["status"] == "succeeded"


async def test_cached_endpoint_serves_the_second_request_from_the_cache(
    local_client: httpx.AsyncClient,
) -> None:
    first = await local_client.get("/cached", params={"rounds": 1000, "seed": "a"})
    second = await local_client.get("/cached", params={"rounds": 1000, "seed": "a"})
    other = await local_client.get("/cached", params={"rounds": 1000, "seed": "b"})
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
    assert second.json()["digest"] == first.json()["digest"]
    assert other.headers["X-Cache"] == "miss"
    assert other.json()["digest"] != first.json()["digest"]


async def test_health_reports_the_local_backend(local_client: httpx.AsyncClient) -> None:
    response = await local_client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "backend": "local", "redis": None}


async def test_wait_returns_as_soon_as_the_job_finishes(local_client: httpx.AsyncClient) -> None:
    job_id = (await local_client.post("/jobs/sleep", json={"seconds": 0.3})).json()["id"]
    started = time.monotonic()
    response = await local_client.get(f"/jobs/{job_id}", params={"wait": 30})
    assert response.json()["status"] == "succeeded"
    assert time.monotonic() - started < 15, "?wait held the request long after the job ended"


async def test_wait_returns_the_current_record_when_it_times_out(
    local_client: httpx.AsyncClient,
) -> None:
    job_id = (await local_client.post("/jobs/sleep", json={"seconds": 5})).json()["id"]
    started = time.monotonic()
    response = await local_client.get(f"/jobs/{job_id}", params={"wait": 0.3})
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert response.json()["status"] in ("queued", "running")


async def test_wait_on_an_unknown_job_is_404(local_client: httpx.AsyncClient) -> None:
    response = await local_client.get(f"/jobs/{'B' * 22}", params={"wait": 5})
    assert response.status_code == 404


async def test_event_stream_shows_progress_and_ends_with_the_final_record(
    local_client: httpx.AsyncClient,
) -> None:
    job_id = (await local_client.post("/jobs/sleep", json={"seconds": 1.2})).json()["id"]
    events = await read_event_stream(local_client, f"/jobs/{job_id}/events")
    names = [name for name, _ in events]
    assert names[-1] == "succeeded"
    assert events[-1][1]["result"] == {"slept": 1.2}
    progress = [record["progress"]["current"] for name, record in events if name == "running"]
    assert len(progress) >= 2 and progress == sorted(progress)


async def test_event_stream_of_an_unknown_job_is_404(local_client: httpx.AsyncClient) -> None:
    response = await local_client.get(f"/jobs/{'C' * 22}/events")
    assert response.status_code == 404


async def read_event_stream(
    client: httpx.AsyncClient, path: str
) -> list[tuple[str, dict[str, object]]]:
    """The (event name, record) pairs of a server-sent event stream, read to its end."""
    events: list[tuple[str, dict[str, object]]] = []
    async with client.stream("GET", path) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


async def test_running_job_can_be_cancelled(local_client: httpx.AsyncClient) -> None:
    job_id = (await local_client.post("/jobs/sleep", json={"seconds": 30})).json()["id"]

    async def running() -> bool:
        return bool((await local_client.get(f"/jobs/{job_id}")).json()["status"] == "running")

    await eventually(running)
    response = await local_client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    record = await finished_record(local_client, job_id)
    assert (record["status"], record["error"]) == ("cancelled", "cancelled by the client")
    assert record["result"] is None


async def test_queued_job_can_be_cancelled_and_never_runs(namespace: str) -> None:
    settings = settings_for_test(
        cache_backend="local", cache_namespace=namespace, cpu_workers=1, worker_concurrency=1
    )
    async with client_for(settings) as client:
        busy = (await client.post("/jobs/sleep", json={"seconds": 0.5})).json()["id"]
        waiting = (await client.post("/jobs/echo", json={"message": "never"})).json()["id"]
        cancelled = await client.post(f"/jobs/{waiting}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        await finished_record(client, busy)
        after = (await client.get(f"/jobs/{waiting}", params={"wait": 0.5})).json()
        assert after["status"] == "cancelled"
        assert after["started_at"] is None and after["result"] is None


async def test_cancelled_jobs_are_counted_once_each_in_the_metrics(
    local_client: httpx.AsyncClient,
) -> None:
    running = (await local_client.post("/jobs/sleep", json={"seconds": 30})).json()["id"]

    async def started() -> bool:
        return bool((await local_client.get(f"/jobs/{running}")).json()["status"] == "running")

    await eventually(started)
    await local_client.post(f"/jobs/{running}/cancel")
    await finished_record(local_client, running)
    metrics = (await local_client.get("/metrics")).text
    assert total(metrics, "jobcache_jobs_cancelled_total", job_type="sleep") == 1


async def test_finished_job_cannot_be_cancelled(local_client: httpx.AsyncClient) -> None:
    job_id = (await local_client.post("/jobs/echo", json={"message": "done"})).json()["id"]
    await finished_record(local_client, job_id)
    response = await local_client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 409
    assert "already finished" in response.json()["detail"]
    assert (await local_client.get(f"/jobs/{job_id}")).json()["status"] == "succeeded"


async def test_cancelling_an_unknown_job_is_404(local_client: httpx.AsyncClient) -> None:
    response = await local_client.post(f"/jobs/{'D' * 22}/cancel")
    assert response.status_code == 404
