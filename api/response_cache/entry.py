"""One cached response: what the store keeps (JSON, through the shared serializer) and the
ready-to-send form each api process builds once and serves many times."""

import base64
import binascii
import hashlib
import time
from dataclasses import dataclass

from aiocache.serializers import JsonSerializer

SERIALIZER = JsonSerializer()
OWN_HEADERS = frozenset({b"content-length", b"etag", b"cache-control", b"x-cache", b"age"})
"""Headers the response cache writes itself, so a stored copy of them is dropped."""


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A response as it is stored and served: status, headers, body and their strong ETag.

    `hit_headers` and `miss_headers` are encoded once, so serving a copy costs one list copy."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    etag: bytes
    hit_headers: tuple[tuple[bytes, bytes], ...]
    miss_headers: tuple[tuple[bytes, bytes], ...]


def strong_etag(body: bytes) -> bytes:
    """A strong validator: it changes whenever one byte of the body does."""
    return b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'


def cached_response(
    status: int, headers: tuple[tuple[bytes, bytes], ...], body: bytes, *, storable: bool = True
) -> CachedResponse:
    """A response ready to serve. One that is not `storable` keeps the endpoint's headers as
    they are (its Cache-Control, its cookies) and only gains X-Cache: miss."""
    etag = strong_etag(body)
    if not storable:
        as_is = (*headers, (b"x-cache", b"miss"))
        return CachedResponse(status, headers, body, etag, as_is, as_is)
    kept = tuple((name, value) for name, value in headers if name.lower() not in OWN_HEADERS)
    common = (*kept, (b"content-length", str(len(body)).encode()), (b"etag", etag))
    return CachedResponse(
        status=status,
        headers=kept,
        body=body,
        etag=etag,
        hit_headers=(*common, (b"x-cache", b"hit")),
        miss_headers=(*common, (b"x-cache", b"miss")),
    )


def encode(response: CachedResponse, ttl: float) -> str:
    """JSON that reads well in RedisInsight: the body as text when it is UTF-8."""
    try:
        body: dict[str, str] = {"body": response.body.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"body_base64": base64.b64encode(response.body).decode("ascii")}
    stored_at = time.time()
    document = {
        "status": response.status,
        "headers": [
            [name.decode("latin-1"), value.decode("latin-1")] for name, value in response.headers
        ],
        **body,
        "stored_at": round(stored_at, 3),
        "expires_at": round(stored_at + ttl, 3),
    }
    encoded: str = SERIALIZER.dumps(document)
    return encoded


def decode(payload: bytes | str) -> CachedResponse | None:
    """The stored response, or None if the payload is not one (then it is treated as a miss)."""
    try:
        document = SERIALIZER.loads(payload.decode() if isinstance(payload, bytes) else payload)
        if "body_base64" in document:
            body = base64.b64decode(document["body_base64"], validate=True)
        else:
            body = document["body"].encode("utf-8")
        headers = tuple(
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in document["headers"]
        )
        return cached_response(int(document["status"]), headers, body)
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        return None
