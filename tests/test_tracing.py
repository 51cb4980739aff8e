"""Traces in one process (the local mode, which runs its jobs itself), with the SDK's in-memory
exporter: each attempt's span is a child of the span of the request that submitted the job,
with what the attempt was and how it ended; a scheduled run starts a trace of its own; a
callback's span is a child of the attempt that ended the job, and the receiver gets its
`traceparent`; JSON log lines name the trace and span they were written in. With tracing off,
jobs carry no trace context. The same across real processes
is in tests/test_tracing_processes.py."""

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared.errors import ConfigurationError
from shared.logs import JsonFormatter
from shared.tracing import tracing_config
from tests.conftest import (
    client_for,
    eventually,
    finished_record,
    served_for,
    settings_in,
    write_module,
)
from tests.webhook_receiver import SECRET, receiving

# aiocache 0.12 closes its Redis client with redis-py's deprecated close(), when the app stops.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning:aiocache"
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"
"""The client's own span, as a client that traces sends it."""

TEAM_JOBS = '''
"""A job type that fails its first attempt and succeeds its second, and one on a schedule."""

from pydantic import BaseModel

from shared.errors import RetryableJobError
from shared.jobs import JobContext, job


class Nothing(BaseModel):
    pass


class Done(BaseModel):
    attempt: int


@job(retries=1, retry_delay=0)
async def flaky(parameters: Nothing, context: JobContext) -> Done:
    if context.attempt == 1:
        raise RetryableJobError("the partner timed out")
    return Done(attempt=context.attempt)


@job(schedule="* * * * * *", schedule_parameters={})
async def tick(parameters: Nothing, context: JobContext) -> Done:
    return Done(attempt=context.attempt)
'''


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """This process's tracer provider for the test, exporting to memory (as shared/tracing.py
    sets one from OTEL_*, which a provider already set keeps it from doing)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The API allows setting the global provider once per process; a test sets it for itself.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    yield exporter
    provider.shutdown()


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return list(exporter.get_finished_spans())


def attempt_spans(exporter: InMemorySpanExporter, job_id: str) -> list[ReadableSpan]:
    return [
        span
        for span in finished(exporter)
        if (span.attributes or {}).get("jobcache.job.id") == job_id
        and span.kind is SpanKind.CONSUMER
    ]


def server_span(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in finished(exporter) if s.kind is SpanKind.SERVER and s.name == name]
    return span


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


async def submit(
    client: httpx.AsyncClient, name: str, parameters: dict[str, Any], **kw: Any
) -> str:
    response = await client.post(f"/jobs/{name}", json=parameters, **kw)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def test_a_jobs_attempt_is_a_child_of_the_request_that_submitted_it(
    spans: InMemorySpanExporter, namespace: str
) -> None:
    async with client_for(settings_in("local", namespace)) as client:
        job_id = await submit(
            client, "echo", {"message": "hi"}, headers={"traceparent": TRACEPARENT}
        )
        assert (await finished_record(client, job_id))["status"] == "succeeded"
        [attempt] = await eventually(lambda: _async(attempt_spans(spans, job_id)))

    request = server_span(spans, "POST /jobs/echo")
    # The request continues the client's trace; the attempt continues the request's.
    assert hex_trace(request) == TRACE_ID
    assert request.parent is not None and format(request.parent.span_id, "016x") == CLIENT_SPAN_ID
    assert hex_trace(attempt) == TRACE_ID
    assert attempt.parent is not None and request.context is not None
    assert attempt.parent.span_id == request.context.span_id
    assert attempt.name == "run echo"
    assert dict(attempt.attributes or {}) == {
        "messaging.system": "jobcache",
        "messaging.operation.type": "process",
        "jobcache.job.id": job_id,
        "jobcache.job.type": "echo",
        "jobcache.job.queue": "default",
        "jobcache.job.attempt": 1,
        "jobcache.job.outcome": "succeeded",
    }
    assert attempt.status.status_code is StatusCode.UNSET


async def test_a_failed_job_records_its_exception_and_ends_in_error(
    spans: InMemorySpanExporter, namespace: str
) -> None:
    async with client_for(settings_in("local", namespace)) as client:
        job_id = await submit(client, "fail", {"message": "the disk is on fire"})
        assert (await finished_record(client, job_id))["status"] == "failed"
        [attempt] = await eventually(lambda: _async(attempt_spans(spans, job_id)))

    assert (attempt.attributes or {})["jobcache.job.outcome"] == "failed"
    assert attempt.status.status_code is StatusCode.ERROR
    [event] = attempt.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.message"] == "the disk is on fire"


async def test_each_attempt_of_a_retried_job_is_a_child_of_the_same_request(
    spans: InMemorySpanExporter, namespace: str, job_directory: Path
) -> None:
    module = write_module(job_directory, TEAM_JOBS)
    async with client_for(settings_in("local", namespace, jobcache_jobs=module)) as client:
        job_id = await submit(client, "flaky", {})
        assert (await finished_record(client, job_id))["status"] == "succeeded"
        attempts = await eventually(
            lambda: _async(len(attempt_spans(spans, job_id)) == 2 and attempt_spans(spans, job_id))
        )

    request = server_span(spans, "POST /jobs/flaky")
    assert request.context is not None
    assert [
        (
            (span.attributes or {})["jobcache.job.attempt"],
            (span.attributes or {})["jobcache.job.outcome"],
            span.parent.span_id if span.parent else None,
        )
        for span in sorted(attempts, key=lambda span: span.start_time or 0)
    ] == [(1, "retried", request.context.span_id), (2, "succeeded", request.context.span_id)]
    first = min(attempts, key=lambda span: span.start_time or 0)
    assert [event.name for event in first.events] == ["exception"]


async def test_a_scheduled_run_starts_a_trace_of_its_own(
    spans: InMemorySpanExporter, namespace: str, job_directory: Path
) -> None:
    module = write_module(job_directory, TEAM_JOBS)
    async with client_for(settings_in("local", namespace, jobcache_jobs=module)):
        runs = await eventually(
            lambda: _async(
                [
                    span
                    for span in finished(spans)
                    if (span.attributes or {}).get("jobcache.job.type") == "tick"
                ]
            ),
            within=5,
        )

    run = runs[0]
    assert run.parent is None
    assert (run.attributes or {})["jobcache.job.outcome"] == "succeeded"
    # No request's trace: none other has its trace id.
    assert [span for span in finished(spans) if hex_trace(span) == hex_trace(run)] == [run]


async def test_a_callback_carries_traceparent_from_a_client_span_under_the_attempt(
    spans: InMemorySpanExporter, namespace: str
) -> None:
    settings = settings_in(
        "local", namespace, webhook_secret=SECRET, webhook_allowed_hosts="127.0.0.1"
    )
    with receiving() as receiver:
        async with client_for(settings) as client:
            response = await client.post(
                "/jobs/echo",
                params={"callback_url": receiver.url()},
                json={"message": "hi"},
                headers={"traceparent": TRACEPARENT},
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            [delivery] = await eventually(lambda: _async(receiver.for_job(job_id)))
            callback = await eventually(
                lambda: _async(
                    [s for s in finished(spans) if s.kind is SpanKind.CLIENT and s.name == "POST"]
                )
            )

    [sent] = callback
    [attempt] = attempt_spans(spans, job_id)
    assert sent.parent is not None and attempt.context is not None and sent.context is not None
    assert sent.parent.span_id == attempt.context.span_id
    assert hex_trace(sent) == TRACE_ID
    assert delivery.headers["traceparent"] == (
        f"00-{TRACE_ID}-{format(sent.context.span_id, '016x')}-01"
    )
    attributes = sent.attributes or {}
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.full"] == receiver.url()
    assert attributes["jobcache.job.id"] == job_id
    # The trace context is the service's own: the receiver's copy of the record has none.
    body = delivery.verified()
    assert body["id"] == job_id and "trace_context" not in body


async def test_without_tracing_a_job_carries_no_trace_context(namespace: str) -> None:
    async with served_for(settings_in("redis", namespace)) as (services, client):
        response = await client.post(
            "/jobs/echo", json={"message": "hi"}, headers={"traceparent": TRACEPARENT}
        )
        assert response.status_code == 202
        job_id = response.json()["id"]
        record = await services.backend.records.get(job_id)
    assert record is not None and record.trace_context is None


@pytest.mark.parametrize(
    ("environment", "exporter"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None),
    ],
)
def test_the_otel_variables_say_whether_traces_are_exported(
    environment: dict[str, str], exporter: str | None
) -> None:
    assert tracing_config(environment, "jobcache-api").exporter == exporter


def test_an_unsupported_exporter_or_protocol_is_a_startup_error_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracing_config({"OTEL_TRACES_EXPORTER": "zipkin"}, "jobcache-api")
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_PROTOCOL='grpc'"):
        tracing_config(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "jobcache-api",
        )


async def _async(value: Any) -> Any:
    return value


@contextmanager
def json_lines() -> Iterator[io.StringIO]:
    """The job runner's log lines, in the JSON format, while the context is open (opened after
    the app has started: its logging configuration takes other handlers off)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    runner_logger = logging.getLogger("worker.runner")
    runner_logger.addHandler(handler)
    level = runner_logger.level
    runner_logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        runner_logger.removeHandler(handler)
        runner_logger.setLevel(level)


async def test_a_jobs_json_log_lines_name_the_trace_and_span_they_were_written_in(
    spans: InMemorySpanExporter, namespace: str
) -> None:
    async with client_for(settings_in("local", namespace)) as client:
        with json_lines() as captured:
            job_id = await submit(
                client, "echo", {"message": "hi"}, headers={"traceparent": TRACEPARENT}
            )
            await finished_record(client, job_id)
        [attempt] = await eventually(lambda: _async(attempt_spans(spans, job_id)))

    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    mine = [line for line in lines if line.get("job_id") == job_id]
    assert [line["event"] for line in mine] == ["job.started", "job.succeeded"]
    assert attempt.context is not None
    for line in mine:
        assert line["trace_id"] == TRACE_ID
        assert line["span_id"] == format(attempt.context.span_id, "016x")


def test_a_json_log_line_outside_any_span_names_no_trace() -> None:
    with json_lines() as captured:
        logging.getLogger("worker.runner").info("not in a span")
    [line] = [json.loads(text) for text in captured.getvalue().splitlines()]
    assert line["message"] == "not in a span"
    assert "trace_id" not in line and "span_id" not in line
