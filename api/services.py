"""What the api holds open for its lifetime: its job types, the backend, the response cache, its
metrics and its API keys."""

from dataclasses import dataclass, field

from api.auth import ApiKeys
from api.response_cache import ResponseCache
from shared.backend import Backend
from shared.catalog import Catalog
from shared.metrics import Metrics
from shared.settings import Settings


@dataclass(frozen=True)
class Services:
    """Opened in the app's lifespan, closed on shutdown; routes reach it through api/deps.py."""

    settings: Settings
    catalog: Catalog
    """The job types loaded from JOBCACHE_JOBS."""
    backend: Backend
    """Records, job events, queue, quotas and overview, for the mode the settings name."""
    response_cache: ResponseCache
    """Cached endpoints' responses (api/response_cache), on the cache's Redis or in memory."""
    metrics: Metrics
    """This process's Prometheus metrics (GET /metrics)."""
    api_keys: ApiKeys = field(default_factory=lambda: ApiKeys([]))
    """Who may call /jobs and GET /cached (API_KEYS), and the admin routes (ADMIN_API_KEYS);
    open when empty."""
