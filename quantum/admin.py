"""The admin endpoint (Caddy's shape): ``GET /config``, ``POST /load``, ``GET /metrics``."""

from __future__ import annotations

import structlog
from aiohttp import web

from quantum.config import parse_json
from quantum.errors import ConfigError
from quantum.listen import ListenAddress
from quantum.metrics import metrics_response
from quantum.runtime import Runtime

log = structlog.get_logger("quantum.admin")
MAX_CONFIG_BYTES = 16 * 1024 * 1024


def admin_app(runtime: Runtime) -> web.Application:
    async def get_config(_: web.Request) -> web.Response:
        config = runtime.config
        return web.json_response(dict(config.raw) if config else None)

    async def load(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.json_response(
                {
                    "error": "Content-Type must be application/json",
                    "code": "unsupported_media_type",
                },
                status=415,
            )
        body = await request.text()
        try:
            await runtime.load_data(parse_json(body, "request body"))
        except ConfigError as exc:
            log.warning("admin load refused", issues=[str(i) for i in exc.issues])
            return web.json_response(
                {
                    "error": "invalid config; the previous config keeps serving",
                    "code": "invalid_config",
                    "issues": [str(i) for i in exc.issues],
                },
                status=400,
            )
        return web.json_response({"status": "loaded"})

    async def metrics(_: web.Request) -> web.Response:
        return metrics_response(runtime.exported)

    app = web.Application(client_max_size=MAX_CONFIG_BYTES)
    app.router.add_get("/config", get_config)
    app.router.add_get("/config/", get_config)
    app.router.add_post("/load", load)
    app.router.add_get("/metrics", metrics)
    return app


async def start_admin(runtime: Runtime, address: ListenAddress) -> web.AppRunner | None:
    """Start the admin endpoint; a busy address is a warning, not a failed start."""
    runner = web.AppRunner(admin_app(runtime), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host=address.host or "127.0.0.1", port=address.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        log.warning(
            "admin endpoint not started; servers run without it",
            address=str(address),
            reason=exc.strerror or str(exc),
        )
        return None
    log.info("admin endpoint listening", address=str(address))
    return runner


__all__ = ["admin_app", "start_admin"]
