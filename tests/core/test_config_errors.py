"""Invalid configs: one clear line per problem, with the JSON path, exit status 2."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from quantum.cli import main
from tests.support.processes import free_port, run_quantum


def server(routes: list[Any] | None = None, listen: list[str] | None = None) -> dict[str, Any]:
    return {
        "admin": {"disabled": True},
        "apps": {
            "http": {
                "servers": {"s": {"listen": listen or ["127.0.0.1:9"], "routes": routes or []}}
            }
        },
    }


def sleep_route(**options: Any) -> list[Any]:
    return [{"handle": [{"handler": "testkit_sleep", **options}]}]


SRV = "apps.http.servers.s"
CASES: list[tuple[str, Any, str]] = [
    (
        "unknown handler",
        server([{"handle": [{"handler": "testkit_slep"}]}]),
        f"{SRV}.routes[0].handle[0].handler: unknown handler 'testkit_slep' "
        "(did you mean 'testkit_sleep'?)",
    ),
    (
        "misspelt handler field",
        server(sleep_route(secnds=1)),
        f"{SRV}.routes[0].handle[0].secnds: unknown field (did you mean 'seconds'?)",
    ),
    (
        "wrong type",
        server(sleep_route(seconds="soon")),
        f"{SRV}.routes[0].handle[0].seconds: 'soon' is not of type 'number'",
    ),
    (
        "misspelt errors routes",
        {"apps": {"http": {"servers": {"s": {"listen": [":8080"], "errors": {"route": []}}}}}},
        f"{SRV}.errors.route: unknown field (did you mean 'routes'?)",
    ),
    (
        "handler error in errors routes",
        {
            "apps": {
                "http": {
                    "servers": {
                        "s": {
                            "listen": [":8080"],
                            "errors": {"routes": [{"handle": [{"handler": "nope"}]}]},
                        }
                    }
                }
            }
        },
        f"{SRV}.errors.routes[0].handle[0].handler: unknown handler 'nope'",
    ),
    (
        "precompressed coding the file server cannot serve",
        server([{"handle": [{"handler": "file_server", "precompressed": {"deflate": {}}}]}]),
        f"{SRV}.routes[0].handle[0].precompressed.deflate: unknown field; allowed: br, gzip, zstd",
    ),
    (
        "listen without port",
        server(listen=["localhost"]),
        f"{SRV}.listen[0]: invalid listen address 'localhost': missing ':PORT'",
    ),
    (
        "port out of range",
        server(listen=[":70000"]),
        f"{SRV}.listen[0]: port 70000 out of range in listen address ':70000'",
    ),
    (
        "duplicate listen address",
        server(listen=["127.0.0.1:9000", "127.0.0.1:9000"]),
        f"{SRV}.listen[1]: duplicate listen address '127.0.0.1:9000'",
    ),
    (
        "listen is not a list",
        {"apps": {"http": {"servers": {"s": {"listen": ":8080"}}}}},
        f"{SRV}.listen: ':8080' is not of type 'array'",
    ),
    (
        "missing listen",
        {"apps": {"http": {"servers": {"s": {"routes": []}}}}},
        f"{SRV}: 'listen' is a required property",
    ),
    (
        "unknown top-level field",
        {"apss": {}},
        "apss: unknown field (did you mean 'apps'?)",
    ),
    (
        "unknown matcher",
        server([{"match": [{"paht": ["/x"]}], "handle": []}]),
        f"{SRV}.routes[0].match[0].paht: unknown field (did you mean 'path'?)",
    ),
    (
        "seed matcher without paths",
        server([{"match": [{"matcher": "path"}], "handle": []}]),
        f"{SRV}.routes[0].match[0]: 'paths' is a required property",
    ),
    (
        "unknown seed matcher",
        server([{"match": [{"matcher": "colour", "paths": ["/"]}], "handle": []}]),
        f"{SRV}.routes[0].match[0].matcher: unknown matcher 'colour'",
    ),
    (
        "bad duration",
        {**server(), "apps": {"http": {**server()["apps"]["http"], "grace_period": "10 parsecs"}}},
        "apps.http.grace_period: '10 parsecs' is not valid",
    ),
    (
        "plugin schema: required option missing",
        server([{"handle": [{"handler": "testkit_lifecycle"}]}]),
        f"{SRV}.routes[0].handle[0]: 'record' is a required property",
    ),
    (
        "routes is not an array",
        {"apps": {"http": {"servers": {"s": {"listen": [":1"], "routes": {}}}}}},
        f"{SRV}.routes: {{}} is not of type 'array'",
    ),
    (
        "invalid regular expression",
        server([{"match": [{"path_regexp": {"pattern": "(["}}], "handle": []}]),
        f"{SRV}.routes[0].match[0].path_regexp.pattern: invalid regular expression",
    ),
    (
        "admin listen invalid",
        {**server(), "admin": {"listen": "nowhere"}},
        "admin.listen: invalid listen address 'nowhere'",
    ),
]


@pytest.fixture(autouse=True)
def testkit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTUM_PLUGINS", "testkit_plugin")


@pytest.mark.parametrize(("config", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_config_is_one_line_with_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: Any, expected: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["validate", "--config", str(path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("quantum:")]
    assert any(expected in line for line in lines), lines


def test_every_problem_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = server(
        [{"handle": [{"handler": "testkit_slep"}, {"handler": "testkit_sleep", "x": 1}]}],
        listen=["nowhere"],
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["validate", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "handle[0].handler: unknown handler" in err
    assert "handle[1].x: unknown field" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"apps": {"http": {},}}', ":1:22: invalid JSON: Expecting property name"),
        ('{\n  "apps": [\n}', ":3:1: invalid JSON"),
        ("", ":1:1: invalid JSON: Expecting value"),
    ],
    ids=["trailing comma", "unbalanced", "empty"],
)
def test_invalid_json_reports_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    assert main(["validate", "--config", str(path)]) == 2
    assert f"{path}{expected}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
        (lambda p: (p.write_bytes(b'{"apps": "\xff\xfe"}'), p)[1], "not UTF-8 text"),
    ],
    ids=["missing", "directory", "not utf-8"],
)
def test_unreadable_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, expected: str
) -> None:
    path = make(tmp_path / "config.json")
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert expected in err[0]


def test_failed_provision_is_cleaned_up_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "record.txt"
    handlers = [
        {"handler": "testkit_lifecycle", "record": str(record), "name": "first"},
        {
            "handler": "testkit_lifecycle",
            "record": str(record),
            "name": "bad",
            "fail_in": "provision",
        },
    ]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(server([{"handle": handlers}])))
    assert main(["validate", "--config", str(path)]) == 2
    assert "handle[1]: testkit_lifecycle: told to fail in provision" in capsys.readouterr().err
    events = record.read_text().split()
    assert events == [
        "first:provision",
        "first:validate",
        "bad:provision",
        "bad:cleanup",
        "first:cleanup",
    ]


def test_run_with_invalid_config_binds_nothing(tmp_path: Path) -> None:
    port = free_port()
    config = server([{"handle": [{"handler": "nope"}]}], listen=[f"127.0.0.1:{port}"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = run_quantum("run", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown handler 'nope'" in result.stderr
    assert "config loaded" not in result.stderr
    with socket.socket() as sock:  # the port is still free
        sock.bind(("127.0.0.1", port))
