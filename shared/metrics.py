"""Prometheus metrics of one process (api or worker), in a registry of its own.

Every process serves its own metrics: the api at GET /metrics, each worker on its own endpoint
(worker/monitoring.py), which the api lists for Prometheus at GET /metrics/targets. Counters and
histograms count what happened in that process, so the system's totals are sums over processes
(`sum(rate(jobcache_jobs_succeeded_total[1m]))`); the view of the whole system (queue depth,
workers alive) is exported by the api only, where every api process reports the same value.
"""

from collections.abc import Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST

JOB_DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
)  # fmt: skip
QUEUE_WAIT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip

OUTCOMES = ("succeeded", "failed", "retried", "cancelled")
"""How an attempt can end, as the job duration histogram labels it."""
CALLBACK_OUTCOMES = ("delivered", "retried", "failed", "dropped")
"""How a callback attempt can end (jobcache_callback_deliveries_total)."""


class Metrics:
    """The metrics one process exports. `system_view` adds the gauges of the whole system,
    which only the api sets (from Redis, when it is scraped)."""

    def __init__(self, job_types: Iterable[str] = (), *, system_view: bool = False) -> None:
        """`job_types`: the names whose series exist from the start, at 0."""
        job_type_names = tuple(job_types)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

        def per_job_type(name: str, documentation: str) -> Counter:
            counter = Counter(name, documentation, ["job_type"], registry=self.registry)
            for job_type in job_type_names:
                counter.labels(job_type)  # every series exists from the start, at 0
            return counter

        self.jobs_submitted = per_job_type(
            "jobcache_jobs_submitted",
            "Jobs accepted by this api process, or submitted on schedule by this worker.",
        )
        self.jobs_started = per_job_type(
            "jobcache_jobs_started", "Attempts started by this process (a retry starts again)."
        )
        self.jobs_succeeded = per_job_type(
            "jobcache_jobs_succeeded", "Jobs that succeeded in this process."
        )
        self.jobs_failed = per_job_type(
            "jobcache_jobs_failed", "Jobs that failed for good in this process."
        )
        self.jobs_retried = per_job_type(
            "jobcache_jobs_retried", "Attempts that failed in this process and will be retried."
        )
        self.jobs_cancelled = per_job_type(
            "jobcache_jobs_cancelled", "Jobs cancelled by a client, counted where they stopped."
        )
        self.job_duration = Histogram(
            "jobcache_job_duration_seconds",
            "How long one attempt ran, by how it ended.",
            ["job_type", "outcome"],
            buckets=JOB_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "jobcache_job_queue_wait_seconds",
            "From a job's submission to the start of its first attempt.",
            ["job_type"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.jobs_running = Gauge(
            "jobcache_jobs_running", "Jobs running in this process now.", registry=self.registry
        )
        self.response_cache_requests = Counter(
            "jobcache_response_cache_requests",
            "Requests to cached endpoints, by the X-Cache answer (hit or miss).",
            ["namespace", "route", "result"],
            registry=self.registry,
        )
        self.callback_deliveries = Counter(
            "jobcache_callback_deliveries",
            "Callback attempts by outcome: delivered (a 2xx), retried (failed, to be tried "
            "again), failed (given up), and dropped (no attempt: the job's record was gone).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in CALLBACK_OUTCOMES:
            self.callback_deliveries.labels(outcome)
        self.redis_errors = Counter(
            "jobcache_redis_errors",
            "Redis commands that failed or timed out, by what this process was doing.",
            ["operation"],
            registry=self.registry,
        )
        self._system: tuple[Gauge, Gauge, Gauge] | None = None
        if system_view:
            self._system = (
                Gauge(
                    "jobcache_queue_depth",
                    "Jobs of a queue due but not started yet (all workers; estimated from "
                    "the workers' heartbeats).",
                    ["queue"],
                    registry=self.registry,
                ),
                Gauge(
                    "jobcache_queue_deferred",
                    "Jobs of a queue waiting for a retry's delay before they are due again.",
                    ["queue"],
                    registry=self.registry,
                ),
                Gauge(
                    "jobcache_workers_alive",
                    "Worker processes whose heartbeat is fresh.",
                    registry=self.registry,
                ),
            )

    def show_system(
        self, *, queues: Mapping[str, tuple[float, float]], workers_alive: float
    ) -> None:
        """Set the gauges of the whole system (the api does, before each exposition): for each
        queue, its jobs waiting to start and those waiting for a retry's delay."""
        if self._system is None:
            raise RuntimeError("these metrics were made without system_view")
        depth, deferred_gauge, workers = self._system
        for queue, (waiting, deferred) in queues.items():
            depth.labels(queue).set(waiting)
            deferred_gauge.labels(queue).set(deferred)
        workers.set(workers_alive)

    def count_cancelled(self, job_type: str) -> None:
        """The hook for a job cancelled before it started (the api cancels a queued job);
        jobs stopped while running are counted by the worker that ran them."""
        self.jobs_cancelled.labels(job_type).inc()

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
