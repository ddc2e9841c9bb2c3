"""Provisioning: a validated Config becomes compiled routes of live handler instances.

Handlers whose config (and server) did not change across a reload are reused, not
re-provisioned, so their state (open WebSockets, watchers, journals) survives. A failure
anywhere cleans up every handler this build created, including the one that failed, and
leaves the previous build untouched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from quantum.config import Config, RouteConfig, ServerConfig, normalise_routes
from quantum.errors import ConfigError, ConfigIssue
from quantum.handler import ContributedRoute, Handler, ProvisionContext
from quantum.plugins import PluginRegistry
from quantum.pool import UsagePool
from quantum.routing import CompiledRoute, NamedHandler, Routes, compile_matcher_sets

log = structlog.get_logger("quantum.provision")


@dataclass
class ProvisionedHandler:
    name: str
    handler: Handler
    contributed: list[ContributedRoute]


@dataclass
class BuiltServer:
    config: ServerConfig
    routes: Routes
    error_routes: Routes | None = None


@dataclass
class Build:
    """The running form of one config."""

    config: Config
    servers: dict[str, BuiltServer]
    handlers: dict[str, ProvisionedHandler] = field(default_factory=dict)


def _key(server: str, handler_config: Mapping[str, Any]) -> str:
    return server + "\0" + json.dumps(handler_config, sort_keys=True, separators=(",", ":"))


class Builder:
    def __init__(
        self,
        plugins: PluginRegistry,
        metrics: CollectorRegistry,
        previous: Build | None = None,
        shared: UsagePool | None = None,
        exported: Collector | None = None,
    ) -> None:
        self.plugins = plugins
        self.metrics = metrics
        self.exported = exported
        self.shared = shared or UsagePool()
        self.previous = previous.handlers if previous else {}
        self.used: dict[str, ProvisionedHandler] = {}
        self.created: list[Handler] = []
        self.names: dict[int, str] = {id(p.handler): p.name for p in self.previous.values()}

    async def build(self, config: Config) -> Build:
        try:
            servers = {}
            for server in config.servers:
                routes = await self._server(server, config)
                error_routes = None
                if server.error_routes is not None:
                    # Routes handlers contribute come from the main routes only.
                    error_routes = await self._routes(server, config, server.error_routes, [])
                servers[server.name] = BuiltServer(server, routes, error_routes)
        except ConfigError:
            await self._cleanup_created()
            raise
        except Exception as exc:  # a plugin bug must not take the old config down
            await self._cleanup_created()
            raise ConfigError([ConfigIssue("", f"provisioning failed: {exc!r}")]) from exc
        return Build(config, servers, dict(self.used))

    async def _cleanup_created(self) -> None:
        for handler in reversed(self.created):
            try:
                await handler.cleanup()
            except Exception:
                log.exception("handler cleanup failed", handler=type(handler).__name__)

    async def _server(self, server: ServerConfig, config: Config) -> Routes:
        contributed: list[ContributedRoute] = []
        routes = await self._routes(server, config, server.routes, contributed)
        extra = [
            CompiledRoute(
                compile_matcher_sets(self.plugins, [{"path": list(route.paths)}]),
                (NamedHandler(self.names.get(id(route.handler), "unknown"), route.handler),),
                terminal=True,
            )
            for route in contributed
        ]
        return routes.extended(extra)

    async def _routes(
        self,
        server: ServerConfig,
        config: Config,
        routes: Sequence[RouteConfig],
        contributed: list[ContributedRoute],
    ) -> Routes:
        compiled = []
        for route in routes:
            matcher = None
            if route.match is not None:
                try:
                    matcher = compile_matcher_sets(self.plugins, route.match)
                except (ValueError, TypeError, KeyError) as exc:
                    raise ConfigError([ConfigIssue(f"{route.json_path}.match", str(exc))]) from exc
            handlers = []
            for i, handler_config in enumerate(route.handle):
                path = f"{route.json_path}.handle[{i}]"
                handler = await self._handler(server, config, handler_config, path, contributed)
                handlers.append(NamedHandler(handler_config["handler"], handler))
            compiled.append(CompiledRoute(matcher, tuple(handlers), route.terminal))
        return Routes(compiled)

    async def _handler(
        self,
        server: ServerConfig,
        config: Config,
        handler_config: Mapping[str, Any],
        path: str,
        contributed: list[ContributedRoute],
    ) -> Handler:
        key = _key(server.name, handler_config)
        if key in self.used:
            return self.used[key].handler
        if key in self.previous:
            reused = self.previous[key]
            self.used[key] = reused
            contributed.extend(reused.contributed)
            return reused.handler
        spec = self.plugins.handlers[handler_config["handler"]]
        options = {k: v for k, v in handler_config.items() if k != "handler"}
        try:
            handler = spec.factory(options)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError([ConfigIssue(path, str(exc))]) from exc

        async def build_routes(nested: Sequence[Mapping[str, Any]], base: str) -> Routes:
            return await self._routes(
                server, config, normalise_routes(self.plugins, nested, base), contributed
            )

        ctx = ProvisionContext(
            server_name=server.name,
            config_path=path,
            registry=self.metrics,
            logger=structlog.get_logger(f"quantum.handler.{spec.name}").bind(server=server.name),
            config_dir=config.config_dir,
            build_routes=build_routes,
            workers=config.workers,
            shared=self.shared,
            exposition=self.exported,
        )
        self.created.append(handler)
        self.names[id(handler)] = spec.name
        try:
            await handler.provision(ctx)
            handler.validate()
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError([ConfigIssue(path, f"{spec.name}: {exc}")]) from exc
        self.used[key] = ProvisionedHandler(spec.name, handler, list(ctx.contributed_routes))
        contributed.extend(ctx.contributed_routes)
        return handler


async def cleanup_unused(old: Build, new: Build | None) -> None:
    """Clean up the handlers of ``old`` that ``new`` does not reuse."""
    keep = {id(p.handler) for p in new.handlers.values()} if new else set()
    seen: set[int] = set()
    for provisioned in reversed(list(old.handlers.values())):
        handler = provisioned.handler
        if id(handler) in keep or id(handler) in seen:
            continue
        seen.add(id(handler))
        try:
            await handler.cleanup()
        except Exception:
            log.exception("handler cleanup failed", handler=type(handler).__name__)
