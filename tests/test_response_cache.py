"""Caching an endpoint with `@cache_response`, as a client sees it, on both backends: hits and
misses, keys, ETag and 304, what is never stored, stampedes, invalidation and its bound."""

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import pytest
import redis
import redis.asyncio
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, Depends, Header, HTTPException, Response
from pydantic import BaseModel

from api.main import create_app
from api.response_cache import ResponseCache, cache_response
from api.response_cache.breaker import CircuitBreaker
from api.response_cache.cache import Produced
from api.response_cache.entry import cached_response, encode
from api.response_cache.near import NearCache
from shared.errors import BackendUnavailableError
from shared.keys import ResponseKeys
from shared.responses.memory import MemoryResponseStore
from shared.responses.redis import RedisResponseStore
from shared.settings import Settings
from tests.conftest import eventually

# aiocache 0.12 closes its Redis client with redis-py's deprecated close(), when the app stops.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning:aiocache"
)

REDIS_URL = "redis://127.0.0.1:6379"
CACHE_DB = 1
QUEUE_DB = 0


@dataclass
class Calls:
    """How many times the endpoints really ran, across every app that shares it."""

    count: int = 0


class Item(BaseModel):
    id: int
    detail: str
    call: int
    """Which run of the endpoint made this answer: equal calls mean a cached answer."""


def caller(x_user: Annotated[str | None, Header()] = None) -> str:
    if x_user is None:
        raise HTTPException(status_code=401, detail="say who you are in X-User")
    return x_user


def sample_router(calls: Calls, work_seconds: float = 0.0) -> APIRouter:
    """Endpoints as a user of jobcache would write them; each counts its runs in `calls`."""
    router = APIRouter()

    async def run() -> int:
        calls.count += 1
        number = calls.count
        if work_seconds:
            await asyncio.sleep(work_seconds)
        return number

    @router.get("/items/{item_id}")
    @router.head("/items/{item_id}")
    @router.post("/items/{item_id}")
    @cache_response(namespace="items", ttl=60)
    async def read_item(item_id: int, detail: str = "short") -> Item:
        return Item(id=item_id, detail=detail, call=await run())

    @router.get("/archive/{item_id}")
    @cache_response(namespace="items-archive", ttl=60)
    async def read_archived_item(item_id: int) -> Item:
        return Item(id=item_id, detail="archived", call=await run())

    @router.get("/brief")
    @cache_response(namespace="brief", ttl=1)
    async def read_brief_item() -> Item:
        return Item(id=0, detail="brief", call=await run())

    @router.get("/me")
    @cache_response(namespace="profiles", ttl=60, vary=["user"])
    async def read_profile(user: Annotated[str, Depends(caller)]) -> Item:
        return Item(id=0, detail=f"profile of {user}", call=await run())

    @router.get("/missing")
    @cache_response(namespace="missing", ttl=60)
    async def read_missing() -> Item:
        await run()
        raise HTTPException(status_code=404, detail="no such item")

    @router.get("/teapot")
    @cache_response(namespace="teapot", ttl=60)
    async def read_teapot(response: Response) -> Item:
        response.status_code = 418
        return Item(id=0, detail="teapot", call=await run())

    @router.get("/session")
    @cache_response(namespace="session", ttl=60)
    async def start_session(response: Response) -> Item:
        response.set_cookie("session", uuid.uuid4().hex)
        response.headers["Cache-Control"] = "no-store"
        return Item(id=0, detail="session", call=await run())

    @router.get("/blocking")
    @cache_response(namespace="blocking", ttl=60)
    def read_with_blocking_code() -> Item:
        calls.count += 1
        return Item(id=0, detail="from a thread", call=calls.count)

    return router


def settings_for(backend: str, namespace: str, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        cache_backend=backend,
        cache_namespace=namespace,
        cpu_workers=1,
        **overrides,
    )


def delete_namespace_keys(namespace: str) -> None:
    """Each test removes only what it created: the keys under its own namespace."""
    for db in (QUEUE_DB, CACHE_DB):
        with redis.Redis.from_url(REDIS_URL, db=db) as client:
            keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            if keys:
                client.unlink(*keys)


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest, namespace: str) -> Iterator[str]:
    yield request.param
    if request.param == "redis":
        delete_namespace_keys(namespace)


@dataclass
class Served:
    client: httpx.AsyncClient
    responses: ResponseCache


@asynccontextmanager
async def serving(settings: Settings, router: APIRouter) -> AsyncIterator[Served]:
    """jobcache's app with the sample endpoints, in its lifespan, and a client of it."""
    app = create_app(settings)
    app.include_router(router)
    async with (
        LifespanManager(app, startup_timeout=15, shutdown_timeout=15) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://jobcache.test"
        ) as client,
    ):
        yield Served(client, app.state.services.response_cache)


async def test_the_second_request_is_a_hit_with_the_same_body_and_a_strong_etag(
    backend: str, namespace: str
) -> None:
    calls = Calls()
    async with serving(settings_for(backend, namespace), sample_router(calls)) as served:
        first = await served.client.get("/items/7")
        second = await served.client.get("/items/7")
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert second.content == first.content
    assert second.json() == {"id": 7, "detail": "short", "call": 1}
    assert first.headers["etag"] == second.headers["etag"]
    assert first.headers["etag"].startswith('"') and not first.headers["etag"].startswith("W/")
    assert first.headers["cache-control"] == "max-age=60"
    assert second.headers["cache-control"] in ("max-age=59", "max-age=60")
    assert second.headers["content-type"] == "application/json"
    assert calls.count == 1


async def test_the_metrics_count_hits_and_misses_by_namespace(backend: str, namespace: str) -> None:
    async with serving(settings_for(backend, namespace), sample_router(Calls())) as served:
        for _ in range(3):
            await served.client.get("/items/8")
        metrics = (await served.client.get("/metrics")).text
    counted = {
        found.group(1): float(found.group(2))
        for line in metrics.splitlines()
        if line.startswith("jobcache_response_cache_requests_total{")
        and 'namespace="items"' in line
        and (found := re.search(r'result="(\w+)".*\} ([\d.]+)$', line))
    }
    assert counted == {"hit": 2.0, "miss": 1.0}


async def test_query_parameters_in_another_order_share_a_key_and_other_values_do_not(
    backend: str, namespace: str
) -> None:
    calls = Calls()
    async with serving(settings_for(backend, namespace), sample_router(calls)) as served:
        first = await served.client.get("/items/1?detail=long&extra=a&extra=b")
        reordered = await served.client.get("/items/1?extra=a&detail=long&extra=b")
        other_value = await served.client.get("/items/1?detail=long&extra=b&extra=a")
        other_path = await served.client.get("/items/2?detail=long&extra=a&extra=b")
    assert reordered.headers["x-cache"] == "hit"
    assert reordered.json() == first.json()
    assert other_value.headers["x-cache"] == "miss"
    assert other_path.headers["x-cache"] == "miss"
    assert calls.count == 3


async def test_a_client_holding_the_etag_gets_304_without_a_body(
    backend: str, namespace: str
) -> None:
    async with serving(settings_for(backend, namespace), sample_router(Calls())) as served:
        etag = (await served.client.get("/items/3")).headers["etag"]
        for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            revalidated = await served.client.get(
                "/items/3", headers={"If-None-Match": if_none_match}
            )
            assert revalidated.status_code == 304, if_none_match
            assert revalidated.content == b""
            assert revalidated.headers["etag"] == etag
            assert revalidated.headers["cache-control"].startswith("max-age=")
        changed = await served.client.get("/items/3", headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200
    assert changed.headers["etag"] == etag


async def test_head_is_answered_from_the_get_response_without_a_body(
    backend: str, namespace: str
) -> None:
    calls = Calls()
    async with serving(settings_for(backend, namespace), sample_router(calls)) as served:
        got = await served.client.get("/items/4")
        head = await served.client.head("/items/4")
    assert head.status_code == 200
    assert head.headers["x-cache"] == "hit"
    assert head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["etag"] == got.headers["etag"]
    assert calls.count == 1


async def test_errors_other_statuses_cookies_and_other_methods_are_never_stored(
    backend: str, namespace: str
) -> None:
    calls = Calls()
    async with serving(settings_for(backend, namespace), sample_router(calls)) as served:
        missing = [await served.client.get("/missing") for _ in range(2)]
        teapots = [await served.client.get("/teapot") for _ in range(2)]
        sessions = [await served.client.get("/session") for _ in range(2)]
        posted = [await served.client.post("/items/1") for _ in range(2)]
        got = await served.client.get("/items/1")
    assert [r.status_code for r in missing] == [404, 404]
    assert [r.status_code for r in teapots] == [418, 418]
    assert [r.headers["x-cache"] for r in teapots] == ["miss", "miss"]
    assert "cache-control" not in teapots[1].headers
    assert [r.headers["x-cache"] for r in sessions] == ["miss", "miss"]
    assert sessions[0].cookies["session"] != sessions[1].cookies["session"]
    assert sessions[1].headers["cache-control"] == "no-store"
    assert "etag" not in sessions[1].headers
    assert [r.json()["call"] for r in posted] == [7, 8]
    assert "x-cache" not in posted[1].headers
    assert got.headers["x-cache"] == "miss"
    assert calls.count == 9


async def test_requests_waiting_on_an_answer_that_is_not_stored_never_get_it(
    backend: str, namespace: str
) -> None:
    """A response that sets a cookie belongs to its own request: the requests that missed the
    same key at the same time run the endpoint themselves instead of sharing it."""
    calls = Calls()
    router = sample_router(calls, work_seconds=0.1)
    async with serving(settings_for(backend, namespace), router) as served:
        sessions = await asyncio.gather(*(served.client.get("/session") for _ in range(5)))
    assert len({response.cookies["session"] for response in sessions}) == 5
    assert calls.count == 5


async def test_a_blocking_endpoint_is_cached_too(backend: str, namespace: str) -> None:
    calls = Calls()
    async with serving(settings_for(backend, namespace), sample_router(calls)) as served:
        first = await served.client.get("/blocking")
        second = await served.client.get("/blocking")
    assert second.headers["x-cache"] == "hit"
    assert second.json() == first.json() == {"id": 0, "detail": "from a thread", "call": 1}


async def test_a_response_that_depends_on_the_caller_is_never_served_to_another(
    backend: str, namespace: str
) -> None:
    calls = Calls()
    async with serving(settings_for(backend, namespace), sample_router(calls)) as served:
        seen: dict[str, list[httpx.Response]] = {"alice": [], "bob": []}
        for user in ("alice", "bob", "alice", "bob"):
            response = await served.client.get("/me", headers={"X-User": user})
            seen[user].append(response)
        anonymous = await served.client.get("/me")
    for user, responses in seen.items():
        assert [r.json()["detail"] for r in responses] == [f"profile of {user}"] * 2
        assert [r.headers["x-cache"] for r in responses] == ["miss", "hit"]
        assert responses[1].headers["cache-control"].startswith("private, max-age=")
    assert seen["alice"][0].headers["etag"] != seen["bob"][0].headers["etag"]
    assert anonymous.status_code == 401
    assert calls.count == 2


async def test_concurrent_misses_run_the_endpoint_once(backend: str, namespace: str) -> None:
    calls = Calls()
    router = sample_router(calls, work_seconds=0.2)
    async with serving(settings_for(backend, namespace), router) as served:
        responses = await asyncio.gather(*(served.client.get("/items/5") for _ in range(50)))
    assert calls.count == 1
    assert {r.status_code for r in responses} == {200}
    assert {r.content for r in responses} == {responses[0].content}
    assert sorted(r.headers["x-cache"] for r in responses) == ["hit"] * 49 + ["miss"]


async def test_concurrent_misses_across_api_processes_run_the_endpoint_once(
    namespace: str,
) -> None:
    """Three apps, each with its own near cache and single flight, share only Redis, as three
    api processes do; the requests that miss together are spread over them."""
    calls = Calls()
    router = sample_router(calls, work_seconds=0.3)
    try:
        async with AsyncExitStack() as stack:
            apps = [
                await stack.enter_async_context(serving(settings_for("redis", namespace), router))
                for _ in range(3)
            ]
            responses = await asyncio.gather(
                *(apps[i % 3].client.get("/items/6") for i in range(60))
            )
    finally:
        delete_namespace_keys(namespace)
    assert calls.count == 1
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["call"] for r in responses} == {1}


async def test_a_response_is_never_served_after_its_ttl(backend: str, namespace: str) -> None:
    """Requests for about twice the TTL (1 s): no hit may begin after the first answer's
    store plus the TTL, and a later miss shows the response did expire."""
    calls = Calls()
    async with serving(settings_for(backend, namespace), sample_router(calls)) as served:
        first = await served.client.get("/brief")
        stored_by = time.monotonic()
        assert first.headers["x-cache"] == "miss"
        late_hits: list[float] = []
        deadline = stored_by + 1.6
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = await served.client.get("/brief")
            assert int(response.headers["cache-control"].removeprefix("max-age=")) <= 1
            first_answer_again = response.json()["call"] == 1
            if response.headers["x-cache"] == "hit" and first_answer_again:
                late_hits += [started - stored_by] if started > stored_by + 1.0 else []
            await asyncio.sleep(0.01)
    assert late_hits == []
    assert calls.count >= 2


async def test_invalidating_a_namespace_drops_its_responses_but_no_neighbour(
    backend: str, namespace: str
) -> None:
    """`items-archive` shares the prefix `items`; the queue's and job records' keys live under
    the same CACHE_NAMESPACE; none of them may go."""
    calls = Calls()
    neighbours = [f"{namespace}:queue", f"{namespace}:job:kept", f"{namespace}:items:kept"]
    async with serving(settings_for(backend, namespace), sample_router(calls)) as served:
        if backend == "redis":
            with redis.Redis.from_url(REDIS_URL, db=CACHE_DB) as client:
                for key in neighbours:
                    client.set(key, "kept", ex=60)
        for path in ("/items/1", "/items/2?detail=long", "/archive/1"):
            await served.client.get(path)
        dropped = await served.responses.invalidate_namespace("items")
        after = [await served.client.get(p) for p in ("/items/1", "/items/2?detail=long")]
        archived = await served.client.get("/archive/1")
        if backend == "redis":
            with redis.Redis.from_url(REDIS_URL, db=CACHE_DB) as client:
                assert client.exists(*neighbours) == len(neighbours)
                archive_keys = list(client.scan_iter(match=f"{namespace}:response:items-archive:*"))
                assert len(archive_keys) == 1
    assert dropped == 2
    assert [r.headers["x-cache"] for r in after] == ["miss", "miss"]
    assert archived.headers["x-cache"] == "hit"


async def test_invalidation_needs_neither_keys_nor_flushdb(namespace: str) -> None:
    """Run by a Redis user that may not call KEYS, FLUSHDB or FLUSHALL: any of them would fail
    the invalidation instead of blocking or emptying a production Redis."""
    user, password = f"{namespace}-user", uuid.uuid4().hex
    with redis.Redis.from_url(REDIS_URL) as admin:
        admin.acl_setuser(
            user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
            commands=["+@all", "-keys", "-flushdb", "-flushall"],
        )  # fmt: skip
    client = redis.asyncio.Redis.from_url(REDIS_URL, db=CACHE_DB, username=user, password=password)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            await client.keys("*")
        responses = cache_on(client, namespace, near_seconds=1, store=None)
        for number in range(1200):  # more than one SCAN batch
            key = responses.keys.response("items", f"/items/{number}", "[]")
            await responses.serve("items", key, 60, 5, produce_body(b"stored"))
        assert await responses.invalidate_namespace("items") == 1200
        await responses.close()
    finally:
        await client.aclose()
        with redis.Redis.from_url(REDIS_URL) as admin:
            admin.acl_deluser(user)
        delete_namespace_keys(namespace)


async def test_invalidating_one_response_or_one_path_keeps_the_others(
    backend: str, namespace: str
) -> None:
    calls = Calls()
    paths = ["/items/1", "/items/1?detail=long", "/items/2", "/me"]
    async with serving(settings_for(backend, namespace), sample_router(calls)) as served:

        async def x_cache() -> list[str]:
            return [
                (await served.client.get(path, headers={"X-User": "alice"})).headers["x-cache"]
                for path in paths
            ]

        assert await x_cache() == ["miss"] * 4
        assert await served.responses.invalidate_response("items", "/items/1", {"detail": "long"})
        assert await x_cache() == ["hit", "miss", "hit", "hit"]
        assert await served.responses.invalidate_response("profiles", "/me", vary={"user": "alice"})
        assert await x_cache() == ["hit", "hit", "hit", "miss"]
        assert await served.responses.invalidate_path("items", "/items/1") == 2
        assert await x_cache() == ["miss", "miss", "hit", "hit"]
        assert await served.responses.invalidate_response("items", "/items/9") == 0


async def test_the_sample_endpoint_caches_and_drops_its_computations(
    backend: str, namespace: str
) -> None:
    async with serving(settings_for(backend, namespace), APIRouter()) as served:
        query = {"rounds": 1000, "seed": "sample"}
        first = await served.client.get("/cached", params=query)
        second = await served.client.get("/cached", params=query)
        dropped = await served.client.delete("/cached")
        third = await served.client.get("/cached", params=query)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert second.content == first.content
    assert dropped.json() == {"dropped": 1}
    assert third.headers["x-cache"] == "miss"
    assert third.json() == first.json() == {"rounds": 1000, "digest": first.json()["digest"]}


async def test_the_etag_of_a_miss_revalidates_on_the_next_request(
    backend: str, namespace: str
) -> None:
    """What docs/http-api.md's example does: keep the first answer's ETag and send it back."""
    async with serving(settings_for(backend, namespace), APIRouter()) as served:
        query = {"rounds": 1000, "seed": "revalidated"}
        miss = await served.client.get("/cached", params=query)
        revalidated = await served.client.get(
            "/cached", params=query, headers={"If-None-Match": miss.headers["etag"]}
        )
        hit = await served.client.get("/cached", params=query)
    assert miss.headers["x-cache"] == "miss"
    assert (revalidated.status_code, revalidated.content) == (304, b"")
    assert revalidated.headers["x-cache"] == "hit"
    assert revalidated.headers["etag"] == miss.headers["etag"] == hit.headers["etag"]
    assert hit.content == miss.content


async def test_a_miss_answers_what_its_hits_answer_but_x_cache_and_max_age(
    backend: str, namespace: str
) -> None:
    """An endpoint of a user's: the miss's answer and the stored one are the same bytes, with
    the same headers. Without the process's own copies, the hit is read back from the store
    (Redis in the redis mode), as another api process would read it."""
    settings = settings_for(backend, namespace, response_cache_near_seconds=0)
    async with serving(settings, sample_router(Calls())) as served:
        miss = await served.client.get("/items/11?detail=long")
        hit = await served.client.get("/items/11?detail=long")

    def headers(response: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in response.headers.items() if k not in ("x-cache", "cache-control")}

    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    assert hit.content == miss.content
    assert headers(hit) == headers(miss)


def test_the_cache_redis_is_the_queue_redis_unless_cache_redis_settings_name_another() -> None:
    same = settings_for("redis", "split", redis_host="queue", redis_port=6380, redis_password="pw")
    assert (same.cache_redis.host, same.cache_redis.port, same.cache_redis.db) == ("queue", 6380, 1)
    assert same.cache_redis.password is not None
    assert same.cache_redis.password.get_secret_value() == "pw"
    assert (same.queue_redis.host, same.queue_redis.db) == ("queue", 0)
    split = settings_for(
        "redis", "split", redis_host="queue", cache_redis_host="cache", cache_redis_port=6381,
        cache_redis_password="other", redis_cache_db=0,
    )  # fmt: skip
    assert (split.cache_redis.host, split.cache_redis.port, split.cache_redis.db) == (
        "cache", 6381, 0,
    )  # fmt: skip
    assert split.cache_redis.password is not None
    assert split.cache_redis.password.get_secret_value() == "other"
    assert (split.queue_redis.host, split.queue_redis.port) == ("queue", 6379)


# The bound on serving an invalidated response, on the response cache itself: two caches on
# one Redis stand for two api processes.


def cache_on(
    client: redis.asyncio.Redis, root: str, near_seconds: float, store: RedisResponseStore | None
) -> ResponseCache:
    keys = ResponseKeys(root)
    return ResponseCache(
        store or RedisResponseStore(client, keys.channel),
        keys,
        NearCache(max_entries=100, max_age=near_seconds),
        CircuitBreaker(timeout=1.0, cooldown=1.0),
        default_ttl=60,
        lock_seconds=5,
    )


class DeafRedisStore(RedisResponseStore):
    """A process whose invalidation broadcasts are all lost."""

    async def start(self, on_invalidation: Any) -> None:
        return None


def produce_body(body: bytes) -> Any:
    async def produce() -> Produced:
        response = cached_response(200, ((b"content-type", b"text/plain"),), body)
        return Produced(response, storable=True)

    return produce


@asynccontextmanager
async def two_processes(
    namespace: str, near_seconds: float, *, deaf: bool
) -> AsyncIterator[tuple[ResponseCache, ResponseCache]]:
    client = redis.asyncio.Redis.from_url(REDIS_URL, db=CACHE_DB)
    writer = cache_on(client, namespace, near_seconds, None)
    reader_store = DeafRedisStore(client, ResponseKeys(namespace).channel) if deaf else None
    reader = cache_on(client, namespace, near_seconds, reader_store)
    try:
        await writer.start()
        await reader.start()
        yield writer, reader
    finally:
        await reader.close()
        await writer.close()
        await client.aclose()
        delete_namespace_keys(namespace)


async def test_an_invalidation_reaches_the_other_processes_copies_at_once(
    namespace: str,
) -> None:
    """Copies would live 30 s; only the broadcast can make the other process drop it."""
    async with two_processes(namespace, near_seconds=30, deaf=False) as (writer, reader):
        key = writer.keys.response("items", "/items/1", "[]")
        await writer.serve("items", key, 60, 5, produce_body(b"old"))
        assert (await reader.serve("items", key, 60, 5, produce_body(b"new"))).hit
        assert reader.near(key) is not None
        await writer.invalidate_namespace("items")

        async def dropped() -> bool:
            return reader.near(key) is None

        await eventually(dropped, within=1.0, interval=0.005)


async def test_a_lost_broadcast_leaves_a_copy_for_at_most_the_near_cache_bound(
    namespace: str,
) -> None:
    near_seconds = 0.5
    async with two_processes(namespace, near_seconds, deaf=True) as (writer, reader):
        key = writer.keys.response("items", "/items/1", "[]")
        await writer.serve("items", key, 60, 5, produce_body(b"old"))
        served = await reader.serve("items", key, 60, 5, produce_body(b"new"))
        assert served.hit and served.response.body == b"old"
        await writer.invalidate_namespace("items")
        invalidated_at = time.monotonic()
        stale_reads = 0
        while True:
            asked_at = time.monotonic()  # before asking: a slow test machine cannot fail it
            copy = reader.near(key)
            if copy is None:
                break
            assert copy[0].body == b"old"
            stale_reads += 1
            assert asked_at - invalidated_at <= near_seconds, "a stale copy outlived the bound"
            await asyncio.sleep(0.005)
        refreshed = await reader.serve("items", key, 60, 5, produce_body(b"new"))
    assert stale_reads > 0  # the copy did outlive the lost broadcast
    assert (refreshed.hit, refreshed.response.body) == (False, b"new")


class OtherProcessFinishesFirst(MemoryResponseStore):
    """Another process holds the fill lock; it stores its response and lets go of the lock
    right after this process's second look-up, before its second try for the lock."""

    def __init__(self, key: str, lock_key: str) -> None:
        super().__init__()
        self.key, self.lock_key, self.tries = key, lock_key, 0

    async def lock(self, key: str, token: str, ttl: float) -> bool:
        self.tries += 1
        if self.tries == 2:
            other = cached_response(200, ((b"content-type", b"text/plain"),), b"theirs")
            await self.store(self.key, encode(other, 60), 60, "race:response-epoch:items", "")
            await self.unlock(self.lock_key, "other")
        return await super().lock(key, token, ttl)


async def test_a_process_that_gets_the_lock_after_waiting_serves_what_the_holder_stored() -> None:
    keys = ResponseKeys("race")
    key = keys.response("items", "/items/1", "[]")
    store = OtherProcessFinishesFirst(key, keys.lock(key))
    await store.lock(keys.lock(key), "other", 5)
    store.tries = 0
    responses = ResponseCache(
        store, keys, NearCache(max_entries=100, max_age=1.0), CircuitBreaker(1.0, 1.0),
        default_ttl=60, lock_seconds=5,
    )  # fmt: skip
    ran: list[bytes] = []

    async def produce() -> Produced:
        ran.append(b"ours")
        return await produce_body(b"ours")()

    served = await responses.serve("items", key, 60, 5, produce)

    assert ran == [], "the endpoint ran again although the holder had stored its response"
    assert (served.hit, served.response.body) == (True, b"theirs")


async def test_a_fill_that_raced_an_invalidation_is_not_stored(namespace: str) -> None:
    """A request that began before a write and ends after its invalidation must not leave
    what it read before the write in the cache."""
    async with two_processes(namespace, near_seconds=30, deaf=False) as (writer, reader):
        key = writer.keys.response("items", "/items/1", "[]")
        computing = asyncio.Event()
        invalidated = asyncio.Event()

        async def slow_produce() -> Produced:
            computing.set()
            await invalidated.wait()
            return await produce_body(b"read before the write")()

        fill = asyncio.create_task(reader.serve("items", key, 60, 5, slow_produce))
        await computing.wait()
        await writer.invalidate_namespace("items")
        invalidated.set()
        answered = await fill
        after = await writer.serve("items", key, 60, 5, produce_body(b"after the write"))
    assert answered.response.body == b"read before the write"
    assert (after.hit, after.response.body) == (False, b"after the write")


async def test_the_memory_store_keeps_at_most_its_bound_dropping_the_oldest() -> None:
    store = MemoryResponseStore(max_responses=3)
    for number in range(5):
        assert await store.store(f"key-{number}", "payload", 60, "epoch", "")
    found = [(await store.lookup(f"key-{n}", "epoch")).found is not None for n in range(5)]
    assert found == [False, False, True, True, True]


# Failing open: a store that stops answering costs a bounded time, then none.


class BrokenStore(MemoryResponseStore):
    """A store whose every call fails as the Redis store's do when Redis is down, counting the
    calls that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def lookup(self, key: str, epoch_key: str) -> Any:
        self.calls += 1
        raise BackendUnavailableError("Redis failed to answer: ConnectionError")

    async def lock(self, key: str, token: str, ttl: float) -> bool:
        self.calls += 1
        raise BackendUnavailableError("Redis failed to answer: ConnectionError")

    async def store(self, key: str, payload: str, ttl: float, epoch_key: str, epoch: str) -> bool:
        self.calls += 1
        raise BackendUnavailableError("Redis failed to answer: ConnectionError")


async def test_a_broken_store_is_skipped_after_a_few_failures_and_retried_later() -> None:
    now = [0.0]
    store = BrokenStore()
    keys = ResponseKeys("breaker")
    near = NearCache(max_entries=0, max_age=1.0, clock=lambda: now[0])
    responses = ResponseCache(
        store,
        keys,
        near,
        CircuitBreaker(timeout=0.1, cooldown=2.0, clock=lambda: now[0]),
        default_ttl=60,
        lock_seconds=5,
    )
    for number in range(5):
        key = keys.response("items", f"/items/{number}", "[]")
        served = await responses.serve("items", key, 60, 5, produce_body(b"fresh"))
        assert (served.hit, served.response.body) == (False, b"fresh")
    assert store.calls == 3  # the breaker opened on the third failure
    now[0] = 2.5
    await responses.serve("items", keys.response("items", "/x", "[]"), 60, 5, produce_body(b""))
    assert store.calls == 4  # tried again after the cool-down; one failure re-opens it
