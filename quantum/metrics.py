"""Per-application Prometheus metrics.

One :class:`CollectorRegistry` per running Quantum (never the global default registry), kept across
reloads. Plugins create their collectors with :func:`get_or_create` so that a handler provisioned
twice (two servers, or a reload) shares one collector instead of failing on a duplicate name.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TypeVar

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from quantum.worker_metrics import WorkerMetrics

MetricT = TypeVar("MetricT", Counter, Gauge, Histogram, Summary)

# Weak keys: a registry's id() is reused once it is collected (tests make many), and a collector
# found through a stale id belongs to a registry nobody scrapes.
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, object]] = (
    weakref.WeakKeyDictionary()
)


def get_or_create(
    registry: CollectorRegistry,
    kind: type[MetricT],
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    **kwargs: object,
) -> MetricT:
    """Return the collector ``name`` of ``registry``, creating it on first use."""
    known = _BY_REGISTRY.setdefault(registry, {})
    existing = known.get(name)
    if existing is not None:
        if not isinstance(existing, kind):
            raise TypeError(f"metric {name!r} already exists as {type(existing).__name__}")
        return existing
    metric = kind(name, documentation, labelnames, registry=registry, **kwargs)  # type: ignore[arg-type]
    known[name] = metric
    return metric


WORKER_HEADER = "X-Quantum-Worker"


def metrics_response(exported: Collector, accept: str = "") -> web.Response:
    """A metrics endpoint's answer for ``exported`` (``ProvisionContext.exported``): the
    Prometheus text format, or OpenMetrics when ``accept`` asks for it. With ``workers: N`` the
    ``X-Quantum-Worker`` header names the worker that answered (the body shows all of them)."""
    # Without a usable Accept, choose_encoder picks generate_latest and its content type.
    encoder, content_type = choose_encoder(accept)
    headers: dict[str, str] = {hdrs.CONTENT_TYPE: content_type}
    if isinstance(exported, WorkerMetrics):
        headers[WORKER_HEADER] = str(exported.index)
    return web.Response(body=encoder(exported), headers=headers)
