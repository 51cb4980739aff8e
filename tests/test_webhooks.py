"""Called back when done: a job submitted with `?callback_url=` has its record POSTed there when
it finishes, signed as Standard Webhooks says, retried with backoff, only to allowed hosts, and
never lost to a worker that dies; its record shows how the delivery went.

Callbacks are received by a real HTTP server on 127.0.0.1 (tests/webhook_receiver.py), and
every signature is checked with the specification's reference library."""

import asyncio
import itertools
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.builtin_jobs import EchoParameters, EchoResult
from shared.builtin_jobs import echo as ECHO
from shared.cache import memory_cache
from shared.callbacks import MemoryCallbackOutbox
from shared.catalog import DEFAULT_QUEUE
from shared.events import MemoryJobEvents
from shared.jobs import JobContext
from shared.keys import new_job_id
from shared.queue import QueuedJob
from shared.records import Callback, JobRecord, JobStatus, RecordStore
from shared.settings import Settings
from tests.conftest import client_for, eventually, settings_for_test, write_module
from tests.deployments import Deployment, get_record, start_all
from tests.exposition import total
from tests.processes import api, wait_for, worker
from tests.webhook_receiver import SECRET, Answer, Receiver, receiving
from worker import deliveries
from worker.runner import Finished, JobRunner

# aiocache 0.12 closes its Redis client with redis-py's deprecated close(), when the app stops.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning:aiocache"
)

FAST = {
    "webhook_secret": SECRET,
    "webhook_allowed_hosts": "127.0.0.1",
    "webhook_timeout": 1.0,
    "webhook_retry_first": 0.05,
}
"""Callbacks on, to the receiver's address (listed by address, as a loopback one must be),
with short timings."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as serving:
        yield serving


def local_settings(namespace: str, **values: Any) -> Settings:
    return settings_for_test(
        cache_backend="local", cache_namespace=namespace, cpu_workers=1, **{**FAST, **values}
    )


@pytest.fixture
async def client(namespace: str) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(local_settings(namespace)) as served:
        yield served


async def submit(
    client: httpx.AsyncClient, job_type: str, parameters: dict[str, Any], callback_url: str
) -> str:
    response = await client.post(
        f"/jobs/{job_type}", json=parameters, params={"callback_url": callback_url}
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def settled(client: httpx.AsyncClient, job_id: str, within: float = 10) -> dict[str, Any]:
    """The job's record once its callback is delivered or given up."""

    async def check() -> dict[str, Any] | None:
        record: dict[str, Any] = (await client.get(f"/jobs/{job_id}")).json()
        return record if record["callback"]["state"] != "pending" else None

    result: dict[str, Any] = await eventually(check, within)
    return result


async def test_each_finished_job_posts_its_signed_record_once(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    url = receiver.url()
    succeeded = await submit(client, "echo", {"message": "hi"}, url)
    failed = await submit(client, "fail", {"message": "the disk is on fire"}, url)
    cancelled = await submit(client, "sleep", {"seconds": 30}, url)
    await eventually(lambda: status_is(client, cancelled, "running"))
    assert (await client.post(f"/jobs/{cancelled}/cancel")).status_code == 200

    for job_id, status in ((succeeded, "succeeded"), (failed, "failed"), (cancelled, "cancelled")):
        record = await settled(client, job_id)
        callback = record["callback"]
        assert (callback["state"], callback["attempts"], callback["last_status"]) == (
            "delivered", 1, 200,
        ), record  # fmt: skip
        assert callback["delivered_at"] is not None and callback["last_error"] is None
        [delivery] = receiver.for_job(job_id)
        sent = delivery.verified()
        # The record as GET /jobs/{id} showed it when it was sent: before this delivery.
        assert sent["id"] == job_id and sent["status"] == status
        assert sent["callback"] == {**callback, **PENDING_BEFORE_FIRST}
        assert delivery.headers["content-type"] == "application/json"
        assert "jobcache" in delivery.headers["user-agent"]
    assert receiver.for_job(succeeded)[0].verified()["result"] == {"message": "hi"}
    assert receiver.for_job(failed)[0].verified()["error"] == "the disk is on fire"

    # Once each: a later job's callback arrives, and still one each.
    last = await submit(client, "echo", {"message": "last"}, url)
    await settled(client, last)
    assert [len(receiver.for_job(job_id)) for job_id in (succeeded, failed, cancelled)] == [1] * 3


PENDING_BEFORE_FIRST = {
    "state": "pending",
    "attempts": 0,
    "last_attempt_at": None,
    "last_status": None,
    "last_error": None,
    "delivered_at": None,
}


async def test_a_signature_made_with_another_secret_does_not_verify(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    job_id = await submit(client, "echo", {"message": "hi"}, receiver.url())
    await settled(client, job_id)
    [delivery] = receiver.for_job(job_id)
    other = "whsec_" + "A" * 43 + "="
    with pytest.raises(Exception, match="No matching signature"):
        delivery.verified(other)
    tampered = delivery.body.replace(b'"hi"', b'"ho"')
    with pytest.raises(Exception, match="No matching signature"):
        replace(delivery, body=tampered).verified()


async def test_a_failing_receiver_gets_it_again_after_a_growing_backoff(
    namespace: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500 twice, then 200: delivered on the third attempt. The jitter is pinned to its top,
    so that the backoff shows: 0.3 s, then 0.6 s (WEBHOOK_RETRY_FIRST, doubled)."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    receiver.answer("/flaky", Answer(500), Answer(500), Answer(200))
    async with client_for(local_settings(namespace, webhook_retry_first=0.3)) as client:
        job_id = await submit(client, "echo", {"message": "hi"}, receiver.url("/flaky"))
        callback = (await settled(client, job_id))["callback"]
    assert (callback["state"], callback["attempts"], callback["last_status"]) == (
        "delivered", 3, 200,
    )  # fmt: skip
    attempts = receiver.for_job(job_id)
    assert len(attempts) == 3
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    assert 0.3 <= gaps[0] < 0.6 <= gaps[1] < 1.2, gaps
    # Each body is the record as it was before that attempt.
    before = [attempt.verified()["callback"] for attempt in attempts]
    assert [(each["state"], each["attempts"], each["last_status"]) for each in before] == [
        ("pending", 0, None), ("pending", 1, 500), ("pending", 2, 500),
    ]  # fmt: skip
    assert before[1]["last_error"] == "the receiver answered 500"
    assert {attempt.headers["webhook-id"] for attempt in attempts} == {f"msg_{job_id}"}


def test_the_backoff_doubles_up_to_its_cap_with_full_jitter() -> None:
    for attempts, ceiling in ((1, 1.0), (2, 2.0), (5, 16.0), (20, deliveries.RETRY_CAP)):
        delays = [deliveries.retry_delay(attempts, first=1.0) for _ in range(2000)]
        assert 0 <= min(delays) < ceiling * 0.1 and ceiling * 0.9 < max(delays) <= ceiling


async def test_a_receiver_that_keeps_failing_is_given_up_after_the_retry_window(
    namespace: str, receiver: Receiver
) -> None:
    receiver.answer("/down", Answer(503))
    async with client_for(local_settings(namespace, webhook_retry_for=1.0)) as client:
        started = time.monotonic()
        job_id = await submit(client, "echo", {"message": "hi"}, receiver.url("/down"))
        callback = (await settled(client, job_id))["callback"]
        assert (callback["state"], callback["last_status"]) == ("failed", 503)
        assert callback["last_error"] == "the receiver answered 503"
        attempts = receiver.for_job(job_id)
        assert len(attempts) == callback["attempts"] >= 3
        assert attempts[-1].at - attempts[0].at >= 1.0 - 0.05, "retried for WEBHOOK_RETRY_FOR"
        assert time.monotonic() - started < 5
        # Given up for good: a later callback arrives, and none more of this one.
        later = await submit(client, "echo", {"message": "later"}, receiver.url())
        await settled(client, later)
        assert len(receiver.for_job(job_id)) == len(attempts)


async def test_a_redirect_is_not_followed(namespace: str, receiver: Receiver) -> None:
    receiver.answer("/moved", Answer(302, headers=(("location", receiver.url("/elsewhere")),)))
    async with client_for(local_settings(namespace, webhook_retry_for=0.3)) as client:
        job_id = await submit(client, "echo", {"message": "hi"}, receiver.url("/moved"))
        callback = (await settled(client, job_id))["callback"]
    assert (callback["state"], callback["last_status"]) == ("failed", 302)
    assert "redirect" in callback["last_error"] and "not followed" in callback["last_error"]
    moved = receiver.at("/moved")
    assert len(moved) == callback["attempts"] and {each.method for each in moved} == {"POST"}
    assert receiver.at("/elsewhere") == []


@pytest.mark.parametrize(
    "slow",
    [Answer(200, delay=3), Answer(200, drip=0.1)],
    ids=["silent", "dripping"],
)
async def test_a_slow_receiver_times_out(namespace: str, receiver: Receiver, slow: Answer) -> None:
    """WEBHOOK_TIMEOUT bounds the whole attempt, also against a receiver that sends its answer
    a byte at a time (each within httpx's own timeout of a read)."""
    receiver.answer("/slow", slow, Answer(200))
    async with client_for(local_settings(namespace, webhook_timeout=0.5)) as client:
        job_id = await submit(client, "echo", {"message": "hi"}, receiver.url("/slow"))
        callback = (await settled(client, job_id))["callback"]
    assert (callback["state"], callback["attempts"]) == ("delivered", 2)
    # The second attempt's body is the record as the first attempt left it.
    _, second = receiver.for_job(job_id)
    first = second.verified()["callback"]
    assert (first["state"], first["attempts"], first["last_status"]) == ("pending", 1, None)
    assert first["last_error"] == "no answer within 0.5s (WEBHOOK_TIMEOUT)"


async def test_a_hanging_receiver_never_holds_a_job_slot(
    namespace: str, receiver: Receiver
) -> None:
    """One job slot (WORKER_CONCURRENCY=1), and a receiver that does not answer: the next job
    still runs at once, while the callback waits on its answer."""
    receiver.answer("/hang", Answer(200, delay=4))
    settings = local_settings(namespace, worker_concurrency=1, webhook_timeout=5)
    async with client_for(settings) as client:
        first = await submit(client, "echo", {"message": "first"}, receiver.url("/hang"))
        await eventually(lambda: arrived(receiver, first))
        started = time.monotonic()
        response = await client.post("/jobs/echo", json={"message": "next"})
        record = (await client.get(f"/jobs/{response.json()['id']}?wait=5")).json()
        assert record["status"] == "succeeded"
        assert time.monotonic() - started < 1.0
        assert (await client.get(f"/jobs/{first}")).json()["callback"]["attempts"] == 0


async def test_private_addresses_are_refused_with_any_host_allowed(
    namespace: str, receiver: Receiver
) -> None:
    """WEBHOOK_ALLOWED_HOSTS=*: a loopback, link-local or private address is refused, written
    as an address (422 at submission) or behind a name (after DNS, when it is sent); nothing
    reaches the receiver on 127.0.0.1."""
    settings = local_settings(namespace, webhook_allowed_hosts="*")
    async with client_for(settings) as client:
        for url, kind in (
            (receiver.url(), "loopback"),
            (receiver.url(host="[::1]"), "loopback"),
            (receiver.url(host="[::ffff:127.0.0.1]"), "loopback"),
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://10.1.2.3/hook", "private"),
            ("http://0.0.0.0/hook", "unspecified"),
        ):
            response = await client.post(
                "/jobs/echo", json={"message": "hi"}, params={"callback_url": url}
            )
            assert response.status_code == 422, url
            [issue] = response.json()["detail"]
            assert issue["loc"] == ["query", "callback_url"]
            assert f"a {kind} address" in issue["msg"] and "WEBHOOK_ALLOWED_HOSTS" in issue["msg"]

        job_id = await submit(client, "echo", {"message": "hi"}, receiver.url(host="localhost"))
        callback = (await settled(client, job_id))["callback"]
    assert (callback["state"], callback["attempts"], callback["last_status"]) == ("failed", 1, None)
    assert callback["last_error"].startswith("refused: localhost resolves to ")
    assert "a loopback address" in callback["last_error"]
    assert receiver.received == []


async def test_a_name_is_checked_after_it_is_resolved_and_the_checked_address_is_used(
    namespace: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hooks.example.test` resolves to 127.0.0.1 (this test's resolver, the only one that
    knows the name): refused under `*`, delivered when the name itself is listed, to the address
    that was checked (no second lookup) with the name in the Host header."""
    lookups: list[str] = []

    async def resolve(host: str, port: int, **options: Any) -> list[Any]:
        lookups.append(host)
        assert host == "hooks.example.test"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    url = receiver.url(host="hooks.example.test")
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    for allowed, state, error in (
        ("*", "failed", "refused: hooks.example.test resolves to 127.0.0.1, a loopback address"),
        ("hooks.example.test", "delivered", None),
    ):
        settings = local_settings(namespace, webhook_allowed_hosts=allowed)
        async with client_for(settings) as client:
            job_id = await submit(client, "echo", {"message": "hi"}, url)
            callback = (await settled(client, job_id))["callback"]
        assert callback["state"] == state, callback
        assert error is None or callback["last_error"].startswith(error), callback
    [delivery] = receiver.received
    assert delivery.headers["host"] == f"hooks.example.test:{receiver.port}"
    assert lookups == ["hooks.example.test"] * 2


async def test_callbacks_off_or_a_bad_callback_url_is_a_422_naming_what_to_set(
    namespace: str, receiver: Receiver
) -> None:
    for values, setting in (
        ({"webhook_secret": None}, "WEBHOOK_SECRET"),
        ({"webhook_secret": ""}, "WEBHOOK_SECRET"),
        ({"webhook_allowed_hosts": ""}, "WEBHOOK_ALLOWED_HOSTS"),
    ):
        async with client_for(local_settings(namespace, **values)) as client:
            response = await client.post(
                "/jobs/echo", json={"message": "hi"}, params={"callback_url": receiver.url()}
            )
            assert response.status_code == 422, values
            [issue] = response.json()["detail"]
            assert f"set {setting}" in issue["msg"], issue
            # Without a callback_url, submissions go on as ever.
            assert (await client.post("/jobs/echo", json={"message": "hi"})).status_code == 202

    settings = local_settings(namespace, webhook_allowed_hosts="127.0.0.1,*.example.com")
    async with client_for(settings) as client:
        for url, says in (
            ("ftp://127.0.0.1/hook", "only http:// and https://"),
            (f"http://user:password@127.0.0.1:{receiver.port}/", "user name or password"),
            ("http:///hook", "no host"),
            ("not a url", "only http:// and https://"),
            ("https://evil.example.org/hook", "evil.example.org is not in WEBHOOK_ALLOWED_HOSTS"),
            ("https://example.com/hook", "example.com is not in WEBHOOK_ALLOWED_HOSTS"),
            ("http://127.1/hook", "not a host name"),
            ("https://hooks.example.com/" + "x" * 2100, "at most 2048"),
        ):
            response = await client.post(
                "/jobs/echo", json={"message": "hi"}, params={"callback_url": url}
            )
            assert response.status_code == 422, url
            [issue] = response.json()["detail"]
            assert issue["loc"] == ["query", "callback_url"], issue
            assert says in issue["msg"], (url, issue["msg"])
        accepted = await client.post(
            "/jobs/echo",
            json={"message": "hi"},
            params={"callback_url": "https://a.b.example.com/hook?token=x"},
        )
        assert accepted.status_code == 202, accepted.text
        assert receiver.received == []


async def test_a_batch_calls_back_for_each_of_its_jobs(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    response = await client.post(
        "/jobs/echo/batch",
        json=[{"message": "one"}, {"message": "two"}],
        params={"callback_url": receiver.url("/batch")},
    )
    assert response.status_code == 202, response.text
    job_ids = [job["id"] for job in response.json()["jobs"]]
    for job_id in job_ids:
        assert (await settled(client, job_id))["callback"]["state"] == "delivered"
    assert sorted(r.verified()["result"]["message"] for r in receiver.at("/batch")) == [
        "one", "two",
    ]  # fmt: skip
    refused = await client.post(
        "/jobs/echo/batch", json=[{"message": "one"}], params={"callback_url": "ftp://x"}
    )
    assert refused.status_code == 422


SLOW_TO_STOP = """
import asyncio

from pydantic import BaseModel

from shared.jobs import JobContext, job


class Nothing(BaseModel):
    pass


@job(summary="Takes half a second to stop when cancelled")
async def slow_to_stop(parameters: Nothing, context: JobContext) -> Nothing:
    try:
        await asyncio.sleep(30)
    finally:
        await asyncio.sleep(0.5)
    return Nothing()
"""


async def test_a_cancelled_jobs_callback_waits_for_its_attempt_to_let_go(
    namespace: str, receiver: Receiver, job_directory: Path
) -> None:
    """The api writes the cancel at once; the attempt takes half a second more to stop and
    writes its own end. The callback goes once, after that: nothing the attempt writes
    overwrites what the delivery recorded, and there is no second callback."""
    module = write_module(job_directory, SLOW_TO_STOP)
    settings = local_settings(namespace, jobcache_jobs=module)
    async with client_for(settings) as client:
        job_id = await submit(client, "slow_to_stop", {}, receiver.url())
        await eventually(lambda: status_is(client, job_id, "running"))
        assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 200
        deleted = await submit(client, "slow_to_stop", {}, receiver.url("/deleted"))
        await eventually(lambda: status_is(client, deleted, "running"))
        assert (await client.delete(f"/jobs/{deleted}")).status_code == 204
        await eventually(lambda: no_job_runs(client))
        callback = (await settled(client, job_id))["callback"]
        assert (callback["state"], callback["attempts"]) == ("delivered", 1)
        later = await submit(client, "slow_to_stop", {}, receiver.url("/later"))
        await client.post(f"/jobs/{later}/cancel")
        await settled(client, later)
        assert (await client.get(f"/jobs/{job_id}")).json()["callback"] == callback
    [delivery] = receiver.for_job(job_id)
    assert delivery.verified()["status"] == "cancelled"
    assert receiver.at("/deleted") == [], "a deleted job is not called back"


async def test_the_callback_is_in_the_outbox_before_the_end_is_recorded(namespace: str) -> None:
    """So that a worker that dies between the two leaves it to another."""
    cache = memory_cache(settings_for_test(cache_namespace=namespace))
    records = RecordStore(cache, 60, MemoryJobEvents())
    seen: list[JobStatus | None] = []

    class WatchingOutbox(MemoryCallbackOutbox):
        async def schedule(self, job_id: str, url: str) -> None:
            stored = await records.get(job_id)
            seen.append(stored.status if stored else None)
            await super().schedule(job_id, url)

    submitted = JobRecord(id=new_job_id(), name="echo", callback=Callback(url=URL))
    await records.put(submitted, 60)
    with ThreadPoolExecutor(1) as pool:
        runner = JobRunner(records, pool, callbacks=WatchingOutbox())
        job = QueuedJob.of(submitted, {"message": "hi"}, DEFAULT_QUEUE)
        assert await runner.run(ECHO, job, attempt=1) == Finished()
    record = await records.get(submitted.id)
    assert record is not None and record.status is JobStatus.SUCCEEDED
    assert seen == [JobStatus.QUEUED]
    await cache.close()


URL = "https://hooks.example.com/done"


async def test_a_deleted_job_is_not_called_back(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    deleted = await submit(client, "sleep", {"seconds": 30}, receiver.url())
    await eventually(lambda: status_is(client, deleted, "running"))
    assert (await client.delete(f"/jobs/{deleted}")).status_code == 204
    later = await submit(client, "echo", {"message": "later"}, receiver.url())
    await settled(client, later)
    assert receiver.for_job(deleted) == []


async def no_job_runs(client: httpx.AsyncClient) -> bool:
    """Every attempt has ended, and written what it writes."""
    return total((await client.get("/metrics")).text, "jobcache_jobs_running") == 0


async def arrived(receiver: Receiver, job_id: str) -> bool:
    return bool(receiver.for_job(job_id))


async def status_is(client: httpx.AsyncClient, job_id: str, status: str) -> bool:
    return bool((await client.get(f"/jobs/{job_id}")).json()["status"] == status)


async def test_a_job_whose_end_was_recorded_is_not_run_again(namespace: str) -> None:
    """Its worker died after recording the end, before the queue heard of it: the job is
    delivered again, and the runner leaves it as it ended (no second run, no second end and
    callback); a retry whose record says queued runs as before."""
    runs: list[str] = []

    async def counted(parameters: EchoParameters, context: JobContext) -> EchoResult:
        runs.append(context.job_id)
        return EchoResult(message=parameters.message)

    job_type = replace(ECHO, name="counted", implementation=counted)
    cache = memory_cache(settings_for_test(cache_namespace=namespace))
    records = RecordStore(cache, 60, MemoryJobEvents())
    outbox = MemoryCallbackOutbox()
    ended = JobRecord(
        id=new_job_id(),
        name=job_type.name,
        status=JobStatus.SUCCEEDED,
        attempts=1,
        result={"message": "hi"},
        callback=Callback(url=URL),
    )
    retried = JobRecord(id=new_job_id(), name=job_type.name, attempts=1)
    for record in (ended, retried):
        await records.put(record, 60)
    with ThreadPoolExecutor(1) as pool:
        runner = JobRunner(records, pool, callbacks=outbox)
        for record in (ended, retried):
            job = QueuedJob.of(record, {"message": "hi"}, DEFAULT_QUEUE)
            assert await runner.run(job_type, job, attempt=2) == Finished()
    assert runs == [retried.id]
    assert await records.get(ended.id) == ended
    outbox.release(ended.id)
    assert (await outbox.claim(16, 30)).callbacks == [], "no second callback"
    await cache.close()


def process_settings(receiver: Receiver, **values: str) -> dict[str, str]:
    """The deployment's settings for callbacks to the receiver, as environment variables."""
    return {
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "WEBHOOK_TIMEOUT": "1",
        "WEBHOOK_RETRY_FIRST": "0.05",
        **values,
    }


def submit_to(
    deployment: Deployment,
    client: httpx.Client,
    job_type: str,
    parameters: dict[str, Any],
    callback_url: str,
) -> str:
    response = client.post(
        f"/jobs/{job_type}", json=parameters, params={"callback_url": callback_url}
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    deployment.job_ids.append(job_id)
    return job_id


def settled_record(client: httpx.Client, job_id: str, within: float = 15) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        record = get_record(client, job_id)
        return record if record["callback"]["state"] != "pending" else None

    return wait_for(check, within, what=f"the callback of job {job_id} is settled")


@pytest.mark.processes
def test_workers_call_back_for_jobs_that_end_or_are_cancelled(
    deployment: Deployment, receiver: Receiver
) -> None:
    """The redis mode: a worker process delivers; the api's cancel of a running job and of a
    queued one is called back too, once the worker has let go of the running one."""
    url = receiver.url()
    with ExitStack() as stack:
        served = start_all(
            stack, deployment, workers=1, **process_settings(receiver, WORKER_CONCURRENCY="1")
        )
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=10))
        succeeded = submit_to(deployment, client, "echo", {"message": "hi"}, url)
        failed = submit_to(deployment, client, "fail", {"message": "no"}, url)
        running = submit_to(deployment, client, "sleep", {"seconds": 30}, url)
        wait_for(lambda: get_record(client, running)["status"] == "running", 10)
        queued = submit_to(deployment, client, "echo", {"message": "behind"}, url)
        # The queued one first, while the running one holds the only slot.
        for job_id in (queued, running):
            assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
        for job_id, status in (
            (succeeded, "succeeded"),
            (failed, "failed"),
            (running, "cancelled"),
            (queued, "cancelled"),
        ):
            callback = settled_record(client, job_id)["callback"]
            assert (callback["state"], callback["attempts"]) == ("delivered", 1), callback
            [delivery] = receiver.for_job(job_id)
            assert delivery.verified()["status"] == status
        assert receiver.for_job(running)[0].verified()["attempts"] == 1, "the worker's record"
        last = submit_to(deployment, client, "echo", {"message": "last"}, url)
        settled_record(client, last)
        assert len(receiver.received) == 5, "one callback each"


@pytest.mark.processes
def test_a_callback_outlives_a_worker_killed_before_delivering_it(
    deployment: Deployment, receiver: Receiver
) -> None:
    """The receiver is down when the job ends; its worker is SIGKILLed with the callback still
    pending; a second worker, started afterwards, delivers it."""
    receiver.answer("/durable", Answer(503))
    environment = deployment.environment(**process_settings(receiver, WEBHOOK_RETRY_FIRST="0.5"))
    with ExitStack() as stack:
        first = stack.enter_context(worker(environment, deployment.logs / "worker-1.log"))
        served = stack.enter_context(api(environment, deployment.logs / "api.log"))
        client = stack.enter_context(httpx.Client(base_url=served.url, timeout=10))
        job_id = submit_to(deployment, client, "echo", {"message": "hi"}, receiver.url("/durable"))
        wait_for(lambda: get_record(client, job_id)["callback"]["attempts"], 10)
        first.process.kill()
        first.process.wait(10)
        assert get_record(client, job_id)["callback"]["state"] == "pending"
        receiver.answer("/durable", Answer(200))

        second = stack.enter_context(worker(environment, deployment.logs / "worker-2.log"))
        callback = settled_record(client, job_id)["callback"]
        assert (callback["state"], callback["last_status"]) == ("delivered", 200), callback
        assert callback["attempts"] >= 2
        [delivered] = [each for each in receiver.for_job(job_id) if each.answered == 200]
        assert delivered.verified()["status"] == "succeeded"
        assert f"job {job_id} (echo): callback to 127.0.0.1 delivered" in second.output()
