"""The bare FastAPI app of the one-at-a-time HTTP benchmark (bench/bare_api.py) answers the same
two routes as the api, with records of the same shape and size: a baseline that answered less
would flatter the api's ratio."""

from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from bench.bare_api import app as bare_app

MESSAGE = "the same message to both"
SIZE_SLACK = 8
"""Bytes a record may differ by: a timestamp whose microseconds are 0 is written shorter."""


async def one_job(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
    """POST /jobs/echo, then GET /jobs/{id}?wait=10, as the benchmark's client does."""
    submitted = await client.post("/jobs/echo", json={"message": MESSAGE})
    assert submitted.status_code == 202, submitted.text
    finished = await client.get(f"/jobs/{submitted.json()['id']}", params={"wait": 10})
    assert finished.status_code == 200, finished.text
    return submitted, finished


def same_shape(bare: httpx.Response, api: httpx.Response) -> None:
    bare_record: dict[str, Any] = bare.json()
    api_record: dict[str, Any] = api.json()
    assert list(bare_record) == list(api_record)
    assert bare_record["status"] == api_record["status"]
    assert bare_record["result"] == api_record["result"]
    assert abs(len(bare.content) - len(api.content)) <= SIZE_SLACK, (bare.text, api.text)


async def test_the_bare_baseline_answers_as_the_api_does(local_client: httpx.AsyncClient) -> None:
    async with (
        LifespanManager(bare_app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://bare.test"
        ) as bare_client,
    ):
        bare_submitted, bare_finished = await one_job(bare_client)
    api_submitted, api_finished = await one_job(local_client)

    same_shape(bare_submitted, api_submitted)
    same_shape(bare_finished, api_finished)
    assert bare_finished.json()["result"] == {"message": MESSAGE}
    assert bare_submitted.headers["location"] == f"/jobs/{bare_submitted.json()['id']}"
    assert api_submitted.headers["location"] == f"/jobs/{api_submitted.json()['id']}"
