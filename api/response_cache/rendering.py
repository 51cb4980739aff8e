"""From an endpoint's return value to the bytes FastAPI would send, and from a cached response
to an HTTP answer with Cache-Control, a strong ETag, X-Cache, and 304 for If-None-Match."""

from functools import cache
from typing import Any

from fastapi.encoders import jsonable_encoder
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.response_cache.entry import CachedResponse, cached_response

NOT_MODIFIED_HEADERS = frozenset({b"cache-control", b"etag", b"vary", b"x-cache"})


class PreparedResponse(Response):
    """A response whose headers are already encoded: a hit skips Starlette's header building."""

    def __init__(
        self, body: bytes, status_code: int, raw_headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.body = body
        self.status_code = status_code
        self.raw_headers = raw_headers
        self.background = None


@cache
def adapter_for(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def rendered(value: Any, request: Request, sub_response: Response) -> Response:
    """The response FastAPI would make of `value` for this route: through its response model
    (with its include/exclude options) or its response class, with the status and headers set
    on the Response parameter."""
    if isinstance(value, Response):
        return value
    route = request.scope.get("route")
    status = sub_response.status_code or getattr(route, "status_code", None) or 200
    response_class = getattr(route, "response_class", None)
    model = getattr(route, "response_model", None)
    if model is not None and not isinstance(response_class, type):
        adapter = adapter_for(model)
        body = adapter.dump_json(
            adapter.validate_python(value, from_attributes=True),
            include=getattr(route, "response_model_include", None),
            exclude=getattr(route, "response_model_exclude", None),
            by_alias=getattr(route, "response_model_by_alias", True),
            exclude_unset=getattr(route, "response_model_exclude_unset", False),
            exclude_defaults=getattr(route, "response_model_exclude_defaults", False),
            exclude_none=getattr(route, "response_model_exclude_none", False),
        )
        response = Response(body, status_code=status, media_type="application/json")
    else:
        make = response_class if isinstance(response_class, type) else JSONResponse
        response = make(jsonable_encoder(value), status_code=status)
    response.headers.raw.extend(sub_response.headers.raw)
    return response


def captured(response: Response) -> tuple[CachedResponse, bool]:
    """The response as the cache keeps it, and whether it may be stored at all: only a 200
    that sets no cookie and does not say no-store."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes | memoryview):
        raise TypeError(
            f"cache_response cannot cache a streaming response ({type(response).__name__})"
        )
    headers = tuple(response.raw_headers)
    storable = response.status_code == 200 and not any(
        name == b"set-cookie" or (name == b"cache-control" and b"no-store" in value.lower())
        for name, value in headers
    )
    captured_response = cached_response(
        response.status_code, headers, bytes(body), storable=storable
    )
    return captured_response, storable


def request_header(request: Request, name: bytes) -> str | None:
    """One request header, read straight from the ASGI scope (names are lower-case there)."""
    values = [value for key, value in request.scope["headers"] if key == name]
    return b", ".join(values).decode("latin-1") if values else None


def etag_matches(if_none_match: str, etag: bytes) -> bool:
    """If-None-Match's weak comparison (RFC 9110, 13.1.2): W/ prefixes do not matter."""
    if if_none_match.strip() == "*":
        return True
    wanted = etag.decode("ascii")
    return any(
        candidate.strip().removeprefix("W/") == wanted for candidate in if_none_match.split(",")
    )


def answer(
    response: CachedResponse,
    remaining: float,
    *,
    hit: bool,
    cacheable: bool,
    private: bool,
    request: Request,
) -> Response:
    """The HTTP answer for a served response: a 200 with its body (none for HEAD), or a 304
    when the client already holds this ETag."""
    headers = list(response.hit_headers if hit else response.miss_headers)
    if cacheable:
        max_age = str(max(0, int(remaining))).encode()
        headers.append(
            (b"cache-control", (b"private, max-age=" if private else b"max-age=") + max_age)
        )
        if_none_match = request_header(request, b"if-none-match")
        if if_none_match is not None and etag_matches(if_none_match, response.etag):
            kept = [(name, value) for name, value in headers if name in NOT_MODIFIED_HEADERS]
            return PreparedResponse(b"", 304, kept)
    body = b"" if request.scope["method"] == "HEAD" else response.body
    return PreparedResponse(body, response.status, headers)
