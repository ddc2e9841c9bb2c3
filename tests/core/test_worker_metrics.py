"""``workers: N``: whichever worker answers a scrape, it shows every worker's metrics."""

from __future__ import annotations

import os
import time
import urllib.request
from email.message import Message
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quantum.metrics import WORKER_HEADER
from quantum.worker_metrics import PUBLISH_INTERVAL, STALE_AFTER, WorkerMetrics
from tests.core.test_observability import config as observability_config
from tests.support.processes import QuantumProcess, free_port
from tests.support.waiting import wait_until


def requests_by_worker(text: str, handler: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "quantum_http_requests_total" and sample.labels["handler"] == handler:
                worker = sample.labels["worker"]
                counts[worker] = counts.get(worker, 0) + sample.value
    return counts


def fetch(url: str) -> tuple[str, Message]:
    with urllib.request.urlopen(url, timeout=5) as response:  # a new connection each time
        return response.read().decode(), response.headers


def test_every_scrape_counts_the_requests_of_both_workers(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    config = observability_config(port, admin) | {"workers": 2}
    routes = config["apps"]["http"]["servers"]["web"]["routes"]
    routes.append({"match": [{"path": ["/metrics"]}], "handle": [{"handler": "metrics"}]})
    server = quantum_factory(config, tmp_path, port=port).start()
    deadline = time.monotonic() + 30
    while server.logs().count('"event": "serving"') < 2:  # both workers bound and serving
        assert time.monotonic() < deadline, server.logs()
        time.sleep(0.05)
    for _ in range(40):
        assert fetch(f"{server.url}/hello")[0] == "hi"
    # Each worker publishes its metrics for the other every PUBLISH_INTERVAL: wait until each
    # of them has answered a scrape that shows all 40 (so the other one's file is current).
    current: set[str] = set()

    def both_published() -> bool:
        text, headers = fetch(f"{server.url}/metrics")
        if sum(requests_by_worker(text, "testkit_sleep").values()) == 40:
            current.add(headers[WORKER_HEADER])
        return current == {"0", "1"}

    wait_until(both_published, 10 * PUBLISH_INTERVAL, "both workers' metrics published")
    for url in [f"{server.url}/metrics"] * 6 + [f"http://127.0.0.1:{admin}/metrics"]:
        text, headers = fetch(url)
        assert headers[WORKER_HEADER] in {"0", "1"}  # who answered; the body shows both
        counts = requests_by_worker(text, "testkit_sleep")
        assert set(counts) == {"0", "1"}, counts  # the kernel spread 40 connections over both
        assert sum(counts.values()) == 40


def test_a_scrape_merges_siblings_and_skips_stale_or_foreign_files(tmp_path: Path) -> None:
    registries = [CollectorRegistry() for _ in range(3)]
    for index, registry in enumerate(registries):
        Counter("things_total", "things", registry=registry).inc(index + 1)
    views = [WorkerMetrics(r, tmp_path, i, 3) for i, r in enumerate(registries)]
    views[1].publish()
    views[2].publish()

    def things(view: WorkerMetrics) -> dict[str, float]:
        text = generate_latest(view).decode()
        return {
            s.labels["worker"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "things_total"
        }

    assert things(views[0]) == {"0": 1.0, "1": 2.0, "2": 3.0}
    old = time.time() - STALE_AFTER - 1
    os.utime(tmp_path / "worker-2.prom", (old, old))  # a worker that died
    (tmp_path / "worker-1.prom").write_text("this is { not the text format\n")
    assert things(views[0]) == {"0": 1.0}
