"""Prometheus collectors of the WebSocket manager (shared across provisions via get_or_create).

Label values are bounded: message types of the protocol (plus ``invalid``), error codes, and the
fixed drop reasons of :data:`DROP_REASONS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from quantum.metrics import get_or_create

DROP_REASONS = ("slow", "stale", "rate_limited", "replaced", "unauthorized", "protocol_error")

_BROADCAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True, slots=True)
class WsMetrics:
    connections: Gauge
    sent: Counter
    received: Counter
    broadcast_duration: Histogram
    dropped: Counter
    errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WsMetrics:
        return cls(
            connections=get_or_create(
                registry, Gauge, "quantum_ws_connections", "Open WebSocket connections on /ws"
            ),
            sent=get_or_create(
                registry,
                Counter,
                "quantum_ws_messages_sent_total",
                "WebSocket messages sent, by message type",
                ["type"],
            ),
            received=get_or_create(
                registry,
                Counter,
                "quantum_ws_messages_received_total",
                "WebSocket messages received, by message type (invalid: refused input)",
                ["type"],
            ),
            broadcast_duration=get_or_create(
                registry,
                Histogram,
                "quantum_ws_broadcast_duration_seconds",
                "Time to hand one change to every matching subscriber",
                buckets=_BROADCAST_BUCKETS,
            ),
            dropped=get_or_create(
                registry,
                Counter,
                "quantum_ws_dropped_clients_total",
                "WebSocket clients disconnected by the server, by reason",
                ["reason"],
            ),
            errors=get_or_create(
                registry,
                Counter,
                "quantum_ws_errors_total",
                "Error messages sent to WebSocket clients, by code",
                ["code"],
            ),
        )
