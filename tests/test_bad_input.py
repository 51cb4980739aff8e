"""Bad input gets a clear 4xx, is never queued, and leaves the service healthy."""

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import client_for, finished_record, settings_for_test

JSON = {"Content-Type": "application/json"}
LIMIT = 4096


@pytest.fixture
async def client(namespace: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for_test(
        cache_backend="local", cache_namespace=namespace, cpu_workers=1, max_request_bytes=LIMIT
    )
    async with client_for(settings) as served:
        yield served
    # Every test below ends by checking the service still works.


async def still_healthy(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    job_id = (await client.post("/jobs/echo", json={"message": "after"})).json()["id"]
    assert (await finished_record(client, job_id))["result"] == {"message": "after"}


async def test_body_over_the_limit_is_413_naming_the_setting(client: httpx.AsyncClient) -> None:
    body = json.dumps({"message": "x" * LIMIT}).encode()
    response = await client.post("/jobs/echo", content=body, headers=JSON)
    assert response.status_code == 413
    assert "MAX_REQUEST_BYTES" in response.json()["detail"]
    await still_healthy(client)


async def test_chunked_body_over_the_limit_is_cut_off_with_413(client: httpx.AsyncClient) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"message": "'
        for _ in range(1000):
            sent += 1024
            yield b"x" * 1024
        yield b'"}'

    response = await client.post("/jobs/echo", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert sent < 1000 * 1024, "the whole body was read before it was refused"
    await still_healthy(client)


async def test_deeply_nested_json_is_a_400(client: httpx.AsyncClient) -> None:
    depth = 1500
    body = b'{"message": ' + b"[" * depth + b"]" * depth + b"}"
    response = await client.post("/jobs/echo", content=body, headers=JSON)
    assert response.status_code in (400, 422)
    assert response.json()["detail"]
    await still_healthy(client)


async def test_unicode_nul_and_newlines_round_trip_exactly(client: httpx.AsyncClient) -> None:
    message = "nul:\x00 crlf:\r\n tab:\t emoji:😀 rtl:\u202e zwj:\u200d bom:\ufeff é"
    job_id = (await client.post("/jobs/echo", json={"message": message})).json()["id"]
    assert (await finished_record(client, job_id))["result"] == {"message": message}


async def test_lone_surrogate_is_refused_with_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/jobs/echo", content=b'{"message": "\\ud800"}', headers=JSON)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "message"]
    await still_healthy(client)


@pytest.mark.parametrize(
    "body",
    [b"", b"null", b"[]", b'"text"', b"{", b'{"message": 1e999999}', b"\xff\xfe"],
)
async def test_malformed_bodies_are_4xx(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/jobs/echo", content=body, headers=JSON)
    assert 400 <= response.status_code < 500
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "job_id", ["..%2F..%2Fetc", "x" * 23, "abc def", "%00" * 22, "ÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄÄ"]
)
async def test_ids_not_of_our_format_are_404(client: httpx.AsyncClient, job_id: str) -> None:
    response = await client.get(f"/jobs/{job_id}")
    assert response.status_code == 404
