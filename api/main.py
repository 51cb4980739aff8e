"""The app factory: `api.main:app` is what uvicorn serves.

Settings are read in the lifespan, when the app starts, and everything it opens there (the
backend, the response cache, the embedded worker of the local mode) is closed when it stops.
"""

import logging.config
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from api.auth import ApiKeys
from api.body_limit import SettingsBodyLimit
from api.errors import install_error_handlers
from api.methods import FallbackRoute, install_method_answers
from api.observability import (
    RequestObserver,
    count_quota_refusals,
    count_redis_errors,
    expect_routes,
)
from api.openapi import install_openapi
from api.response_cache.factory import open_response_cache
from api.routes import (
    cached,
    dashboard,
    health,
    jobs,
    listing,
    metrics,
    queues,
    retries,
    schedules,
    submissions,
)
from api.services import Services
from api.startup_failure import EXPLAINED_STATE_KEY, quiet_explained_startup_failure
from api.tracing import request_telemetry
from shared.backend import Role, open_backend
from shared.catalog import Catalog, load_catalog
from shared.errors import ConfigurationError, StartupError
from shared.logs import log_config
from shared.metrics import Metrics
from shared.settings import Settings, load_settings
from shared.tracing import API_SERVICE, open_tracing
from worker.embedded import embedded_worker

logger = logging.getLogger(__name__)


@asynccontextmanager
async def open_services(settings: Settings, catalog: Catalog) -> AsyncIterator[Services]:
    """Open what the api needs for its mode; fail with a StartupError if Redis refuses it. In
    the local mode the api hosts the embedded worker, which runs its jobs."""
    async with AsyncExitStack() as stack:
        # In the local mode the api runs the jobs too, and owns a worker's metrics as well.
        metrics = Metrics(catalog, api=True, worker=settings.cache_backend == "local")
        hosted = embedded_worker(settings, catalog, metrics)
        backend = await stack.enter_async_context(
            open_backend(settings, Role.API, in_process_worker=hosted, catalog=catalog)
        )
        response_cache = await stack.enter_async_context(open_response_cache(settings, backend))
        yield Services(
            settings,
            catalog,
            backend,
            response_cache,
            metrics,
            api_keys=ApiKeys(settings.api_key_list, settings.admin_api_key_list),
        )


def install_submit_routes(app: FastAPI, catalog: Catalog, settings: Settings) -> None:
    """Add POST /jobs/{name} and /jobs/{name}/batch for the job types loaded at startup (their
    batches as long as its MAX_BATCH), in place of those an earlier start of this app added;
    the OpenAPI schema is made anew on its next read.

    The router tries the routes in order for each request: GET /jobs/{job_id} and the job
    types' routes, the hot paths, come first (no other route takes what they take, so the
    order changes no answer); the fallbacks of the submits, which take any name, come last."""
    earlier = getattr(app.state, "submit_routes", [])
    submits = submissions.submit_routes(catalog, settings.max_batch).routes
    kept = [route for route in app.router.routes if route not in earlier]
    hot = [route for route in kept if getattr(route, "name", None) == "get_job"]
    fallbacks = [route for route in submits if isinstance(route, FallbackRoute)]
    typed = [route for route in submits if route not in fallbacks]
    app.router.routes[:] = [
        *hot,
        *typed,
        *(route for route in kept if route not in hot),
        *fallbacks,
    ]
    app.state.submit_routes = submits
    app.openapi_schema = None


def create_app(settings: Settings | None = None) -> FastAPI:
    """The api; `settings` is for tests, otherwise they are read from the environment at start."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            active = settings or load_settings()
            logging.config.dictConfig(log_config(active.log_level, active.log_format))
            catalog = load_catalog(active.job_modules)
            install_submit_routes(app, catalog, active)
            async with open_tracing(API_SERVICE), open_services(active, catalog) as services:
                expect_routes(app, services.metrics.api)
                app.state.services = services
                logger.info(
                    "jobcache api ready: backend %s, namespace %s, %d job types",
                    active.cache_backend, active.cache_namespace, len(catalog),
                )  # fmt: skip
                yield
        except (ConfigurationError, StartupError) as error:
            logger.critical("jobcache api cannot start: %s", error)
            # The line above says what to fix; the traceback only when debugging.
            setattr(app.state, EXPLAINED_STATE_KEY, not logger.isEnabledFor(logging.DEBUG))
            raise

    app = FastAPI(
        title="jobcache",
        summary="Run background jobs and serve their results from a cache.",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=request_telemetry(),
    )
    install_method_answers(app)
    app.add_middleware(SettingsBodyLimit)
    install_error_handlers(app)
    count_redis_errors(app)
    count_quota_refusals(app)
    app.add_middleware(RequestObserver)
    for router in (
        listing.router,
        retries.router,
        jobs.router,
        schedules.router,
        cached.router,
        health.router,
        metrics.router,
        dashboard.router,
        queues.router,
    ):
        # The routes themselves, not the router: FastAPI matches an included router's routes
        # twice per request (to choose the router, then within it). They carry their prefix,
        # tags and the router's dependencies already.
        app.router.routes.extend(router.routes)
    install_openapi(app)
    quiet_explained_startup_failure(app)
    return app


app = create_app()
