"""quantum-hello: an example third-party Quantum plugin.

Its ``pyproject.toml`` declares the entry point ``[project.entry-points."quantum.plugins"]
hello = "quantum_hello"``; Quantum imports this module and calls its hook implementations.
"""

from __future__ import annotations

from collections.abc import Sequence

import quantum
from quantum import HandlerSpec
from quantum_hello.handler import SCHEMA, HelloHandler


@quantum.hookimpl
def quantum_register_handlers() -> Sequence[HandlerSpec]:
    return [
        HandlerSpec(
            name="hello",
            schema=SCHEMA,
            factory=HelloHandler,
            description="Greets the caller (an example plugin).",
        )
    ]
