"""Idempotency-Key: a repeat of a submission by the same caller within 24 h gets the job the
first made (200, `Idempotent-Replayed: true`), however many arrive at once; the same key with
another request is a 422; callers' keys never collide; the key is stored hashed and never
logged; a request that fails frees its key for a retry. Both modes."""

import asyncio
import logging
import time
import uuid
from contextlib import AsyncExitStack

import pytest

from shared.idempotency import Claim, IdempotentRequest
from shared.keys import Keys, digest, new_job_id
from shared.records import JobRecord
from tests.conftest import finished_record, served_for, settings_in
from tests.deployments import CACHE_DB, QUEUE_DB, redis_client

# aiocache 0.12 closes its Redis client with redis-py's deprecated close(), when the app stops.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning:aiocache"
)

ALICE = "alice-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
BOB = "bob-1a2b3c4d5e6f708192a3b4c5d6e7f8091"


def keyed(key: str, api_key: str | None = None) -> dict[str, str]:
    headers = {"Idempotency-Key": key}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def new_key() -> str:
    return f"order-{uuid.uuid4()}"


async def test_a_repeat_gets_the_same_job_as_it_is_now(mode: str, namespace: str) -> None:
    key = new_key()
    async with served_for(settings_in(mode, namespace)) as (_, client):
        first = await client.post("/jobs/echo", json={"message": "once"}, headers=keyed(key))
        assert first.status_code == 202, first.text
        assert "idempotent-replayed" not in first.headers
        job_id = first.json()["id"]
        if mode == "local":
            await finished_record(client, job_id)
        repeat = await client.post("/jobs/echo", json={"message": "once"}, headers=keyed(key))
        assert repeat.status_code == 200, repeat.text
        assert repeat.headers["idempotent-replayed"] == "true"
        assert repeat.headers["location"] == first.headers["location"] == f"/jobs/{job_id}"
        assert repeat.json() == (await client.get(f"/jobs/{job_id}")).json()
        assert repeat.json()["status"] == ("succeeded" if mode == "local" else "queued")
        listed = (await client.get("/jobs")).json()["jobs"]
        assert [job["id"] for job in listed] == [job_id]


async def test_the_same_parameters_spelled_otherwise_are_the_same_request(
    mode: str, namespace: str
) -> None:
    key = new_key()
    async with served_for(settings_in(mode, namespace)) as (_, client):
        first = await client.post("/jobs/text_stats", json={"text": "a b"}, headers=keyed(key))
        # The same validated parameters: the default written out, the fields in another order.
        same = {"top": 5, "text": "a b"}
        repeat = await client.post("/jobs/text_stats", json=same, headers=keyed(key))
        assert (first.status_code, repeat.status_code) == (202, 200)
        assert repeat.json()["id"] == first.json()["id"]


async def test_the_same_key_with_another_request_is_422(mode: str, namespace: str) -> None:
    key = new_key()
    async with served_for(settings_in(mode, namespace)) as (_, client):
        first = await client.post("/jobs/echo", json={"message": "a"}, headers=keyed(key))
        assert first.status_code == 202
        for method_path, body, query in (
            ("/jobs/echo", {"message": "b"}, {}),  # another body
            ("/jobs/fail", {"message": "a"}, {}),  # another job type
            ("/jobs/echo", {"message": "a"}, {"then": "1"}),  # another query
            ("/jobs/echo/batch", [{"message": "a"}], {}),  # a batch of the same
        ):
            other = await client.post(method_path, json=body, params=query, headers=keyed(key))
            assert other.status_code == 422, (method_path, body, query)
            assert other.json()["detail"].startswith(
                "Idempotency-Key was already used with a different request"
            )
        assert len((await client.get("/jobs")).json()["jobs"]) == 1


async def test_twenty_parallel_repeats_make_exactly_one_job(namespace: str) -> None:
    """Two api processes' worth (two apps on one Redis) receive 20 copies of one request at
    once: one claims the key and makes the job; every other answers with that job."""
    key = new_key()
    settings = settings_in("redis", namespace, api_keys=ALICE)
    async with AsyncExitStack() as stack:
        clients = [(await stack.enter_async_context(served_for(settings)))[1] for _ in range(2)]
        answers = await asyncio.gather(
            *(
                clients[number % 2].post(
                    "/jobs/echo", json={"message": "once"}, headers=keyed(key, ALICE)
                )
                for number in range(20)
            )
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200] * 19 + [202], [answer.text for answer in answers]
        assert len({answer.json()["id"] for answer in answers}) == 1
        with redis_client(QUEUE_DB) as queue, redis_client(CACHE_DB) as cache:
            assert queue.zcard(Keys(namespace).queue("default")) == 1
            assert len(list(cache.scan_iter(match=f"{namespace}:job:*"))) == 1
        listed = await clients[0].get("/jobs", headers={"Authorization": f"Bearer {ALICE}"})
        assert len(listed.json()["jobs"]) == 1


async def test_keys_of_different_callers_never_collide(mode: str, namespace: str) -> None:
    key = new_key()
    async with served_for(settings_in(mode, namespace, api_keys=f"{ALICE},{BOB}")) as (_, client):
        alices = await client.post("/jobs/echo", json={"message": "x"}, headers=keyed(key, ALICE))
        bobs = await client.post("/jobs/echo", json={"message": "x"}, headers=keyed(key, BOB))
        assert (alices.status_code, bobs.status_code) == (202, 202)
        assert alices.json()["id"] != bobs.json()["id"]
        other_body = await client.post("/jobs/echo", json={"message": "y"}, headers=keyed(key, BOB))
        assert other_body.status_code == 422, "BOB's key is his own"


async def test_the_key_is_stored_hashed_and_never_logged(
    namespace: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    key = f"raw-key-{uuid.uuid4().hex}"
    async with served_for(settings_in("redis", namespace, log_level="DEBUG")) as (_, client):
        caplog.set_level(logging.DEBUG)  # after the app configured its logging as it started
        for body in ({"message": "a"}, {"message": "a"}, {"message": "b"}):
            await client.post("/jobs/echo", json=body, headers=keyed(key))
        await client.post("/jobs/echo/batch", json=[body], headers=keyed(key))
    with redis_client(QUEUE_DB) as queue, redis_client(CACHE_DB) as cache:
        stored = {
            name: client.dump(name) or b""
            for client in (queue, cache)
            for name in client.scan_iter(match=f"{namespace}:*")
        }
        assert f"{namespace}:idempotency:open:{digest(key)}" in stored
        assert 86_000 < cache.ttl(f"{namespace}:idempotency:open:{digest(key)}") <= 86_400
    assert not [name for name, value in stored.items() if key in name or key.encode() in value]
    # jobcache's loggers write to stderr themselves; any other logger reaches caplog.
    logged = capfd.readouterr().err + caplog.text
    assert "submitted" in logged
    assert key not in logged


async def test_a_failed_request_gives_its_key_up_for_a_retry(mode: str, namespace: str) -> None:
    key = new_key()
    settings = settings_in(mode, namespace, api_keys=ALICE, quota_jobs_in_flight=1)
    async with served_for(settings) as (_, client):
        busy = await client.post(
            "/jobs/sleep", json={"seconds": 30}, headers=keyed(new_key(), ALICE)
        )
        assert busy.status_code == 202
        refused = await client.post("/jobs/echo", json={"message": "x"}, headers=keyed(key, ALICE))
        assert refused.status_code == 429
        cancel = await client.post(
            f"/jobs/{busy.json()['id']}/cancel", headers={"Authorization": f"Bearer {ALICE}"}
        )
        assert cancel.status_code == 200
        retried = await client.post("/jobs/echo", json={"message": "x"}, headers=keyed(key, ALICE))
        assert retried.status_code == 202, retried.text
        repeat = await client.post("/jobs/echo", json={"message": "x"}, headers=keyed(key, ALICE))
        assert (repeat.status_code, repeat.json()["id"]) == (200, retried.json()["id"])


async def test_a_batch_repeat_answers_with_all_its_jobs(mode: str, namespace: str) -> None:
    key = new_key()
    body = [{"message": f"m{number}"} for number in range(4)]
    async with served_for(settings_in(mode, namespace)) as (_, client):
        first = await client.post("/jobs/echo/batch", json=body, headers=keyed(key))
        assert first.status_code == 202
        repeat = await client.post("/jobs/echo/batch", json=body, headers=keyed(key))
        assert repeat.status_code == 200
        assert repeat.headers["idempotent-replayed"] == "true"
        ids = [job["id"] for job in first.json()["jobs"]]
        assert [job["id"] for job in repeat.json()["jobs"]] == ids
        assert len((await client.get("/jobs")).json()["jobs"]) == 4


async def test_a_malformed_key_is_422_and_queues_nothing(mode: str, namespace: str) -> None:
    async with served_for(settings_in(mode, namespace)) as (_, client):
        for key in ("", "x" * 256, "has space", "tab\there"):
            response = await client.post("/jobs/echo", json={"message": "x"}, headers=keyed(key))
            assert response.status_code == 422, repr(key)
            assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        assert (await client.get("/jobs")).json()["jobs"] == []
        longest = await client.post("/jobs/echo", json={"message": "x"}, headers=keyed("~" * 255))
        assert longest.status_code == 202


async def test_a_repeat_while_the_first_is_under_way_or_after_its_job_is_gone_is_409(
    mode: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.submission.REPLAY_WAIT", 0.2)
    body = {"message": "x"}
    async with served_for(settings_in(mode, namespace)) as (services, client):
        # A first request that claimed its key and has not recorded its job yet.
        pending = new_key()
        request = IdempotentRequest.of(pending, "echo", body, [])
        claim = Claim(
            job_ids=[new_job_id()], fingerprint=request.fingerprint, claimed_at=time.time()
        )
        assert await services.backend.idempotency.claim(None, request.key_digest, claim) is None
        under_way = await client.post("/jobs/echo", json=body, headers=keyed(pending))
        assert under_way.status_code == 409
        assert "still under way" in under_way.json()["detail"]
        assert under_way.headers["Retry-After"] == "1"

        gone = new_key()
        first = await client.post("/jobs/echo", json=body, headers=keyed(gone))
        assert (await client.delete(f"/jobs/{first.json()['id']}")).status_code == 204
        monkeypatch.setattr("shared.submission.UNDER_WAY_LIMIT", 0.0)
        repeat = await client.post("/jobs/echo", json=body, headers=keyed(gone))
        assert repeat.status_code == 409
        assert f"job {first.json()['id']}) is gone" in repeat.json()["detail"]
        assert "Retry-After" not in repeat.headers, "a repeat cannot succeed: no Retry-After"


async def test_a_repeat_waits_for_the_first_request_to_record_its_job(
    mode: str, namespace: str
) -> None:
    """The first request claimed its key and records its job a moment later: the repeat,
    which came in between, answers with that job once it is there."""
    key = new_key()
    body = {"message": "x"}
    async with served_for(settings_in(mode, namespace)) as (services, client):
        request = IdempotentRequest.of(key, "echo", body, [])
        job_id = new_job_id()
        claim = Claim(job_ids=[job_id], fingerprint=request.fingerprint, claimed_at=time.time())
        assert await services.backend.idempotency.claim(None, request.key_digest, claim) is None
        repeat = asyncio.ensure_future(client.post("/jobs/echo", json=body, headers=keyed(key)))
        await asyncio.sleep(0.1)
        assert not repeat.done()
        await services.backend.records.add([JobRecord(id=job_id, name="echo")], 60)
        answer = await asyncio.wait_for(repeat, 5)
        assert (answer.status_code, answer.json()["id"]) == (200, job_id)


def test_the_fingerprint_is_the_job_type_parameters_and_query() -> None:
    same = IdempotentRequest.of("k", "echo", {"a": 1, "b": [1, 2]}, [("x", "1"), ("y", "2")])
    reordered = IdempotentRequest.of("k", "echo", {"b": [1, 2], "a": 1}, [("y", "2"), ("x", "1")])
    assert same == reordered
    assert same.key_digest == digest("k") != "k"
    for other in (
        IdempotentRequest.of("k", "fail", {"a": 1, "b": [1, 2]}, [("x", "1"), ("y", "2")]),
        IdempotentRequest.of("k", "echo", {"a": 2, "b": [1, 2]}, [("x", "1"), ("y", "2")]),
        IdempotentRequest.of("k", "echo", {"a": 1, "b": [1, 2]}, [("x", "1")]),
        IdempotentRequest.of("k", "echo", [{"a": 1, "b": [1, 2]}], [("x", "1"), ("y", "2")]),
    ):
        assert other.fingerprint != same.fingerprint
