"""Config loading: file → JSON → composed-schema validation → normalised, typed model.

``quantum validate``, ``quantum run``, every reload and the admin ``/load`` share
:func:`load_config` / :func:`parse_config`, so they accept and refuse exactly the same things.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from quantum.durations import parse_duration
from quantum.errors import ConfigError, ConfigIssue, json_path
from quantum.listen import ListenAddress, overlaps, parse_listen
from quantum.plugins import PluginRegistry
from quantum.schema import SEED_VALUE_FIELDS, compose

DEFAULT_ADMIN = ListenAddress("127.0.0.1", 2019)
DEFAULT_GRACE_PERIOD = 10.0


@dataclass(frozen=True)
class RouteConfig:
    json_path: str
    match: tuple[Mapping[str, Any], ...] | None
    """Matcher sets in the keyed form (``{"path": [...], "method": [...]}``); None = always."""
    handle: tuple[Mapping[str, Any], ...]
    terminal: bool


@dataclass(frozen=True)
class TLSConfig:
    certificate_file: Path
    key_file: Path


@dataclass(frozen=True)
class ServerConfig:
    name: str
    listen: tuple[ListenAddress, ...]
    routes: tuple[RouteConfig, ...]
    tls: TLSConfig | None
    access_log: bool
    max_header_size: int
    idle_timeout: float
    error_routes: tuple[RouteConfig, ...] | None = None
    """``errors.routes``: None when the server has no ``errors``."""


@dataclass(frozen=True)
class AdminConfig:
    disabled: bool
    listen: ListenAddress


@dataclass(frozen=True)
class Config:
    raw: Mapping[str, Any]
    servers: tuple[ServerConfig, ...]
    admin: AdminConfig
    log_level: str | None
    workers: int
    grace_period: float
    source: Path | None = field(default=None, compare=False)

    @property
    def config_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()


class Validator:
    """The composed schema, compiled once per plugin registry."""

    def __init__(self, registry: PluginRegistry) -> None:
        self.registry = registry
        self.schema = compose(registry)
        self._validator = jsonschema.Draft202012Validator(self.schema)

    def issues(self, data: Any) -> list[ConfigIssue]:
        found = [self._describe(error) for error in self._leaf_errors(data)]
        unique = {(issue.path, issue.message): issue for issue in found}
        return sorted(unique.values(), key=lambda issue: (issue.path, issue.message))

    def _leaf_errors(self, data: Any) -> list[ValidationError]:
        leaves: list[ValidationError] = []
        stack = list(self._validator.iter_errors(data))
        while stack:
            error = stack.pop()
            if error.validator in {"if", "allOf", "anyOf", "$ref"} and error.context:
                stack.extend(error.context)
            else:
                leaves.append(error)
        return leaves

    def _describe(self, error: ValidationError) -> ConfigIssue:
        path = list(error.absolute_path)
        message = error.message
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = sorted(error.schema.get("properties", {}))
            extra = [k for k in error.instance if k not in allowed]
            if len(extra) == 1:
                path.append(extra[0])
                message = "unknown field"
                close = difflib.get_close_matches(extra[0], allowed, n=1)
                if close:
                    message += f" (did you mean {close[0]!r}?)"
                elif allowed:
                    message += f"; allowed: {', '.join(allowed)}"
        elif error.validator == "enum" and path and path[-1] == "handler":
            names = sorted(self.registry.handlers)
            message = f"unknown handler {error.instance!r}"
            close = difflib.get_close_matches(str(error.instance), names, n=1)
            message += f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(names)}"
        elif error.validator == "enum" and path and path[-1] == "matcher":
            message = (
                f"unknown matcher {error.instance!r}; known: {', '.join(self.registry.matchers)}"
            )
        elif error.validator == "pattern" and isinstance(error.instance, str):
            hint = error.schema.get("description", f"expected pattern {error.validator_value}")
            message = f"{error.instance!r} is not valid here ({hint})"
        elif error.validator == "oneOf" and "description" in error.schema:
            message = f"{error.instance!r} is not valid: expected {error.schema['description']}"
        return ConfigIssue(json_path(path), message)


def read_config_file(path: Path) -> Any:
    """Read and parse JSON; raises ConfigError with one line (location for syntax errors)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue("", f"{path}: no such file")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigIssue("", f"{path}: is a directory, not a config file")]) from None
    except PermissionError:
        raise ConfigError([ConfigIssue("", f"{path}: permission denied")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue("", f"{path}: not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"{path}: cannot read: {exc.strerror}")]) from None
    return parse_json(text, str(path))


def parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [ConfigIssue("", f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}")]
        ) from None


def load_config(path: Path, validator: Validator) -> Config:
    return parse_config(read_config_file(path), validator, source=path)


def parse_config(data: Any, validator: Validator, source: Path | None = None) -> Config:
    """Validate ``data`` against the composed schema, then normalise it. Raises ConfigError
    carrying every problem found."""
    issues = validator.issues(data)
    if issues:
        raise ConfigError(issues)
    builder = _Normaliser(validator.registry)
    config = builder.build(data, source)
    if builder.issues:
        raise ConfigError(sorted(builder.issues, key=lambda i: (i.path, i.message)))
    return config


class _Normaliser:
    """Turns schema-valid JSON into the typed model, collecting semantic problems."""

    def __init__(self, registry: PluginRegistry) -> None:
        self.registry = registry
        self.issues: list[ConfigIssue] = []

    def build(self, data: Mapping[str, Any], source: Path | None) -> Config:
        http = data.get("apps", {}).get("http", {})
        servers = tuple(
            self._server(name, body)
            for name, body in sorted(http.get("servers", {}).items(), key=lambda kv: kv[0])
        )
        self._check_overlaps(servers)
        admin_raw = data.get("admin", {})
        admin_listen = DEFAULT_ADMIN
        if "listen" in admin_raw:
            admin_listen = self._listen(admin_raw["listen"], "admin.listen") or DEFAULT_ADMIN
        level = data.get("logging", {}).get("level")
        if level is None:
            level = data.get("logging", {}).get("logs", {}).get("default", {}).get("level")
        grace = parse_duration(http.get("grace_period", DEFAULT_GRACE_PERIOD))
        return Config(
            raw=data,
            servers=servers,
            admin=AdminConfig(bool(admin_raw.get("disabled", False)), admin_listen),
            log_level=level.upper().replace("WARNING", "WARN") if level else None,
            workers=int(data.get("workers", 1)),
            grace_period=grace,
            source=source,
        )

    def _listen(self, value: str, path: str) -> ListenAddress | None:
        try:
            return parse_listen(value)
        except ValueError as exc:
            self.issues.append(ConfigIssue(path, str(exc)))
            return None

    def _server(self, name: str, body: Mapping[str, Any]) -> ServerConfig:
        base = f"apps.http.servers.{name}"
        listen: list[ListenAddress] = []
        for i, value in enumerate(body["listen"]):
            address = self._listen(value, f"{base}.listen[{i}]")
            if address is None:
                continue
            if any(overlaps(address, other) for other in listen):
                self.issues.append(
                    ConfigIssue(f"{base}.listen[{i}]", f"duplicate listen address {value!r}")
                )
                continue
            listen.append(address)
        tls = None
        if "tls" in body:
            tls = TLSConfig(Path(body["tls"]["certificate_file"]), Path(body["tls"]["key_file"]))
            for key in ("certificate_file", "key_file"):
                file = Path(body["tls"][key])
                if not file.is_file():
                    self.issues.append(ConfigIssue(f"{base}.tls.{key}", f"{file}: no such file"))
        routes = tuple(self.routes(body.get("routes", []), f"{base}.routes"))
        error_routes = None
        if "errors" in body:
            errors = body["errors"].get("routes", [])
            error_routes = tuple(self.routes(errors, f"{base}.errors.routes"))
        return ServerConfig(
            name=name,
            listen=tuple(listen),
            routes=routes,
            tls=tls,
            access_log=bool(body.get("access_log", True)),
            max_header_size=int(body.get("max_header_size", 8190)),
            idle_timeout=parse_duration(body.get("idle_timeout", 75)),
            error_routes=error_routes,
        )

    def routes(self, routes: Sequence[Mapping[str, Any]], base: str) -> list[RouteConfig]:
        out = []
        for i, route in enumerate(routes):
            path = f"{base}[{i}]"
            match = None
            if "match" in route:
                match = tuple(
                    self.matcher_set(m, f"{path}.match[{j}]") for j, m in enumerate(route["match"])
                )
            handle = tuple(route.get("handle", []))
            for j, handler in enumerate(handle):
                self._check_nested(handler, f"{path}.handle[{j}]")
            out.append(RouteConfig(path, match, handle, bool(route.get("terminal", False))))
        return out

    def _check_nested(self, handler: Mapping[str, Any], path: str) -> None:
        for key in ("routes",):
            nested = handler.get(key)
            if handler.get("handler") == "subroute" and isinstance(nested, list):
                self.routes(nested, f"{path}.{key}")

    def matcher_set(self, matcher_set: Mapping[str, Any], path: str) -> Mapping[str, Any]:
        if "matcher" in matcher_set:
            name = matcher_set["matcher"]
            field_name = SEED_VALUE_FIELDS.get(name, "value")
            normalised: Mapping[str, Any] = {name: matcher_set[field_name]}
        else:
            normalised = dict(matcher_set)
        for name, value in normalised.items():
            if name == "path_regexp":
                try:
                    re.compile(value["pattern"])
                except re.error as exc:
                    self.issues.append(
                        ConfigIssue(
                            f"{path}.path_regexp.pattern", f"invalid regular expression: {exc}"
                        )
                    )
            if name == "not" and isinstance(value, list):
                for k, inner in enumerate(value):
                    self.matcher_set(inner, f"{path}.not[{k}]")
        return normalised

    def _check_overlaps(self, servers: Sequence[ServerConfig]) -> None:
        seen: list[tuple[ListenAddress, str]] = []
        for server in servers:
            for i, address in enumerate(server.listen):
                for other, other_name in seen:
                    if overlaps(address, other) and other_name != server.name:
                        self.issues.append(
                            ConfigIssue(
                                f"apps.http.servers.{server.name}.listen[{i}]",
                                f"address {address} is already used by server {other_name!r}",
                            )
                        )
                seen.append((address, server.name))


def normalise_routes(
    registry: PluginRegistry, routes: Sequence[Mapping[str, Any]], base: str
) -> list[RouteConfig]:
    """Normalise nested (``subroute``) routes that were already schema-validated."""
    normaliser = _Normaliser(registry)
    out = normaliser.routes(routes, base)
    if normaliser.issues:
        raise ConfigError(normaliser.issues)
    return out
