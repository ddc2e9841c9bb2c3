"""Registers the ``file_sync`` handler through the ``quantum_register_handlers`` hook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import quantum
from quantum.handler import HandlerSpec
from quantum_file_sync.options import SCHEMA


def _factory(options: Mapping[str, Any]) -> quantum.Handler:
    from quantum_file_sync.handler import FileSyncHandler

    return FileSyncHandler(options)


@quantum.hookimpl
def quantum_register_handlers() -> Sequence[HandlerSpec]:
    return [
        HandlerSpec(
            name="file_sync",
            schema=SCHEMA,
            factory=_factory,
            description="a folder as a real-time synchronised file service (HTTP API + /ws)",
        )
    ]
