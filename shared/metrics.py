"""Prometheus metrics of one process (api or worker), in a registry of its own.

Every process serves its own metrics: the api at GET /metrics, each worker on its own endpoint
(worker/monitoring.py), which the api lists for Prometheus at GET /metrics/targets. Counters and
histograms count what happened in that process, so the system's totals are sums over processes
(`sum(rate(jobcache_jobs_succeeded_total[1m]))`); the view of the whole system (queue depth,
workers alive) is exported by the api only, where every api process reports the same value.

Each process registers only the families of its roles: the api's (HTTP requests, quota
refusals, the response cache, the system view), a worker's (attempts, slots, callbacks), or in
the local mode, where the api runs the jobs, both. A family that a process could never move is
left out rather than exported stuck at 0; the series an alert reads exist from the start at 0,
so that the first increment is a visible increase. No `_created` series are exported.
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST

JOB_DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
)  # fmt: skip
QUEUE_WAIT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

OUTCOMES = ("succeeded", "failed", "retried", "cancelled", "expired")
"""How an attempt can end, as the job duration histogram labels it."""
CALLBACK_OUTCOMES = ("delivered", "retried", "failed", "dropped")
"""How a callback attempt can end (jobcache_callback_deliveries_total)."""
QUOTAS = ("jobs_in_flight", "submissions_per_second")
"""The kinds of quota a key can be over (QUOTA_JOBS_IN_FLIGHT, QUOTA_SUBMISSIONS_PER_SECOND)."""
API_REDIS_OPERATIONS = ("request", "health", "metrics")
WORKER_REDIS_OPERATIONS = ("heartbeat",)

UNMATCHED_ROUTE = "unmatched"
"""The route label of a request no route matched: never its path, which any client can vary."""
HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
OTHER_METHOD = "other"
EXACT_STATUSES = frozenset((429, 503))
"""Statuses labelled exactly (over quota; Redis not answering); any other status is labelled by
its class alone."""


class NotThisProcessError(RuntimeError):
    """A family of a role this process's metrics were not made for (a bug: say `api=True` or
    `worker=True` where they are made)."""


@dataclass(frozen=True)
class QueueFigures:
    """One queue as the system's gauges show it."""

    waiting: int
    """Due, not started."""
    deferred: int
    """Waiting for a retry's delay."""
    oldest_waiting: float
    """Seconds the longest-waiting of `waiting` has waited since it was due; 0 when none."""


class SystemView:
    """The gauges of the whole system as last read from Redis, or none when that read failed:
    a number Redis could not give is left out, never exported stale or as NaN (a NaN makes
    every threshold comparison false, which silently disables an alert), and
    `jobcache_system_view_up` says whether they were read."""

    def __init__(self) -> None:
        self._queues: Mapping[str, QueueFigures] | None = None
        self._workers_alive = 0

    def show(self, queues: Mapping[str, QueueFigures], workers_alive: int) -> None:
        self._queues = dict(queues)
        self._workers_alive = workers_alive

    def unreadable(self) -> None:
        self._queues = None

    def describe(self) -> Iterator[Metric]:
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._queues)

    def _families(self, queues: Mapping[str, QueueFigures] | None) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "jobcache_system_view_up",
            "1 if the system's gauges (queue depth, deferred jobs, oldest waiting job, workers "
            "alive) were read from "
            "Redis for this scrape; 0 if Redis did not answer and they are left out.",
            value=0 if queues is None else 1,
        )
        if queues is None:
            return
        depth = GaugeMetricFamily(
            "jobcache_queue_depth",
            "Jobs of a queue due but not started yet (all workers; estimated from the workers' "
            "heartbeats).",
            labels=["queue"],
        )
        deferred = GaugeMetricFamily(
            "jobcache_queue_deferred",
            "Jobs of a queue waiting for a retry's delay before they are due again.",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "jobcache_queue_oldest_waiting_seconds",
            "How long the job of a queue that has waited longest since it was due has waited "
            "without starting; 0 when none waits.",
            labels=["queue"],
        )
        for queue, figures in queues.items():
            depth.add_metric([queue], figures.waiting)
            deferred.add_metric([queue], figures.deferred)
            oldest.add_metric([queue], figures.oldest_waiting)
        yield depth
        yield deferred
        yield oldest
        yield GaugeMetricFamily(
            "jobcache_workers_alive",
            "Worker processes whose heartbeat is fresh.",
            value=self._workers_alive,
        )


class WithoutCreated:
    """The registry as exported: without the `_created` series the client library adds to
    each counter and histogram (one more series per series, which no alert or dashboard of
    ours reads). Per registry, unlike the library's global disable_created_metrics()."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            if family.type in ("counter", "histogram", "summary"):
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


def per_job_type(
    registry: CollectorRegistry, job_types: tuple[str, ...], name: str, documentation: str
) -> Counter:
    counter = Counter(name, documentation, ["job_type"], registry=registry)
    for job_type in job_types:
        counter.labels(job_type)  # every series exists from the start, at 0
    return counter


class ApiFamilies:
    """What only the api does: answer HTTP requests, refuse keys over quota, serve cached
    endpoints, and read the system's gauges from Redis when it is scraped."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.http_requests = Counter(
            "jobcache_http_requests",
            "Requests answered, by route template (`unmatched` when no route matched), method, "
            "status class (2xx..5xx) and status (429 and 503 exactly, any other as its class).",
            ["route", "method", "status_class", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "jobcache_http_request_duration_seconds",
            "From a request's arrival to the start of its answer, by route template and method.",
            ["route", "method"],
            buckets=HTTP_DURATION_BUCKETS,
            registry=registry,
        )
        self.quota_refusals = Counter(
            "jobcache_quota_refusals",
            "Submissions refused with a 429, by the quota they were over (never by key).",
            ["quota"],
            registry=registry,
        )
        for quota in QUOTAS:
            self.quota_refusals.labels(quota)
        self.response_cache_requests = Counter(
            "jobcache_response_cache_requests",
            "Requests to cached endpoints, by the X-Cache answer (hit or miss).",
            ["namespace", "route", "result"],
            registry=registry,
        )
        self.system_view = SystemView()
        registry.register(self.system_view)
        # One lookup per request instead of two .labels() calls, each of which builds a key.
        self._observed: dict[tuple[str | None, str, int], tuple[Counter, Histogram]] = {}

    def expect_routes(self, routes: Iterable[tuple[str, Iterable[str]]]) -> None:
        """Make, at 0, the series the error alerts read for each (route template, methods):
        its 5xx and 503 answers, and 429 for a POST."""
        for route, methods in routes:
            for method in methods:
                self.http_requests.labels(route, method, "5xx", "5xx")
                self.http_requests.labels(route, method, "5xx", "503")
                if method == "POST":
                    self.http_requests.labels(route, method, "4xx", "429")

    def observe_request(self, route: str | None, method: str, status: int, seconds: float) -> None:
        """Count one answered request; `route` is its template, None if no route matched."""
        if method not in HTTP_METHODS:
            method = OTHER_METHOD  # a client may send any token as a method
        key = (route, method, status)
        children = self._observed.get(key)
        if children is None:
            label = UNMATCHED_ROUTE if route is None else route
            status_class = f"{status // 100}xx"
            exact = str(status) if status in EXACT_STATUSES else status_class
            children = (
                self.http_requests.labels(label, method, status_class, exact),
                self.http_duration.labels(label, method),
            )
            self._observed[key] = children
        count, duration = children
        count.inc()
        duration.observe(seconds)


class WorkerFamilies:
    """What only a process that runs jobs does: attempts, its slots, and callbacks."""

    def __init__(self, registry: CollectorRegistry, job_types: tuple[str, ...]) -> None:
        self.jobs_started = per_job_type(
            registry,
            job_types,
            "jobcache_jobs_started",
            "Attempts started by this process (a retry starts again).",
        )
        self.jobs_redelivered = per_job_type(
            registry,
            job_types,
            "jobcache_jobs_redelivered",
            "Attempts started again because the job's previous delivery ended without an "
            "outcome: its worker died or was cut off, and its lease ran out.",
        )
        self.jobs_succeeded = per_job_type(
            registry, job_types, "jobcache_jobs_succeeded", "Jobs that succeeded in this process."
        )
        self.jobs_failed = per_job_type(
            registry,
            job_types,
            "jobcache_jobs_failed",
            "Jobs that failed for good in this process.",
        )
        self.jobs_expired = per_job_type(
            registry,
            job_types,
            "jobcache_jobs_expired",
            "Jobs that ended expired in this process: not started before their deadline "
            "(expires_in).",
        )
        self.jobs_retried = per_job_type(
            registry,
            job_types,
            "jobcache_jobs_retried",
            "Attempts that failed in this process and will be retried.",
        )
        self.job_duration = Histogram(
            "jobcache_job_duration_seconds",
            "How long one attempt ran, by how it ended.",
            ["job_type", "outcome"],
            buckets=JOB_DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "jobcache_job_queue_wait_seconds",
            "From a job's submission to the start of its first attempt.",
            ["job_type"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=registry,
        )
        self.jobs_running = Gauge(
            "jobcache_jobs_running", "Jobs running in this process now.", registry=registry
        )
        self.slots = Gauge(
            "jobcache_worker_slots",
            "Jobs this process may run at once (WORKER_CONCURRENCY): slot use is "
            "jobcache_jobs_running / jobcache_worker_slots.",
            registry=registry,
        )
        self.callback_deliveries = Counter(
            "jobcache_callback_deliveries",
            "Callback attempts by outcome: delivered (a 2xx), retried (failed, to be tried "
            "again), failed (given up), and dropped (no attempt: the job's record was gone).",
            ["outcome"],
            registry=registry,
        )
        for outcome in CALLBACK_OUTCOMES:
            self.callback_deliveries.labels(outcome)


class Metrics:
    """The metrics one process exports: those of every process, and the families of its roles
    (`api`: the api's; `worker`: a job runner's; both in the local mode)."""

    def __init__(
        self, job_types: Iterable[str] = (), *, api: bool = False, worker: bool = False
    ) -> None:
        """`job_types`: the names whose series exist from the start, at 0."""
        job_type_names = tuple(job_types)
        self.registry = CollectorRegistry()
        self._exported = WithoutCreated(self.registry)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.jobs_submitted = per_job_type(
            self.registry,
            job_type_names,
            "jobcache_jobs_submitted",
            "Jobs accepted by this api process, or submitted on schedule by this worker.",
        )
        self.jobs_cancelled = per_job_type(
            self.registry,
            job_type_names,
            "jobcache_jobs_cancelled",
            "Jobs cancelled by a client, counted where they stopped (the api for a queued job).",
        )
        self.redis_errors = Counter(
            "jobcache_redis_errors",
            "Redis commands that failed or timed out, by what this process was doing.",
            ["operation"],
            registry=self.registry,
        )
        operations = (API_REDIS_OPERATIONS if api else ()) + (
            WORKER_REDIS_OPERATIONS if worker else ()
        )
        for operation in operations:
            self.redis_errors.labels(operation)
        self._api = ApiFamilies(self.registry) if api else None
        self._worker = WorkerFamilies(self.registry, job_type_names) if worker else None

    @property
    def api(self) -> ApiFamilies:
        if self._api is None:
            raise NotThisProcessError("these metrics are not an api's")
        return self._api

    @property
    def worker(self) -> WorkerFamilies:
        if self._worker is None:
            raise NotThisProcessError("these metrics are not a job runner's")
        return self._worker

    def count_cancelled(self, job_type: str) -> None:
        """The hook for a job cancelled before it started (the api cancels a queued job);
        jobs stopped while running are counted by the worker that ran them."""
        self.jobs_cancelled.labels(job_type).inc()

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self._exported)
