"""``metrics``: expose the application's Prometheus registry (Caddy's ``metrics`` handler)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from quantum.handler import Handler, HandlerSpec, Next, ProvisionContext

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
        self._registry: CollectorRegistry | None = None

    async def provision(self, ctx: ProvisionContext) -> None:
        self._registry = ctx.registry

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        registry = self._registry
        if registry is None:
            raise RuntimeError("metrics served before it was provisioned")
        # Without a usable Accept, choose_encoder picks generate_latest and its content type.
        accept = request.headers.get(hdrs.ACCEPT, "") if self._openmetrics else ""
        encoder, content_type = choose_encoder(accept)
        body = encoder(registry)
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})


SPEC = HandlerSpec(
    name="metrics",
    schema=SCHEMA,
    factory=Metrics,
    description="Serves the Prometheus metrics of this Quantum (text format or OpenMetrics).",
)
