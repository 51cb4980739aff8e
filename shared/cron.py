"""Cron expressions of scheduled job types (`@job(schedule=...)`), read with croniter, in UTC.

Five fields are standard cron (minute, hour, day of month, month, day of week); six put a
field of seconds first, as Quartz, Spring and APScheduler do: `*/10 * * * * *` is every ten
seconds.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from croniter import CroniterError, croniter


@dataclass(frozen=True)
class CronSchedule:
    """One cron expression; `next_after` gives its due times."""

    expression: str
    _with_seconds: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = self.expression.split()
        if len(fields) not in (5, 6):
            raise ValueError(
                f"cron expression {self.expression!r} has {len(fields)} fields: give 5 "
                "(minute hour day-of-month month day-of-week) or 6 (seconds first)"
            )
        object.__setattr__(self, "_with_seconds", len(fields) == 6)
        try:
            croniter(self.expression, second_at_beginning=self._with_seconds)
        except (CroniterError, ValueError) as error:
            raise ValueError(f"cron expression {self.expression!r}: {error}") from None

    def next_after(self, moment: datetime) -> datetime:
        """The first due time strictly after `moment`, in UTC."""
        start = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        due: datetime = croniter(
            self.expression, start, second_at_beginning=self._with_seconds
        ).get_next(datetime)
        return due.astimezone(UTC)

    def __str__(self) -> str:
        return self.expression
