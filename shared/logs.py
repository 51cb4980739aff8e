"""Logging configuration for the entry points (api lifespan, worker startup); never applied on
import, so that a library user or a test keeps control of logging."""

from typing import Any


def log_config(level: str) -> dict[str, Any]:
    """A dictConfig for jobcache's own loggers, leaving every other logger as it is."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {"jobcache": handler},
        "loggers": {
            name: {"handlers": ["jobcache"], "level": level, "propagate": False}
            for name in ("api", "worker", "shared")
        },
    }
