"""``subroute``: a nested list of routes, compiled like the server's own (Caddy's ``subroute``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from quantum.handler import Handler, HandlerSpec, Next, ProvisionContext, RouteChain

SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "routes": {
            # The core's own route definition, so nested routes are validated like top-level ones.
            "$ref": "#/$defs/routes",
            "description": "Routes ({match?, handle, terminal?}) tried in order, like a server's; "
            "when none of them answers, the request continues with the next handler.",
        },
    },
}


class Subroute(Handler):
    def __init__(self, options: Mapping[str, Any]) -> None:
        self._routes_config = list(options.get("routes", []))
        self._routes: RouteChain | None = None

    async def provision(self, ctx: ProvisionContext) -> None:
        self._routes = await ctx.build_routes(self._routes_config, f"{ctx.config_path}.routes")

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        if self._routes is None:
            raise RuntimeError("subroute served before it was provisioned")
        return await self._routes.dispatch(request, next)

    async def cleanup(self) -> None:
        # Nested handlers are cleaned up by the core through RouteChain.handlers().
        self._routes = None


SPEC = HandlerSpec(
    name="subroute",
    schema=SCHEMA,
    factory=Subroute,
    description="Groups routes under one handler; falls through when none of them answers.",
)
