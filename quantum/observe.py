"""Per-request HTTP metrics with bounded labels, recorded without prometheus_client on the hot
path.

prometheus_client's Counter and Histogram take a lock per increment (two or three per
observation): about 3.5 µs a request for the three ``quantum_http_*`` series, a tenth of a small
request's budget. Requests are handled on one event loop thread, so :class:`HttpMetrics` keeps
plain numbers and a custom collector turns them into metric families when ``/metrics`` is
scraped. Config-reload gauges are ordinary prometheus_client gauges (rarely touched).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from quantum.metrics import get_or_create

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""prometheus_client's default histogram buckets (seconds)."""
SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
LABELS = ("server", "handler", "code", "method")

SeriesKey = tuple[str, str, int, str]


def new_registry() -> CollectorRegistry:
    """The application's registry, with process and platform collectors."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class InFlight:
    """Requests (and open WebSockets) being handled by one configured server."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class Series:
    """Counts for one label set: requests, and duration and size histograms."""

    __slots__ = ("count", "created", "duration_buckets", "duration_sum", "size_buckets", "size_sum")

    def __init__(self) -> None:
        self.created = time.time()
        self.count = 0
        self.duration_sum = 0.0
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.size_sum = 0
        self.size_buckets = [0] * (len(SIZE_BUCKETS) + 1)


class HttpMetrics:
    """``quantum_http_*`` and ``quantum_config_*`` metrics of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._series: dict[SeriesKey, Series] = {}
        self._in_flight: dict[str, InFlight] = {}
        registry.register(_HttpCollector(self))
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

    def in_flight_of(self, server: str) -> InFlight:
        """The in-flight count of ``server``; callers add and subtract on ``.value``."""
        counter = self._in_flight.get(server)
        if counter is None:
            counter = self._in_flight[server] = InFlight()
        return counter

    def observe(
        self, server: str, handler: str, code: int, method: str, seconds: float, size: int
    ) -> None:
        if method not in KNOWN_METHODS:
            method = "OTHER"  # methods are client-chosen tokens: keep the label set bounded
        key = (server, handler, code, method)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = Series()
        series.count += 1
        series.duration_sum += seconds
        series.duration_buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        series.size_sum += size
        series.size_buckets[bisect_left(SIZE_BUCKETS, size)] += 1

    def series(self) -> list[tuple[SeriesKey, Series]]:
        return list(self._series.items())

    def in_flight(self) -> list[tuple[str, int]]:
        return [(server, counter.value) for server, counter in self._in_flight.items()]


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    total = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        total += count
        # `le` spelt as prometheus_client spells it (1.048576e+06, +Inf).
        buckets.append((floatToGoString(bound), total))  # type: ignore[no-untyped-call]
    return buckets


class _HttpCollector(Collector):
    def __init__(self, metrics: HttpMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        requests, duration, size, in_flight = families
        for (server, handler, code, method), series in self._metrics.series():
            labels = [server, handler, str(code), method]
            requests.add_metric(labels, series.count, created=series.created)
            duration.add_metric(
                labels,
                _cumulative(DURATION_BUCKETS, series.duration_buckets),
                series.duration_sum,
            )
            size.add_metric(labels, _cumulative(SIZE_BUCKETS, series.size_buckets), series.size_sum)
        for server, value in self._metrics.in_flight():
            in_flight.add_metric([server], value)
        return iter(families)

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily, HistogramMetricFamily, HistogramMetricFamily, GaugeMetricFamily
    ]:
        return (
            CounterMetricFamily("quantum_http_requests", "HTTP requests handled", labels=LABELS),
            HistogramMetricFamily(
                "quantum_http_request_duration_seconds",
                "Time to answer an HTTP request",
                labels=LABELS,
            ),
            HistogramMetricFamily(
                "quantum_http_response_size_bytes", "Size of HTTP response bodies", labels=LABELS
            ),
            GaugeMetricFamily(
                "quantum_http_requests_in_flight",
                "HTTP requests being handled",
                labels=("server",),
            ),
        )
