"""How cached responses are named in the store.

A response lives at `<root>:response:<namespace>:<sha256 of path>:<sha256 of the variant>`,
where root is CACHE_NAMESPACE and the variant is the method, the query and the declared varying
inputs. Key length and characters never depend on what a client sends, and one SCAN pattern
reaches every response of a namespace, or of one path in it, and nothing else.
"""

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

VARIANT_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
"""No ':' (it separates the parts of a key) and no glob character (SCAN patterns stay exact)."""


def checked_namespace(namespace: str) -> str:
    if NAMESPACE_PATTERN.fullmatch(namespace) is None:
        raise ValueError(
            f"response cache namespace {namespace!r}: use only letters, digits, '_', '.' and '-'"
        )
    return namespace


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def vary_value(value: Any) -> Any:
    """A JSON-able form of a varying input, such as the caller's identity or a header."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return jsonable_encoder(value)


def variant(method: str, query: Iterable[tuple[str, str]], vary: Iterable[tuple[str, Any]]) -> str:
    """The inputs besides the path that change a response, in one unambiguous text. Query
    parameters are sorted by name (a stable sort, so repeated values keep their order), varying
    inputs by name; HEAD shares GET's responses."""
    normalised_method = "GET" if method == "HEAD" else method
    return VARIANT_ENCODER.encode(
        [
            normalised_method,
            sorted(query, key=itemgetter(0)),
            [[name, vary_value(value)] for name, value in sorted(vary, key=itemgetter(0))],
        ]
    )


@dataclass(frozen=True)
class ResponseKeys:
    """Every name the response cache uses, under the deployment's CACHE_NAMESPACE."""

    root: str

    @property
    def channel(self) -> str:
        """The pub/sub channel on which invalidations reach every api process."""
        return f"{self.root}:response-invalidations"

    def namespace_prefix(self, namespace: str) -> str:
        return f"{self.root}:response:{namespace}:"

    def path_prefix(self, namespace: str, path: str) -> str:
        return f"{self.root}:response:{namespace}:{digest(path)}:"

    def response(self, namespace: str, path: str, variant_text: str) -> str:
        return f"{self.root}:response:{namespace}:{digest(path)}:{digest(variant_text)}"

    def lock(self, key: str) -> str:
        """The fill lock of one response; outside the namespace's SCAN pattern."""
        return f"{self.root}:response-lock:{key.removeprefix(self.root + ':response:')}"

    def epoch(self, namespace: str) -> str:
        """A counter bumped by every invalidation in the namespace, so that a fill that
        started before an invalidation cannot store what it computed after it."""
        return f"{self.root}:response-epoch:{namespace}"
