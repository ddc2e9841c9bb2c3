"""Meta-test (datasette's rule): every hook is documented for plugin authors and exercised by a
test, and every built-in handler and matcher is documented."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from quantum import hookspecs
from quantum.plugins import discover

REPO = Path(__file__).resolve().parents[2]
HOOKS = [
    name
    for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("quantum_")
]


def test_there_are_hooks() -> None:
    assert HOOKS == ["quantum_register_handlers", "quantum_register_matchers"]


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_and_tested(hook: str) -> None:
    assert hook in (REPO / "docs" / "plugins.md").read_text(), (
        f"{hook} missing from docs/plugins.md"
    )
    users = [
        path.relative_to(REPO)
        for path in (REPO / "tests").rglob("test_*.py")
        if path.name != Path(__file__).name and hook in path.read_text()
    ]
    assert users, f"no test implements {hook}"


def test_every_builtin_handler_and_matcher_is_documented() -> None:
    registry = discover()
    reference = (REPO / "docs" / "handlers.md").read_text()
    builtin = [name for name, owner in registry.handler_owner.items() if owner == "handlers"] + [
        name for name, owner in registry.matcher_owner.items() if owner == "matchers"
    ]
    missing = [name for name in builtin if f"`{name}`" not in reference]
    assert not missing, f"undocumented in docs/handlers.md: {missing}"
