"""What the api holds open for its lifetime: cache, record store, queue, Redis pool and the
response cache."""

from dataclasses import dataclass

from aiocache.base import BaseCache
from arq.connections import ArqRedis

from api.response_cache import ResponseCache
from shared.events import JobEvents
from shared.queue import JobQueue
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
