"""`@cache_response`: the one way to cache a FastAPI endpoint's responses.

It wraps the endpoint after FastAPI has resolved its parameters and dependencies (so an
endpoint that authenticates its caller still does so on every hit) and before FastAPI
serialises its answer. It needs the Request and the Response parameter: it uses the endpoint's
own if it declares them, or asks FastAPI for them through extra keyword parameters.
"""

import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.response_cache.cache import Produced, ResponseCache
from api.response_cache.rendering import answer, captured, rendered
from api.response_cache.variants import checked_namespace, variant

REQUEST_PARAMETER = "response_cache_request"
RESPONSE_PARAMETER = "response_cache_response"

Endpoint = Callable[..., Any]
NAMESPACE_STATE_KEY = "response_cache_namespace"
"""The request-state key naming the namespace of the cached endpoint that answered, for the
api's hit/miss metric."""
RECENT_KEYS = 1024
"""Keys remembered per endpoint without `vary`, by raw request line: a hit then hashes nothing."""


def cache_response(
    *,
    namespace: str,
    ttl: float | None = None,
    vary: Sequence[str] = (),
    lock_seconds: float | None = None,
) -> Callable[[Endpoint], Callable[..., Awaitable[Any]]]:
    """Cache a GET (and HEAD) endpoint's 200 responses for `ttl` seconds (default CACHE_TTL).

    The key is the sha256 of the method, the path, the query parameters sorted by name and the
    values of the endpoint parameters named in `vary` (the caller's identity, a header...);
    anything else the response depends on must be named there. Responses that vary are sent
    `Cache-Control: private`. `lock_seconds` (default RESPONSE_CACHE_LOCK_SECONDS) is how
    long other processes wait for one process's fill. A miss answers with exactly the bytes
    that are stored, so its ETag revalidates on the hits; only X-Cache tells them apart.
    """
    checked_namespace(namespace)
    if ttl is not None and ttl <= 0:
        raise ValueError(f"cache_response ttl must be positive, not {ttl!r}")
    vary_names = tuple(vary)

    def decorate(endpoint: Endpoint) -> Callable[..., Awaitable[Any]]:
        signature = signature_of(endpoint)
        unknown = [name for name in vary_names if name not in signature.parameters]
        if unknown:
            raise ValueError(
                f"cache_response(vary=...) names {unknown} but {endpoint.__name__} has no such "
                "parameter; vary on the endpoint's own parameters or dependencies"
            )
        is_coroutine = inspect.iscoroutinefunction(endpoint)
        request_name = parameter_of_type(signature, Request)
        response_name = parameter_of_type(signature, Response)
        signature = with_parameters(
            signature,
            [] if request_name else [(REQUEST_PARAMETER, Request)],
            [] if response_name else [(RESPONSE_PARAMETER, Response)],
        )
        injected = [
            name for name in (REQUEST_PARAMETER, RESPONSE_PARAMETER) if name in signature.parameters
        ]
        request_name = request_name or REQUEST_PARAMETER
        response_name = response_name or RESPONSE_PARAMETER
        recent_keys: dict[tuple[str, str, str, bytes], str] = {}

        def key_of(request: Request, cache: ResponseCache, arguments: dict[str, Any]) -> str:
            scope = request.scope
            method, path = scope["method"], scope["path"]
            if vary_names:
                varying = [(name, arguments[name]) for name in vary_names]
                query = request.query_params.multi_items()
                return cache.keys.response(namespace, path, variant(method, query, varying))
            line = (cache.keys.root, method, path, scope["query_string"])
            key = recent_keys.get(line)
            if key is None:
                query = request.query_params.multi_items()
                key = cache.keys.response(namespace, path, variant(method, query, ()))
                if len(recent_keys) >= RECENT_KEYS:
                    recent_keys.clear()
                recent_keys[line] = key
            return key

        async def call(arguments: dict[str, Any]) -> Any:
            if is_coroutine:
                return await endpoint(**arguments)
            return await run_in_threadpool(endpoint, **arguments)

        @functools.wraps(endpoint)
        async def cached_endpoint(**arguments: Any) -> Any:
            request: Request = arguments[request_name]
            sub_response: Response = arguments[response_name]
            for name in injected:
                del arguments[name]
            method = request.scope["method"]
            if method != "GET" and method != "HEAD":
                return await call(arguments)
            cache: ResponseCache = request.app.state.services.response_cache
            request.scope.setdefault("state", {})[NAMESPACE_STATE_KEY] = namespace
            key = key_of(request, cache, arguments)
            near = cache.near(key)
            if near is not None:
                response, remaining = near
                return answer(
                    response, remaining, hit=True, cacheable=True, private=bool(vary_names),
                    request=request,
                )  # fmt: skip

            async def produce() -> Produced:
                value = await call(arguments)
                return Produced(*captured(rendered(value, request, sub_response)))

            served = await cache.serve(
                namespace,
                key,
                ttl or cache.default_ttl,
                lock_seconds or cache.lock_seconds,
                produce,
            )
            return answer(
                served.response, served.remaining, hit=served.hit, cacheable=served.cacheable,
                private=bool(vary_names), request=request,
            )  # fmt: skip

        cached_endpoint.__signature__ = signature  # type: ignore[attr-defined]
        return cached_endpoint

    return decorate


def signature_of(endpoint: Endpoint) -> inspect.Signature:
    """The endpoint's signature with its annotations evaluated, as FastAPI reads it."""
    try:
        return inspect.signature(endpoint, eval_str=True)
    except NameError:
        return inspect.signature(endpoint)


def parameter_of_type(signature: inspect.Signature, kind: type) -> str | None:
    """The name of the endpoint's parameter that FastAPI fills with a `kind` (it fills one)."""
    for parameter in signature.parameters.values():
        if isinstance(parameter.annotation, type) and issubclass(parameter.annotation, kind):
            return parameter.name
    return None


def with_parameters(
    signature: inspect.Signature, *added: list[tuple[str, type]]
) -> inspect.Signature:
    """The endpoint's parameters plus keyword-only ones that FastAPI fills for the cache."""
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)
        for group in added
        for name, annotation in group
    ]
    for parameter in extra:
        if parameter.name in signature.parameters:
            raise ValueError(f"cache_response needs the parameter name {parameter.name!r}")
    parameters = list(signature.parameters.values())
    position = len(parameters)
    if parameters and parameters[-1].kind is inspect.Parameter.VAR_KEYWORD:
        position -= 1
    return signature.replace(parameters=[*parameters[:position], *extra, *parameters[position:]])
