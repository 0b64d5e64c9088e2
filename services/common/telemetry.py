"""Logging, tracing and Prometheus metrics setup shared by every service."""

import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_configured = False


def setup_logging(service: str, level: str = "INFO") -> None:
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_webinar", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler._webinar = True  # type: ignore[attr-defined]
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Access logs would print join tokens from query strings.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def setup_tracing(service: str, otlp_endpoint: str) -> None:
    """Install a tracer provider once; export over OTLP/HTTP when an endpoint is set."""
    global _configured
    if _configured:
        return
    _configured = True
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{otlp_endpoint.rstrip('/')}/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
