"""API keys and quotas: each key sees only its own jobs; over a quota a key gets 429."""

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import client_for, served_for, settings_for_test

ALICE = "alice-0c1f6d3b9a8e47f2b5d4c3a2e1f0a9b8"
BOB = "bob-7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def client(namespace: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for_test(
        cache_backend="local",
        cache_namespace=namespace,
        cpu_workers=1,
        api_keys=f"{ALICE}, {BOB}",
        quota_jobs_in_flight=2,
    )
    async with client_for(settings) as served:
        yield served


async def test_missing_or_wrong_key_is_401(client: httpx.AsyncClient) -> None:
    missing = await client.post("/jobs/echo", json={"message": "hi"})
    wrong = await client.post("/jobs/echo", json={"message": "hi"}, headers=bearer("nope"))
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "API key" in response.json()["detail"]
    assert (await client.get(f"/jobs/{'A' * 22}")).status_code == 401


async def test_a_key_reads_its_own_jobs_and_not_anothers(client: httpx.AsyncClient) -> None:
    submitted = await client.post("/jobs/echo", json={"message": "mine"}, headers=bearer(ALICE))
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]
    assert "owner" not in submitted.json()

    own = await client.get(f"/jobs/{job_id}", params={"wait": 5}, headers=bearer(ALICE))
    assert own.json()["result"] == {"message": "mine"}
    assert "owner" not in own.json()

    unknown = await client.get(f"/jobs/{'Z' * 22}", headers=bearer(BOB))
    for method, path in (
        ("GET", f"/jobs/{job_id}"),
        ("GET", f"/jobs/{job_id}/events"),
        ("POST", f"/jobs/{job_id}/cancel"),
        ("DELETE", f"/jobs/{job_id}"),
    ):
        other = await client.request(method, path, headers=bearer(BOB))
        assert other.status_code == 404
        assert other.json()["detail"] == unknown.json()["detail"].replace("Z" * 22, job_id)


async def test_jobs_in_flight_over_the_quota_are_429_until_one_finishes(
    client: httpx.AsyncClient,
) -> None:
    running = [
        (await client.post("/jobs/sleep", json={"seconds": 30}, headers=bearer(ALICE))).json()
        for _ in range(2)
    ]
    refused = await client.post("/jobs/echo", json={"message": "3rd"}, headers=bearer(ALICE))
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert "unfinished jobs" in refused.json()["detail"]

    other = await client.post("/jobs/echo", json={"message": "bob"}, headers=bearer(BOB))
    assert other.status_code == 202, "one key's quota must not hold back another key"

    await client.post(f"/jobs/{running[0]['id']}/cancel", headers=bearer(ALICE))
    again = await client.post("/jobs/echo", json={"message": "now"}, headers=bearer(ALICE))
    assert again.status_code == 202
    job_ids = [again.json()["id"]]
    own = await client.get(f"/jobs/{job_ids[0]}", params={"wait": 5}, headers=bearer(ALICE))
    assert own.json()["status"] == "succeeded"
    await client.post(f"/jobs/{running[1]['id']}/cancel", headers=bearer(ALICE))


async def test_submissions_per_second_over_the_quota_are_429(namespace: str) -> None:
    settings = settings_for_test(
        cache_backend="local",
        cache_namespace=namespace,
        cpu_workers=1,
        api_keys=ALICE,
        quota_submissions_per_second=3,
    )
    async with client_for(settings) as client:
        answers = [
            (await client.post("/jobs/echo", json={"message": "x"}, headers=bearer(ALICE)))
            for _ in range(10)
        ]
    codes = [answer.status_code for answer in answers]
    # Ten submissions in well under a second span at most two one-second windows.
    assert codes.count(202) <= 6 and codes.count(429) >= 4
    assert all(a.headers["Retry-After"] == "1" for a in answers if a.status_code == 429)


async def test_keys_never_reach_the_logs(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for key in (ALICE, "wrong-key-123456"):
        await client.post("/jobs/echo", json={"message": "hi"}, headers=bearer(key))
    assert ALICE not in caplog.text
    assert "wrong-key-123456" not in caplog.text


async def test_a_job_seen_finished_has_already_given_its_quota_back(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that waits for its job and submits the next at once is never refused for the
    job it saw finish: the slot is free before the end is recorded (a slow release, here
    0.3 s, made a 429 right after `?wait` when it came after)."""
    settings = settings_for_test(
        cache_backend="local",
        cache_namespace=namespace,
        cpu_workers=1,
        api_keys=ALICE,
        quota_jobs_in_flight=1,
    )
    async with served_for(settings) as (services, client):
        ledger = services.backend.quotas
        release = ledger.release

        async def slow_release(owner: str, job_id: str) -> None:
            await asyncio.sleep(0.3)
            await release(owner, job_id)

        monkeypatch.setattr(ledger, "release", slow_release)
        for message in ("first", "second", "third"):
            submitted = await client.post(
                "/jobs/echo", json={"message": message}, headers=bearer(ALICE)
            )
            assert submitted.status_code == 202, submitted.text
            done = await client.get(
                f"/jobs/{submitted.json()['id']}", params={"wait": 10}, headers=bearer(ALICE)
            )
            assert done.json()["status"] == "succeeded"
