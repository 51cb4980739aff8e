"""Dependency aliases through which routes reach what the lifespan opened.

They are `async def` although none awaits: FastAPI runs a plain `def` dependency in a thread
pool, a thread hop per dependency per request on the hot path. Each dependency a route takes,
at any depth, costs FastAPI a resolution per request (tens of microseconds): a route of the
caller's jobs takes one, `CallDep`, for what it needs of both.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from api.auth import Caller
from api.response_cache import ResponseCache
from api.services import Services
from shared.backend import Backend
from shared.catalog import Catalog
from shared.errors import ForbiddenError
from shared.events import JobEvents
from shared.metrics import Metrics
from shared.overview import Overview
from shared.records import RecordStore
from shared.settings import Settings


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_backend(services: ServicesDep) -> Backend:
    return services.backend


BackendDep = Annotated[Backend, Depends(get_backend)]


async def get_records(backend: BackendDep) -> RecordStore:
    return backend.records


async def get_events(backend: BackendDep) -> JobEvents:
    return backend.events


async def get_overview(backend: BackendDep) -> Overview:
    return backend.overview


async def get_response_cache(services: ServicesDep) -> ResponseCache:
    return services.response_cache


async def get_catalog(services: ServicesDep) -> Catalog:
    return services.catalog


async def get_metrics(services: ServicesDep) -> Metrics:
    return services.metrics


async def get_caller(request: Request) -> Caller:
    """The caller, by its API key; 401 when keys are configured and it sent none or a wrong one."""
    services: Services = request.app.state.services
    return services.api_keys.identify(request.headers.get("authorization"))


@dataclass(frozen=True)
class Call:
    """What a route of the caller's jobs needs, resolved as one dependency: what the lifespan
    opened, and who is asking."""

    services: Services
    caller: Caller


async def get_call(request: Request) -> Call:
    """As `get_services` and `get_caller` together: 401 as `get_caller` says."""
    services: Services = request.app.state.services
    return Call(services, services.api_keys.identify(request.headers.get("authorization")))


async def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """The caller, if it may use the admin routes: 401 as for any route with a key, 403 when
    its key is not an admin key (ADMIN_API_KEYS). Anyone may when no key is set. A route that
    takes it documents `answers(401, 403)`."""
    if not caller.admin:
        raise ForbiddenError("this needs an admin key, and this API key is not one")
    return caller


SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
CallerDep = Annotated[Caller, Depends(get_caller)]
CallDep = Annotated[Call, Depends(get_call)]
AdminDep = Annotated[Caller, Depends(get_admin)]
RecordsDep = Annotated[RecordStore, Depends(get_records)]
EventsDep = Annotated[JobEvents, Depends(get_events)]
ResponseCacheDep = Annotated[ResponseCache, Depends(get_response_cache)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
OverviewDep = Annotated[Overview, Depends(get_overview)]

IDENTIFYING = (get_caller, get_call)
"""The dependencies that identify the caller by its API key (for the OpenAPI's security)."""
