"""Suite-wide fixtures. Helpers for real processes live in tests/support/."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from tests.support.processes import QuantumProcess, free_port

pytest_plugins = ["tests.fixtures.redis"]


@pytest.fixture
def quantum_factory(tmp_path: Path) -> Iterator[type[QuantumProcess]]:
    """Start real ``quantum`` processes; every one started is stopped at teardown."""
    started: list[QuantumProcess] = []

    class Tracked(QuantumProcess):
        def start(self, *, wait: bool = True) -> QuantumProcess:
            started.append(self)
            return super().start(wait=wait)

    yield Tracked
    for process in started:
        process.stop()


@pytest.fixture
def port() -> int:
    return free_port()
