"""metrics: the application's registry in Prometheus text format or OpenMetrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from quantum.handlers.metrics import Metrics
from tests.core.handler_harness import serving

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("demo_events", "Demo events", registry=registry).inc(3)
    return registry


async def test_serves_the_app_registry_as_prometheus_text(registry: CollectorRegistry) -> None:
    async with serving(Metrics({}), registry=registry) as client:
        response = await client.get("/metrics")
        text = await response.text()
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "demo_events_total 3.0" in text


async def test_openmetrics_when_asked(registry: CollectorRegistry) -> None:
    async with serving(Metrics({}), registry=registry) as client:
        response = await client.get("/", headers={"Accept": "application/openmetrics-text"})
        text = await response.text()
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")


async def test_disable_openmetrics(registry: CollectorRegistry) -> None:
    async with serving(Metrics({"disable_openmetrics": True}), registry=registry) as client:
        response = await client.get("/", headers={"Accept": "application/openmetrics-text"})
        await response.read()
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
