"""Each owner's list of its jobs (GET /jobs): the port, its paging, and its memory and Redis
backends."""

from shared.listing.base import (
    CURSOR_PATTERN,
    MAX_LIMIT,
    JobFilter,
    JobListing,
    Page,
    Position,
    longest_record_life,
    read_page,
)
from shared.listing.memory import MemoryJobListing

__all__ = [
    "CURSOR_PATTERN",
    "MAX_LIMIT",
    "JobFilter",
    "JobListing",
    "MemoryJobListing",
    "Page",
    "Position",
    "longest_record_life",
    "read_page",
]
