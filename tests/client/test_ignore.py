from __future__ import annotations

from pathlib import Path

import pytest
from quantum_file_sync.client.ignore import IgnoreRules
from quantum_file_sync.patterns import PatternError


def test_reserved_names_are_always_ignored() -> None:
    rules = IgnoreRules()
    assert rules.ignores(".quantum-sync/state.sqlite3")
    assert rules.ignores(".quantumignore")
    assert rules.ignores(".Quantum")
    assert not rules.ignores("sub/.quantum-sync")
    assert not rules.ignores("notes.txt")


@pytest.mark.parametrize(
    ("pattern", "ignored", "kept"),
    [
        ("*.tmp", ["a.tmp", "x/y/b.tmp", "z.tmp/inside.txt"], ["a.tmpx", "tmp"]),
        ("node_modules", ["node_modules", "app/node_modules/x/y.js"], ["node_modules2"]),
        ("build/out", ["build/out", "build/out/a.o"], ["x/build/out", "build/output"]),
        ("/top.txt", ["top.txt"], ["sub/top.txt"]),
        ("cache/", ["cache", "a/cache/file"], ["cached"]),
        ("**/*.log", ["a.log", "x/y/z.log"], ["log"]),
    ],
)
def test_patterns(pattern: str, ignored: list[str], kept: list[str]) -> None:
    rules = IgnoreRules([pattern])
    for path in ignored:
        assert rules.ignores(path), path
    for path in kept:
        assert not rules.ignores(path), path


def test_ignore_file_and_options_combine(tmp_path: Path) -> None:
    (tmp_path / ".quantumignore").write_text("# comment\n\n*.swp\n/private\n")
    rules = IgnoreRules.load(tmp_path, ["*.bak"])
    assert rules.patterns == ("*.bak", "*.swp", "/private")
    assert rules.ignores("x/.notes.swp")
    assert rules.ignores("old.bak")
    assert rules.ignores("private/key")
    assert not rules.ignores("public/private")


@pytest.mark.parametrize("pattern", ["../x", "a/../../b", "/"])
def test_patterns_that_escape_are_refused(pattern: str) -> None:
    with pytest.raises(PatternError):
        IgnoreRules([pattern])
