"""Per-application Prometheus metrics.

One :class:`CollectorRegistry` per running Quantum (never the global default registry), kept across
reloads. Plugins create their collectors with :func:`get_or_create` so that a handler provisioned
twice (two servers, or a reload) shares one collector instead of failing on a duplicate name.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

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
