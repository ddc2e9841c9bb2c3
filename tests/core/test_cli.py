"""The ``quantum`` command line: every subcommand, --help, exit codes, the exported schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantum import __version__
from tests.support.processes import run_quantum

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "command", [[], ["run"], ["validate"], ["list-plugins"], ["schema"], ["version"]]
)
def test_help_for_every_command(command: list[str]) -> None:
    result = run_quantum(*command, "--help")
    assert result.returncode == 0
    assert "usage: quantum" in result.stdout


def test_version() -> None:
    result = run_quantum("version")
    assert result.stdout.strip() == f"quantum {__version__}"


def test_list_plugins_json_names_first_party_plugins() -> None:
    result = run_quantum("list-plugins", "--json")
    assert result.returncode == 0
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["file_sync"]["handlers"] == ["file_sync"]
    assert plugins["file_sync"]["distribution"] == "quantum-file-sync"
    assert "static_response" in plugins["handlers"]["handlers"]
    assert "path" in plugins["matchers"]["matchers"]
    assert "testkit_sleep" in plugins["testkit_plugin"]["handlers"]  # from $QUANTUM_PLUGINS


def test_list_plugins_text() -> None:
    result = run_quantum("list-plugins")
    assert "file_sync (quantum-file-sync" in result.stdout
    assert "handlers: " in result.stdout


def test_exported_schema_matches_quantum_schema() -> None:
    result = run_quantum("schema", env_plugins="")
    assert result.returncode == 0
    exported = json.loads((REPO / "schemas" / "config.schema.json").read_text())
    assert json.loads(result.stdout) == exported, (
        "schemas/config.schema.json is stale: regenerate it with "
        "`QUANTUM_PLUGINS= quantum schema > schemas/config.schema.json`"
    )


def test_every_example_config_validates() -> None:
    configs = sorted((REPO / "configs").glob("*.json"))
    assert configs
    for config in configs:
        result = run_quantum("validate", "--config", str(config), cwd=REPO, env_plugins="")
        assert result.returncode == 0, f"{config.name}: {result.stderr}"


def test_no_arguments_prints_help_and_fails() -> None:
    result = run_quantum()
    assert result.returncode == 2
    assert "usage: quantum" in result.stdout
