"""A plugin used only by the tests, loaded through ``QUANTUM_PLUGINS=testkit_plugin``.

Its handlers make lifecycle and timing observable: ``testkit_sleep`` answers after a delay,
``testkit_ws_echo`` keeps a WebSocket open, ``testkit_lifecycle`` records provision/cleanup calls
in a file and can be told to fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

import quantum
from quantum import Handler, HandlerSpec, Next, ProvisionContext


class Sleep(Handler):
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.seconds = float(options.get("seconds", 1))
        self.body = str(options.get("body", "slept"))

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        await asyncio.sleep(self.seconds)
        return web.Response(text=self.body)


class WsEcho(Handler):
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.tag = str(options.get("tag", ""))

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(f"{self.tag}{message.data}")
        return ws


class Lifecycle(Handler):
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.record = Path(options["record"])
        self.fail_in = options.get("fail_in")
        self.name = str(options.get("name", "x"))

    def _note(self, event: str) -> None:
        with self.record.open("a") as file:
            file.write(f"{self.name}:{event}\n")

    async def provision(self, ctx: ProvisionContext) -> None:
        self._note("provision")
        if self.fail_in == "provision":
            raise RuntimeError("told to fail in provision")

    def validate(self) -> None:
        self._note("validate")
        if self.fail_in == "validate":
            raise ValueError("told to fail in validate")

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        return web.Response(text=self.name)

    async def cleanup(self) -> None:
        self._note("cleanup")


@quantum.hookimpl
def quantum_register_handlers() -> list[HandlerSpec]:
    return [
        HandlerSpec(
            "testkit_sleep",
            {"properties": {"seconds": {"type": "number"}, "body": {"type": "string"}}},
            Sleep,
        ),
        HandlerSpec("testkit_ws_echo", {"properties": {"tag": {"type": "string"}}}, WsEcho),
        HandlerSpec(
            "testkit_lifecycle",
            {
                "properties": {
                    "record": {"type": "string"},
                    "name": {"type": "string"},
                    "fail_in": {"enum": ["provision", "validate"]},
                },
                "required": ["record"],
            },
            Lifecycle,
        ),
    ]
