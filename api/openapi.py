"""The api's OpenAPI document: FastAPI's, with the API key its routes take declared as a bearer
scheme, so that /docs has an Authorize button and a client generator knows where the key goes."""

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from api.deps import IDENTIFYING

BEARER = "bearer"
BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "One of the deployment's API keys (API_KEYS), sent as `Authorization: Bearer "
    "<key>`. Needed when API_KEYS is set (else a 401); without it the api is open and a key "
    "sent is not looked at.",
}
KEY_WHEN_SET: list[dict[str, list[str]]] = [{BEARER: []}, {}]
"""A route's `security`: the bearer key, or none (a deployment without API_KEYS); the one
document serves both."""


def install_openapi(app: FastAPI) -> None:
    """Serve FastAPI's document with the bearer scheme on every operation that identifies its
    caller; made anew, as FastAPI's is, when `app.openapi_schema` is reset."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            declare_bearer_key(generate(), app.routes)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def declare_bearer_key(document: dict[str, Any], routes: Sequence[BaseRoute]) -> None:
    document.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = BEARER_SCHEME
    for context in iter_route_contexts(routes):
        route = context.original_route
        if not (isinstance(route, APIRoute) and route.include_in_schema):
            continue
        if not identifies_caller(route.dependant):
            continue
        operations = document["paths"].get(context.path_format, {})
        for method in context.methods or ():
            if method.lower() in operations:
                operations[method.lower()]["security"] = KEY_WHEN_SET


def identifies_caller(dependant: Dependant) -> bool:
    """Whether the route depends, at any depth, on the caller its API key names."""
    return any(
        dependency.call in IDENTIFYING or identifies_caller(dependency)
        for dependency in dependant.dependencies
    )
