"""OpenTelemetry traces across processes: which exporter the standard OTEL_* variables ask for,
the tracer provider each process opens at startup, and the trace context a job carries from
the request that submitted it to every attempt that runs it and to its callback.

With no OTEL_* variable set nothing is configured: the OpenTelemetry API stays the no-op it is
until a provider is set, FastAPI's request telemetry stays dormant, jobs carry no context, and
the hot path only asks whether the current span is recording. The variables are the SDK's own
(the SDK reads the endpoint, headers, sampler, resource and batching from them); this module
reads only the few that say whether and where to export, once, when a process starts.
"""

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from shared.errors import ConfigurationError

logger = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "jobcache"
API_SERVICE = "jobcache-api"
WORKER_SERVICE = "jobcache-worker"
"""Each process's service name when OTEL_SERVICE_NAME does not give one."""
SHUTDOWN_TIMEOUT = 2.0
"""Seconds a stopping process gives its last spans to reach the collector."""

Exporter = Literal["otlp", "console"]


@dataclass(frozen=True)
class TracingConfig:
    """Where this process's spans go, as the OTEL_* variables say; None: nowhere."""

    exporter: Exporter | None
    service_name: str
    """OTEL_SERVICE_NAME, or the process's own default (jobcache-api, jobcache-worker)."""


def tracing_config(environ: Mapping[str, str], default_service: str) -> TracingConfig:
    """Read the variables that say whether this process exports traces. On: an OTLP endpoint
    (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, or
    OTEL_TRACES_EXPORTER names an exporter; off: none is, OTEL_TRACES_EXPORTER=none, or
    OTEL_SDK_DISABLED=true. Only OTLP over HTTP/protobuf is shipped (no gRPC stack)."""
    service_name = environ.get("OTEL_SERVICE_NAME") or default_service
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TracingConfig(None, service_name)
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if named == "none" or (not named and not endpoint):
        return TracingConfig(None, service_name)
    if named not in ("", "otlp", "console"):
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={named!r} is not supported: use otlp, console or none"
        )
    exporter: Exporter = "console" if named == "console" else "otlp"
    if exporter == "otlp":
        for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = environ.get(variable, "").strip()
            if protocol and protocol != "http/protobuf":
                raise ConfigurationError(
                    f"{variable}={protocol!r} is not supported: jobcache exports OTLP over "
                    "http/protobuf (a collector takes it on port 4318)"
                )
            if protocol:
                break
    return TracingConfig(exporter, service_name)


def span_processor(config: TracingConfig) -> SpanProcessor:
    """A batching processor for the configured exporter, which reads its endpoint, headers,
    timeout and compression from the OTEL_* variables itself."""
    if config.exporter == "console":
        return BatchSpanProcessor(ConsoleSpanExporter())
    # Imported only when used: the exporter pulls in protobuf and requests.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return BatchSpanProcessor(OTLPSpanExporter())


@asynccontextmanager
async def open_tracing(default_service: str) -> AsyncIterator[TracerProvider | None]:
    """Set this process's tracer provider from the environment, for as long as the context
    is open; on leaving, export what is left (for SHUTDOWN_TIMEOUT at most). Yields None
    when tracing is off, or when a provider was set already (by a test, or an earlier start
    of the app in this process), which is then left as it is."""
    config = tracing_config(os.environ, default_service)
    if config.exporter is None or is_configured():
        yield None
        return
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: config.service_name}),
        # Shut down here, within SHUTDOWN_TIMEOUT; not again, unbounded, at the process's exit.
        shutdown_on_exit=False,
    )
    provider.add_span_processor(span_processor(config))
    trace.set_tracer_provider(provider)
    logger.info(
        "tracing: spans of %s exported (%s)", config.service_name, config.exporter,
    )  # fmt: skip
    try:
        yield provider
    finally:
        await shut_down(provider)


async def shut_down(provider: TracerProvider) -> None:
    """Export the spans left and stop, giving up after SHUTDOWN_TIMEOUT: a collector that does
    not answer must not hold up a stopping api or worker (the exporter retries for its own
    timeout, 10 s by default, and the SDK's flush ignores the timeout it is given). The export
    goes on in a daemon thread, which the process's exit ends."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def shut_down_and_tell() -> None:
        try:
            provider.shutdown()
        finally:
            # The loop may be closed by now, if the wait below gave up.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(done.set_result, None)

    threading.Thread(target=shut_down_and_tell, name="tracing-shutdown", daemon=True).start()
    try:
        async with asyncio.timeout(SHUTDOWN_TIMEOUT):
            await done
    except TimeoutError:
        logger.warning(
            "tracing: spans not exported within %gs of stopping were dropped", SHUTDOWN_TIMEOUT
        )


def is_configured() -> bool:
    """Whether a real tracer provider is set for this process (the API's default is a proxy
    that stays a no-op until one is)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def tracer() -> trace.Tracer:
    """jobcache's tracer, for an object built at startup (after `open_tracing`)."""
    return trace.get_tracer(INSTRUMENTATION_NAME)


def current_trace_context() -> dict[str, str] | None:
    """The current span's context as W3C trace headers (traceparent, tracestate), to carry in
    a queued job or a record; None when no span is being recorded, which is the cheap answer
    the hot path gets when tracing is off."""
    if not trace.get_current_span().is_recording():
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def context_from(carrier: Mapping[str, str] | None) -> context.Context:
    """The context a job's span is a child of: the one `current_trace_context` carried, or
    an empty one (a new trace, as a scheduled run starts) without it; never the context of
    whatever task happens to run the job."""
    if not carrier:
        return context.Context()
    return propagate.extract(carrier, context=context.Context())
