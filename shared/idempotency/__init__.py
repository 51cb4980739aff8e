"""Idempotent submissions (`Idempotency-Key`): the port and its memory and Redis backends."""

from shared.idempotency.base import (
    KEPT_SECONDS,
    KEY_PATTERN,
    Claim,
    IdempotencyBook,
    IdempotentRequest,
)
from shared.idempotency.memory import MemoryIdempotencyBook

__all__ = [
    "KEPT_SECONDS",
    "KEY_PATTERN",
    "Claim",
    "IdempotencyBook",
    "IdempotentRequest",
    "MemoryIdempotencyBook",
]
