"""Per-request observation: Prometheus metrics with bounded labels and the access log."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from quantum.metrics import get_or_create

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)


def new_registry() -> CollectorRegistry:
    """The application's registry, with process and platform collectors."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class HttpMetrics:
    """``quantum_http_*`` and ``quantum_config_*`` collectors of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("server", "handler", "code", "method")
        self.requests = get_or_create(
            registry, Counter, "quantum_http_requests_total", "HTTP requests handled", labels
        )
        self.duration = get_or_create(
            registry,
            Histogram,
            "quantum_http_request_duration_seconds",
            "Time to answer an HTTP request",
            labels,
        )
        self.size = get_or_create(
            registry,
            Histogram,
            "quantum_http_response_size_bytes",
            "Size of HTTP response bodies",
            labels,
            buckets=SIZE_BUCKETS,
        )
        self.in_flight = get_or_create(
            registry,
            Gauge,
            "quantum_http_requests_in_flight",
            "HTTP requests being handled",
            ("server",),
        )
        self.reload_ok = get_or_create(
            registry,
            Gauge,
            "quantum_config_last_reload_successful",
            "1 when the last config load/reload succeeded",
        )
        self.reload_time = get_or_create(
            registry,
            Gauge,
            "quantum_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load/reload",
        )
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any, Any]] = {}
        self._in_flight: dict[str, Any] = {}

    def in_flight_of(self, server: str) -> Any:
        """The in-flight gauge of ``server`` (label lookups are cached: this is the hot path)."""
        child = self._in_flight.get(server)
        if child is None:
            child = self._in_flight[server] = self.in_flight.labels(server)
        return child

    def observe(
        self, server: str, handler: str, code: int, method: str, seconds: float, size: int
    ) -> None:
        key = (server, handler, str(code), method if method in KNOWN_METHODS else "OTHER")
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(*key),
                self.duration.labels(*key),
                self.size.labels(*key),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        children[2].observe(size)
