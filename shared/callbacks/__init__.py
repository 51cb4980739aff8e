"""The outbox of callbacks: the port and its memory and Redis backends."""

from shared.callbacks.base import CallbackOutbox, ClaimedCallback, Claims
from shared.callbacks.memory import MemoryCallbackOutbox

__all__ = ["CallbackOutbox", "ClaimedCallback", "Claims", "MemoryCallbackOutbox"]
