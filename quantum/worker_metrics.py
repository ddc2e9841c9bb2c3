"""With ``workers: N``, one scrape shows every worker.

``SO_REUSEPORT`` sends each scrape to any one worker, and each worker only counts its own
requests: without this module successive scrapes would jump between workers' counters (and
Prometheus would read every jump down as a counter reset). Each worker publishes its own
exposition to a directory shared with its siblings every second; a scrape merges the siblings'
latest files with the answering worker's live metrics, every sample labelled ``worker="<i>"``
(sum them away with ``sum without (worker) (...)``). A sibling's numbers are at most a second old;
files older than :data:`STALE_AFTER` (a worker that died) are left out.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

log = structlog.get_logger("quantum.worker_metrics")

PUBLISH_INTERVAL = 1.0
STALE_AFTER = 15.0
WORKER_LABEL = "worker"


class WorkerMetrics(Collector):
    """What a metrics endpoint of worker ``index`` (of ``count``) exposes."""

    def __init__(self, registry: CollectorRegistry, directory: Path, index: int, count: int):
        self.registry = registry
        self.directory = directory
        self.index = index
        self.count = count

    def _file(self, index: int) -> Path:
        return self.directory / f"worker-{index}.prom"

    def publish(self) -> None:
        """Write this worker's exposition for its siblings (atomically: they never see half)."""
        target = self._file(self.index)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(generate_latest(self.registry))
        os.replace(partial, target)

    async def publish_forever(self) -> None:
        while True:
            try:
                self.publish()
            except OSError as exc:  # a full or removed directory: siblings just see older data
                log.warning("cannot publish worker metrics", error=str(exc))
            await asyncio.sleep(PUBLISH_INTERVAL)

    def _siblings(self) -> Iterator[tuple[int, Iterable[Metric]]]:
        now = time.time()
        for index in range(self.count):
            if index == self.index:
                continue
            path = self._file(index)
            try:
                if now - path.stat().st_mtime > STALE_AFTER:
                    continue
                families = list(text_string_to_metric_families(path.read_text()))
            except OSError:  # not published yet, or gone
                continue
            except ValueError as exc:  # not written by a worker: one bad file fails no scrape
                log.warning("unreadable worker metrics", path=str(path), error=str(exc))
                continue
            yield index, families

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        sources = [(self.index, self.registry.collect()), *self._siblings()]
        for index, families in sources:
            label = str(index)
            for family in families:
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                elif into.type != family.type:
                    continue
                into.samples.extend(_labelled(family.samples, label))
        return iter(merged.values())


def _labelled(samples: Iterable[Sample], worker: str) -> Iterator[Sample]:
    for sample in samples:
        yield sample._replace(labels={**sample.labels, WORKER_LABEL: worker})
