"""Plugin discovery: a pluggy manager built by a factory, and the registry of specs it yields."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import jsonschema
import pluggy

from quantum import hookspecs
from quantum.handler import HandlerSpec, MatcherSpec

ENTRY_POINT_GROUP = "quantum.plugins"
EXTRA_PLUGINS_ENV = "QUANTUM_PLUGINS"
"""Comma-separated modules to load as plugins without packaging them (like ``PYTEST_PLUGINS``)."""


class PluginError(Exception):
    """A plugin cannot be loaded or registers something invalid."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    distribution: str | None
    version: str | None
    handlers: tuple[str, ...]
    matchers: tuple[str, ...]


@dataclass
class PluginRegistry:
    """Every handler and matcher spec, by name, with the plugin that registered it."""

    handlers: dict[str, HandlerSpec] = field(default_factory=dict)
    matchers: dict[str, MatcherSpec] = field(default_factory=dict)
    handler_owner: dict[str, str] = field(default_factory=dict)
    matcher_owner: dict[str, str] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)


def make_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with Quantum's hookspecs (no global state)."""
    pm = pluggy.PluginManager("quantum")
    pm.add_hookspecs(hookspecs)
    return pm


def _entry_points() -> Iterable[EntryPoint]:
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def load_entry_point_plugins(pm: pluggy.PluginManager) -> None:
    """Register every ``quantum.plugins`` entry point; an import failure names the plugin."""
    for ep in _entry_points():
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        if pm.is_registered(plugin):
            continue
        register_plugin(pm, plugin, ep.name, ep)


def register_plugin(
    pm: pluggy.PluginManager, plugin: object, name: str, ep: EntryPoint | None = None
) -> None:
    try:
        pm.register(plugin, name=name)
        pm.check_pending()
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise PluginError(f"plugin {name!r} is invalid: {exc}") from exc


def _check_handler_schema(spec: HandlerSpec, plugin: str) -> None:
    try:
        jsonschema.Draft202012Validator.check_schema(dict(spec.schema))
    except jsonschema.SchemaError as exc:
        raise PluginError(
            f"plugin {plugin!r}: handler {spec.name!r} has an invalid schema: {exc.message}"
        ) from exc
    if spec.schema.get("type", "object") != "object":
        raise PluginError(f"plugin {plugin!r}: handler {spec.name!r} schema must be an object")
    if "handler" in spec.schema.get("properties", {}):
        raise PluginError(
            f"plugin {plugin!r}: handler {spec.name!r} schema must not declare 'handler'"
        )


def _check_matcher_schema(spec: MatcherSpec, plugin: str) -> None:
    try:
        jsonschema.Draft202012Validator.check_schema(dict(spec.schema))
    except jsonschema.SchemaError as exc:
        raise PluginError(
            f"plugin {plugin!r}: matcher {spec.name!r} has an invalid schema: {exc.message}"
        ) from exc


def collect(pm: pluggy.PluginManager) -> PluginRegistry:
    """Ask every plugin for its specs; duplicate names are an error naming both plugins."""
    registry = PluginRegistry()
    for plugin_name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        handlers = _call_one(pm, plugin, "quantum_register_handlers", plugin_name)
        matchers = _call_one(pm, plugin, "quantum_register_matchers", plugin_name)
        for spec in handlers:
            if not isinstance(spec, HandlerSpec):
                raise PluginError(f"plugin {plugin_name!r} returned {spec!r}, not a HandlerSpec")
            if spec.name in registry.handlers:
                raise PluginError(
                    f"handler {spec.name!r} is registered by both "
                    f"{registry.handler_owner[spec.name]!r} and {plugin_name!r}"
                )
            _check_handler_schema(spec, plugin_name)
            registry.handlers[spec.name] = spec
            registry.handler_owner[spec.name] = plugin_name
        for mspec in matchers:
            if not isinstance(mspec, MatcherSpec):
                raise PluginError(f"plugin {plugin_name!r} returned {mspec!r}, not a MatcherSpec")
            if mspec.name in registry.matchers or mspec.name == "matcher":
                raise PluginError(
                    f"matcher {mspec.name!r} is registered by both "
                    f"{registry.matcher_owner.get(mspec.name, 'quantum')!r} and {plugin_name!r}"
                )
            _check_matcher_schema(mspec, plugin_name)
            registry.matchers[mspec.name] = mspec
            registry.matcher_owner[mspec.name] = plugin_name
        module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
        dist, ver = _distribution_of(plugin_name)
        registry.plugins.append(
            PluginInfo(
                name=plugin_name,
                module=module,
                distribution=dist,
                version=ver,
                handlers=tuple(s.name for s in handlers),
                matchers=tuple(s.name for s in matchers),
            )
        )
    return registry


def _distribution_of(plugin_name: str) -> tuple[str | None, str | None]:
    for ep in _entry_points():
        if ep.name == plugin_name and ep.dist is not None:
            return ep.dist.name, ep.dist.version
    return None, None


def _call_one(pm: pluggy.PluginManager, plugin: object, hook: str, plugin_name: str) -> list[Any]:
    caller = pm.subset_hook_caller(
        hook, remove_plugins=[p for p in pm.get_plugins() if p is not plugin]
    )
    try:
        results: list[Any] = caller()
    except Exception as exc:
        raise PluginError(f"plugin {plugin_name!r} failed in {hook}: {exc}") from exc
    flat: list[Any] = []
    for result in results:
        flat.extend(result)
    return flat


def load_env_plugins(pm: pluggy.PluginManager) -> None:
    """Register the modules named in ``$QUANTUM_PLUGINS``."""
    for name in filter(None, (n.strip() for n in os.environ.get(EXTRA_PLUGINS_ENV, "").split(","))):
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise PluginError(
                f"plugin {name!r} (from ${EXTRA_PLUGINS_ENV}) failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        register_plugin(pm, module, name)


def discover(extra_plugins: Mapping[str, object] | None = None) -> PluginRegistry:
    """Build a manager, load entry points and ``$QUANTUM_PLUGINS`` (plus ``extra_plugins``,
    for tests) and collect every spec."""
    pm = make_plugin_manager()
    load_entry_point_plugins(pm)
    load_env_plugins(pm)
    for name, plugin in (extra_plugins or {}).items():
        register_plugin(pm, plugin, name)
    return collect(pm)
