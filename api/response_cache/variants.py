"""What tells one cached response of an endpoint from another: the variant (the method, the
query and the declared varying inputs) that is hashed into its key (shared/keys.py names the
keys), and the rule for response-cache namespaces."""

import json
import re
from collections.abc import Iterable
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
