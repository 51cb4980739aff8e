"""Per-key quotas: the port and its memory and Redis backends."""

from shared.quotas.base import Limits, QuotaLedger
from shared.quotas.memory import MemoryQuotaLedger

__all__ = ["Limits", "MemoryQuotaLedger", "QuotaLedger"]
