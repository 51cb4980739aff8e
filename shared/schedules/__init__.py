"""The book of scheduled job types' due times: the port and its memory and Redis backends."""

from shared.schedules.base import CLAIM_TTL, LATE_LIMIT, LastRun, ScheduleBook
from shared.schedules.memory import MemoryScheduleBook

__all__ = ["CLAIM_TTL", "LATE_LIMIT", "LastRun", "MemoryScheduleBook", "ScheduleBook"]
