"""Logging configuration for the entry points (api lifespan, worker startup); never applied on
import, so that a library user or a test keeps control of logging.

Two formats: plain readable lines for a developer, or one JSON object per line (LOG_FORMAT=json)
for a log collector. A JSON line carries the message plus the structured fields of the event
(job id, job type, attempt, duration...) that the code passes as `extra=`; only the fields
named in EVENT_FIELDS are written, so a payload passed by mistake never reaches the logs.
"""

import json
import logging
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

EVENT_FIELDS = (
    "event",
    "job_id",
    "job_type",
    "attempt",
    "duration",
    "queue_wait",
    "delay",
    "method",
    "path",
    "route",
    "status_code",
    "worker_id",
)
"""The structured fields a JSON line may carry besides time, level, logger and message."""

REQUEST_LOGGER = "api.requests"
"""One line per request handled; written in the JSON format only, where it replaces uvicorn's
access log (in the plain format uvicorn's own access lines are the readable ones)."""


def job_event(
    event: str,
    job_id: str,
    job_type: str,
    *,
    attempt: int | None = None,
    duration: float | None = None,
    **fields: float | str | None,
) -> dict[str, Any]:
    """The structured fields of a job event, for a log call's `extra=`."""
    values: dict[str, Any] = {
        "event": event,
        "job_id": job_id,
        "job_type": job_type,
        "attempt": attempt,
        "duration": None if duration is None else round(duration, 6),
        **fields,
    }
    return {name: value for name, value in values.items() if value is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message and the event's fields;
    when the line is written inside a traced span (shared/tracing.py), its `trace_id` and
    `span_id`, so that a log collector links the line to its trace."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EVENT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_config(level: str, log_format: str = "plain") -> dict[str, Any]:
    """A dictConfig for jobcache's own loggers and arq's (the worker is arq's, run by jobcache:
    worker/main.py). In the plain format every other logger is left as it is; in the JSON
    format uvicorn's and the root logger write JSON too, so that every line of the process's
    output parses."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": log_format,
        "stream": "ext://sys.stderr",
    }
    own = {"handlers": ["jobcache"], "level": level, "propagate": False}
    loggers: dict[str, Any] = {name: dict(own) for name in ("api", "worker", "shared", "arq")}
    # arq logs two lines per job; ours say the same and more, so arq's worker lines show only
    # when debugging (its warnings and errors always).
    loggers["arq.worker"] = {"level": "DEBUG" if level == "DEBUG" else "WARNING"}
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "json": {"()": JsonFormatter},
        },
        "handlers": {"jobcache": handler},
        "loggers": loggers,
    }
    if log_format == "json":
        loggers["uvicorn"] = dict(own)
        loggers["uvicorn.error"] = {"level": level, "propagate": True}
        # Replaced by the api's own request line, which carries the route and the duration.
        loggers["uvicorn.access"] = {"handlers": [], "level": "WARNING", "propagate": False}
        loggers[REQUEST_LOGGER] = {"level": level}
        config["root"] = {"handlers": ["jobcache"], "level": "WARNING"}
    else:
        loggers[REQUEST_LOGGER] = {"level": "WARNING"}
    return config
