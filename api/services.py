"""What the api holds open for its lifetime: cache, record store, queue, Redis pool and the
response cache."""

from dataclasses import dataclass, field

from aiocache.base import BaseCache
from arq.connections import ArqRedis

from api.auth import ApiKeys
from api.response_cache import ResponseCache
from shared.events import JobEvents
from shared.metrics import Metrics
from shared.overview import Overview
from shared.queue import JobQueue
from shared.quotas import MemoryQuotaLedger, QuotaLedger
from shared.records import RecordStore
from shared.settings import Settings


@dataclass(frozen=True)
class Services:
    """Opened in the app's lifespan, closed on shutdown; routes reach it through api/deps.py."""

    settings: Settings
    cache: BaseCache
    records: RecordStore
    events: JobEvents
    queue: JobQueue
    redis: ArqRedis | None
    """The queue's Redis in the redis mode; None in the local mode."""
    response_cache: ResponseCache
    """Cached endpoints' responses (api/response_cache), on the cache's Redis or in memory."""
    metrics: Metrics
    """This process's Prometheus metrics (GET /metrics)."""
    overview: Overview
    """Queue depth, live workers and recent jobs, for the dashboard and the metrics."""
    api_keys: ApiKeys = field(default_factory=lambda: ApiKeys([]))
    """Who may call /jobs (API_KEYS); open when empty."""
    quotas: QuotaLedger = field(default_factory=MemoryQuotaLedger)
    """Per-key counts of jobs in flight and submissions per second."""
