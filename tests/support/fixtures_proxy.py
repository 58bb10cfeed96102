"""Proxies under test: a real pgwitness server in a background thread with its own event loop.

``proxy`` is one session-wide pass-through proxy (static user ``alice``/``alice-pw``, no
recording) in front of the ``pg`` cluster. ``make_proxy(**overrides)`` starts others with
any config keys (``{"proxy.require_tls": True}``, ``{"grants.store": ...}``); they stop at
the end of the test. Their catalog loads are not paced (``upstream.catalog_min_interval``
0, not the product's 0.2 s) unless a test sets it. Every proxy's upstream login is the cluster's ``pgwitness`` role over
TLS (sslmode=verify-full against the cluster's CA).

Also: ``pproxy`` (a module's proxy with a SQLite grant store and two grants for
``POLICY_AGENT``: ``pproxy.token`` enforcing, ``pproxy.dry_token`` dry-run), ``spawn``
(real ``pgwitness serve`` processes, ``ProxyProcess``), ``tls_files`` and ``client_tls``
(certificates toward clients).
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.config import Config, load_config
from devtools.localpg import PortTaken, address_in_use, free_port, make_server_tls, on_free_ports

STATIC_USER = "alice"
STATIC_PASSWORD = "alice-pw"


class ProxyHandle:
    """A running proxy. ``call(coro)`` runs a coroutine on the proxy's loop.

    When its ``proxy.listen`` came from ``proxy_config``'s ``free_port`` and the port was
    taken before the proxy bound it, it starts again on a new one (``on_free_ports``).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.host, port = cfg.proxy.listen.rsplit(":", 1)
        self.port = int(port)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.runtime = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.taken_ports: list[int] = []  # ports found taken at start (free_port's race)

    def start(self) -> ProxyHandle:
        if self.cfg.proxy.listen not in _CHOSEN_LISTENS:  # the caller's port: no retries
            return self._start()
        return on_free_ports(self._start)

    def _start(self) -> ProxyHandle:
        self._ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(
            target=self._run, name=f"pgwitness-{self.port}", daemon=True
        )
        self._thread.start()
        self._ready.wait(30)
        if isinstance(self._error, OSError) and self._error.errno == errno.EADDRINUSE:
            self._thread.join(30)
            self.taken_ports.append(self.port)
            self.port = free_port()  # for the next attempt
            self.cfg.proxy.listen = f"{self.host}:{self.port}"
            _CHOSEN_LISTENS.add(self.cfg.proxy.listen)
            raise PortTaken(f"proxy.listen 127.0.0.1:{self.taken_ports[-1]}: {self._error}")
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
        try:
            await self.runtime.server.start()
        except OSError:
            await self.runtime.close()  # start() may try again on another port
            raise
        self._ready.set()
        await self._stop.wait()
        await self.runtime.server.shutdown(self._grace)
        await self.runtime.close()

    def call(self, coro, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace: float = 0.0) -> None:
        if self.loop is None or self._thread is None or not self._thread.is_alive():
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


# proxy.listen values proxy_config chose with free_port (ProxyHandle may change them).
_CHOSEN_LISTENS: set[str] = set()


def proxy_config(pg, **overrides: Any) -> Config:
    """A config for a proxy in front of ``pg``; overrides use ``section.key`` names."""
    listen = f"127.0.0.1:{free_port()}"
    _CHOSEN_LISTENS.add(listen)
    values: dict[str, Any] = {
        "proxy.listen": listen,
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
        # Catalog loads statements ask for are not paced (default 0.2 s apart): the pacing
        # only costs waiting here, and tests/unit/test_catalog_loads.py tests it (a test of
        # it through a proxy passes its own value, which overrides this one).
        "upstream.catalog_min_interval": 0.0,
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


@pytest.fixture
def client_tls(tmp_path):
    ca, cert, key = make_server_tls(["localhost"], ["127.0.0.1"])
    other_ca, _, _ = make_server_tls(["localhost"], ["127.0.0.1"])
    files = {"ca": ca, "cert": cert, "key": key, "other_ca": other_ca}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: str(tmp_path / name) for name in files}


REPO = Path(__file__).resolve().parents[2]


class ProxyProcess:
    """``pgwitness serve --config FILE`` in a subprocess; stderr goes to ``log_path``.

    Its ports come from ``free_port``; when one was taken before the process bound it (it
    exits saying the address is in use), it is started again on new ones (``on_free_ports``).
    """

    def __init__(
        self,
        tmp_path: Path,
        pg,
        *,
        workers: int = 1,
        grace: float = 1.0,
        extra_args=(),
        config="",
        admin_token: str | None = None,
        catalog_min_interval: float = 0.0,
    ):
        """``config``: TOML appended to the configuration (sections of its own);
        ``admin_token``: serve the admin API (on ``admin_port``) with this token;
        ``catalog_min_interval``: the catalog loads' pacing (0: a load starts at once)."""
        self.workers = workers
        self.catalog_min_interval = catalog_min_interval
        self.config_path = tmp_path / "pgwitness.toml"
        self.log_path = tmp_path / "pgwitness.log"
        self.taken_logs: list[str] = []  # what each start that met a taken port said
        self._workers: list[int] = []
        self._log = None
        on_free_ports(lambda: self._start(pg, grace, extra_args, config, admin_token))

    def _start(self, pg, grace: float, extra_args, config: str, admin_token: str | None) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self.metrics_port = free_port()
        self.admin_port = free_port() if admin_token else None
        admin = (
            f'\n[admin]\nlisten = "127.0.0.1:{self.admin_port}"\ntoken = "{admin_token}"\n'
            if admin_token
            else ""
        )
        self.config_path.write_text(
            f"""
[proxy]
listen = "{self.host}:{self.port}"
shutdown_grace = {grace}
startup_timeout = 5.0

[upstream]
host = "localhost"
port = {pg.port}
user = "pgwitness"
password = "{pg.users["pgwitness"]}"
sslmode = "verify-full"
sslrootcert = "{pg.ca_cert}"
catalog_min_interval = {self.catalog_min_interval}

[auth]
users = {{ {STATIC_USER} = "{STATIC_PASSWORD}" }}

[metrics]
listen = "127.0.0.1:{self.metrics_port}"

[recorder]
enabled = false
"""
            + admin
            + config
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PGWITNESS_", "PROMETHEUS_", "PG"))
        }
        args = [
            sys.executable,
            "-m",
            "proxy.cli",
            "serve",
            "--config",
            str(self.config_path),
            *extra_args,
        ]
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        self._workers = []
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_listening()
        except PortTaken:
            self.stop()
            self.taken_logs.append(self.log())
            raise
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(r"\blistening\b", self.log())) < self.workers:
            if self.proc.poll() is not None:
                if address_in_use(self.log()):  # free_port's race: on_free_ports tries again
                    raise PortTaken(f"pgwitness exited with {self.proc.returncode}:\n{self.log()}")
                raise AssertionError(f"pgwitness exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"pgwitness did not start listening:\n{self.log()}")
            time.sleep(0.05)
        self._workers = self.worker_pids() if self.workers > 1 else []

    def worker_pids(self) -> list[int]:
        if self.workers == 1:
            return [self.proc.pid]
        text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(p) for p in text.split()]

    def worker_of(self, client_port: int) -> int:
        """The worker process holding the proxy's end of the connection from local
        ``client_port`` (from /proc: its sockets and /proc/net/tcp)."""
        serving = serving_pids(self.worker_pids(), self.port)
        if client_port in serving:
            return serving[client_port]
        raise RuntimeError(f"no worker holds the connection from port {client_port}")

    def dsn(self, **params: str) -> str:
        extra = "".join(f" {k}={v}" for k, v in params.items())
        return (
            f"host={self.host} port={self.port} user={STATIC_USER} password={STATIC_PASSWORD} "
            f"dbname=app sslmode=disable{extra}"
        )

    def metrics(self) -> dict[tuple[str, tuple], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # the supervisor forwards SIGTERM to its workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in self._workers:  # never leave a worker behind, whatever happened
            try:
                if str(self.config_path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        if self._log is not None:
            self._log.close()


@pytest.fixture
def spawn(tmp_path, pg):
    started: list[ProxyProcess] = []

    def factory(**kw) -> ProxyProcess:
        sub = tmp_path / f"p{len(started)}"
        sub.mkdir()
        p = ProxyProcess(sub, pg, **kw)
        started.append(p)
        return p

    yield factory
    for p in started:
        p.stop()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def unread_bytes(local_port: int, remote_port: int) -> int:
    """Bytes the kernel holds for the 127.0.0.1 TCP socket ``local_port`` -> ``remote_port``
    that its process has not read (/proc/net/tcp's rx_queue)."""
    want = (f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}")
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == want:
            return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no socket 127.0.0.1:{local_port} -> 127.0.0.1:{remote_port}")


POLICY_AGENT = "e2e-policy"


POLICY_TASK = "POL-4821"


POLICY_DRY_TASK = "POL-DRY"


POLICY_SCOPES = "read:public.orders,public.customers write:public.orders"


@pytest.fixture(scope="module")
def pproxy(pg, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('policy') / 'grants.db'}"
    handle = ProxyHandle(
        proxy_config(pg, **{"grants.store": url, "proxy.auth_fail_delay": 0.001})
    ).start()
    store = handle.runtime.store

    def issue(task: str, **kw):
        return handle.call(
            store.issue(
                agent=POLICY_AGENT,
                task=task,
                reason="policy e2e",
                granted_by="pytest",
                database="app",
                scopes=POLICY_SCOPES,
                ttl="30m",
                **kw,
            )
        )

    handle.grant, handle.token = issue(POLICY_TASK)
    handle.dry_grant, handle.dry_token = issue(POLICY_DRY_TASK, enforce=False)
    yield handle
    handle.stop()


def serving_pids(pids: list[int], port: int) -> dict[int, int]:
    """client port -> which of ``pids`` holds the proxy's end (local ``port``) of its
    ESTABLISHED connection (from /proc: their sockets and /proc/net/tcp)."""
    owner = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[target[8:-1]] = pid
    serving = {}  # /proc/net/tcp may list a socket twice while other sockets come and go
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        local_port = int(cols[1].split(":")[1], 16)
        if local_port == port and cols[3] == "01" and cols[9] in owner:
            serving[int(cols[2].split(":")[1], 16)] = owner[cols[9]]
    return serving
