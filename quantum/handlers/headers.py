"""``headers``: manipulate request and response header fields (Caddy's ``headers`` handler).

Request operations are applied before the rest of the chain runs. Response operations are applied
to whatever the rest of the chain answers (errors included). Without ``deferred`` (and
``require``), Caddy applies them *before* the chain, so a field the chain sets itself wins over
an ``add``/``set`` here and ``delete`` cannot touch the chain's fields; Quantum reproduces that.
With ``deferred: true`` (or ``require``) they are applied to the final response.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from quantum.handler import Handler, HandlerError, HandlerSpec, Next
from quantum.handlers.placeholders import Template
from quantum.matchers import compile_value_pattern

_FIELDS = {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}
_REPLACEMENT = {
    "type": "object",
    "properties": {
        "search": {"type": "string", "description": "Substring to replace."},
        "search_regexp": {"type": "string", "description": "Regular expression to replace."},
        "replace": {"type": "string", "description": "Replacement ($1 / ${name} allowed)."},
    },
    "additionalProperties": False,
}
_OPS_PROPERTIES: dict[str, Any] = {
    "add": {**_FIELDS, "description": "Append these values (name -> list)."},
    "set": {**_FIELDS, "description": "Replace the field with these values (name -> list)."},
    "delete": {
        "type": "array",
        "items": {"type": "string"},
        "description": "Field names to remove; '*' wildcards at the start/end; '*' = all.",
    },
    "replace": {
        "type": "object",
        "additionalProperties": {"type": "array", "items": _REPLACEMENT},
        "description": "Substring/regexp replacements in values (name -> list; '*' = all).",
    },
}
SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "request": {
            "type": "object",
            "description": "Operations on the request header before the rest of the chain.",
            "properties": _OPS_PROPERTIES,
            "additionalProperties": False,
        },
        "response": {
            "type": "object",
            "description": "Operations on the response header.",
            "properties": {
                **_OPS_PROPERTIES,
                "deferred": {
                    "type": "boolean",
                    "default": False,
                    "description": "Apply to the final response, after the chain wrote it.",
                },
                "require": {
                    "type": "object",
                    "description": "Apply only to responses matching this (implies deferred).",
                    "properties": {
                        "status_code": {
                            "type": "array",
                            "items": {"type": "integer", "minimum": 1, "maximum": 999},
                            "description": "Status codes; a single digit n matches nxx.",
                        },
                        "headers": {
                            "type": "object",
                            "additionalProperties": {
                                "oneOf": [
                                    {"type": "array", "items": {"type": "string"}},
                                    {"type": "null"},
                                ]
                            },
                            "description": "Like the header matcher, on the response.",
                        },
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
    },
}

Replacement = Callable[[str], str]


def _compile_replacement(spec: Mapping[str, str]) -> Replacement:
    new = spec.get("replace", "")
    if "search_regexp" in spec:
        try:
            regex = re.compile(spec["search_regexp"])
        except re.error as exc:
            raise ValueError(f"invalid search_regexp {spec['search_regexp']!r}: {exc}") from exc
        # Go's ${name} / $1 expansion -> Python's \g<name>
        template = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: rf"\g<{m[1] or m[2]}>", new)
        return lambda value: regex.sub(template, value)
    search = spec.get("search", "")
    return lambda value: value.replace(search, new) if search else value


def _name_test(pattern: str) -> Callable[[str], bool]:
    if pattern == "*":
        return lambda name: True
    return compile_value_pattern(pattern.lower())


def _templates(fields: Mapping[str, Sequence[str]]) -> list[tuple[Template, list[Template]]]:
    return [(Template(name), [Template(v) for v in values]) for name, values in fields.items()]


class HeaderOps:
    """Caddy's HeaderOps applied in Caddy's order: add, set, delete, replace."""

    def __init__(self, ops: Mapping[str, Any]) -> None:
        self.add = _templates(ops.get("add", {}))
        self.set = _templates(ops.get("set", {}))
        self.delete = [(n, _name_test(n)) for n in ops.get("delete", [])]
        self.replace = [
            (name, [_compile_replacement(r) for r in specs])
            for name, specs in ops.get("replace", {}).items()
        ]

    def apply(self, headers: CIMultiDict[str], request: web.Request) -> None:
        for name, values in self.add:
            field = name.render(request)
            for value in values:
                headers.add(field, value.render(request))
        for name, values in self.set:
            field = name.render(request)
            headers.popall(field, None)
            for value in values:
                headers.add(field, value.render(request))
        for pattern, test in self.delete:
            if "*" in pattern:
                for field in {k for k in headers if test(k.lower())}:
                    headers.popall(field, None)
            else:
                headers.popall(pattern, None)
        for selector, replacements in self.replace:
            names = set(headers.keys()) if selector == "*" else {selector}
            for header_name in names:
                current = headers.getall(header_name, [])
                for replace in replacements:
                    current = [replace(v) for v in current]
                if current:
                    headers.popall(header_name, None)
                    for text in current:
                        headers.add(header_name, text)


class _ResponseRequirement:
    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.status_codes = tuple(spec.get("status_code", ()))
        self.headers = [
            (name, None if values is None else [compile_value_pattern(v) for v in values])
            for name, values in spec.get("headers", {}).items()
        ]

    def match(self, response: web.StreamResponse) -> bool:
        if self.status_codes and not any(
            response.status == code or (code < 100 and response.status // 100 == code)
            for code in self.status_codes
        ):
            return False
        for name, allowed in self.headers:
            actual = response.headers.getall(name, None)
            if allowed is None:
                if actual is not None:
                    return False
            elif actual is None or (
                allowed and not any(test(v) for v in actual for test in allowed)
            ):
                return False
        return True


class Headers(Handler):
    def __init__(self, options: Mapping[str, Any]) -> None:
        request_ops = options.get("request")
        response_ops = options.get("response")
        self._request = HeaderOps(request_ops) if request_ops else None
        self._response = HeaderOps(response_ops) if response_ops else None
        requirement = (response_ops or {}).get("require")
        self._require = _ResponseRequirement(requirement) if requirement is not None else None
        self._deferred = bool((response_ops or {}).get("deferred")) or self._require is not None

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        if self._request is not None:
            headers = CIMultiDict(request.headers)
            self._request.apply(headers, request)
            request = request.clone(headers=CIMultiDictProxy(headers))
        if self._response is None:
            return await next(request)
        try:
            response = await next(request)
        except web.HTTPException as exc:
            self._apply_to(exc, request)
            raise
        except HandlerError as error:
            # Caddy sets these on the response writer before the chain runs, so the answer of
            # the server's errors routes carries them; deferred ones never see that answer.
            if not self._deferred:
                self._apply_early(error.headers, request)
            raise
        self._apply_to(response, request)
        return response

    def _apply_to(self, response: web.StreamResponse, request: web.Request) -> None:
        ops = self._response
        if ops is None or response.prepared:
            return
        if self._require is not None and not self._require.match(response):
            return
        headers = response.headers
        assert isinstance(headers, CIMultiDict)
        if self._deferred:
            ops.apply(headers, request)
            return
        self._apply_early(headers, request)

    def _apply_early(self, headers: CIMultiDict[str], request: web.Request) -> None:
        """Ops applied "before" the chain: start from an empty header, the chain's fields win."""
        assert self._response is not None
        early: CIMultiDict[str] = CIMultiDict()
        self._response.apply(early, request)
        for name in set(early.keys()):
            if name not in headers:
                for value in early.getall(name):
                    headers.add(name, value)


SPEC = HandlerSpec(
    name="headers",
    schema=SCHEMA,
    factory=Headers,
    description="Adds, sets, deletes or rewrites request and response header fields.",
)
