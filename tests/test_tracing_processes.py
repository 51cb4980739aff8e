"""Traces across real processes: an api and two workers on Redis, exporting over OTLP/HTTP to a
receiver in the test that decodes what it is sent. A job's attempt (on whichever worker) is a
child of the api's request span, which continues the client's trace, and the job's callback
is a client span under that attempt whose traceparent reaches the receiver. A collector that
does not answer costs a stopping process SHUTDOWN_TIMEOUT at most."""

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from shared.tracing import SHUTDOWN_TIMEOUT
from tests.deployments import Deployment, start_all, wait_finished
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiving
from tests.processes import api, child_environment, free_port, wait_for
from tests.webhook_receiver import SECRET, receiving

pytestmark = pytest.mark.processes

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN_ID = "b7ad6b7169203331"


def spans_where(receiver: OtlpReceiver, **wanted: Any) -> list[ReceivedSpan]:
    return [
        span
        for span in receiver.received()
        if all(getattr(span, name) == value for name, value in wanted.items())
    ]


def attempt_of(receiver: OtlpReceiver, job_id: str) -> list[ReceivedSpan]:
    return [
        span
        for span in spans_where(receiver, kind=Span.SPAN_KIND_CONSUMER)
        if span.attributes.get("jobcache.job.id") == job_id
    ]


def test_a_job_is_traced_from_the_request_through_a_worker_to_its_callback(
    deployment: Deployment,
) -> None:
    with otlp_receiving() as collector, receiving() as hooks, ExitStack() as stack:
        served = start_all(
            stack,
            deployment,
            workers=2,
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="50",
            WEBHOOK_SECRET=SECRET,
            WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        )
        with httpx.Client(base_url=served.url) as client:
            response = client.post(
                "/jobs/echo",
                params={"callback_url": hooks.url()},
                json={"message": "traced"},
                headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"},
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            deployment.job_ids.append(job_id)
            failing = deployment.submit(client, "fail", {"message": "no disk"})
            assert wait_finished(client, job_id)["status"] == "succeeded"
            assert wait_finished(client, failing)["status"] == "failed"
            [delivery] = wait_for(lambda: hooks.for_job(job_id), 10, what="the callback")
            [attempt] = wait_for(lambda: attempt_of(collector, job_id), 10, what="attempt span")
            [sent] = wait_for(
                lambda: spans_where(collector, kind=Span.SPAN_KIND_CLIENT, trace_id=TRACE_ID),
                10,
                what="the callback's span",
            )
            [failed] = wait_for(lambda: attempt_of(collector, failing), 10, what="failed span")

    [request] = spans_where(collector, kind=Span.SPAN_KIND_SERVER, trace_id=TRACE_ID)
    assert (request.service, request.name) == ("jobcache-api", "POST /jobs/echo")
    assert request.parent_span_id == CLIENT_SPAN_ID
    assert request.attributes["http.response.status_code"] == 202

    assert (attempt.service, attempt.name, attempt.trace_id) == (
        "jobcache-worker", "run echo", TRACE_ID,
    )  # fmt: skip
    assert attempt.parent_span_id == request.span_id
    assert {
        name: attempt.attributes[name]
        for name in ("jobcache.job.type", "jobcache.job.queue", "jobcache.job.attempt")
    } == {"jobcache.job.type": "echo", "jobcache.job.queue": "default", "jobcache.job.attempt": 1}
    assert attempt.attributes["jobcache.job.outcome"] == "succeeded"

    assert (sent.service, sent.name, sent.parent_span_id) == (
        "jobcache-worker", "POST", attempt.span_id,
    )  # fmt: skip
    assert delivery.headers["traceparent"] == f"00-{TRACE_ID}-{sent.span_id}-01"

    # A job submitted without a trace of the client's starts one at the api's request.
    assert failed.trace_id != TRACE_ID and failed.parent_span_id
    assert failed.attributes["jobcache.job.outcome"] == "failed"
    assert failed.status_code == Status.STATUS_CODE_ERROR
    assert failed.events == ["exception"]
    # The scrapes of the worker list and health are not traced.
    assert not [span for span in collector.received() if "/health" in span.name]


def test_a_collector_that_does_not_answer_does_not_hold_up_a_stopping_api(
    tmp_path: Path, namespace: str
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    environment = child_environment(
        {
            "CACHE_BACKEND": "local",
            "CACHE_NAMESPACE": namespace,
            "CPU_WORKERS": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": unreachable,
        }
    )
    with api(environment, tmp_path / "api.log") as served:
        with httpx.Client(base_url=served.url) as client:
            job_id = client.post("/jobs/echo", json={"message": "x"}).json()["id"]
            assert wait_finished(client, job_id)["status"] == "succeeded"
        stopping = time.monotonic()
        served.stop()
        stopped_after = time.monotonic() - stopping
        log = served.output()
    # The exporter alone would retry for its 10 s timeout before giving up.
    assert stopped_after < SHUTDOWN_TIMEOUT + 4, log
    assert "spans not exported within 2s of stopping were dropped" in log
    assert "Application shutdown complete" in log
