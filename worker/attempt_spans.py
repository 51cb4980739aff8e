"""The trace span of each attempt at a job: a child of the span of the request that submitted
it (its context travels in the queued job), named for the job type, with the job's id, type,
queue and attempt, and how the attempt ended; a scheduled run, submitted by no request, starts
a trace of its own. With tracing off, the runner opens none."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from shared.catalog import JobType
from shared.queue import QueuedJob
from shared.records import JobRecord, JobStatus
from shared.tracing import context_from, is_configured, tracer

JOB_ID = "jobcache.job.id"
JOB_TYPE = "jobcache.job.type"
QUEUE = "jobcache.job.queue"
ATTEMPT = "jobcache.job.attempt"
OUTCOME = "jobcache.job.outcome"
"""succeeded, failed, cancelled (the job's end), retried (another attempt is due), skipped (an
earlier attempt had ended the job), stopped (the worker stopped: the job runs again) or
unrecorded (the outcome could not be written: the job runs again)."""


class AttemptSpans:
    """Opens the span of each attempt, when this process exports traces (decided when the
    runner is built, after shared/tracing.open_tracing)."""

    def __init__(self) -> None:
        self.enabled = is_configured()
        self._tracer = tracer()

    @contextmanager
    def attempt(self, job_type: JobType, job: QueuedJob, attempt: int) -> Iterator[None]:
        """The attempt's span, current while the context is open."""
        with self._tracer.start_as_current_span(
            f"run {job_type.name}",
            context=context_from(job.trace_context),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "jobcache",
                "messaging.operation.type": "process",
                JOB_ID: job.id,
                JOB_TYPE: job_type.name,
                QUEUE: job.queue,
                ATTEMPT: attempt,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as error:
                # CancelledError: the worker is stopping, and the job goes back on its queue;
                # anything else: the runner could not record the outcome (worker/main.py).
                stopped = isinstance(error, asyncio.CancelledError)
                span.set_attribute(OUTCOME, "stopped" if stopped else "unrecorded")
                if not stopped:
                    span.record_exception(error)
                    span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
                raise


def note_failure(error: BaseException, *, retried: bool) -> None:
    """The job's code raised `error`: recorded on the attempt's span, which ends in error
    unless another attempt is due."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.record_exception(error)
    if retried:
        span.set_attribute(OUTCOME, "retried")


def note_end(record: JobRecord) -> None:
    """The attempt ended the job as its record says (succeeded, failed or cancelled)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute(OUTCOME, record.status.value)
    if record.status is JobStatus.FAILED:
        span.set_status(StatusCode.ERROR, record.error)


def note_skipped() -> None:
    """An earlier attempt had already ended the job: this one did not run it."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(OUTCOME, "skipped")
