"""Who is asking: API keys from API_KEYS, compared in constant time. Each key sees only the
jobs it submitted, and the runs of scheduled job types, which no key owns; the api is open when
no key is set (the embedded default)."""

import hashlib
import hmac
from dataclasses import dataclass

from shared.errors import UnauthorizedError
from shared.records import JobRecord


@dataclass(frozen=True)
class Caller:
    owner: str | None
    """A digest of the caller's key, stored with its jobs (never the key); None when open."""

    def may_read(self, record: JobRecord) -> bool:
        """Its own jobs, and the runs of a schedule, which no key owns: any key may read them
        (but not cancel them)."""
        return record.owner == self.owner or (
            record.owner is None and record.scheduled_for is not None
        )


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._digests = [key_digest(key) for key in keys]

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def identify(self, authorization: str | None) -> Caller:
        """The caller named by an `Authorization: Bearer <key>` header, or UnauthorizedError."""
        if not self._digests:
            return Caller(owner=None)
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise UnauthorizedError("send an API key: Authorization: Bearer <key>")
        digest = key_digest(given.strip())
        matched: bytes | None = None
        for candidate in self._digests:  # every candidate, so timing tells nothing
            if hmac.compare_digest(digest, candidate):
                matched = candidate
        if matched is None:
            raise UnauthorizedError("the API key is not valid")
        return Caller(owner=matched.hex()[:32])
