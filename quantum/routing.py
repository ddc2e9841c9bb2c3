"""Compiled routes: matcher sets (OR-ed, members AND-ed) and handler chains.

Caddy semantics: every matching route's handlers join one chain in config order; a handler
calls ``next`` to continue; after a route's last handler the chain continues with the next
matching route unless the route is ``terminal``. When nothing answered, ``fallback`` does (404).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from quantum.handler import Handler, Matcher, Next, RouteChain
from quantum.plugins import PluginRegistry

HANDLER_NAME_KEY = "quantum.handler"
"""``request[HANDLER_NAME_KEY]``: name of the innermost handler reached (metrics label)."""


class AllOf(Matcher):
    __slots__ = ("matchers",)

    def __init__(self, matchers: Sequence[Matcher]) -> None:
        self.matchers = tuple(matchers)

    def match(self, request: web.Request) -> bool:
        return all(m.match(request) for m in self.matchers)


class AnyOf(Matcher):
    __slots__ = ("matchers",)

    def __init__(self, matchers: Sequence[Matcher]) -> None:
        self.matchers = tuple(matchers)

    def match(self, request: web.Request) -> bool:
        return any(m.match(request) for m in self.matchers)


def compile_matcher_sets(
    registry: PluginRegistry, matcher_sets: Sequence[Mapping[str, Any]]
) -> Matcher:
    """Compile keyed matcher sets into one matcher (sets OR-ed, keys within a set AND-ed)."""

    def build(sets: Sequence[Mapping[str, Any]]) -> Matcher:
        compiled: list[Matcher] = []
        for matcher_set in sets:
            members = [
                registry.matchers[name].factory(value, build) for name, value in matcher_set.items()
            ]
            compiled.append(members[0] if len(members) == 1 else AllOf(members))
        return compiled[0] if len(compiled) == 1 else AnyOf(compiled)

    return build(matcher_sets)


@dataclass(frozen=True)
class NamedHandler:
    name: str
    handler: Handler


@dataclass(frozen=True)
class CompiledRoute:
    matcher: Matcher | None
    handlers: tuple[NamedHandler, ...]
    terminal: bool


class Routes(RouteChain):
    """An ordered list of compiled routes."""

    __slots__ = ("_routes",)

    def __init__(self, routes: Sequence[CompiledRoute]) -> None:
        self._routes = tuple(routes)

    def handlers(self) -> Sequence[Handler]:
        return [named.handler for route in self._routes for named in route.handlers]

    def extended(self, more: Sequence[CompiledRoute]) -> Routes:
        return Routes([*self._routes, *more])

    def dispatch(self, request: web.Request, fallback: Next) -> Awaitable[web.StreamResponse]:
        return self._from_route(request, 0, fallback)

    # Route selection and chaining are plain functions returning the handler's awaitable, so a
    # long-lived request (a WebSocket) keeps no routing frames alive: ~1 KiB per connection.
    def _from_route(
        self, request: web.Request, start: int, fallback: Next
    ) -> Awaitable[web.StreamResponse]:
        routes = self._routes
        for index in range(start, len(routes)):
            route = routes[index]
            if route.matcher is None or route.matcher.match(request):
                if not route.handlers:
                    if route.terminal:
                        return fallback(request)
                    continue
                return self._chain(request, index, 0, fallback)
        return fallback(request)

    def _chain(
        self, request: web.Request, index: int, position: int, fallback: Next
    ) -> Awaitable[web.StreamResponse]:
        route = self._routes[index]
        named = route.handlers[position]
        request[HANDLER_NAME_KEY] = named.name
        return named.handler.serve(request, self._next(index, position + 1, fallback))

    def _next(self, index: int, position: int, fallback: Next) -> Next:
        route = self._routes[index]
        if position < len(route.handlers):
            return lambda request: self._chain(request, index, position, fallback)
        if route.terminal:
            return fallback
        return lambda request: self._from_route(request, index + 1, fallback)


MatcherFactory = Callable[[Sequence[Mapping[str, Any]]], Matcher]
