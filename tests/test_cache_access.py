"""Who may use the response cache once API_KEYS is set, in both modes: GET /cached needs a key,
DELETE /cached an admin key (ADMIN_API_KEYS), and a cached endpoint of a user's answers its own
authentication's 401 before the cache is asked; without keys, all stays open."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, Depends
from pydantic import BaseModel

from api.deps import CallerDep
from api.main import create_app
from api.response_cache import cache_response
from shared.settings import Settings
from tests.conftest import settings_in

# aiocache 0.12 closes its Redis client with redis-py's deprecated close(), when the app stops.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning:aiocache"
)

ALICE = "alice-3f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"
BOB = "bob-9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
ADMIN = "admin-1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f"
QUERY = {"rounds": 1000, "seed": "access"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def serving(
    settings: Settings, router: APIRouter | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """jobcache's app (with a user's routes, if given) in its lifespan, and a client of it."""
    app = create_app(settings)
    if router is not None:
        app.include_router(router)
    async with (
        LifespanManager(app, startup_timeout=15, shutdown_timeout=15) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://jobcache.test"
        ) as client,
    ):
        yield client


def with_keys(mode: str, namespace: str) -> Settings:
    return settings_in(mode, namespace, api_keys=f"{ALICE},{BOB}", admin_api_keys=ADMIN)


def assert_refused(response: httpx.Response, status: int) -> None:
    """An error answer of the api's own shape, carrying nothing of a cached response."""
    assert response.status_code == status, response.text
    assert set(response.json()) == {"detail"}
    assert "x-cache" not in response.headers and "etag" not in response.headers
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_without_api_keys_anyone_may_read_and_empty_the_cache(
    mode: str, namespace: str
) -> None:
    async with serving(settings_in(mode, namespace)) as client:
        assert (await client.get("/cached", params=QUERY)).status_code == 200
        assert (await client.get("/cached", params=QUERY)).headers["x-cache"] == "hit"
        dropped = await client.delete("/cached")
    assert (dropped.status_code, dropped.json()) == (200, {"dropped": 1})


async def test_with_api_keys_a_cached_answer_needs_a_key_even_when_stored(
    mode: str, namespace: str
) -> None:
    async with serving(with_keys(mode, namespace)) as client:
        assert_refused(await client.get("/cached", params=QUERY), 401)
        filled = await client.get("/cached", params=QUERY, headers=bearer(ALICE))
        assert filled.headers["x-cache"] == "miss"
        etag = {"If-None-Match": filled.headers["etag"]}

        for headers in ({}, bearer("not-a-key"), etag, {**bearer("not-a-key"), **etag}):
            assert_refused(await client.get("/cached", params=QUERY, headers=headers), 401)
            head = await client.head("/cached", params=QUERY, headers=headers)
            assert (head.status_code, head.headers.get("x-cache")) == (401, None)

        for key in (BOB, ADMIN):  # any key, an admin key too, reads what ALICE's request stored
            hit = await client.get("/cached", params=QUERY, headers=bearer(key))
            assert (hit.headers["x-cache"], hit.content) == ("hit", filled.content)


async def test_emptying_the_cache_needs_an_admin_key(mode: str, namespace: str) -> None:
    async with serving(with_keys(mode, namespace)) as client:
        await client.get("/cached", params=QUERY, headers=bearer(ALICE))
        assert_refused(await client.delete("/cached"), 401)
        assert_refused(await client.delete("/cached", headers=bearer("not-a-key")), 401)
        forbidden = await client.delete("/cached", headers=bearer(ALICE))
        assert_refused(forbidden, 403)
        assert "admin key" in forbidden.json()["detail"]
        kept = await client.get("/cached", params=QUERY, headers=bearer(BOB))
        assert kept.headers["x-cache"] == "hit", "a refused invalidation dropped nothing"

        dropped = await client.delete("/cached", headers=bearer(ADMIN))
        assert (dropped.status_code, dropped.json()) == (200, {"dropped": 1})
        again = await client.get("/cached", params=QUERY, headers=bearer(ALICE))
        assert again.headers["x-cache"] == "miss"


async def test_with_api_keys_and_no_admin_key_no_key_may_empty_the_cache(
    mode: str, namespace: str
) -> None:
    async with serving(settings_in(mode, namespace, api_keys=ALICE)) as client:
        assert_refused(await client.delete("/cached", headers=bearer(ALICE)), 403)


async def test_an_admin_key_is_an_api_key_with_jobs_of_its_own(mode: str, namespace: str) -> None:
    async with serving(with_keys(mode, namespace)) as client:
        submitted = await client.post("/jobs/echo", json={"message": "hi"}, headers=bearer(ADMIN))
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        assert (await client.get(f"/jobs/{job_id}", headers=bearer(ADMIN))).status_code == 200
        assert (await client.get(f"/jobs/{job_id}", headers=bearer(ALICE))).status_code == 404
        listed = await client.get("/jobs", headers=bearer(ADMIN))
        assert [job["id"] for job in listed.json()["jobs"]] == [job_id]


# docs/caching.md's user-scoped endpoint, authenticated by jobcache's keys.


class User(BaseModel):
    id: str


class Order(BaseModel):
    user_id: str
    call: int


def orders_router(calls: list[str]) -> APIRouter:
    router = APIRouter()

    async def current_user(caller: CallerDep) -> User:
        assert caller.owner is not None
        return User(id=caller.owner)

    async def load_orders(user_id: str) -> list[Order]:
        calls.append(user_id)
        return [Order(user_id=user_id, call=len(calls))]

    @router.get("/me/orders")
    @cache_response(namespace="orders", ttl=30, vary=["user"])  # one response per caller
    async def my_orders(user: Annotated[User, Depends(current_user)]) -> list[Order]:
        return await load_orders(user.id)

    return router


async def test_a_user_scoped_cached_endpoint_answers_401_before_the_cache_is_asked(
    mode: str, namespace: str
) -> None:
    calls: list[str] = []
    async with serving(with_keys(mode, namespace), orders_router(calls)) as client:
        alices = [await client.get("/me/orders", headers=bearer(ALICE)) for _ in range(2)]
        assert [r.headers["x-cache"] for r in alices] == ["miss", "hit"]
        etag = {"If-None-Match": alices[0].headers["etag"]}

        for headers in ({}, bearer("not-a-key"), etag, {**bearer("not-a-key"), **etag}):
            assert_refused(await client.get("/me/orders", headers=headers), 401)

        bobs = await client.get("/me/orders", headers=bearer(BOB))
        revalidated = await client.get("/me/orders", headers={**bearer(ALICE), **etag})
    assert bobs.headers["x-cache"] == "miss"
    assert bobs.json()[0]["user_id"] != alices[0].json()[0]["user_id"]
    assert revalidated.status_code == 304
    assert len(calls) == 2, "only ALICE's first request and BOB's ran the endpoint"
