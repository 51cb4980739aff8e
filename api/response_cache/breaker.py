"""Failing open, fast: every call to the shared store has a deadline, and after a few failures
in a row the store is skipped for a while, so a dead Redis costs no timeout per request."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

T = TypeVar("T")
FAILURES_TO_OPEN = 3
STORE_ERRORS = (BackendUnavailableError, TimeoutError)
"""How a store call fails: the store could not reach Redis, or the breaker's deadline passed."""


class CircuitBreaker:
    """Closed: calls go through. Open (after FAILURES_TO_OPEN failures in a row): calls are
    skipped for `cooldown` seconds. Then calls go through again, and one failure re-opens it."""

    def __init__(
        self, timeout: float, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._timeout = timeout
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return self._clock() < self._open_until

    async def call(self, what: str, operation: Callable[[], Awaitable[T]], fallback: T) -> T:
        """`operation()` within the timeout, or `fallback` if it fails or the breaker is open."""
        if self._open_until and self.is_open:
            return fallback
        try:
            async with asyncio.timeout(self._timeout):
                result = await operation()
        except STORE_ERRORS as error:
            self._failed(what, error)
            return fallback
        self._succeeded()
        return result

    async def attempt(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """`operation()` whatever the breaker's state (for invalidations, which must not be
        skipped silently); a failure is raised as BackendUnavailableError."""
        try:
            result = await operation()
        except BackendUnavailableError as error:
            self._failed(what, error)
            raise BackendUnavailableError(f"the response cache could not {what}") from error
        self._succeeded()
        return result

    def _failed(self, what: str, error: BaseException) -> None:
        self._failures += 1
        if self._failures < FAILURES_TO_OPEN:
            logger.warning("response cache could not %s (%r); answering uncached", what, error)
            return
        if not self.is_open:
            logger.warning(
                "response cache: Redis is not answering (%r); cached endpoints answer uncached "
                "and Redis is tried again in %gs",
                error, self._cooldown,
            )  # fmt: skip
        self._open_until = self._clock() + self._cooldown

    def _succeeded(self) -> None:
        if self._failures >= FAILURES_TO_OPEN:
            logger.info("response cache: Redis answers again")
        self._failures = 0
        self._open_until = 0.0
