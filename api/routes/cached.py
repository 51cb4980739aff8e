"""GET /cached: the sample of request-level caching: an expensive computation whose response
is kept in the cache under a hashed key for CACHE_TTL seconds."""

import asyncio
import hashlib
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from api.deps import CacheDep
from shared.keys import response_key

router = APIRouter(tags=["cache"])


class Computation(BaseModel):
    rounds: int
    digest: str
    cached: bool


def hash_chain(seed: str, rounds: int) -> str:
    """sha256 applied `rounds` times: slow on purpose, and the same answer every time."""
    digest = seed.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@router.get("/cached", response_model=Computation)
async def cached_computation(
    request: Request,
    response: Response,
    cache: CacheDep,
    rounds: Annotated[int, Query(ge=1, le=5_000_000, description="sha256 rounds")] = 200_000,
    seed: Annotated[str, Query(max_length=1000)] = "jobcache",
) -> Computation:
    """The result of an expensive computation; `cached` (and X-Cache) say whether it was
    served from the cache. The key is the sha256 of the method, path and query."""
    key = response_key(request.method, request.url.path, f"rounds={rounds}", f"seed={seed}")
    stored = await cache.get(key)
    if stored is not None:
        response.headers["X-Cache"] = "hit"
        return Computation(rounds=rounds, digest=stored, cached=True)
    digest = await asyncio.to_thread(hash_chain, seed, rounds)
    await cache.set(key, digest)
    response.headers["X-Cache"] = "miss"
    return Computation(rounds=rounds, digest=digest, cached=False)
