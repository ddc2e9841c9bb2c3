"""The ``hello`` handler: ``{"handler": "hello", "name": "Quantum", "format": "json"}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from quantum import Handler, Next, ProvisionContext
from quantum.metrics import get_or_create

SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "name": {
            "type": "string",
            "minLength": 1,
            "default": "world",
            "description": "Who to greet when the request has no ?name= parameter.",
        },
        "greeting": {
            "type": "string",
            "minLength": 1,
            "default": "Hello",
            "description": "The word of greeting.",
        },
        "format": {
            "enum": ["text", "json"],
            "default": "text",
            "description": 'Answer as plain text or as {"message": ...} JSON.',
        },
        "only_get": {
            "type": "boolean",
            "default": False,
            "description": "Pass requests other than GET/HEAD on to the next handler.",
        },
    },
}


class HelloHandler(Handler):
    """Answers ``<greeting>, <name>!``; counts its greetings in the app's metrics registry."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.name = options.get("name", "world")
        self.greeting = options.get("greeting", "Hello")
        self.format = options.get("format", "text")
        self.only_get = bool(options.get("only_get", False))
        self.greetings: Counter | None = None

    async def provision(self, ctx: ProvisionContext) -> None:
        self.greetings = get_or_create(
            ctx.registry, Counter, "quantum_hello_greetings", "Greetings sent by hello", ["format"]
        )

    def validate(self) -> None:
        if "\n" in self.greeting:
            raise ValueError("greeting must be a single line")

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        if self.only_get and request.method not in ("GET", "HEAD"):
            return await next(request)
        message = f"{self.greeting}, {request.query.get('name', self.name)}!"
        if self.greetings is not None:
            self.greetings.labels(self.format).inc()
        if self.format == "json":
            return web.json_response({"message": message})
        return web.Response(text=message + "\n")
