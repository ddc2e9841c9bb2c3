"""The composed config schema: the core's own shape plus every plugin's closed handler and
matcher schemas (``enum`` on ``handler`` + ``allOf`` of ``if/then``; never ``oneOf``, whose
best-match errors mislead)."""

from __future__ import annotations

import copy
from typing import Any

from quantum.durations import DURATION_SCHEMA
from quantum.plugins import PluginRegistry

SCHEMA_ID = "https://quantum.invalid/schemas/config.schema.json"
LOG_LEVELS = ["DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"]

# The seed's single-matcher form {"matcher": "path", "paths": [...]} names its value field
# after the matcher; other matchers use "value".
SEED_VALUE_FIELDS = {"path": "paths", "method": "methods", "host": "hosts"}


def handler_schema(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Close a plugin's options schema and pin its ``handler`` name."""
    closed = copy.deepcopy(options)
    closed.setdefault("type", "object")
    properties = dict(closed.get("properties", {}))
    closed["properties"] = {"handler": {"const": name}, **properties}
    closed["required"] = ["handler", *[r for r in closed.get("required", []) if r != "handler"]]
    closed["additionalProperties"] = False
    return closed


def compose(registry: PluginRegistry) -> dict[str, Any]:
    handler_names = sorted(registry.handlers)
    matcher_names = sorted(registry.matchers)
    seed_matcher_alternatives: list[dict[str, Any]] = []
    for name in matcher_names:
        field = SEED_VALUE_FIELDS.get(name, "value")
        seed_matcher_alternatives.append(
            {
                "if": {"properties": {"matcher": {"const": name}}, "required": ["matcher"]},
                "then": {
                    "properties": {
                        "matcher": {"const": name},
                        field: copy.deepcopy(dict(registry.matchers[name].schema)),
                    },
                    "required": ["matcher", field],
                    "additionalProperties": False,
                },
            }
        )
    keyed_properties = {
        name: copy.deepcopy(dict(registry.matchers[name].schema)) for name in matcher_names
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Quantum configuration",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "admin": {"$ref": "#/$defs/admin"},
            "logging": {"$ref": "#/$defs/logging"},
            "workers": {
                "type": "integer",
                "minimum": 1,
                "maximum": 64,
                "description": "processes serving the same listeners (SO_REUSEPORT)",
            },
            "apps": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"http": {"$ref": "#/$defs/http"}},
            },
        },
        "$defs": {
            "duration": DURATION_SCHEMA,
            "admin": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "disabled": {"type": "boolean"},
                    "listen": {"type": "string", "description": "default 127.0.0.1:2019"},
                },
            },
            "logging": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "level": {"enum": LOG_LEVELS + [lv.lower() for lv in LOG_LEVELS]},
                    "logs": {
                        "type": "object",
                        "description": 'Caddy\'s form: {"default": {"level": "INFO"}}',
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "level": {"enum": LOG_LEVELS + [lv.lower() for lv in LOG_LEVELS]}
                            },
                        },
                    },
                },
            },
            "http": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "grace_period": {"$ref": "#/$defs/duration"},
                    "http_port": {"type": "integer"},
                    "https_port": {"type": "integer"},
                    "servers": {
                        "type": "object",
                        "additionalProperties": {"$ref": "#/$defs/server"},
                    },
                },
            },
            "server": {
                "type": "object",
                "additionalProperties": False,
                "required": ["listen"],
                "properties": {
                    "listen": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "minLength": 1},
                    },
                    "routes": {"$ref": "#/$defs/routes"},
                    "errors": {
                        "type": "object",
                        "additionalProperties": False,
                        "description": "routes that answer errors handlers raise "
                        "(Caddy's handle_errors)",
                        "properties": {"routes": {"$ref": "#/$defs/routes"}},
                    },
                    "tls": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["certificate_file", "key_file"],
                        "properties": {
                            "certificate_file": {"type": "string"},
                            "key_file": {"type": "string"},
                        },
                    },
                    "automatic_https": {
                        "type": "object",
                        "description": "accepted for Caddy compatibility; Quantum never "
                        "obtains certificates itself",
                    },
                    "logs": {
                        "type": "object",
                        "description": "accepted for Caddy compatibility",
                    },
                    "access_log": {
                        "type": "boolean",
                        "description": "one log line per request (default true)",
                    },
                    "max_header_size": {"type": "integer", "minimum": 1024},
                    "idle_timeout": {"$ref": "#/$defs/duration"},
                },
            },
            "routes": {"type": "array", "items": {"$ref": "#/$defs/route"}},
            "route": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "group": {"type": "string"},
                    "match": {"type": "array", "items": {"$ref": "#/$defs/matcher_set"}},
                    "handle": {"type": "array", "items": {"$ref": "#/$defs/handler"}},
                    "terminal": {"type": "boolean"},
                },
            },
            "matcher_set": {
                "type": "object",
                "if": {"required": ["matcher"]},
                "then": {
                    "properties": {"matcher": {"enum": matcher_names}},
                    "allOf": seed_matcher_alternatives,
                },
                "else": {
                    "minProperties": 1,
                    "additionalProperties": False,
                    "properties": keyed_properties,
                },
            },
            "handler": {
                "type": "object",
                "required": ["handler"],
                "properties": {"handler": {"enum": handler_names}},
                "allOf": [
                    {
                        "if": {"properties": {"handler": {"const": name}}, "required": ["handler"]},
                        "then": handler_schema(name, dict(registry.handlers[name].schema)),
                    }
                    for name in handler_names
                ],
            },
        },
    }
