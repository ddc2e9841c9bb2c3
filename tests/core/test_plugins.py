"""Plugin discovery errors name the plugin at fault."""

from __future__ import annotations

import types

import pytest

import quantum
from quantum import HandlerSpec
from quantum.plugins import PluginError, discover
from tests.support.processes import run_quantum


def module(name: str, **attrs: object) -> types.ModuleType:
    plugin = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(plugin, key, value)
    return plugin


def test_unknown_hook_is_refused() -> None:
    @quantum.hookimpl
    def quantum_register_handler() -> list[HandlerSpec]:  # typo: missing "s"
        return []

    with pytest.raises(PluginError, match=r"plugin 'typo' is invalid: .*quantum_register_handler"):
        discover({"typo": module("typo", quantum_register_handler=quantum_register_handler)})


def test_non_spec_return_value_is_refused() -> None:
    @quantum.hookimpl
    def quantum_register_handlers() -> list[object]:
        return ["not a spec"]

    with pytest.raises(PluginError, match="plugin 'bad' returned 'not a spec', not a HandlerSpec"):
        discover({"bad": module("bad", quantum_register_handlers=quantum_register_handlers)})


def test_plugin_hook_that_raises_is_named() -> None:
    @quantum.hookimpl
    def quantum_register_handlers() -> list[HandlerSpec]:
        raise RuntimeError("boom")

    with pytest.raises(
        PluginError, match="plugin 'crashy' failed in quantum_register_handlers: boom"
    ):
        discover({"crashy": module("crashy", quantum_register_handlers=quantum_register_handlers)})


def test_env_plugin_that_fails_to_import_is_named() -> None:
    result = run_quantum("list-plugins", env_plugins="no_such_plugin_module")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "quantum: plugin 'no_such_plugin_module' (from $QUANTUM_PLUGINS) failed to import: "
        "ModuleNotFoundError: No module named 'no_such_plugin_module'"
    )


def test_matcher_name_collision_with_builtin_is_refused() -> None:
    from quantum.handler import MatcherSpec

    @quantum.hookimpl
    def quantum_register_matchers() -> list[MatcherSpec]:
        return [MatcherSpec("path", {}, lambda value, build: None)]  # type: ignore[arg-type,return-value]

    with pytest.raises(
        PluginError, match="matcher 'path' is registered by both 'matchers' and 'mine'"
    ):
        discover({"mine": module("mine", quantum_register_matchers=quantum_register_matchers)})
