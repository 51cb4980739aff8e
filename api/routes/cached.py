"""GET /cached: the sample of request-level caching, an expensive computation whose response
`@cache_response` keeps for CACHE_TTL seconds; DELETE /cached drops every stored one. With
API_KEYS set, the first needs a key and the second an admin key."""

import asyncio
import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from api.deps import AdminDep, ResponseCacheDep, get_caller
from api.response_cache import cache_response
from api.responses import answers

router = APIRouter(tags=["cache"])

NAMESPACE = "computations"


class Computation(BaseModel):
    """The digest of `rounds` sha256 rounds over the seed: the same bytes whether the cache
    answered or not (X-Cache says which), so the ETag of a miss revalidates."""

    rounds: int
    digest: str


class Dropped(BaseModel):
    dropped: int
    """How many stored responses were deleted."""


def hash_chain(seed: str, rounds: int) -> str:
    """sha256 applied `rounds` times: slow on purpose, and the same answer every time."""
    digest = seed.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@router.get(
    "/cached",
    response_model=Computation,
    responses={
        200: {
            "headers": {
                "X-Cache": {
                    "description": "`hit` or `miss`: whether the cache answered.",
                    "schema": {"type": "string", "enum": ["hit", "miss"]},
                },
                "ETag": {"description": "Send it as If-None-Match.", "schema": {"type": "string"}},
            }
        },
        304: {"description": "Not modified: the If-None-Match ETag is the current one."},
        **answers(401, 422),
    },
    # Before the cache: a request without a valid key never gets a stored answer.
    dependencies=[Depends(get_caller)],
)
@router.head(
    "/cached",
    response_model=Computation,
    include_in_schema=False,
    dependencies=[Depends(get_caller)],
)
@cache_response(namespace=NAMESPACE)
async def cached_computation(
    rounds: Annotated[int, Query(ge=1, le=5_000_000, description="sha256 rounds")] = 200_000,
    seed: Annotated[str, Query(max_length=1000)] = "jobcache",
) -> Computation:
    """The result of an expensive computation. X-Cache says whether it came from the cache;
    ETag and Cache-Control let a client revalidate it."""
    digest = await asyncio.to_thread(hash_chain, seed, rounds)
    return Computation(rounds=rounds, digest=digest)


@router.delete("/cached", response_model=Dropped, responses=answers(401, 403, 503))
async def drop_cached_computations(responses: ResponseCacheDep, _admin: AdminDep) -> Dropped:
    """Invalidate every stored GET /cached response, in every api process. With API keys set,
    it needs an admin key (ADMIN_API_KEYS)."""
    return Dropped(dropped=await responses.invalidate_namespace(NAMESPACE))
