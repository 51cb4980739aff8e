"""Delivers the callbacks of finished jobs: claims due ones from the outbox (shared/callbacks/),
POSTs each job's record to its callback_url, signed as Standard Webhooks says
(shared/webhooks/), and writes how it went into the record's `callback`; a failed attempt is
retried with exponential backoff and full jitter until WEBHOOK_RETRY_FOR after the first.

Every worker process runs one deliverer, and so does the local mode's embedded worker: a task
of its own with at most CONCURRENCY deliveries at once, apart from the job slots, so that a
slow receiver never holds up a job. Idle, it costs Redis one claim every FALLBACK_POLL seconds:
a callback made ready wakes it at once (told in the process, or by the api's announcement), and
it sleeps until the next retry it knows of.
"""

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, StatusCode

from shared.backend import Backend
from shared.callbacks import ClaimedCallback
from shared.catalog import Catalog
from shared.logs import job_event
from shared.metrics import Metrics
from shared.records import Callback, CallbackState, JobRecord, utcnow
from shared.settings import Settings
from shared.tracing import context_from, is_configured, tracer
from shared.webhooks.policy import CallbackPolicy
from shared.webhooks.sender import AttemptResult, CallbackSender
from shared.webhooks.signing import CallbackSigner

logger = logging.getLogger(__name__)

CONCURRENCY = 16
"""Deliveries one process makes at once."""
FALLBACK_POLL = 5.0
"""Seconds an idle deliverer waits before it claims anyway: the longest a callback waits when
its wake-up was lost, or its claim's deliverer died and the lease ran out."""
LEASE_MARGIN = 5.0
"""Seconds a claim holds a callback beyond WEBHOOK_TIMEOUT: for reading the record and writing
how the attempt went. Past it, another deliverer may take the callback over."""
RETRY_CAP = 300.0
"""The longest backoff between two attempts, before jitter."""
CLOSE_GRACE = 2.0
"""Seconds a closing deliverer gives the attempts under way; one cut short is claimed again
once its lease runs out."""
SHORTEST_PAUSE = 0.01
"""Seconds the loop waits at the least between two claims."""


def retry_delay(attempts: int, first: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: `first` doubled for each
    failure after the first, at most RETRY_CAP, then drawn at random below that (full jitter),
    so that the callbacks of many jobs to a receiver that was down do not return together."""
    return random.uniform(0, min(RETRY_CAP, first * 2.0 ** min(attempts - 1, 32)))


class CallbackDeliverer:
    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        catalog: Catalog,
        metrics: Metrics,
        *,
        concurrency: int = CONCURRENCY,
        fallback_poll: float = FALLBACK_POLL,
    ) -> None:
        self._policy = CallbackPolicy.of(settings)
        self._outbox = backend.callbacks
        self._records = backend.records
        self._catalog = catalog
        self._metrics = metrics
        self._concurrency = concurrency
        self._fallback_poll = fallback_poll
        self._lease = self._policy.timeout + LEASE_MARGIN
        secret = self._policy.secret
        self._signer = CallbackSigner(secret) if secret is not None else None
        self._sender = CallbackSender(self._policy.hosts, self._policy.timeout)
        self._tracing = is_configured()
        self._tracer = tracer()
        self._wakeup = asyncio.Event()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._outbox.watch(self._wakeup.set)
        self._loop = asyncio.create_task(self._deliver_due(), name="callback-deliverer")

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Stop claiming; give the deliveries under way `grace` seconds, then cancel them."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=grace)
            for delivery in self._deliveries:
                delivery.cancel()
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        await self._sender.close()

    async def _deliver_due(self) -> None:
        while True:
            self._wakeup.clear()
            pause = self._fallback_poll
            free = self._concurrency - len(self._deliveries)
            if free > 0:
                try:
                    claims = await self._outbox.claim(free, self._lease)
                except Exception as error:  # a background loop: it must outlive a bad moment
                    logger.warning("could not claim callbacks: %r", error)
                else:
                    for claimed in claims.callbacks:
                        self._start_delivery(claimed)
                    if claims.next_due is not None and len(claims.callbacks) < free:
                        pause = min(pause, max(claims.next_due - time.time(), SHORTEST_PAUSE))
            # Woken early by a callback made ready, or by a delivery that freed its slot.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._wakeup.wait()

    def _start_delivery(self, claimed: ClaimedCallback) -> None:
        task = asyncio.create_task(self._deliver(claimed), name=f"callback {claimed.job_id}")
        self._deliveries.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._deliveries.discard(task)
            self._wakeup.set()

        task.add_done_callback(done)

    async def _deliver(self, claimed: ClaimedCallback) -> None:
        try:
            record = await self._records.get(claimed.job_id)
            if record is None:
                await self._outbox.settle(claimed)
                self._metrics.worker.callback_deliveries.labels("dropped").inc()
                logger.info(
                    "job %s: callback dropped: the job's record is gone (deleted, or expired)",
                    claimed.job_id,
                    extra=job_event("callback.dropped", claimed.job_id, "unknown"),
                )
            elif not record.status.finished:
                # Its end is still to be written (an attempt died before it could): sent once
                # an attempt has written it.
                await self._outbox.reschedule(
                    claimed, time.time() + self._fallback_poll, waiting=True
                )
            elif record.callback is not None and not record.callback_pending:
                # An earlier claim delivered it (or gave up) but could not settle it.
                await self._outbox.settle(claimed)
            else:
                await self._attempt(claimed, record)
        except Exception:  # a delivery's boundary: its claim's lease runs out, and it is retried
            logger.exception("job %s: the callback's delivery failed", claimed.job_id)

    async def _attempt(self, claimed: ClaimedCallback, record: JobRecord) -> None:
        """Send the record once and write the outcome into it and into the outbox."""
        callback = record.callback or Callback(url=claimed.url)
        body = record.public_json()
        sent_at = utcnow()
        attempts = claimed.attempts + 1
        result = await self._send(record, claimed.url, body, sent_at, attempts)
        first_attempt_at = claimed.first_attempt_at or sent_at.timestamp()
        now = time.time()
        deadline = first_attempt_at + self._policy.retry_for
        callback.attempts = attempts
        callback.last_attempt_at = sent_at
        callback.last_status = result.status
        callback.last_error = result.error
        if result.delivered:
            callback.state = CallbackState.DELIVERED
            callback.delivered_at = datetime.fromtimestamp(now, UTC)
        elif result.final or now >= deadline:
            callback.state = CallbackState.FAILED
        record.callback = callback
        job_type = self._catalog.get(record.name)
        # Replaces only a record that exists: a job deleted meanwhile does not come back.
        await self._records.put(
            record,
            self._records.ttl_for(job_type.result_ttl if job_type else None),
            replace_only=True,
        )
        if callback.state is CallbackState.PENDING:
            due = min(now + retry_delay(attempts, self._policy.first_retry), deadline)
            tried = replace(claimed, attempts=attempts, first_attempt_at=first_attempt_at)
            await self._outbox.reschedule(tried, due, waiting=False)
            outcome = "retried"
        else:
            await self._outbox.settle(claimed)
            outcome = callback.state.value
        self._metrics.worker.callback_deliveries.labels(outcome).inc()
        log = logger.info if result.delivered else logger.warning
        log(
            "job %s (%s): callback to %s %s, attempt %d%s",
            record.id, record.name, urlsplit(claimed.url).hostname, outcome, attempts,
            "" if result.error is None else f": {result.error}",
            extra=job_event(
                f"callback.{outcome}", record.id, record.name,
                attempt=attempts, status_code=result.status,
            ),
        )  # fmt: skip

    async def _send(
        self, record: JobRecord, url: str, body: str, sent_at: datetime, attempt: int
    ) -> AttemptResult:
        off = self._policy.off_because
        if self._signer is None or off is not None:
            # This process's settings differ from the api's that accepted the callback: a
            # redeploy with them set may still send it.
            return AttemptResult(None, f"{off} on this worker (as on the api)")
        headers = self._signer.headers(record.id, body, sent_at)
        if not self._tracing:
            return await self._sender.post(url, body, headers)
        with self._tracer.start_as_current_span(
            "POST",
            context=context_from(record.trace_context),
            kind=SpanKind.CLIENT,
            attributes=callback_span_attributes(record, url, attempt),
        ) as span:
            # The receiver's own span can be a child of this one.
            propagate.inject(headers)
            result = await self._sender.post(url, body, headers)
            if result.status is not None:
                span.set_attribute("http.response.status_code", result.status)
            if not result.delivered:
                span.set_attribute("error.type", str(result.status or "no_answer"))
                span.set_status(StatusCode.ERROR, result.error)
            return result


def callback_span_attributes(record: JobRecord, url: str, attempt: int) -> dict[str, str | int]:
    """What the span of a callback attempt says: the HTTP client's attributes (the URL without
    its query, which may carry a receiver's token) and which job and attempt it is."""
    parts = urlsplit(url)
    attributes: dict[str, str | int] = {
        "http.request.method": "POST",
        "url.full": f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}",
        "server.address": parts.hostname or "",
        "jobcache.job.id": record.id,
        "jobcache.job.type": record.name,
        "jobcache.callback.attempt": attempt,
    }
    port = parts.port or (443 if parts.scheme == "https" else 80)
    attributes["server.port"] = port
    return attributes
