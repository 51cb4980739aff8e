"""Which methods a path serves, asked of the app's router: OPTIONS answers with them, a 405 says
them in a true `Allow`, and HEAD is answered wherever GET is (FastAPI's routes serve only the
methods they declare, Starlette's add HEAD to GET). A fallback route serves no method: a path
only it takes is not there."""

import asyncio

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.routing import APIRoute
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROUTED_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
"""The methods asked of the router; OPTIONS is answered here for any path a route serves."""


PROBE = "jobcache.methods_probe"
"""Marks the scopes with which routed_methods asks the routes: a fallback takes none of them."""


class FallbackRoute(APIRoute):
    """A route that answers what no other route takes with a 404 that says more than "Not
    Found": POST /jobs/{name} for a name that is no job type, GET /jobs/{job_id} for a segment
    that cannot be a job id. It takes a path only where no other route takes it with any
    method, and serves no method itself: a path only it takes has no `Allow`."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(PROBE):
            return Match.NONE, {}
        match, child_scope = super().matches(scope)
        # Only for a full match (an unknown path, mostly): the hot paths never get here.
        if match is Match.FULL and routed_methods(scope["app"], scope):
            return Match.NONE, {}
        return match, child_scope


def routed_methods(app: Starlette, scope: Scope) -> set[str]:
    """The methods for which some route of `app`, not a fallback, takes this request's path."""
    served = set()
    for method in ROUTED_METHODS:
        probe = {
            "type": "http",
            "method": method,
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "headers": [],
            PROBE: True,
        }
        if any(route.matches(probe)[0] is Match.FULL for route in app.router.routes):
            served.add(method)
    return served


def allowed_methods(app: Starlette, scope: Scope) -> list[str]:
    """The true `Allow` of this request's path: what its routes serve, HEAD wherever GET is,
    and OPTIONS; empty when no route takes the path."""
    served = routed_methods(app, scope)
    if not served:
        return []
    if "GET" in served:
        served.add("HEAD")
    return sorted(served | {"OPTIONS"})


async def method_not_allowed(request: Request, error: Exception) -> Response:
    """OPTIONS on a path some route serves: 204 with its methods. Any other method its routes
    do not serve: 405 with the same `Allow` (Starlette's names only the first route it tried).
    On a path only a fallback takes, both are a 404. Other HTTP errors answer as FastAPI
    answers them."""
    assert isinstance(error, HTTPException)
    if error.status_code != 405:
        return await http_exception_handler(request, error)
    allowed = allowed_methods(request.app, request.scope)
    if not allowed:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    allow = {"Allow": ", ".join(allowed)}
    if request.method == "OPTIONS":
        return Response(status_code=204, headers=allow)
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=allow)


class HeadAsGet:
    """ASGI middleware: a HEAD on a path whose routes serve GET but not HEAD runs the GET and
    sends its status and headers only. Once they are sent the request reads as disconnected,
    so that a stream (GET /jobs/{id}/events) stops instead of running on unseen."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or "app" not in scope:
            await self.app(scope, receive, send)
            return
        served = routed_methods(scope["app"], scope)
        if "HEAD" in served or "GET" not in served:
            await self.app(scope, receive, send)
            return
        answered = asyncio.Event()

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                answered.set()

        async def disconnected_once_answered() -> Message:
            if answered.is_set():
                return {"type": "http.disconnect"}
            reading = asyncio.ensure_future(receive())
            waiting = asyncio.ensure_future(answered.wait())
            await asyncio.wait((reading, waiting), return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if reading.done():
                return reading.result()
            reading.cancel()
            return {"type": "http.disconnect"}

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, disconnected_once_answered, headers_only)
        finally:
            if "route" in as_get:  # for the request log (api/observability.py)
                scope["route"] = as_get["route"]


def install_method_answers(app: FastAPI) -> None:
    """Answer OPTIONS, 405 and HEAD as above; added before the other middleware, HEAD is
    answered innermost, where the body limit and the request log still see a HEAD."""
    app.add_exception_handler(HTTPException, method_not_allowed)
    app.add_middleware(HeadAsGet)
