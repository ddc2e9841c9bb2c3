"""``metrics``: expose the application's Prometheus registry (Caddy's ``metrics`` handler)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web
from prometheus_client.registry import Collector

from quantum.handler import Handler, HandlerSpec, Next, ProvisionContext
from quantum.metrics import metrics_response

SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "disable_openmetrics": {
            "type": "boolean",
            "default": False,
            "description": "Always answer in the Prometheus text format, even to clients that "
            "ask for OpenMetrics.",
        },
    },
}


class Metrics(Handler):
    def __init__(self, options: Mapping[str, Any]) -> None:
        self._openmetrics = not options.get("disable_openmetrics", False)
        self._exported: Collector | None = None

    async def provision(self, ctx: ProvisionContext) -> None:
        self._exported = ctx.exported

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        exported = self._exported
        if exported is None:
            raise RuntimeError("metrics served before it was provisioned")
        accept = request.headers.get(hdrs.ACCEPT, "") if self._openmetrics else ""
        return metrics_response(exported, accept)


SPEC = HandlerSpec(
    name="metrics",
    schema=SCHEMA,
    factory=Metrics,
    description="Serves the Prometheus metrics of this Quantum (text format or OpenMetrics).",
)
