"""One worker process: the event loop, the runtime, the listener, until SIGTERM/SIGINT.

``pgwitness serve`` runs one in-process (``proxy.cli``), listening itself, or
``proxy.supervisor`` forks several and hands each its connections (``proxy.handoff``); both
call ``run_worker``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from common.config import Config, ConfigError, parse_hostport

if TYPE_CHECKING:
    from .handoff import Receiver


def run_worker(
    cfg: Config,
    *,
    metrics: bool,
    handoff: Receiver | None = None,
    admin: bool | list[socket.socket] = True,
) -> int:
    """Serve until SIGTERM/SIGINT; the exit status. ``handoff``: connections come from the
    supervisor; ``admin``: as ``proxy.runtime.build_runtime``'s."""
    runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        pass
    try:
        return runner(_serve(cfg, handoff=handoff, admin=admin, with_metrics=metrics))
    except ConfigError as exc:
        print(f"pgwitness: configuration error: {exc}", file=sys.stderr)
        return 2


async def _serve(
    cfg: Config, *, handoff: Receiver | None, admin: bool | list[socket.socket], with_metrics: bool
) -> int:
    from .logs import event
    from .runtime import CannotListen, build_runtime

    if with_metrics and cfg.metrics.listen:
        from .metrics import start_metrics_server

        host, port = parse_hostport("metrics.listen", cfg.metrics.listen)
        try:
            start_metrics_server(host, port)
        except OSError as exc:
            print(f"pgwitness: cannot listen on metrics.listen {cfg.metrics.listen}: {exc.strerror}", file=sys.stderr)
            return 1
    try:
        runtime = await build_runtime(cfg, admin=admin)
    except CannotListen as exc:
        print(f"pgwitness: {exc}", file=sys.stderr)
        return 1
    try:
        await runtime.server.start(handoff=handoff)
    except OSError as exc:
        await runtime.close()
        print(f"pgwitness: cannot listen on {cfg.proxy.listen}: {exc.strerror}", file=sys.stderr)
        return 1
    # What start-up built (modules, sqlglot's tables, config) lives as long as the process:
    # keep it out of the cyclic collector's passes, which otherwise walk all of it (a full
    # pass took ~24 ms) and showed up as policy-check and latency outliers.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    event("shutting down", grace=cfg.proxy.shutdown_grace, sessions=len(runtime.server.connections))
    await runtime.server.shutdown()
    await runtime.close()
    logging.getLogger("pgwitness").info("stopped")
    return 0
