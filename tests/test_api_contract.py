"""The api says what it does: every answer of every operation is in its OpenAPI (an
OpenAPI-driven fuzz run, schemathesis, in the local and the redis mode), parameters are strict
JSON types, OPTIONS and 405 carry a true Allow, and a deleted job is gone from every route."""

import asyncio
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
import schemathesis
from arq.constants import in_progress_key_prefix
from fastapi import FastAPI
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import shutdown_lifespans

from api.main import create_app, install_submit_routes
from shared.backend import Role, open_backend
from shared.builtin_jobs import EchoParameters, EchoResult
from shared.builtin_jobs import echo as ECHO
from shared.cache import memory_cache
from shared.catalog import DEFAULT_QUEUE, load_catalog
from shared.events import MemoryJobEvents
from shared.jobs import JobContext
from shared.keys import job_record_key, namespaced, new_job_id
from shared.queue import QueuedJob
from shared.records import JobRecord, JobStatus, JobView, RecordStore
from tests.conftest import client_for, eventually, finished_record, settings_for_test
from tests.deployments import (
    CACHE_DB,
    QUEUE_DB,
    Deployment,
    delete_namespace,
    get_record,
    redis_client,
    start_all,
)
from tests.exposition import total
from tests.processes import api, wait_for
from worker.runner import Finished, JobRunner

# aiocache 0.12 closes its Redis client with redis-py's deprecated close(), when the app stops.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning:aiocache"
)

KEY = "contract-0c1f6d3b9a8e47f2b5d4c3a2e1f0a9b8"
FUZZ_BODY_LIMIT = 2048
"""Small enough that the fuzzer's long strings are refused with 413, which must be documented."""

CACHED_ROUNDS = 1000
"""The most sha256 rounds a fuzzed GET /cached asks for (see the test)."""
MODES: dict[str, dict[str, Any]] = {
    "local": {"cache_backend": "local"},
    # No worker: its jobs stay queued. With API keys (the fuzzer sends a valid one, an admin
    # key too, so that admin routes answer as they do when allowed; their 403 for an ordinary
    # key is tests/test_cache_access.py's) and a quota that its submissions exceed, so that
    # 429 answers come too.
    "redis": {
        "cache_backend": "redis",
        "api_keys": KEY,
        "admin_api_keys": KEY,
        "quota_jobs_in_flight": 20,
    },
}
FUZZ_CONFIG = {
    "seed": 14,
    "generation": {"max-examples": 25, "deterministic": True, "database": "none"},
    "checks": {
        "enabled": False,
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "allow_header_conformance": {"enabled": True},
        "unsupported_method": {"enabled": True},
        # A request the schema allows is answered so: not a 422 (a 404 for a job id that is no
        # job's, 409, 413 and 429 for what the schema cannot know).
        "positive_data_acceptance": {
            "enabled": True,
            "expected-statuses": ["2xx", "401", "404", "409", "413", "429"],
        },
    },
}


def documented_openapi() -> dict[str, Any]:
    """The OpenAPI document as the app makes it when it starts (with the submit routes of the
    built-in job types), made here without starting one: pytest needs the operations when it
    collects the tests (schemathesis.pytest.from_fixture, which would wait for a fixture,
    fails on pytest 9: it sets the test's `_nodeid`). Each mode's app, started, must serve
    exactly this document."""
    settings = settings_for_test()
    app = create_app(settings)
    install_submit_routes(app, load_catalog(settings.job_modules), settings)
    return app.openapi()


schema = schemathesis.openapi.from_dict(
    documented_openapi(), config=SchemathesisConfig.from_dict(FUZZ_CONFIG)
)


@dataclass(frozen=True)
class Served:
    app: FastAPI
    headers: dict[str, str]


@pytest.fixture(scope="module", params=sorted(MODES))
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """One mode's app, started when schemathesis loads the schema it serves, and the headers
    each request sends. Schemathesis' pytest plugin stops the app's lifespan after each test
    and starts it again for the next one's first request (the Redis keys outlive that, and are
    deleted after the last)."""
    mode = request.param
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    settings = settings_for_test(
        cache_namespace=namespace, cpu_workers=1, max_request_bytes=FUZZ_BODY_LIMIT, **MODES[mode]
    )
    app = create_app(settings)
    try:
        loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
        assert loaded.raw_schema == schema.raw_schema, "the started app documents other routes"
        yield Served(app, {"Authorization": f"Bearer {KEY}"} if mode == "redis" else {})
    finally:
        shutdown_lifespans()
        if mode == "redis":
            delete_namespace(namespace)


@schema.parametrize()
def test_every_answer_is_documented(case: schemathesis.Case, served: Served) -> None:
    """Any 5xx, or a status, header, content type or body the operation does not document,
    fails; the fuzzer's requests cover bad types, missing and extra fields, bodies that are not
    JSON or are too large, other content types and other methods."""
    rounds = str((case.query or {}).get("rounds", ""))
    if (
        case.operation.path == "/cached"
        and rounds.isdigit()
        and CACHED_ROUNDS < int(rounds) <= 5_000_000
    ):
        # Slow on purpose (up to 5,000,000 sha256 rounds: seconds), and what it answers does
        # not depend on how many: valid counts are capped to keep the run short.
        case.query = {**(case.query or {}), "rounds": CACHED_ROUNDS}
    # A request the schema allows is accepted (not a 422), except what it cannot foretell: a
    # callback_url while callbacks are off, an Idempotency-Key the fuzzer reuses with another
    # body (each a 422 the operation documents).
    configured = "callback_url" in (case.query or {}) or "Idempotency-Key" in (case.headers or {})
    # A bulk retry names its queue or its job type, one of the two (OpenAPI cannot say "one of
    # these query parameters"; the 422 for neither, or both on different queues, is documented).
    targets = {"queue", "name"} & set(case.query or {})
    configured = configured or (case.operation.path == "/jobs/retry" and len(targets) != 1)
    case.call_and_validate(
        app=served.app,
        headers=served.headers,
        excluded_checks=[schemathesis.checks.positive_data_acceptance] if configured else [],
    )


async def test_a_boolean_is_not_an_integer_nor_a_string_a_number(
    local_client: httpx.AsyncClient,
) -> None:
    for job_type, body, field, expected in (
        ("text_stats", {"text": "", "top": False}, "top", "int_type"),
        ("sleep", {"seconds": "1"}, "seconds", "float_type"),
        ("echo", {"message": 5}, "message", "string_type"),
    ):
        response = await local_client.post(f"/jobs/{job_type}", json=body)
        assert response.status_code == 422, response.text
        [issue] = response.json()["detail"]
        assert (issue["loc"], issue["type"]) == (["body", field], expected), issue
        assert issue["msg"].startswith("Input should be a valid")


async def test_a_body_not_sent_as_json_is_415(local_client: httpx.AsyncClient) -> None:
    body = b'{"message": "hi"}'
    for headers in ({"Content-Type": "text/plain"}, {}):
        response = await local_client.post("/jobs/echo", content=body, headers=headers)
        assert response.status_code == 415, headers
        assert "Content-Type: application/json" in response.json()["detail"]
    missing = await local_client.post("/jobs/echo")
    assert missing.status_code == 422, "no body at all: the body is missing"
    assert missing.json()["detail"][0]["loc"] == ["body"]


async def test_an_integer_is_a_number(local_client: httpx.AsyncClient) -> None:
    response = await local_client.post("/jobs/sleep", json={"seconds": 0})
    assert response.status_code == 202, response.text
    record = await finished_record(local_client, response.json()["id"])
    assert (record["status"], record["result"]) == ("succeeded", {"slept": 0.0})
    assert (await local_client.post("/jobs/sleep", json={"seconds": 1})).status_code == 202


async def test_options_lists_the_methods_of_the_path(local_client: httpx.AsyncClient) -> None:
    job_id = await submitted(local_client)
    for path, allowed in (
        (f"/jobs/{job_id}", "DELETE, GET, HEAD, OPTIONS"),
        # A job type's path is no job's: only what the schema documents there.
        ("/jobs/fail", "OPTIONS, POST"),
        ("/jobs/fail/batch", "OPTIONS, POST"),
        (f"/jobs/{job_id}/cancel", "OPTIONS, POST"),
        (f"/jobs/{job_id}/events", "GET, HEAD, OPTIONS"),
        ("/cached", "DELETE, GET, HEAD, OPTIONS"),
        ("/health", "GET, HEAD, OPTIONS"),
    ):
        response = await local_client.options(path)
        assert response.status_code == 204, path
        assert response.headers["allow"] == allowed, path
        assert response.content == b""
    for nowhere in ("/no/such/path", "/jobs/no_such_type", f"/jobs/{job_id}/batch"):
        assert (await local_client.options(nowhere)).status_code == 404, nowhere


async def test_a_405_says_the_same_allow(local_client: httpx.AsyncClient) -> None:
    job_id = await submitted(local_client)
    for method, path, allowed in (
        ("PUT", f"/jobs/{job_id}", "DELETE, GET, HEAD, OPTIONS"),
        ("POST", f"/jobs/{job_id}", "DELETE, GET, HEAD, OPTIONS"),
        ("GET", "/jobs/fail", "OPTIONS, POST"),
        ("DELETE", "/jobs/echo", "OPTIONS, POST"),
        ("GET", f"/jobs/{job_id}/cancel", "OPTIONS, POST"),
        ("DELETE", "/health", "GET, HEAD, OPTIONS"),
    ):
        response = await local_client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == allowed, (method, path)
        assert response.json() == {"detail": "Method Not Allowed"}


async def test_a_path_that_is_neither_a_job_nor_a_job_type_is_404(
    local_client: httpx.AsyncClient,
) -> None:
    for method, path in (
        ("GET", "/jobs/no_such_type"),
        ("POST", "/jobs/no_such_type"),
        ("GET", "/jobs/not-an-id"),
        ("POST", f"/jobs/{new_job_id()}/batch"),
    ):
        response = await local_client.request(method, path)
        assert response.status_code == 404, (method, path)
    unknown = await local_client.post("/jobs/no_such_type", json={})
    assert "echo" in unknown.json()["known_job_types"]


def test_job_ids_and_job_type_names_cannot_meet() -> None:
    """The schema's pattern of a job id takes every id and no job type's name."""
    paths = schema.raw_schema["paths"]
    [job_id] = paths["/jobs/{job_id}"]["get"]["parameters"][:1]
    pattern = re.compile(job_id["schema"]["pattern"])
    assert all(pattern.fullmatch(new_job_id()) for _ in range(100))
    names = [path.split("/")[2] for path in paths if path.startswith("/jobs/") and "{" not in path]
    assert names and not any(pattern.fullmatch(name) for name in names), names


async def test_a_whole_number_is_an_integer(local_client: httpx.AsyncClient) -> None:
    """JSON Schema's `integer` admits 479670.0 (a fuzzer sent it): so does the api, as 479670;
    a fraction is refused."""
    accepted = await local_client.post("/jobs/primes", json={"limit": 479670.0})
    assert accepted.status_code == 202, accepted.text
    ran = await local_client.post("/jobs/primes", json={"limit": 10.0})
    assert (await finished_record(local_client, ran.json()["id"]))["result"]["count"] == 4
    refused = await local_client.post("/jobs/primes", json={"limit": 10.5})
    assert refused.status_code == 422
    [issue] = refused.json()["detail"]
    assert (issue["loc"], issue["type"]) == (["body", "limit"], "int_from_float")
    assert issue["msg"] == "Input should be a valid integer, got a number with a fractional part"


async def test_any_cursor_the_schema_allows_reads_a_page(local_client: httpx.AsyncClient) -> None:
    [cursor] = [
        parameter
        for parameter in schema.raw_schema["paths"]["/jobs"]["get"]["parameters"]
        if parameter["name"] == "cursor"
    ]
    pattern = re.compile(cursor["schema"]["pattern"])
    for _ in range(2):
        await submitted(local_client)
    made = (await local_client.get("/jobs", params={"limit": 1})).json()["next"]
    for allowed in ("A" * 32, "_" * 32, "-" * 32, "0123456789abcdefghijklmnopqrstuv", made):
        assert pattern.fullmatch(allowed), allowed
        response = await local_client.get("/jobs", params={"cursor": allowed})
        assert response.status_code == 200, (allowed, response.text)
    for refused in ("A" * 31, "A" * 33, "A" * 31 + "=", ""):
        assert not pattern.fullmatch(refused), refused
        response = await local_client.get("/jobs", params={"cursor": refused})
        assert response.status_code == 422, refused
        assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_the_api_key_is_a_bearer_security_scheme() -> None:
    """/docs shows an Authorize button; the routes that take a key say so (a key, or none for
    a deployment without API_KEYS), and those that never do say nothing."""
    document = schema.raw_schema
    assert document["components"]["securitySchemes"]["bearer"]["type"] == "http"
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    paths = document["paths"]
    for path, method in (
        ("/jobs/echo", "post"),
        ("/jobs/echo/batch", "post"),
        ("/jobs", "get"),
        ("/jobs/{job_id}", "get"),
        ("/jobs/{job_id}", "delete"),
        ("/jobs/{job_id}/cancel", "post"),
        ("/jobs/{job_id}/events", "get"),
    ):
        assert paths[path][method]["security"] == [{"bearer": []}, {}], (path, method)
        assert "401" in paths[path][method]["responses"], (path, method)
    for path in ("/health", "/metrics"):
        assert "security" not in paths[path]["get"], path


def test_the_schema_says_what_each_job_returns_and_what_is_always_sent() -> None:
    """Each job type's submit routes document its own record, whose `result` is its result
    model; every field a record always carries is required (null where unset); a batch holds
    1 to MAX_BATCH jobs; the event stream's events are records named by their status."""
    document = schema.raw_schema
    components = document["components"]["schemas"]
    submit = document["paths"]["/jobs/echo"]["post"]["responses"]
    for status in ("200", "202"):
        reference = submit[status]["content"]["application/json"]["schema"]["$ref"]
        assert reference == "#/components/schemas/EchoJob", status
    echo_job = components["EchoJob"]
    assert echo_job["properties"]["result"]["anyOf"] == [
        {"$ref": "#/components/schemas/EchoResult"},
        {"type": "null"},
    ]
    for record in (echo_job, components["JobView"]):
        assert set(record["required"]) == set(JobView.model_fields), record
    assert set(components["Progress"]["required"]) == {"current", "total", "message"}
    batch = document["paths"]["/jobs/echo/batch"]["post"]
    body = batch["requestBody"]["content"]["application/json"]["schema"]
    assert (body["minItems"], body["maxItems"]) == (1, settings_for_test().max_batch)
    jobs = components["EchoBatch"]["properties"]["jobs"]
    assert jobs["items"] == {"$ref": "#/components/schemas/EchoJob"}
    stream = document["paths"]["/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    event = stream["text/event-stream"]["itemSchema"]["properties"]
    assert event["data"]["contentSchema"] == {"$ref": "#/components/schemas/JobView"}
    assert event["event"]["enum"] == [status.value for status in JobStatus]


async def test_head_answers_where_get_does_with_its_headers_only(
    local_client: httpx.AsyncClient,
) -> None:
    job_id = await submitted(local_client, "sleep", {"seconds": 30})
    got = await local_client.get(f"/jobs/{job_id}")
    head = await local_client.head(f"/jobs/{job_id}")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-type"] == got.headers["content-type"]
    # The event stream of an unfinished job: its headers, without waiting for the job.
    streamed = await asyncio.wait_for(local_client.head(f"/jobs/{job_id}/events"), 5)
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert (await local_client.head(f"/jobs/{'H' * 22}")).status_code == 404


async def test_a_cancelled_job_keeps_its_record(local_client: httpx.AsyncClient) -> None:
    job_id = await submitted(local_client, "sleep", {"seconds": 30})
    cancelled = await local_client.post(f"/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    record = (await local_client.get(f"/jobs/{job_id}")).json()
    assert (record["status"], record["error"]) == ("cancelled", "cancelled by the client")
    again = await local_client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409


async def test_a_deleted_job_is_gone_from_every_route(local_client: httpx.AsyncClient) -> None:
    """A running job: every route of its id answers 404 once it is deleted, also once the
    worker that ran it has written what it writes on a cancel."""
    job_id = await submitted(local_client, "sleep", {"seconds": 30})
    await eventually(lambda: status_is(local_client, job_id, "running"))

    deleted = await local_client.delete(f"/jobs/{job_id}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    await every_route_is_404(local_client, job_id)

    async def stopped_by_its_worker() -> bool:
        """The worker stopped it (counted as cancelled) and its attempt has ended, which it
        does only after writing the record of a cancelled job."""
        metrics = (await local_client.get("/metrics")).text
        return (
            total(metrics, "jobcache_jobs_cancelled_total", job_type="sleep") == 1
            and total(metrics, "jobcache_jobs_running") == 0
        )

    await eventually(stopped_by_its_worker)
    await every_route_is_404(local_client, job_id)


async def test_deleting_a_finished_job_removes_it(local_client: httpx.AsyncClient) -> None:
    job_id = await submitted(local_client)
    assert (await finished_record(local_client, job_id))["status"] == "succeeded"
    assert (await local_client.delete(f"/jobs/{job_id}")).status_code == 204
    await every_route_is_404(local_client, job_id)


async def test_a_deleted_job_no_longer_counts_against_the_quota(namespace: str) -> None:
    settings = settings_for_test(
        cache_backend="local",
        cache_namespace=namespace,
        cpu_workers=1,
        api_keys=KEY,
        quota_jobs_in_flight=1,
    )
    key = {"Authorization": f"Bearer {KEY}"}
    async with client_for(settings) as client:
        first = await client.post("/jobs/sleep", json={"seconds": 30}, headers=key)
        refused = await client.post("/jobs/sleep", json={"seconds": 30}, headers=key)
        assert (first.status_code, refused.status_code) == (202, 429)
        assert (await client.delete(f"/jobs/{first.json()['id']}")).status_code == 401
        deleted = await client.delete(f"/jobs/{first.json()['id']}", headers=key)
        assert deleted.status_code == 204
        again = await client.post("/jobs/echo", json={"message": "now"}, headers=key)
        assert again.status_code == 202, again.text


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_a_worker_writes_no_record_of_a_job_deleted_while_it_ran(
    backend: str, namespace: str
) -> None:
    """Whatever the attempt writes after the delete (progress, its outcome) replaces only a
    record that exists: the deleted job stays deleted, on either store."""
    settings = settings_for_test(cache_backend=backend, cache_namespace=namespace)
    async with AsyncExitStack() as stack:
        if backend == "redis":
            stack.callback(delete_namespace, namespace)
            records = (await stack.enter_async_context(open_backend(settings, Role.WORKER))).records
        else:
            cache = memory_cache(settings)
            stack.push_async_callback(cache.close)
            records = RecordStore(cache, 60, MemoryJobEvents())

        async def deleted_meanwhile(parameters: EchoParameters, context: JobContext) -> EchoResult:
            await records.delete(context.job_id)  # as DELETE /jobs/{id} does, mid-attempt
            await context.report_progress(1, 1, "still going")
            return EchoResult(message=parameters.message)

        job_type = replace(ECHO, name="deleted_meanwhile", implementation=deleted_meanwhile)
        submitted = JobRecord(id=new_job_id(), name=job_type.name)
        await records.put(submitted, 60, announce=False)
        with ThreadPoolExecutor(1) as pool:
            runner = JobRunner(records, pool)
            job = QueuedJob.of(submitted, {"message": "hi"}, DEFAULT_QUEUE)
            assert await runner.run(job_type, job, attempt=1) == Finished()
        assert await records.get(submitted.id) is None


@pytest.mark.processes
def test_a_job_deleted_through_one_api_is_gone_from_every_api(deployment: Deployment) -> None:
    """The redis mode: a worker runs the job; the api that deleted it and the one it was
    submitted through (which follows it, and hears of the delete on the job events) both
    answer 404 on every route of its id, also after the worker has stopped it and written what
    it writes on a cancel."""
    with ExitStack() as stack:
        first = start_all(stack, deployment, workers=1)
        second = stack.enter_context(api(deployment.environment(), deployment.logs / "api-2.log"))
        submitting, deleting = (
            stack.enter_context(httpx.Client(base_url=served.url, timeout=10))
            for served in (first, second)
        )
        job_id = deployment.submit(submitting, "sleep", {"seconds": 30})
        wait_for(lambda: get_record(submitting, job_id)["status"] == "running", 10)
        key = namespaced(deployment.name, job_record_key(job_id))
        with redis_client(CACHE_DB) as cache:
            assert cache.exists(key) == 1

        assert deleting.delete(f"/jobs/{job_id}").status_code == 204
        for client in (deleting, submitting):
            for method, path in routes_of(job_id):
                assert client.request(method, path).status_code == 404, (client, method, path)

        worker_log = deployment.logs / "worker-0.log"
        stopped = f"job {job_id} (sleep) cancelled while running"
        wait_for(lambda: stopped in worker_log.read_text(), 10, what="the worker stops the job")
        with redis_client(QUEUE_DB) as queue:
            # arq lets go of the job once the runner returns, after its last write.
            wait_for(
                lambda: not queue.exists(in_progress_key_prefix + job_id),
                10,
                what="the worker's attempt ends",
            )
        for client in (deleting, submitting):
            assert client.get(f"/jobs/{job_id}").status_code == 404
        with redis_client(CACHE_DB) as cache:
            assert cache.exists(key) == 0


def routes_of(job_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/jobs/{job_id}"),
        ("GET", f"/jobs/{job_id}?wait=5"),
        ("GET", f"/jobs/{job_id}/events"),
        ("POST", f"/jobs/{job_id}/cancel"),
        ("DELETE", f"/jobs/{job_id}"),
    ]


async def every_route_is_404(client: httpx.AsyncClient, job_id: str) -> None:
    for method, path in routes_of(job_id):
        response = await asyncio.wait_for(client.request(method, path), 5)
        assert response.status_code == 404, (method, path, response.text)


async def submitted(
    client: httpx.AsyncClient, job_type: str = "echo", parameters: dict[str, Any] | None = None
) -> str:
    response = await client.post(f"/jobs/{job_type}", json=parameters or {"message": "hi"})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def status_is(client: httpx.AsyncClient, job_id: str, status: str) -> bool:
    return bool((await client.get(f"/jobs/{job_id}")).json()["status"] == status)
