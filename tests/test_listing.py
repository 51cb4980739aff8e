"""GET /jobs: the caller's jobs, newest first, filtered, in pages that jobs submitted meanwhile
never shift; read from an index that stays bounded (pruned as records expire, and as it is
written), at a bounded number of round trips per page. Both modes."""

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio

from shared.keys import Keys, new_job_id
from shared.listing import MAX_LIMIT, MemoryJobListing, Position
from shared.listing.base import MAX_CHUNKS
from shared.listing.redis import PRUNE_INTERVAL, RedisJobListing
from shared.records import JobRecord, utcnow
from shared.submission import submit_job
from tests.conftest import eventually, finished_record, served_for, settings_in
from tests.deployments import CACHE_DB, REDIS_HOST, REDIS_PORT, redis_client
from tests.round_trips import round_trips

# aiocache 0.12 closes its Redis client with redis-py's deprecated close(), when the app stops.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning:aiocache"
)

ALICE = "alice-5b1e0c9d8a7f6e5d4c3b2a1f0e9d8c7b"
BOB = "bob-0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d"


MOST_PAGES = 100
"""More pages than any test lists: a cursor that does not advance fails the test at once."""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def submit(
    client: httpx.AsyncClient, job_type: str = "echo", parameters: Any = None, **kw: Any
) -> str:
    response = await client.post(f"/jobs/{job_type}", json=parameters or {"message": "hi"}, **kw)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def submit_batch(client: httpx.AsyncClient, count: int, **kw: Any) -> list[str]:
    messages = [{"message": f"job {number}"} for number in range(count)]
    response = await client.post("/jobs/echo/batch", json=messages, **kw)
    assert response.status_code == 202, response.text
    return [job["id"] for job in response.json()["jobs"]]


async def page(client: httpx.AsyncClient, **query: Any) -> dict[str, Any]:
    response = await client.get("/jobs", params=query)
    assert response.status_code == 200, response.text
    listed: dict[str, Any] = response.json()
    return listed


async def every_page(client: httpx.AsyncClient, **query: Any) -> list[str]:
    """The ids of every job listed, following the cursors to the end (within MOST_PAGES)."""
    listed = await page(client, **query)
    ids = [job["id"] for job in listed["jobs"]]
    for _ in range(MOST_PAGES):
        if listed["next"] is None:
            return ids
        listed = await page(client, **query, cursor=listed["next"])
        ids += [job["id"] for job in listed["jobs"]]
    raise AssertionError(f"still a next page after {MOST_PAGES}: the cursor does not advance")


async def test_jobs_are_listed_newest_first_as_their_records(mode: str, namespace: str) -> None:
    async with served_for(settings_in(mode, namespace)) as (_, client):
        submitted = [await submit(client, "echo", {"message": f"m{n}"}) for n in range(3)]
        listed = await page(client)
        assert [job["id"] for job in listed["jobs"]] == submitted[::-1]
        assert listed["next"] is None
        newest = listed["jobs"][0]
        assert newest["name"] == "echo" and "owner" not in newest
        assert set(newest) == set((await client.get(f"/jobs/{submitted[-1]}")).json())


async def test_list_pages_stay_stable_while_new_jobs_arrive(mode: str, namespace: str) -> None:
    async with served_for(settings_in(mode, namespace)) as (_, client):
        before = [await submit(client) for _ in range(7)]
        listed = await page(client, limit=3)
        seen = [job["id"] for job in listed["jobs"]]
        arrived: list[str] = []
        while listed["next"] is not None and len(seen) < len(before) * 2:
            # Newer jobs come between the pages: they must not shift what follows.
            arrived += [await submit(client), await submit(client)]
            listed = await page(client, limit=3, cursor=listed["next"])
            assert len(listed["jobs"]) <= 3
            seen += [job["id"] for job in listed["jobs"]]
        assert seen == before[::-1]
        assert await every_page(client, limit=4) == (before + arrived)[::-1]


async def test_a_batch_is_listed_by_creation_time_then_id(mode: str, namespace: str) -> None:
    async with served_for(settings_in(mode, namespace)) as (_, client):
        await submit_batch(client, 40)
        listed = await page(client, limit=MAX_LIMIT)
        order = [(job["created_at"], job["id"]) for job in listed["jobs"]]
        assert len(order) == 40
        assert order == sorted(order, reverse=True)
        assert await every_page(client, limit=7) == [job_id for _, job_id in order]


async def test_filters_by_status_and_job_type(namespace: str) -> None:
    """The local mode runs the jobs, so every status but cancelled can be seen."""
    async with served_for(settings_in("local", namespace)) as (_, client):
        echoes = [await submit(client, "echo") for _ in range(2)]
        failed = await submit(client, "fail", {"message": "no"})
        sleeping = await submit(client, "sleep", {"seconds": 30})
        for job_id in [*echoes, failed]:
            await finished_record(client, job_id)

        async def running() -> bool:
            jobs = (await page(client, status="running"))["jobs"]
            return [job["id"] for job in jobs] == [sleeping]

        await eventually(running)
        assert await every_page(client, status="succeeded") == echoes[::-1]
        assert await every_page(client, status="failed") == [failed]
        assert await every_page(client, name="echo") == echoes[::-1]
        assert await every_page(client, name="sleep", status="running") == [sleeping]
        assert await every_page(client, name="echo", status="failed") == []
        assert await every_page(client, name="no_such_type") == []
        assert (await client.post(f"/jobs/{sleeping}/cancel")).status_code == 200
        assert await every_page(client, status="cancelled") == [sleeping]


async def test_a_filtered_page_reads_a_bounded_part_of_the_list(mode: str, namespace: str) -> None:
    """With a filter that matches little, a page stops after MAX_CHUNKS reads of the list: it
    holds fewer jobs than asked for, and a cursor to the rest."""
    async with served_for(settings_in(mode, namespace)) as (_, client):
        oldest = await submit(client, "text_stats", {"text": "a b"})
        await submit_batch(client, 450)
        first = await page(client, name="text_stats", limit=1)
        assert first["jobs"] == [] and first["next"] is not None
        assert await every_page(client, name="text_stats", limit=1) == [oldest]


async def test_a_key_lists_its_own_jobs_and_no_scheduled_run(mode: str, namespace: str) -> None:
    settings = settings_in(mode, namespace, api_keys=f"{ALICE},{BOB}")
    async with served_for(settings) as (services, client):
        alices = [await submit(client, headers=bearer(ALICE)) for _ in range(2)]
        bobs = await submit(client, headers=bearer(BOB))
        scheduled = await submit_job(
            services.backend, services.catalog["echo"], {"message": "due"}, scheduled_for=utcnow()
        )
        assert (await client.get("/jobs")).status_code == 401
        alice = await client.get("/jobs", headers=bearer(ALICE))
        assert [job["id"] for job in alice.json()["jobs"]] == alices[::-1]
        bob = await client.get("/jobs", headers=bearer(BOB))
        assert [job["id"] for job in bob.json()["jobs"]] == [bobs]
        # Any key may read a scheduled run by its id, but it is in no key's list.
        assert (await client.get(f"/jobs/{scheduled.id}", headers=bearer(BOB))).status_code == 200


async def test_without_keys_the_list_has_every_job_and_the_scheduled_runs(
    mode: str, namespace: str
) -> None:
    async with served_for(settings_in(mode, namespace)) as (services, client):
        submitted = await submit(client)
        scheduled = await submit_job(
            services.backend, services.catalog["echo"], {"message": "due"}, scheduled_for=utcnow()
        )
        assert await every_page(client) == [scheduled.id, submitted]


async def test_a_deleted_job_leaves_the_list(mode: str, namespace: str) -> None:
    async with served_for(settings_in(mode, namespace)) as (services, client):
        kept, deleted = await submit(client), await submit(client)
        assert (await client.delete(f"/jobs/{deleted}")).status_code == 204
        # Off the index at once, not only once a page has read it.
        entries = await services.backend.listing.older(None, None, 10)
        assert [entry.job_id for entry in entries] == [kept]
        assert await every_page(client) == [kept]


async def test_the_list_forgets_jobs_whose_records_expired(mode: str, namespace: str) -> None:
    """Records kept 1 s after their jobs end: once they are gone, a read of the list takes
    their entries out, and the index is as small as before."""
    settings = settings_in(mode, namespace, cache_ttl=1, failed_job_ttl=1)
    async with served_for(settings) as (services, client):
        listing = services.backend.listing
        job_ids = await submit_batch(client, 5)
        for job_id in job_ids:
            if mode == "redis":  # no worker: ended by a cancel, kept FAILED_JOB_TTL
                assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 200
            else:
                await finished_record(client, job_id)
        assert len(await listing.older(None, None, 100)) == 5

        async def expired() -> bool:
            answers = [(await client.get(f"/jobs/{job_id}")).status_code for job_id in job_ids]
            return answers == [404] * 5

        await eventually(expired, within=15)
        assert len(await listing.older(None, None, 100)) == 5, "nothing read the list yet"
        assert await every_page(client) == []
        assert await listing.older(None, None, 100) == []


KEEP_FOR = 60
"""The horizon of the lists the port-level tests make."""


@pytest.fixture(params=["memory", "redis"])
async def listing(
    request: pytest.FixtureRequest, namespace: str
) -> AsyncIterator[MemoryJobListing | RedisJobListing]:
    """A job list of either backend; the Redis one's set is deleted after."""
    if request.param == "memory":
        yield MemoryJobListing(KEEP_FOR)
        return
    client = redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=CACHE_DB)
    try:
        yield RedisJobListing(client, Keys(namespace), KEEP_FOR)
    finally:
        await client.delete(Keys(namespace).job_list(None))
        await client.aclose()


async def test_entries_older_than_any_record_are_dropped_as_the_list_is_written(
    listing: MemoryJobListing | RedisJobListing, namespace: str
) -> None:
    old = JobRecord(id=new_job_id(), name="echo", created_at=utcnow() - timedelta(seconds=61))
    new = JobRecord(id=new_job_id(), name="echo")
    await listing.add([old, new])
    assert [entry.job_id for entry in await listing.older(None, None, 10)] == [new.id]
    if isinstance(listing, RedisJobListing):
        with redis_client(CACHE_DB) as client:
            ttl = client.ttl(Keys(namespace).job_list(None))
        assert KEEP_FOR < ttl <= KEEP_FOR + PRUNE_INTERVAL + 1, "it expires past the horizon"


async def test_jobs_created_in_the_same_microsecond_are_paged_by_id(
    listing: MemoryJobListing | RedisJobListing,
) -> None:
    now = utcnow()
    records = [JobRecord(id=new_job_id(), name="echo", created_at=now) for _ in range(7)]
    records.append(
        JobRecord(id=new_job_id(), name="echo", created_at=now - timedelta(milliseconds=1))
    )
    await listing.add(records)
    seen: list[Position] = []
    than = None
    while (chunk := await listing.older(None, than, 2)) and len(seen) < len(records) * 2:
        seen += chunk
        than = chunk[-1]
    assert seen == sorted((Position.of(record) for record in records), reverse=True)


async def test_a_page_costs_a_bounded_number_of_round_trips(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Redis, whatever the list's length: a chunk is one read of the index and one of the
    records, and a page reads MAX_CHUNKS chunks at most."""
    async with served_for(settings_in("redis", namespace)) as (_, client):
        await submit_batch(client, 500)
        await submit_batch(client, 500)
        with round_trips() as filtered:
            listed = await page(client, status="failed", limit=10)
        assert listed["jobs"] == [] and listed["next"] is not None
        assert len(filtered) == 2 * MAX_CHUNKS
        with round_trips() as unfiltered:
            listed = await page(client, limit=MAX_LIMIT)
        assert len(listed["jobs"]) == MAX_LIMIT
        assert len(unfiltered) == 2


async def test_a_cursor_not_made_by_the_api_and_bad_filters_are_422(
    mode: str, namespace: str
) -> None:
    async with served_for(settings_in(mode, namespace)) as (_, client):
        await submit(client)
        for query, where in (
            ({"cursor": "not-a-cursor"}, ["query", "cursor"]),
            ({"cursor": "MTIzLmFiYw"}, ["query", "cursor"]),  # "123.abc": not a job id
            ({"status": "done"}, ["query", "status"]),
            ({"limit": 0}, ["query", "limit"]),
            ({"limit": MAX_LIMIT + 1}, ["query", "limit"]),
        ):
            response = await client.get("/jobs", params=query)
            assert response.status_code == 422, query
            [issue] = response.json()["detail"]
            assert issue["loc"] == where
        refused = await client.get("/jobs", params={"cursor": "not-a-cursor"})
        assert "pass the `next` of a page" in refused.json()["detail"][0]["msg"]
