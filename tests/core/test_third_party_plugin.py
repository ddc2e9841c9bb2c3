"""Third-party plugins: the example ``quantum-hello`` is found through its entry point and serves;
plugins with a broken schema or a taken handler name are refused, naming the plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import aiohttp
import pytest

import quantum
from quantum import HandlerSpec
from quantum.plugins import PluginError, discover
from tests.support.processes import QuantumProcess, child_env, free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello_plugin"


@pytest.fixture(scope="module")
def hello_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin, pip-installed into a site directory of its own (as a user would
    install it; it is deliberately not part of the project's virtualenv)."""
    site = tmp_path_factory.mktemp("hello-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return site


@pytest.fixture
def hello_installed(hello_site: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Make the example visible in-process (sys.path) and to children (the returned env)."""
    monkeypatch.syspath_prepend(str(hello_site))
    return child_env({"PYTHONPATH": os.pathsep.join([str(hello_site), child_env()["PYTHONPATH"]])})


def plugin_module(name: str, spec: HandlerSpec) -> types.ModuleType:
    module = types.ModuleType(name)

    @quantum.hookimpl
    def quantum_register_handlers() -> list[HandlerSpec]:
        return [spec]

    module.quantum_register_handlers = quantum_register_handlers  # type: ignore[attr-defined]
    return module


@pytest.mark.usefixtures("hello_installed")
def test_example_plugin_is_discovered_through_its_entry_point() -> None:
    registry = discover()
    assert registry.handler_owner["hello"] == "hello"
    info = next(p for p in registry.plugins if p.name == "hello")
    assert (info.module, info.distribution, info.handlers) == (
        "quantum_hello",
        "quantum-hello",
        ("hello",),
    )


async def test_example_plugin_serves_from_a_config(
    quantum_factory: type[QuantumProcess], tmp_path: Path, hello_installed: dict[str, str]
) -> None:
    port = free_port()
    routes = [
        {"match": [{"path": ["/metrics"]}], "handle": [{"handler": "metrics"}]},
        {
            "match": [{"path": ["/hello"]}],
            "handle": [{"handler": "hello", "name": "Quantum", "format": "json"}],
        },
        {"handle": [{"handler": "hello", "greeting": "Hi", "only_get": True}]},
        {"handle": [{"handler": "static_response", "body": "passed on"}]},
    ]
    config = {
        "admin": {"disabled": True},
        "apps": {"http": {"servers": {"s": {"listen": [f"127.0.0.1:{port}"], "routes": routes}}}},
    }
    quantum_factory(config, tmp_path, port=port, env=hello_installed).start()
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/hello") as response:
            assert await response.json() == {"message": "Hello, Quantum!"}
        async with session.get(f"{base}/x?name=you") as response:
            assert await response.text() == "Hi, you!\n"
        async with session.post(f"{base}/x") as response:
            assert await response.text() == "passed on"
        async with session.get(f"{base}/metrics") as response:
            metrics = await response.text()
    assert 'quantum_hello_greetings_total{format="json"} 1.0' in metrics
    assert 'quantum_hello_greetings_total{format="text"} 1.0' in metrics


def test_example_plugin_options_are_validated(
    tmp_path: Path, hello_installed: dict[str, str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"apps": {"http": {"servers": {"s": {"listen": [":0"], "routes": '
        '[{"handle": [{"handler": "hello", "format": "xml"}]}]}}}}}'
    )
    result = subprocess.run(
        [sys.executable, "-m", "quantum", "validate", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        env=hello_installed,
    )
    assert result.returncode == 2
    assert "apps.http.servers.s.routes[0].handle[0].format" in result.stderr


def test_broken_schema_is_refused_naming_the_plugin() -> None:
    spec = HandlerSpec("wobbly", {"type": "object", "properties": {"x": {"type": 5}}}, print)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="plugin 'shaky': handler 'wobbly' has an invalid schema"):
        discover({"shaky": plugin_module("shaky", spec)})


def test_taken_handler_name_is_refused_naming_both_plugins() -> None:
    spec = HandlerSpec("file_server", {"type": "object"}, print)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="handler 'file_server' is registered by both") as error:
        discover({"copycat": plugin_module("copycat", spec)})
    assert {"'handlers'", "'copycat'"} <= set(str(error.value).split())


def test_installed_distribution_with_a_taken_name_stops_quantum(
    tmp_path: Path, hello_installed: dict[str, str]
) -> None:
    """A real distribution (dist-info with an entry point) on sys.path, not an in-process object."""
    site = tmp_path / "site"
    dist_info = site / "hello_again-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-again\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[quantum.plugins]\nhello_again = hello_again\n")
    (site / "hello_again.py").write_text(
        textwrap.dedent(
            """
            import quantum
            from quantum import HandlerSpec
            from quantum_hello.handler import HelloHandler

            @quantum.hookimpl
            def quantum_register_handlers():
                return [HandlerSpec("hello", {"type": "object"}, HelloHandler)]
            """
        )
    )
    env = dict(hello_installed)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    result = subprocess.run(
        [sys.executable, "-m", "quantum", "list-plugins"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 2
    assert "handler 'hello' is registered by both 'hello' and 'hello_again'" in result.stderr
