"""Built-in handlers, registered through the same hook as third-party plugins."""

from __future__ import annotations

from collections.abc import Sequence

import quantum
from quantum.handler import HandlerSpec
from quantum.handlers import (
    authentication,
    file_server,
    headers,
    metrics,
    request_body,
    static_response,
    subroute,
)

HANDLER_SPECS: tuple[HandlerSpec, ...] = (
    static_response.SPEC,
    headers.SPEC,
    file_server.SPEC,
    request_body.SPEC,
    authentication.SPEC,
    subroute.SPEC,
    metrics.SPEC,
)


@quantum.hookimpl
def quantum_register_handlers() -> Sequence[HandlerSpec]:
    return HANDLER_SPECS
