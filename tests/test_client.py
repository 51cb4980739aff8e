"""The client library (jobcache_client, installed from client/) against the real api in the
local mode, in-process: the app in its lifespan behind httpx's ASGITransport, driven through
`AsyncClient`; and the retries, with a stub in front of the api that refuses requests the way an
overloaded api does, and a port that refuses connections."""

import inspect
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.main import create_app
from jobcache_client import (
    AsyncClient,
    Client,
    Conflict,
    ConnectionFailed,
    JobStatus,
    NotFound,
    RateLimited,
    RetryPolicy,
    Unauthorized,
    Unavailable,
    ValidationError,
    WaitTimeout,
    __version__,
)
from jobcache_client.cli import main as command_line
from jobcache_client.operations import chunk_keys
from shared.settings import Settings
from tests.conftest import settings_for_test
from tests.processes import refusing_port

BASE_URL = "http://jobcache.test"
API_KEY = "client-test-key-5f1d0c9b8a7e6d5c4b3a2f1e"
QUICK_RETRIES = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05)


class Front:
    """An ASGI app in front of the api that keeps every request's method, path and headers,
    and answers the first `refusals` of them itself with `status` and `Retry-After`; the next
    `losses` it passes on, but loses the api's answer and sends that refusal instead."""

    def __init__(
        self, app: ASGIApp, refusals: int = 0, status: int = 503, retry_after: str = "1"
    ) -> None:
        self.app, self.refusals, self.status, self.retry_after = app, refusals, status, retry_after
        self.losses = 0
        self.requests: list[tuple[str, str, Headers]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.requests.append((scope["method"], scope["path"], Headers(scope=scope)))
        refusal = JSONResponse(
            {"detail": "try again shortly"}, self.status, headers={"Retry-After": self.retry_after}
        )
        if self.refusals > 0:
            self.refusals -= 1
            return await refusal(scope, receive, send)
        if self.losses > 0:
            self.losses -= 1

            async def lose(message: Message) -> None:
                pass

            await self.app(scope, receive, lose)
            return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)

    def keys(self, method: str = "POST") -> list[str | None]:
        return [
            headers.get("idempotency-key") for sent, _, headers in self.requests if sent == method
        ]


@asynccontextmanager
async def served(settings: Settings, refusals: int = 0) -> AsyncIterator[tuple[AsyncClient, Front]]:
    """The app for these settings in its lifespan, a `Front` before it, and a client of both."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=15, shutdown_timeout=15) as manager:
        front = Front(manager.app, refusals)
        async with AsyncClient(
            BASE_URL,
            settings.api_key_list[0] if settings.api_key_list else None,
            transport=httpx.ASGITransport(app=front),
            retries=QUICK_RETRIES,
        ) as client:
            yield client, front


@pytest.fixture
async def client(local_settings: Settings) -> AsyncIterator[AsyncClient]:
    async with served(local_settings) as (client, _):
        yield client


async def test_submit_then_wait_returns_the_finished_job(client: AsyncClient) -> None:
    submitted = await client.submit("echo", {"message": "héllo"})
    assert submitted.status is JobStatus.QUEUED
    assert submitted.name == "echo" and len(submitted.id) == 22

    finished = await client.wait(submitted.id, timeout=10)
    assert finished.status is JobStatus.SUCCEEDED and finished.finished
    assert finished.result == {"message": "héllo"}
    assert finished.finished_at is not None and finished.finished_at >= finished.created_at
    assert finished.raw["result"] == {"message": "héllo"}

    again = await client.get(submitted.id)
    assert again == finished


async def test_a_failed_job_is_returned_not_raised(client: AsyncClient) -> None:
    job = await client.submit("fail", {"message": "the disk is full"})
    finished = await client.wait(job.id, timeout=10)
    assert (finished.status, finished.error) == (JobStatus.FAILED, "the disk is full")


async def test_wait_gives_up_at_its_timeout_with_the_last_record(client: AsyncClient) -> None:
    job = await client.submit("sleep", {"seconds": 30})
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as raised:
        await client.wait(job.id, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 3
    assert raised.value.job.id == job.id
    assert raised.value.job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    await client.delete(job.id)


async def test_events_follow_the_job_to_its_end(client: AsyncClient) -> None:
    job = await client.submit("sleep", {"seconds": 0.6})
    seen = [each async for each in client.events(job.id)]
    assert seen[-1].status is JobStatus.SUCCEEDED
    assert seen[-1].result == {"slept": 0.6}
    assert all(each.id == job.id for each in seen)
    assert any(each.status is JobStatus.RUNNING and each.progress for each in seen)
    assert not any(each.finished for each in seen[:-1])


async def test_cancel_stops_a_job_and_a_finished_one_is_a_conflict(client: AsyncClient) -> None:
    job = await client.submit("sleep", {"seconds": 30})
    cancelled = await client.cancel(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    with pytest.raises(Conflict) as raised:
        await client.cancel(job.id)
    assert raised.value.status == 409
    assert "finished" in str(raised.value)


async def test_a_deleted_job_is_not_found(client: AsyncClient) -> None:
    job = await client.submit("echo", {"message": "bye"})
    await client.wait(job.id, timeout=10)
    await client.delete(job.id)
    with pytest.raises(NotFound) as raised:
        await client.get(job.id)
    assert raised.value.status == 404
    assert raised.value.known_job_types is None
    with pytest.raises(NotFound):
        await client.delete(job.id)


async def test_an_unknown_job_type_is_not_found_with_the_known_ones(client: AsyncClient) -> None:
    with pytest.raises(NotFound) as raised:
        await client.submit("no_such_job", {})
    assert raised.value.known_job_types is not None
    assert {"echo", "sleep", "fail"} <= set(raised.value.known_job_types)
    message = str(raised.value)
    assert message.count("known job types") == message.count("echo") == 1, message


async def test_bad_parameters_are_a_validation_error_naming_each_field(
    client: AsyncClient,
) -> None:
    with pytest.raises(ValidationError) as raised:
        await client.submit("text_stats", {"text": 5, "top": "many"})
    error = raised.value
    assert error.status == 422
    assert {issue.loc for issue in error.issues} == {("body", "text"), ("body", "top")}
    assert {issue.where for issue in error.issues} == {"text", "top"}
    assert "text:" in str(error) and "top:" in str(error)


async def test_without_the_api_key_the_client_is_unauthorized(namespace: str) -> None:
    settings = settings_for_test(
        cache_backend="local", cache_namespace=namespace, cpu_workers=1, api_keys=API_KEY
    )
    async with served(settings) as (client, front):
        job = await client.submit("echo", {"message": "with a key"})
        assert front.requests[-1][2]["authorization"] == f"Bearer {API_KEY}"
        async with AsyncClient(BASE_URL, transport=httpx.ASGITransport(app=front)) as anonymous:
            with pytest.raises(Unauthorized) as raised:
                await anonymous.get(job.id)
        assert raised.value.status == 401
        assert raised.value.response is not None
        assert raised.value.response.headers["WWW-Authenticate"] == "Bearer"


async def test_a_503_is_retried_after_its_retry_after_with_the_same_idempotency_key(
    local_settings: Settings,
) -> None:
    async with served(local_settings, refusals=1) as (client, front):
        started = time.monotonic()
        job = await client.submit("echo", {"message": "once"})
        assert time.monotonic() - started >= 1.0, "Retry-After: 1 was not honoured"
        keys = front.keys()
        assert len(keys) == 2 and keys[0] and keys[0] == keys[1]
        assert (await client.wait(job.id, timeout=10)).result == {"message": "once"}

        await client.submit("echo", {"message": "twice"})
        assert front.keys()[2] not in keys, "each submission has a key of its own"


async def test_retries_end_with_the_typed_error_and_its_retry_after(
    local_settings: Settings,
) -> None:
    async with served(local_settings, refusals=10) as (client, front):
        front.retry_after = "0"
        with pytest.raises(Unavailable) as raised:
            await client.get("A" * 22)
        assert raised.value.retry_after == 0
        assert len(front.requests) == QUICK_RETRIES.retries + 1

        front.requests.clear()
        front.status, front.retry_after = 429, "3600"
        with pytest.raises(RateLimited) as limited:
            await client.submit("echo", {"message": "later"})
        assert limited.value.retry_after == 3600
        assert len(front.requests) == 1, "a Retry-After past max_retry_after is not waited for"


async def test_list_pages_newest_first_and_filters(client: AsyncClient) -> None:
    echoes = [await client.submit("echo", {"message": str(number)}) for number in range(3)]
    failed = await client.submit("fail", {"message": "no"})
    for job in [*echoes, failed]:
        await client.wait(job.id, timeout=10)
    newest_first = [failed.id, *(job.id for job in reversed(echoes))]

    page = await client.list(status="failed")
    assert [job.id for job in page.jobs] == [failed.id]
    assert page.jobs[0].status is JobStatus.FAILED and page.next is None
    assert [job.id async for job in client.iter_jobs(page_size=1)] == newest_first
    assert [job.id async for job in client.iter_jobs(name="echo")] == newest_first[1:]

    first = await client.list(limit=2)
    assert 0 < len(first.jobs) <= 2 and first.next is not None
    rest = await client.list(limit=2, cursor=first.next)
    assert {job.id for job in first.jobs}.isdisjoint(job.id for job in rest.jobs)


async def test_submit_many_queues_in_order_a_batch_per_max_batch(local_settings: Settings) -> None:
    async with served(local_settings) as (client, front):
        jobs = await client.submit_many(
            "echo", [{"message": str(number)} for number in range(5)], max_batch=2
        )
        finished = [await client.wait(job.id, timeout=10) for job in jobs]
        assert [job.result for job in finished] == [{"message": str(n)} for n in range(5)]
        batches = [(path, headers) for method, path, headers in front.requests if method == "POST"]
        assert [path for path, _ in batches] == ["/jobs/echo/batch"] * 3
        assert len({headers["idempotency-key"] for _, headers in batches}) == 3
        assert await client.submit_many("echo", []) == []


async def test_a_bad_item_of_a_later_batch_is_named_by_its_index_in_the_whole_list(
    client: AsyncClient,
) -> None:
    parameters = [{"message": "a"}, {"message": "b"}, {"message": "c"}, {"message": 4}]
    with pytest.raises(ValidationError) as raised:
        await client.submit_many("echo", parameters, max_batch=2)
    assert [issue.loc for issue in raised.value.issues] == [("body", 3, "message")]
    assert [job.status for job in raised.value.submitted] == [JobStatus.QUEUED] * 2


async def test_a_repeated_idempotency_key_returns_the_same_job(client: AsyncClient) -> None:
    first = await client.submit("echo", {"message": "once"}, idempotency_key="order-42")
    again = await client.submit("echo", {"message": "once"}, idempotency_key="order-42")
    assert again.id == first.id
    with pytest.raises(ValidationError):
        await client.submit("echo", {"message": "other"}, idempotency_key="order-42")

    parameters = [{"message": str(number)} for number in range(3)]
    batch = await client.submit_many("echo", parameters, idempotency_key="b-7", max_batch=2)
    repeat = await client.submit_many("echo", parameters, idempotency_key="b-7", max_batch=2)
    assert [job.id for job in repeat] == [job.id for job in batch]


async def test_a_submission_whose_answer_was_lost_queues_one_job(
    local_settings: Settings,
) -> None:
    async with served(local_settings) as (client, front):
        front.losses, front.retry_after = 1, "0"
        job = await client.submit("echo", {"message": "exactly once"})
        assert len(front.keys()) == 2
        assert [each.id async for each in client.iter_jobs()] == [job.id]

        front.losses = 1
        jobs = await client.submit_many("echo", [{"message": "x"}, {"message": "y"}])
        assert [each.id async for each in client.iter_jobs()] == [
            *(each.id for each in reversed(jobs)),
            job.id,
        ]


async def test_the_two_clients_have_the_same_methods() -> None:
    public = {name for name in dir(Client) if not name.startswith("_")}
    assert public == {name for name in dir(AsyncClient) if not name.startswith("_")}
    for name in public:
        if callable(getattr(Client, name)):
            sync = inspect.signature(getattr(Client, name)).parameters
            assert sync == inspect.signature(getattr(AsyncClient, name)).parameters, name


def stub(
    answers: list[httpx.Response | Exception],
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport that answers each request with the next of `answers` (an exception is
    raised), keeping the requests."""
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        given = answers.pop(0)
        if isinstance(given, Exception):
            raise given
        return given

    return httpx.MockTransport(answer), requests


def record(status: str = "queued", **fields: Any) -> dict[str, Any]:
    return {
        "id": "Z3o0bXrT6F1bd9nJ3u3c1A",
        "name": "echo",
        "status": status,
        "created_at": "2026-11-26T10:00:00.000000Z",
        **fields,
    }


def test_a_lost_connection_resends_the_submission_with_the_same_key() -> None:
    transport, requests = stub(
        [
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
            httpx.Response(202, json=record()),
        ]
    )
    with Client(BASE_URL, transport=transport, retries=QUICK_RETRIES) as client:
        job = client.submit("echo", {"message": "hi"})
    assert job.id == "Z3o0bXrT6F1bd9nJ3u3c1A"
    keys = {request.headers["Idempotency-Key"] for request in requests}
    assert len(requests) == 3 and len(keys) == 1


def test_a_resent_submission_waits_out_the_first_one_still_under_way() -> None:
    under_way = httpx.Response(
        409, json={"detail": "still under way"}, headers={"Retry-After": "0"}
    )
    transport, requests = stub(
        [httpx.ReadTimeout("slow"), under_way, httpx.Response(200, json=record())]
    )
    with Client(BASE_URL, transport=transport, retries=QUICK_RETRIES) as client:
        assert client.submit("echo", {"message": "hi"}).id == "Z3o0bXrT6F1bd9nJ3u3c1A"
    assert len(requests) == 3
    assert len({request.headers["Idempotency-Key"] for request in requests}) == 1

    gone = httpx.Response(409, json={"detail": "what an earlier request made is gone"})
    transport, requests = stub([httpx.ReadTimeout("slow"), gone])
    client = Client(BASE_URL, transport=transport, retries=QUICK_RETRIES)
    with client, pytest.raises(Conflict):
        client.submit("echo", {"message": "hi"}, idempotency_key="used-before")
    assert len(requests) == 2, "a 409 without Retry-After is final"


def refused() -> httpx.ConnectError:
    """httpx's error for a refused connection, caused by the operating system's, as it is."""
    error = httpx.ConnectError("[Errno 111] Connection refused")
    error.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return error


def test_a_refused_connection_is_tried_again_once_only() -> None:
    transport, requests = stub([refused(), refused(), httpx.Response(200, json=record())])
    with Client(BASE_URL, transport=transport, retries=QUICK_RETRIES) as client:
        with pytest.raises(ConnectionFailed) as raised:
            client.get("Z3o0bXrT6F1bd9nJ3u3c1A")
        assert len(requests) == 2
        assert str(raised.value).endswith("(tried 2 times): connection refused")
        assert client.get("Z3o0bXrT6F1bd9nJ3u3c1A").status is JobStatus.QUEUED

    transport, requests = stub([httpx.ConnectError("unreachable"), refused(), refused()])
    policy = RetryPolicy(retries=3, refused_retries=0, backoff=0.01)
    with Client(BASE_URL, transport=transport, retries=policy) as client:
        with pytest.raises(ConnectionFailed):
            client.get("Z3o0bXrT6F1bd9nJ3u3c1A")
        assert len(requests) == 2, "other connection failures keep their retries"


@pytest.fixture
def refusing_url() -> Iterator[str]:
    with refusing_port() as port:
        yield f"http://127.0.0.1:{port}"


REFUSED_REPORTED_WITHIN = 3.0
"""Seconds: one quick retry takes about 0.5 s; the six backed-off tries it replaced took 12.7 s.
Room is left for a loaded machine."""


async def test_an_api_that_refuses_connections_is_reported_within_seconds(
    refusing_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    with Client(refusing_url) as client, pytest.raises(ConnectionFailed) as raised:
        client.get("Z3o0bXrT6F1bd9nJ3u3c1A")
    assert time.monotonic() - started < REFUSED_REPORTED_WITHIN
    assert "connection refused" in str(raised.value)

    started = time.monotonic()
    async with AsyncClient(refusing_url) as asynchronous:
        with pytest.raises(ConnectionFailed):
            await asynchronous.submit("echo", {"message": "hi"})
    assert time.monotonic() - started < REFUSED_REPORTED_WITHIN

    started = time.monotonic()
    assert command_line(["--url", refusing_url, "get", "Z3o0bXrT6F1bd9nJ3u3c1A"]) == 3
    assert time.monotonic() - started < REFUSED_REPORTED_WITHIN
    assert capsys.readouterr().err.startswith(f"jobcache: no answer from {refusing_url}/jobs/")


def test_requests_name_the_client_and_its_version() -> None:
    transport, requests = stub([httpx.Response(200, json=record())])
    with Client(BASE_URL, transport=transport) as client:
        client.get("Z3o0bXrT6F1bd9nJ3u3c1A")
    assert requests[0].headers["User-Agent"] == f"jobcache-client/{__version__}"


def test_known_job_types_the_detail_does_not_name_are_added_to_the_message() -> None:
    unknown = httpx.Response(404, json={"detail": "no such type", "known_job_types": ["echo"]})
    transport, _ = stub([unknown])
    with Client(BASE_URL, transport=transport) as client, pytest.raises(NotFound) as raised:
        client.submit("nope", {})
    assert str(raised.value) == "404 Not Found: no such type (known job types: echo)"


def test_other_client_errors_are_not_retried() -> None:
    transport, requests = stub([httpx.Response(409, json={"detail": "job has finished"})])
    client = Client(BASE_URL, transport=transport, retries=QUICK_RETRIES)
    with client, pytest.raises(Conflict):
        client.cancel("Z3o0bXrT6F1bd9nJ3u3c1A")
    assert len(requests) == 1


def test_unknown_fields_of_a_record_are_kept_and_the_callback_is_read() -> None:
    callback = {"url": "https://hooks.example.com/done", "state": "delivered", "attempts": 1}
    callback |= {"last_status": 204, "delivered_at": "2026-11-26T10:00:01Z", "new": True}
    transport, requests = stub(
        [httpx.Response(202, json=record(future_field={"x": 1}, callback=callback))]
    )
    with Client(BASE_URL, transport=transport) as client:
        job = client.submit("echo", {"message": "hi"}, callback_url=callback["url"])
    assert requests[0].url.params["callback_url"] == callback["url"]
    assert job.raw["future_field"] == {"x": 1}
    assert job.result is None and job.progress is None
    assert job.callback is not None
    assert (job.callback.state, job.callback.attempts, job.callback.last_status) == (
        "delivered",
        1,
        204,
    )
    assert job.callback.delivered_at is not None and job.callback.raw["new"] is True


def test_an_event_stream_that_ends_early_is_opened_again() -> None:
    def events(*records: dict[str, Any]) -> httpx.Response:
        text = "".join(
            f"event: {each['status']}\ndata: {httpx.Response(200, json=each).text}\n\n"
            for each in records
        )
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=text)

    running = record("running", attempts=1)
    transport, requests = stub(
        [events(record(), running), events(running, record("succeeded", result=2))]
    )
    with Client(BASE_URL, transport=transport, retries=QUICK_RETRIES) as client:
        seen = [job.status.value for job in client.events("Z3o0bXrT6F1bd9nJ3u3c1A")]
    assert seen == ["queued", "running", "succeeded"]
    assert len(requests) == 2


def test_wait_polls_at_most_twice_a_second_when_the_api_does_not_hold_it() -> None:
    transport, requests = stub([httpx.Response(200, json=record()) for _ in range(20)])
    client = Client(BASE_URL, transport=transport)
    with client, pytest.raises(WaitTimeout):
        client.wait("Z3o0bXrT6F1bd9nJ3u3c1A", timeout=1.2)
    assert 2 <= len(requests) <= 4
    assert float(requests[0].url.params["wait"]) == pytest.approx(1.2, abs=0.05)


def test_the_command_line_refuses_json_that_is_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert command_line(["--url", "http://127.0.0.1:9", "submit", "echo", "{nope"]) == 2
    assert command_line(["submit-many", "echo", '{"message": "not a list"}']) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "jobcache: PARAMS is not JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
        "jobcache: PARAMS_LIST must be a JSON array of objects",
    ]


def test_each_batch_of_a_long_list_has_a_key_derived_from_the_callers() -> None:
    assert chunk_keys("order-7", 1) == ["order-7"]
    assert chunk_keys("order-7", 2) == ["order-7/0", "order-7/1"]
    long = chunk_keys("k" * 255, 3)
    assert long == chunk_keys("k" * 255, 3) and len(set(long)) == 3
    assert all(len(key) <= 255 for key in long)
    assert len(set(chunk_keys(None, 2))) == 2
