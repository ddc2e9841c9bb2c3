"""The ``quantum`` command: run, validate, list-plugins, schema, version.

``quantum --config F`` is ``quantum run --config F``. Config problems print one line each
(``json.path: message``) and exit with status 2 before any socket is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from quantum import __version__, logs
from quantum.admin import start_admin
from quantum.config import Config, Validator, load_config
from quantum.errors import BindError, ConfigError
from quantum.observe import new_registry
from quantum.plugins import PluginError, PluginRegistry, discover
from quantum.runtime import Runtime
from quantum.worker_metrics import WorkerMetrics

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
COMMANDS = ("run", "validate", "list-plugins", "schema", "version")
log = structlog.get_logger("quantum.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quantum",
        description="Quantum: a plugin-configured HTTP server. "
        "`quantum --config FILE` is short for `quantum run --config FILE`.",
    )
    parser.add_argument("--version", action="version", version=f"quantum {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="serve a config", description="Serve a config until stopped.")
    run.add_argument("--config", "-c", required=True, type=Path, help="JSON config file")
    run.add_argument("--watch", action="store_true", help="reload when the config file changes")
    run.add_argument("--log-level", choices=sorted(logs.LEVELS), type=str.upper, help="log level")
    # Set by the supervisor of `workers: N` for each worker it starts.
    run.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--worker-count", type=int, default=1, help=argparse.SUPPRESS)
    run.add_argument("--metrics-dir", type=Path, default=None, help=argparse.SUPPRESS)

    validate = sub.add_parser(
        "validate", help="check a config", description="Validate and provision a config, then exit."
    )
    validate.add_argument("--config", "-c", required=True, type=Path, help="JSON config file")

    plugins = sub.add_parser(
        "list-plugins", help="show installed plugins", description="List installed plugins."
    )
    plugins.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser(
        "schema",
        help="print the config JSON Schema",
        description="Print the composed config JSON Schema (core + installed plugins).",
    )
    sub.add_parser("version", help="print the version", description="Print the version.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if (
        args_list
        and args_list[0] not in COMMANDS
        and args_list[0] not in {"-h", "--help", "--version"}
    ):
        args_list.insert(0, "run")
    parser = _parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    if args.command == "version":
        print(f"quantum {__version__}")
        return EXIT_OK
    logs.configure(getattr(args, "log_level", None) or "INFO")
    try:
        plugins = discover()
    except PluginError as exc:
        _fail(str(exc))
        return EXIT_CONFIG
    if args.command == "schema":
        print(json.dumps(Validator(plugins).schema, indent=2, sort_keys=True))
        return EXIT_OK
    if args.command == "list-plugins":
        return _list_plugins(plugins, as_json=args.json)
    if args.command == "validate":
        return asyncio.run(_validate(plugins, args.config))
    return _run(plugins, args)


def _fail(message: str) -> None:
    print(f"quantum: {message}", file=sys.stderr)


def _report(exc: ConfigError) -> None:
    for issue in exc.issues:
        _fail(str(issue))


def _list_plugins(plugins: PluginRegistry, *, as_json: bool) -> int:
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": info.name,
                        "module": info.module,
                        "distribution": info.distribution,
                        "version": info.version,
                        "handlers": list(info.handlers),
                        "matchers": list(info.matchers),
                    }
                    for info in plugins.plugins
                ],
                indent=2,
            )
        )
        return EXIT_OK
    for info in plugins.plugins:
        dist = f"{info.distribution} {info.version}" if info.distribution else info.module
        print(f"{info.name} ({dist})")
        if info.handlers:
            print(f"  handlers: {', '.join(info.handlers)}")
        if info.matchers:
            print(f"  matchers: {', '.join(info.matchers)}")
    return EXIT_OK


async def _validate(plugins: PluginRegistry, path: Path) -> int:
    """Validate, then provision and clean up (like Caddy), without binding any socket."""
    from quantum.observe import new_registry
    from quantum.provision import Builder, cleanup_unused

    try:
        config = load_config(path, Validator(plugins))
        build = await Builder(plugins, new_registry()).build(config)
    except ConfigError as exc:
        _report(exc)
        return EXIT_CONFIG
    await cleanup_unused(build, None)
    print("Valid configuration")
    return EXIT_OK


def _run(plugins: PluginRegistry, args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, Validator(plugins))
    except ConfigError as exc:
        _report(exc)
        return EXIT_CONFIG
    if args.log_level is None and config.log_level:
        logs.configure(config.log_level)
    if config.workers > 1 and args.worker is None:
        return _supervise(args, config)
    return int(_event_loop_runner()(_serve(plugins, args, config)))


def _event_loop_runner() -> Any:
    """uvloop when installed (a dependency on Linux and macOS), else asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


async def _serve(plugins: PluginRegistry, args: argparse.Namespace, config: Config) -> int:
    registry = new_registry()
    siblings = None
    if args.worker is not None and args.metrics_dir is not None:
        siblings = WorkerMetrics(registry, args.metrics_dir, args.worker, args.worker_count)
    runtime = Runtime(
        plugins, metrics_registry=registry, exported=siblings, reuse_port=args.worker is not None
    )
    runtime.source = args.config
    try:
        await runtime.apply(config)
    except BindError as exc:
        _report(exc)
        return EXIT_FAILURE
    except ConfigError as exc:
        _report(exc)
        return EXIT_CONFIG
    _tune_garbage_collector()
    admin = None
    if not config.admin.disabled and not args.worker:
        admin = await start_admin(runtime, config.admin.listen)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def reload(reason: str) -> None:
        try:
            await runtime.load_file(args.config)
            log.info("reloaded", reason=reason)
        except ConfigError as exc:
            log.error(
                "reload failed; the previous config keeps serving",
                reason=reason,
                issues=[str(i) for i in exc.issues],
            )

    def on_hup() -> None:
        task = loop.create_task(reload("SIGHUP"))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if args.watch:
        tasks.add(loop.create_task(_watch(args.config, reload, stop)))
    if siblings is not None:
        tasks.add(loop.create_task(siblings.publish_forever()))
    log.info("serving", config=str(args.config), pid=os.getpid(), worker=args.worker)
    await stop.wait()
    log.info("shutting down", grace_period=runtime.config.grace_period if runtime.config else 0)
    for task in list(tasks):
        task.cancel()
    await runtime.shutdown()
    if admin is not None:
        await admin.cleanup()
    return EXIT_OK


def _tune_garbage_collector() -> None:
    """Move everything allocated at start-up out of the collector's sight and collect the young
    generation less often: with ~10,000 open WebSockets, a full pass over the heap otherwise
    stalls the loop for 100-600 ms (measured with bench/ws_fanout.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


async def _watch(path: Path, reload: object, stop: asyncio.Event) -> None:
    import watchfiles

    target = path.resolve()

    def only_config(_: watchfiles.Change, changed: str) -> bool:
        return Path(changed).resolve() == target

    async for _ in watchfiles.awatch(
        target.parent, watch_filter=only_config, stop_event=stop, debounce=200
    ):
        await reload("config file changed")  # type: ignore[operator]


def _supervise(args: argparse.Namespace, config: Config) -> int:
    """``workers: N``: N processes share each listen address through SO_REUSEPORT."""
    metrics_dir = tempfile.mkdtemp(prefix="quantum-workers-")
    base = [sys.executable, "-m", "quantum", "run", "--config", str(args.config)]
    base += ["--worker-count", str(config.workers), "--metrics-dir", metrics_dir]
    if args.log_level:
        base += ["--log-level", args.log_level]
    children = [subprocess.Popen([*base, "--worker", str(i)]) for i in range(config.workers)]
    log.info("workers started", workers=config.workers, pids=[c.pid for c in children])

    def forward(signum: int, _: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        codes = [child.wait() for child in children]
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return max(codes) if any(codes) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
