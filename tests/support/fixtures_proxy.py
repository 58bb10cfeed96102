"""Proxies under test: a real pgwitness server in a background thread with its own event loop.

``proxy`` is one session-wide pass-through proxy (static user ``alice``/``alice-pw``, no
recording) in front of the ``pg`` cluster. ``make_proxy(**overrides)`` starts others with
any config keys (``{"proxy.require_tls": True}``, ``{"grants.store": ...}``); they stop at
the end of the test. Every proxy's upstream login is the cluster's ``pgwitness`` role over
TLS (sslmode=verify-full against the cluster's CA).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from proxy.config import Config, load_config
from proxy.localpg import free_port, make_server_tls

STATIC_USER = "alice"
STATIC_PASSWORD = "alice-pw"


class ProxyHandle:
    """A running proxy. ``call(coro)`` runs a coroutine on the proxy's loop."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.host, port = cfg.proxy.listen.rsplit(":", 1)
        self.port = int(port)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.runtime = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"pgwitness-{self.port}", daemon=True)

    def start(self) -> ProxyHandle:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise RuntimeError("proxy did not start in 30 s")
        return self

    def _run(self) -> None:
        import uvloop

        try:
            uvloop.run(self._main())
        except BaseException as exc:  # surfaced to start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        from proxy.runtime import build_runtime

        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.runtime = await build_runtime(self.cfg)
        await self.runtime.server.start()
        self._ready.set()
        await self._stop.wait()
        await self.runtime.server.shutdown(self._grace)
        await self.runtime.close()

    def call(self, coro, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace: float = 0.0) -> None:
        if self.loop is None or not self._thread.is_alive():
            return
        self._grace = grace
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30 + grace)

    @property
    def server(self):
        return self.runtime.server

    def dsn(self, user: str = STATIC_USER, password: str = STATIC_PASSWORD, db: str = "app", **params: str) -> str:
        extra = "".join(f" {k}={v}" for k, v in params.items())
        return f"host={self.host} port={self.port} user={user} password={password} dbname={db}{extra}"

    def connect_kwargs(self, user: str = STATIC_USER, password: str = STATIC_PASSWORD, db: str = "app") -> dict:
        return {"host": self.host, "port": self.port, "user": user, "password": password, "database": db}


def proxy_config(pg, **overrides: Any) -> Config:
    """A config for a proxy in front of ``pg``; overrides use ``section.key`` names."""
    values: dict[str, Any] = {
        "proxy.listen": f"127.0.0.1:{free_port()}",
        "proxy.startup_timeout": 5.0,
        "upstream.host": "localhost",
        "upstream.port": pg.port,
        "upstream.user": "pgwitness",
        "upstream.password": pg.users["pgwitness"],
        "upstream.sslmode": "verify-full",
        "upstream.sslrootcert": str(pg.ca_cert),
        "auth.users": {STATIC_USER: STATIC_PASSWORD},
        "recorder.enabled": False,
        "metrics.listen": "",
    }
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(None, env={}, overrides=values)


def per_grant_overrides(pg, workdir, **extra: Any) -> dict[str, Any]:
    """Config overrides for ``upstream.roles = per-grant`` against ``pg``: the cluster's
    ``pgw_admin`` (CREATEROLE) provisions, a SQLite store and role key under ``workdir``."""
    return {
        "grants.store": f"sqlite:///{workdir / 'grants.db'}",
        "upstream.roles": "per-grant",
        "provision.user": "pgw_admin",
        "provision.password": pg.users["pgw_admin"],
        "provision.database": "app",
        "provision.key_file": str(workdir / "roles.key"),
        **extra,
    }


@pytest.fixture(scope="session")
def proxy(pg):
    """One pass-through proxy for the whole session (static user alice)."""
    handle = ProxyHandle(proxy_config(pg)).start()
    yield handle
    handle.stop()


@pytest.fixture
def make_proxy(pg):
    """Start extra proxies with config overrides: ``make_proxy(**{"proxy.require_tls": True})``."""
    started: list[ProxyHandle] = []

    def factory(**overrides: Any) -> ProxyHandle:
        handle = ProxyHandle(proxy_config(pg, **overrides)).start()
        started.append(handle)
        return handle

    yield factory
    for handle in started:
        handle.stop()


@pytest.fixture
def tls_files(tmp_path):
    """A CA and a server certificate for localhost/127.0.0.1, as files: ca.crt, server.crt,
    server.key."""
    ca, cert, key = make_server_tls(["localhost"], ["127.0.0.1"])
    paths = {}
    for name, data in (("ca.crt", ca), ("server.crt", cert), ("server.key", key)):
        (tmp_path / name).write_bytes(data)
        paths[name] = str(tmp_path / name)
    return paths
