"""HttpMetrics keeps plain numbers on the hot path; what /metrics exports must still be what
prometheus_client's own Counter, Histogram and Gauge would have exported."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quantum.metrics import get_or_create
from quantum.observe import SIZE_BUCKETS, HttpMetrics, new_registry

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

OBSERVATIONS = [
    ("web", "static_response", 200, "GET", 0.0001, 14),
    ("web", "static_response", 200, "GET", 0.005, 256),  # on a bucket bound: counted in it
    ("web", "static_response", 200, "GET", 0.3, 5000),
    ("web", "static_response", 200, "GET", 42.0, 10**9),  # beyond the last bound: +Inf only
    ("web", "file_server", 404, "HEAD", 0.02, 0),
    ("web", "file_server", 404, "BREW", 0.02, 0),  # unknown methods share one label value
    ("api", "file_server", 404, "PROPFIND", 0.02, 0),
]


def parse(text: bytes) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name.startswith("quantum_http_") and not sample.name.endswith("_created"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def reference() -> Samples:
    """The same observations through prometheus_client's metric classes."""
    registry = CollectorRegistry()
    labels = ("server", "handler", "code", "method")
    requests = Counter("quantum_http_requests_total", "x", labels, registry=registry)
    duration = Histogram("quantum_http_request_duration_seconds", "x", labels, registry=registry)
    size = Histogram(
        "quantum_http_response_size_bytes", "x", labels, registry=registry, buckets=SIZE_BUCKETS
    )
    in_flight = Gauge("quantum_http_requests_in_flight", "x", ("server",), registry=registry)
    for server, handler, code, method, seconds, length in OBSERVATIONS:
        known = method if method in {"GET", "HEAD"} else "OTHER"
        key = (server, handler, str(code), known)
        requests.labels(*key).inc()
        duration.labels(*key).observe(seconds)
        size.labels(*key).observe(length)
    in_flight.labels("web").set(2)
    in_flight.labels("api").set(0)
    return parse(generate_latest(registry))


def test_export_matches_prometheus_client() -> None:
    registry = new_registry()
    metrics = HttpMetrics(registry)
    for observation in OBSERVATIONS:
        metrics.observe(*observation)
    metrics.in_flight_of("web").value = 2
    metrics.in_flight_of("api")
    exported = parse(generate_latest(registry))
    assert exported == reference()
    assert len(exported) > 50  # buckets of three label sets, not an empty comparison


def test_a_second_instance_on_the_same_registry_is_refused() -> None:
    registry = new_registry()
    HttpMetrics(registry)
    with pytest.raises(ValueError, match="quantum_http_requests"):
        HttpMetrics(registry)


def test_get_or_create_never_hands_out_a_collector_of_a_collected_registry() -> None:
    """Registries come and go (one per test server); a new one may get a dead one's id()."""
    for _ in range(50):
        registry = CollectorRegistry()
        counter = get_or_create(registry, Counter, "plugin_things_total", "things")
        counter.inc()
        assert registry.get_sample_value("plugin_things_total") == 1.0
        del registry, counter
        gc.collect()
