"""Hook specifications. Plugins implement them with ``@quantum.hookimpl``.

Every hook is prefixed ``quantum_``; built-in handlers register through the same hooks.
"""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from quantum.handler import HandlerSpec, MatcherSpec

hookspec = pluggy.HookspecMarker("quantum")


@hookspec
def quantum_register_handlers() -> Sequence[HandlerSpec]:  # type: ignore[empty-body]
    """Return the handler modules this plugin provides."""


@hookspec
def quantum_register_matchers() -> Sequence[MatcherSpec]:  # type: ignore[empty-body]
    """Return the request matchers this plugin provides."""
