"""Throwaway local PostgreSQL clusters for tests, ``make demo`` and ``bench/``.

A ``LocalCluster`` owns one base directory::

    base/data/         PGDATA (initdb)
    base/sock/         unix socket directory
    base/ca.crt        local CA (clients verify the server with it)
    base/server.crt    server certificate, SAN localhost + 127.0.0.1
    base/server.key    0600, owned by the server's OS user
    base/postgres.log  server log

Authentication (pg_hba, first match wins):

    local  all postgres               trust           superuser over the socket
    hostnossl all tlsonly  127.0.0.1  reject          tlsonly must use TLS
    hostssl   all tlsonly  127.0.0.1  scram-sha-256
    host   all md5user     127.0.0.1  md5
    host   all plainuser   127.0.0.1  password
    host   all all         127.0.0.1  scram-sha-256

PostgreSQL refuses to run as root, so when euid is 0 the server binaries and psql run
as the ``postgres`` OS user and the base directory is chowned to it. No pytest here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

__all__ = [
    "LocalCluster",
    "LocalClusterError",
    "PortTaken",
    "address_in_use",
    "find_bindir",
    "free_port",
    "on_free_ports",
    "wait_serving",
]

SUPERUSER = "postgres"
OS_USER = "postgres"  # the OS user the server runs as when we are root
HOST = "127.0.0.1"


class LocalClusterError(RuntimeError):
    """A local cluster could not be created, started, or queried."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Racy: another socket may take it before the server meant for it binds it (an outgoing
    connection is given ports from the same ephemeral range). A server spawned on it is
    started through ``on_free_ports``, which starts it again on new ports when that happened.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class PortTaken(Exception):
    """A server could not listen on a port ``free_port`` chose: something took it first."""


# What a server says when its port is taken: EADDRINUSE's strerror (pgwitness, PostgreSQL's
# 'could not bind IPv4 address ...: Address already in use', Python's OSError).
_IN_USE = ("address already in use",)
_Started = TypeVar("_Started")


def address_in_use(output: str) -> bool:
    """Whether a server's output says it could not listen because the address was in use."""
    text = output.lower()
    return any(words in text for words in _IN_USE)


def on_free_ports(start: Callable[[], _Started], *, attempts: int = 5) -> _Started:
    """``start()``, again while it raises ``PortTaken`` (at most ``attempts`` times).

    ``start`` chooses its ports with ``free_port()`` on every call, spawns the server on
    them and waits until it serves; when the server exited because one of them had been
    taken meanwhile (``address_in_use`` of its output), it cleans up and raises
    ``PortTaken``: the next call chooses new ports.
    """
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except PortTaken as exc:
            if attempt == attempts:
                raise LocalClusterError(
                    f"a port chosen for the server was taken before it listened, {attempts} "
                    f"times in a row: {exc}"
                ) from exc
    raise AssertionError("unreachable")


def find_bindir() -> Path:
    """PostgreSQL server binaries: $PGWITNESS_PG_BINDIR, newest /usr/lib/postgresql/*/bin, PATH."""
    env = os.environ.get("PGWITNESS_PG_BINDIR")
    if env:
        return Path(env)
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if candidates:
        newest = max(candidates, key=lambda p: int(Path(p).parent.parent.name))
        return Path(newest).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise LocalClusterError(
        "PostgreSQL server binaries not found: set PGWITNESS_PG_BINDIR to the directory "
        "holding initdb/pg_ctl/postgres"
    )


def quote_literal(value: str) -> str:
    """SQL string literal (standard_conforming_strings is on)."""
    return "'" + value.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _clean_env() -> dict[str, str]:
    # Inherited PGHOST/PGPASSWORD/... would silently redirect our psql calls.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = env.get("LC_ALL", "C.UTF-8")
    return env


class LocalCluster:
    """One throwaway PostgreSQL cluster on 127.0.0.1:port, with TLS and mixed auth methods.

    ``base_dir`` belongs to the cluster and is removed by ``stop()`` unless ``keep``.
    If ``base_dir/data`` already holds a cluster it is reused (no initdb).
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        keep: bool = False,
        bindir: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
        extra_conf: dict[str, str] | None = None,
    ) -> None:
        # The unix socket path (base/sock/.s.PGSQL.NNNNN) must fit in 107 bytes.
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="pgw-pg-")).absolute()
        self._port = port or free_port()
        self._port_chosen = not port  # ours to change when something took it first
        self.keep = keep
        self.bindir = Path(bindir) if bindir else find_bindir()
        self.start_timeout = start_timeout
        self.extra_conf = dict(extra_conf or {})
        self.users: dict[str, str] = {}  # role -> password, filled by create_role
        self._started_once = False
        self._running = False
        self._as_postgres = _as_root()

    # ---- paths and connection facts ------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self._port

    @property
    def datadir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sock"

    @property
    def ca_cert(self) -> Path:
        return self.base_dir / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.base_dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.base_dir / "server.key"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def running(self) -> bool:
        return self._running

    def dsn(
        self,
        user: str,
        password: str | None = None,
        db: str = "postgres",
        sslmode: str = "disable",
        *,
        host: str | None = None,
    ) -> str:
        """libpq/asyncpg URL over TCP; verify-ca/verify-full also name ``ca_cert``."""
        if password is None:
            password = self.users.get(user)
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        url = f"postgresql://{auth}@{host or self.host}:{self.port}/{quote(db, safe='')}"
        url += f"?sslmode={sslmode}"
        if sslmode in ("verify-ca", "verify-full"):
            url += "&sslrootcert=" + quote(str(self.ca_cert), safe="/")
        return url

    # ---- lifecycle ---------------------------------------------------------------

    def init(self) -> None:
        """initdb + TLS material + configuration; a no-op if ``datadir`` is already a cluster."""
        if (self.datadir / "PG_VERSION").exists():
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.base_dir, self.socket_dir)
        if self._as_postgres:
            probe = self._run(["test", "-w", str(self.base_dir)], check=False)
            if probe.returncode != 0:
                raise LocalClusterError(
                    f"OS user {OS_USER!r} cannot write {self.base_dir}: every parent "
                    "directory must be traversable by it (use a directory under /tmp)"
                )
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D", str(self.datadir),
                "-U", SUPERUSER,
                "-E", "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ]
        )  # fmt: skip
        self._write_tls()
        self._write_conf()
        self._write_hba()

    def start(self) -> LocalCluster:
        """Initialise if needed and start; returns once the server accepts connections."""
        self.init()
        if self._running:
            return self
        if self._port_chosen and not self._started_once:
            # The port came from free_port: another socket may have taken it meanwhile.
            tried: list[int] = []
            on_free_ports(lambda: self._start_on_a_free_port(tried))
        else:  # the caller's port, or a restart: those configured with it need the same one
            self._pg_ctl_start()
        self._running = self._started_once = True
        return self

    def _start_on_a_free_port(self, tried: list[int]) -> None:
        if tried:
            self._port = free_port()
        tried.append(self._port)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            self._pg_ctl_start()
        except LocalClusterError as exc:
            with contextlib.suppress(OSError), open(self.log_path, "rb") as log:
                log.seek(offset)
                if address_in_use(log.read().decode(errors="replace")):
                    raise PortTaken(f"PostgreSQL on port {self._port}: {exc}") from exc
            raise

    def _pg_ctl_start(self) -> None:
        try:
            self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "start", "-w",
                    "-t", str(int(self.start_timeout)),
                    "-D", str(self.datadir),
                    "-l", str(self.log_path),
                    "-o", f"-p {self.port}",
                ],
                timeout=self.start_timeout + 10,
            )  # fmt: skip
        except LocalClusterError as exc:
            raise LocalClusterError(f"{exc}\n--- server log ---\n{self.log_tail()}") from None

    def stop(self, *, keep: bool | None = None) -> None:
        """Fast shutdown; removes ``base_dir`` unless keep (argument or constructor)."""
        if self._running or (self.datadir / "postmaster.pid").exists():
            self._run(
                [str(self.bindir / "pg_ctl"), "stop", "-w", "-m", "fast", "-t", "30",
                 "-D", str(self.datadir)],
                check=False,
                timeout=40,
            )  # fmt: skip
            self._running = False
        if not (self.keep if keep is None else keep):
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    # ---- SQL as the superuser --------------------------------------------------------

    def psql(self, sql: str, db: str = "postgres", *, timeout: float = 60.0) -> str:
        """Run ``sql`` as the superuser over the unix socket; unaligned tuples-only output."""
        proc = self._run(
            [
                str(self._psql_bin()),
                "-X", "-q", "-A", "-t",
                "-v", "ON_ERROR_STOP=1",
                "-h", str(self.socket_dir),
                "-p", str(self.port),
                "-U", SUPERUSER,
                "-d", db,
                "-f", "-",
            ],
            input=sql,
            timeout=timeout,
        )  # fmt: skip
        return proc.stdout

    def create_role(
        self,
        name: str,
        password: str | None,
        *,
        superuser: bool = False,
        login: bool = True,
        md5: bool = False,
        createdb: bool = False,
        createrole: bool = False,
    ) -> None:
        """CREATE ROLE; ``md5`` stores an MD5 hash instead of a SCRAM verifier."""
        opts = ["SUPERUSER" if superuser else "NOSUPERUSER", "LOGIN" if login else "NOLOGIN"]
        if createdb:
            opts.append("CREATEDB")
        if createrole:
            opts.append("CREATEROLE")
        if password is not None:
            opts.append("PASSWORD " + quote_literal(password))
        sql = f"CREATE ROLE {quote_ident(name)} {' '.join(opts)};\n"
        if md5:
            sql = "SET password_encryption = 'md5';\n" + sql
        self.psql(sql)
        if password is not None:
            self.users[name] = password

    def create_database(self, name: str, owner: str | None = None) -> None:
        sql = f"CREATE DATABASE {quote_ident(name)}"
        if owner:
            sql += f" OWNER {quote_ident(owner)}"
        self.psql(sql + ";\n")

    # ---- internals -----------------------------------------------------------------

    def _psql_bin(self) -> Path:
        local = self.bindir / "psql"
        return local if local.exists() else Path(shutil.which("psql") or "psql")

    def _run(
        self,
        argv: list[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        name = Path(argv[0]).name
        if self._as_postgres:
            argv = ["runuser", "-u", OS_USER, "--", *argv]
        try:
            proc = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_clean_env(),
                # The server user may be unable to enter the caller's cwd.
                cwd=self.base_dir if self.base_dir.exists() else "/",
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalClusterError(f"{name} timed out after {timeout}s") from exc
        if check and proc.returncode != 0:
            detail = proc.stderr.strip() or proc.stdout.strip()
            raise LocalClusterError(f"{name} failed (exit {proc.returncode}): {detail}")
        return proc

    def _chown(self, *paths: Path) -> None:
        if not self._as_postgres:
            return
        for p in paths:
            shutil.chown(p, OS_USER, OS_USER)

    def _write_tls(self) -> None:
        ca_pem, cert_pem, key_pem = make_server_tls(["localhost"], [HOST])
        self.ca_cert.write_bytes(ca_pem)
        self.server_cert.write_bytes(cert_pem)
        fd = os.open(self.server_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        os.chmod(self.server_key, 0o600)
        os.chmod(self.ca_cert, 0o644)
        os.chmod(self.server_cert, 0o644)
        self._chown(self.ca_cert, self.server_cert, self.server_key)

    def _write_conf(self) -> None:
        settings = {
            "listen_addresses": quote_literal(HOST),
            "port": str(self.port),
            "unix_socket_directories": quote_literal(str(self.socket_dir)),
            "max_connections": "200",
            "password_encryption": "'scram-sha-256'",
            "ssl": "on",
            "ssl_cert_file": quote_literal(str(self.server_cert)),
            "ssl_key_file": quote_literal(str(self.server_key)),
            "ssl_ca_file": quote_literal(str(self.ca_cert)),
            # Throwaway data: durability buys nothing here and costs seconds.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "log_min_messages": "warning",
            "lc_messages": "'C'",
        }
        settings.update(self.extra_conf)
        lines = ["", "# --- pgwitness LocalCluster ---"]
        lines += [f"{k} = {v}" for k, v in settings.items()]
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write("\n".join(lines) + "\n")

    def _write_hba(self) -> None:
        hba = f"""\
# pgwitness LocalCluster — first match wins
local     all  {SUPERUSER}  trust
local     all  all       scram-sha-256
hostnossl all  tlsonly   {HOST}/32  reject
hostssl   all  tlsonly   {HOST}/32  scram-sha-256
host      all  md5user   {HOST}/32  md5
host      all  plainuser {HOST}/32  password
host      all  all       {HOST}/32  scram-sha-256
"""
        (self.datadir / "pg_hba.conf").write_text(hba)
        self._chown(self.datadir / "pg_hba.conf")


def make_server_tls(
    dns_names: list[str], ip_addresses: list[str], *, days: int = 30
) -> tuple[bytes, bytes, bytes]:
    """A fresh local CA and a server certificate it signed: (ca_pem, cert_pem, key_pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pgwitness local CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    cn = dns_names[0] if dns_names else ip_addresses[0]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca_cert.public_bytes(pem), cert.public_bytes(pem), key_pem


@contextlib.contextmanager
def local_cluster(**kwargs: object):
    """``with local_cluster(keep=False) as pg:`` — a started cluster, stopped on exit."""
    cluster = LocalCluster(**kwargs)  # type: ignore[arg-type]
    with cluster:
        yield cluster


def wait_serving(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    output: Callable[[], str],
    ready: Callable[[str], bool],
    *,
    timeout: float = 30.0,
) -> None:
    """Block until ``ready(output())`` while ``proc`` runs (a server spawned on ports from
    ``free_port``). ``PortTaken`` when it exited saying an address was in use, for
    ``on_free_ports`` to start it again; ``LocalClusterError`` when it exited otherwise or
    was not ready in time. (Not ``wait_for_port``: another socket holding the port would
    answer for it.)"""
    deadline = time.monotonic() + timeout
    while not ready(output()):
        if proc.poll() is not None:
            text = output()
            if address_in_use(text):
                raise PortTaken(f"exited with {proc.returncode}: {text[-2000:]}")
            raise LocalClusterError(f"exited with {proc.returncode}:\n{text[-3000:]}")
        if time.monotonic() > deadline:
            raise LocalClusterError(f"not serving after {timeout}s:\n{output()[-3000:]}")
        time.sleep(0.05)


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise LocalClusterError(
                    f"nothing listening on {host}:{port} after {timeout}s"
                ) from None
            time.sleep(0.05)


# --- the demo/test database -------------------------------------------------------

USERS = {
    "pgwitness": "upstream-secret",
    "md5user": "md5-secret",
    "plainuser": "plain-secret",
    "tlsonly": "tls-secret",
    "pgw_admin": "provision-secret",
}
LOGIN_ROLES = ("md5user", "plainuser", "tlsonly")

APP_SCHEMA = """
SET ROLE pgwitness;
CREATE TABLE public.customers (id serial PRIMARY KEY, name text);
CREATE TABLE public.orders (
    id serial PRIMARY KEY,
    customer_id int,
    total numeric,
    note text
);
CREATE SCHEMA secret;
CREATE TABLE secret.payroll (id int, salary int);
INSERT INTO public.customers (name) VALUES ('Ada'), ('Grace'), ('Edsger');
INSERT INTO public.orders (customer_id, total, note) VALUES
    (1, 10.50, 'first'), (1, 99.00, NULL), (2, 5.25, 'rush'), (3, 42.00, 'gift');
INSERT INTO secret.payroll VALUES (1, 100000), (2, 120000), (3, 90000);
GRANT USAGE ON SCHEMA secret TO {roles};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public, secret TO {roles};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {roles};
RESET ROLE;
"""


def build_app_cluster(cluster: LocalCluster) -> LocalCluster:
    """Roles, database ``app`` and its schema on a started cluster (also used by demos)."""
    cluster.create_role("pgwitness", USERS["pgwitness"], createdb=True)
    cluster.create_role("md5user", USERS["md5user"], md5=True)
    cluster.create_role("plainuser", USERS["plainuser"])
    cluster.create_role("tlsonly", USERS["tlsonly"])
    # The provisioning login for per-grant roles: CREATEROLE, and a member of the tables'
    # owner so it may grant privileges on them. Never used for agent traffic.
    cluster.create_role("pgw_admin", USERS["pgw_admin"], createrole=True)
    cluster.psql("GRANT pgwitness TO pgw_admin;\n")
    cluster.create_database("app", owner="pgwitness")
    roles = ", ".join(LOGIN_ROLES)
    cluster.psql(f"GRANT CONNECT ON DATABASE app TO {roles};\n")
    cluster.psql(APP_SCHEMA.format(roles=roles), db="app")
    return cluster
