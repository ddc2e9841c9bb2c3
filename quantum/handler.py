"""The contract between the core and plugins: handler and matcher specs and their lifecycle.

A handler is configured as ``{"handler": NAME, ...options}``. The core validates the options
against the spec's schema, calls ``factory(options)`` and then drives the instance through
Caddy's lifecycle: ``provision`` → ``validate`` → ``serve`` (many times) → ``cleanup``.
``cleanup`` is also called when ``provision`` or ``validate`` fails.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from quantum.pool import UsagePool

Next = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HandlerError(Exception):
    """An error a handler raises instead of answering (Caddy's handler errors): the server's
    ``errors`` routes answer it, with ``{http.error.status_code}``, ``{http.error.status_text}``
    and ``{http.error.message}``; without error routes the client gets ``status``, ``headers``
    and an empty body."""

    def __init__(
        self, status: int, message: str = "", headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message or f"HTTP {status}")
        self.status = status
        self.message = message
        self.headers: CIMultiDict[str] = CIMultiDict(headers or {})


HANDLER_ERROR_KEY: web.RequestKey[HandlerError] = web.RequestKey("quantum.error", HandlerError)
"""``request[HANDLER_ERROR_KEY]``: the error the ``errors`` routes are answering."""
"""Continue with the rest of the handler chain (and then the following matching routes)."""

JSONSchema = Mapping[str, Any]


class Handler(abc.ABC):
    """One configured handler. Instances are created per occurrence in the config."""

    async def provision(self, ctx: ProvisionContext) -> None:  # noqa: B027 - optional hook
        """Acquire resources (open files, start tasks). Raise to fail the whole config."""

    def validate(self) -> None:  # noqa: B027 - optional hook
        """Check the provisioned state; raise ``ValueError`` with a clear message to refuse it."""

    @abc.abstractmethod
    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        """Answer ``request`` or delegate to ``next``."""

    async def cleanup(self) -> None:  # noqa: B027 - optional hook
        """Release what ``provision`` acquired. Must tolerate a partial provision."""


class Matcher(abc.ABC):
    """A request predicate, built from one key of a matcher set."""

    @abc.abstractmethod
    def match(self, request: web.Request) -> bool: ...


@dataclass(frozen=True)
class HandlerSpec:
    """What a plugin registers for a handler module.

    ``schema`` describes the options object *without* the ``handler`` key; the core adds
    ``handler`` and closes the object (``additionalProperties: false``) when composing the
    config schema.
    """

    name: str
    schema: JSONSchema
    factory: Callable[[Mapping[str, Any]], Handler]
    description: str = ""


@dataclass(frozen=True)
class MatcherSpec:
    """What a plugin registers for a matcher: ``{name: value}`` inside a matcher set.

    ``schema`` validates ``value``. ``factory(value, build_matcher_sets)`` returns the matcher;
    the second argument compiles nested matcher sets (used by ``not``).
    """

    name: str
    schema: JSONSchema
    factory: Callable[[Any, Callable[[Sequence[Mapping[str, Any]]], Matcher]], Matcher]
    description: str = ""


@dataclass
class ContributedRoute:
    """A route a handler adds to its server; tried after every route of the config."""

    paths: Sequence[str]
    handler: Handler


@dataclass
class ProvisionContext:
    """What the core hands a handler at provision time."""

    server_name: str
    config_path: str
    """JSON path of this handler in the config, e.g. ``apps.http.servers.s.routes[0].handle[0]``."""
    registry: CollectorRegistry
    """The application's metrics registry (one per running Quantum, shared across reloads)."""
    logger: structlog.stdlib.BoundLogger
    config_dir: Path
    """Directory of the config file (relative paths in options stay relative to the CWD)."""
    build_routes: Callable[[Sequence[Mapping[str, Any]], str], Awaitable[RouteChain]]
    """Compile nested routes (``subroute``): ``await build_routes(routes, json_path)``."""
    workers: int = 1
    """How many processes serve this config (``workers``); state kept in process memory is
    not shared between them."""
    shared: UsagePool = field(default_factory=UsagePool)
    """Resources shared with other handlers and across reloads (one pool per running Quantum):
    ``await ctx.shared.acquire(key, create)``, released in ``cleanup``."""
    exposition: Collector | None = None
    """Set by the core when workers share the metrics endpoints; read :attr:`exported`."""
    contributed_routes: list[ContributedRoute] = field(default_factory=list)

    @property
    def exported(self) -> Collector:
        """What a metrics endpoint serves (``generate_latest(ctx.exported)``): ``registry``, or
        with ``workers: N`` every worker's metrics, each sample labelled ``worker``."""
        return self.registry if self.exposition is None else self.exposition

    def add_route(self, paths: Sequence[str], handler: Handler) -> None:
        """Serve ``paths`` (Caddy path patterns) with ``handler`` after the config's routes."""
        self.contributed_routes.append(ContributedRoute(list(paths), handler))


class RouteChain(abc.ABC):
    """Compiled, ordered routes (implemented by :mod:`quantum.routing`)."""

    @abc.abstractmethod
    def dispatch(self, request: web.Request, fallback: Next) -> Awaitable[web.StreamResponse]:
        """Run the matching routes; ``fallback`` answers when every route passed."""

    @abc.abstractmethod
    def handlers(self) -> Sequence[Handler]:
        """Every handler instance reachable from these routes (for cleanup)."""
