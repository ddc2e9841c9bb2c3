"""Quantum: a Caddy-style, plugin-configured HTTP server framework."""

from importlib.metadata import PackageNotFoundError, version

import pluggy

from quantum.handler import (
    Handler,
    HandlerError,
    HandlerSpec,
    Matcher,
    MatcherSpec,
    Next,
    ProvisionContext,
)

PROJECT_NAME = "quantum"
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

try:
    __version__ = version("quantum")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "PROJECT_NAME",
    "Handler",
    "HandlerError",
    "HandlerSpec",
    "Matcher",
    "MatcherSpec",
    "Next",
    "ProvisionContext",
    "__version__",
    "hookimpl",
]
