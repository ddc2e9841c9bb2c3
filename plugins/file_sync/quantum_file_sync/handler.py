"""The ``file_sync`` handler: per-handler options on top of the folder's shared engine.

``serve`` answers ``/ws``, ``/api/...``, the metrics route and the browser page; anything else
goes to ``next``. The metrics route and the page are also *contributed* to the server, so they
work under a config whose only route matches ``/api/*`` and ``/ws`` (the seed's). The journal,
index, watcher and WebSocket manager live in :class:`~quantum_file_sync.engine.SyncEngine`, one
per folder, shared through the core's usage pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any

import structlog
from aiohttp import hdrs, web
from prometheus_client.registry import Collector

from quantum import Handler, Next, ProvisionContext
from quantum.metrics import metrics_response
from quantum_file_sync import openapi
from quantum_file_sync.api import PREFIX, FileApi
from quantum_file_sync.engine import EngineSettings, SyncEngine
from quantum_file_sync.options import Settings, parse_settings
from quantum_file_sync.security import (
    OriginPolicy,
    TokenAuth,
    forbidden_origin,
    header_token,
    request_token,
    unauthorized,
)
from quantum_file_sync.ui import serve_ui

WS_PATH = "/ws"
UI_PATHS = ("/", "/ui/*")


class FileSyncHandler(Handler):
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.settings: Settings = parse_settings(options)
        self.engine_settings = EngineSettings.of(self.settings)
        self.logger: Any = structlog.get_logger("quantum.file_sync")
        self.exported: Collector | None = None
        self.auth: TokenAuth | None = None
        self.origins = OriginPolicy(self.settings.allowed_origins)
        self.engine: SyncEngine | None = None
        self.api: FileApi | None = None
        self._pool: Any = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def provision(self, ctx: ProvisionContext) -> None:
        settings = self.settings
        self.logger = ctx.logger.bind(handler="file_sync", root=str(settings.root))
        self.exported = ctx.exported
        if ctx.workers > 1 and settings.broker.type == "memory":
            raise ValueError(
                f"workers: {ctx.workers} needs the redis broker "
                '(broker: {"type": "redis", "url": ...}): with the memory broker each worker '
                "would keep its own journal and see only its own changes"
            )
        self.auth = await asyncio.to_thread(TokenAuth.from_settings, settings.auth)
        key = self.engine_settings.pool_key()
        engine, _ = await ctx.shared.acquire(
            key, lambda: SyncEngine.start(self.engine_settings, ctx.registry, self.logger)
        )
        self._pool = ctx.shared
        self.engine = engine
        if engine.settings != self.engine_settings:
            raise ValueError(
                f"{self.engine_settings.root} is already served with other journal, broker, "
                "limits, heartbeat, watch, compression or uploads options; serve it with one "
                "set of those options (changing them needs a restart)"
            )
        engine.push_authenticator(self.authenticate)
        self.api = FileApi(
            root=engine.root,
            storage=engine.storage,
            changelog=engine.changelog,
            hashes=engine.hashes,
            metrics=engine.metrics,
            enable_upload=settings.enable_upload,
            max_upload_size=settings.max_upload_size,
            openapi=openapi.document(auth=self.auth is not None),
            uploads=engine.uploads,
            history=engine.history,
        )
        if settings.metrics_path:
            ctx.add_route([settings.metrics_path], self)
        if settings.ui:
            ctx.add_route(list(UI_PATHS), self)
        self.logger.info("file_sync ready", upload=settings.enable_upload, auth=bool(self.auth))

    def validate(self) -> None:
        heartbeat = self.settings.heartbeat
        if heartbeat.timeout <= heartbeat.interval:
            raise ValueError("heartbeat.timeout must be longer than heartbeat.interval")

    async def cleanup(self) -> None:
        """Give the engine back to the pool (the last user closes it); tolerates a partial
        provision."""
        if self.engine is not None:
            self.engine.remove_authenticator(self.authenticate)
            self.engine = None
            await self._pool.release(self.engine_settings.pool_key())

    # -- serving -------------------------------------------------------------------------------

    def authenticate(self, token: str | None) -> bool:
        """Whether ``token`` may use this handler (always, when auth is off)."""
        return self.auth is None or self.auth.check(token)

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        if raw_path == WS_PATH:
            return await self._websocket(request)
        if raw_path == PREFIX or raw_path.startswith(PREFIX + "/"):
            return await self._api(request)
        path = request.path
        if path == self.settings.metrics_path:
            return self._metrics(request)
        if self.settings.ui and (path == "/" or path.startswith("/ui/")):
            return await serve_ui(request)
        return await next(request)

    async def _api(self, request: web.Request) -> web.StreamResponse:
        assert self.api is not None
        if not self.origins.allows(request):
            return forbidden_origin()
        if request.method == hdrs.METH_OPTIONS:
            preflight = self.origins.preflight(request)
            self.api.describe_options(request, preflight)
            return preflight
        public = self.api.is_public(request)
        if self.auth is not None and not public and not self.auth.check(request_token(request)):
            response: web.StreamResponse = unauthorized()
            self.origins.decorate(request, response)
            return response
        response = await self.api.handle(request)
        self.origins.decorate(request, response)
        return response

    def _websocket(self, request: web.Request) -> Awaitable[web.StreamResponse]:
        """Checks before the upgrade; then WsManager's coroutine itself, so an open WebSocket
        keeps no frame of this method alive."""
        if not self.origins.allows(request):
            return _ready(forbidden_origin())
        if self.auth is not None:
            # A token offered before the upgrade must be valid; without one, WsManager waits
            # for the Subscribe message's token.
            for offered in (header_token(request), request.query.get("token")):
                if offered is not None and not self.auth.check(offered):
                    return _ready(unauthorized())
        assert self.engine is not None
        return self.engine.ws.handle(request)

    def _metrics(self, request: web.Request) -> web.StreamResponse:
        if request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
            return web.Response(status=405, headers={hdrs.ALLOW: "GET, HEAD"})
        assert self.exported is not None
        return metrics_response(self.exported)


async def _ready(response: web.StreamResponse) -> web.StreamResponse:
    return response
