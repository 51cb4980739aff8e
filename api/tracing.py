"""How the api's requests are traced: by FastAPI's own request telemetry, which follows the
tracer provider that shared/tracing.py sets when the OTEL_* variables ask for traces, and is
dormant (a check per request) until then.

FastAPI's, not the contrib OpenTelemetry middleware: it ships with the FastAPI we pin (no
instrumentation packages whose versions trail FastAPI's), names each span by the route
template FastAPI matched (`POST /jobs/{job_id}/cancel`), and the contrib middleware would
switch it off anyway, so only one of the two can serve. Its OpenTelemetry metrics and logs
stay off: the api's metrics are Prometheus' (shared/metrics.py), and its exception logs would
carry messages that may quote a job's parameters.
"""

from fastapi.telemetry import TelemetryConfig
from starlette.types import Scope

UNTRACED_PREFIXES = ("/health", "/metrics", "/dashboard")
"""Requests that scrapers and the dashboard repeat every few seconds: a trace of each would
bury the ones an operator looks for."""


def untraced(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return path.startswith(UNTRACED_PREFIXES)


def request_telemetry() -> TelemetryConfig:
    """The `telemetry` FastAPI is built with: one span per request (not one per dependency and
    endpoint call besides), scrapes excluded."""
    return {
        "tracing": True,
        "operation_spans": False,
        "metrics": False,
        "logs": False,
        "exclude": untraced,
    }
