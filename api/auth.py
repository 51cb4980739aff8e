"""Who is asking: API keys from API_KEYS and ADMIN_API_KEYS, compared in constant time. Each
key sees only the jobs it submitted, and the runs of scheduled job types, which no key owns; an
admin key may also use the admin routes; the api is open when no key is set (the embedded
default)."""

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from shared.errors import UnauthorizedError
from shared.records import JobRecord


@dataclass(frozen=True)
class Caller:
    owner: str | None
    """A digest of the caller's key, stored with its jobs (never the key); None when open."""
    admin: bool
    """Whether it may use the admin routes: an admin key's caller, or anyone when open."""

    def may_read(self, record: JobRecord) -> bool:
        """Its own jobs, and the runs of a schedule, which no key owns: any key may read them
        (but not cancel them)."""
        return record.owner == self.owner or (
            record.owner is None and record.scheduled_for is not None
        )


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class ApiKeys:
    """The configured keys, as digests. An admin key is a key too: its caller owns its jobs
    under the same digest as it would from API_KEYS, so moving a key between the two settings
    keeps its jobs."""

    def __init__(self, keys: Sequence[str], admin_keys: Sequence[str] = ()) -> None:
        admins = {key_digest(key) for key in admin_keys}
        every = {key_digest(key) for key in keys} | admins
        self._digests = [(digest, digest in admins) for digest in sorted(every)]

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def identify(self, authorization: str | None) -> Caller:
        """The caller named by an `Authorization: Bearer <key>` header, or UnauthorizedError."""
        if not self._digests:
            return Caller(owner=None, admin=True)
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise UnauthorizedError("send an API key: Authorization: Bearer <key>")
        digest = key_digest(given.strip())
        matched: tuple[bytes, bool] | None = None
        for candidate in self._digests:  # every candidate, so timing tells nothing
            if hmac.compare_digest(digest, candidate[0]):
                matched = candidate
        if matched is None:
            raise UnauthorizedError("the API key is not valid")
        return Caller(owner=matched[0].hex()[:32], admin=matched[1])
