"""Client authentication, TLS toward clients, and the proxy's own TLS and login upstream."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import struct
import threading
import time
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psycopg
import pytest
from prometheus_client import REGISTRY

from common.config import load_config
from devtools.localpg import free_port, make_server_tls
from proxy.upstream import Credentials
from tests.support.fixtures_proxy import STATIC_PASSWORD, STATIC_USER
from tests.support.proxies import assert_serves, wait_sessions
from tests.support.rawpg import RawClient, describe, error_fields

pytestmark = pytest.mark.timeout(60)

SENTINEL = "pgw-UPSTREAM-sentinel-7f3a9c"


def _fetch(handle, sql: str, *, user: str = STATIC_USER, password: str = STATIC_PASSWORD):
    async def go():
        kw = handle.connect_kwargs(user=user, password=password)
        conn = await asyncpg.connect(**kw, ssl=False, timeout=10)
        try:
            return await conn.fetchrow(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


def _connect_error(
    handle, *, user: str = STATIC_USER, password: str = STATIC_PASSWORD
) -> asyncpg.PostgresError:
    async def go():
        conn = await asyncpg.connect(
            **handle.connect_kwargs(user=user, password=password), ssl=False, timeout=10
        )
        await conn.close()

    try:
        asyncio.run(go())
    except Exception as exc:  # noqa: BLE001 - the type is the assertion
        assert isinstance(exc, asyncpg.PostgresError), repr(exc)
        return exc
    raise AssertionError("the connection was accepted")


@pytest.fixture
def quick_fail_proxy(make_proxy):
    """Its own throttle state, so failed logins here slow down nothing else."""
    return make_proxy(**{"proxy.auth_fail_delay": 0.01})


# --- client authentication -----------------------------------------------------------


def test_wrong_password_and_unknown_user_get_the_same_28p01(quick_fail_proxy):
    wrong = _connect_error(quick_fail_proxy, password="not-the-password")
    unknown = _connect_error(quick_fail_proxy, user="mallory", password="whatever")
    for err, user in ((wrong, STATIC_USER), (unknown, "mallory")):
        assert err.sqlstate == "28P01"
        assert isinstance(err, asyncpg.InvalidPasswordError)
        assert err.args[0] == f'password authentication failed for user "{user}"'
    assert_serves(quick_fail_proxy)


def test_unknown_user_scram_parameters_do_not_reveal_absence(quick_fail_proxy):
    """An unknown user gets a stable salt and the usual iteration count, like a real one."""
    from common.wire import messages as m
    from common.wire.scram import MECHANISM, ScramClient

    def server_first(user: str) -> dict[str, str]:
        with RawClient(quick_fail_proxy.host, quick_fail_proxy.port) as c:
            c.startup(user)
            assert m.decode_auth(c.read_frame())[0] == m.AUTH_SASL
            c.send(m.sasl_initial_response(MECHANISM, ScramClient("x").first()))
            code, data = m.decode_auth(c.read_frame())
            assert code == m.AUTH_SASL_CONTINUE
            return dict(part.split("=", 1) for part in data.decode().split(","))

    known, ghost1, ghost2 = server_first(STATIC_USER), server_first("ghost"), server_first("ghost")
    assert ghost1["s"] == ghost2["s"]
    assert ghost1["i"] == known["i"]
    assert len(ghost1["s"]) == len(known["s"])


def test_client_credentials_never_reach_upstream(make_proxy, pg):
    # A static user named like a real database role, with that role's password: were the
    # client's credentials passed on, the session would run as md5user.
    handle = make_proxy(**{"auth.users": {"md5user": pg.users["md5user"]}})
    row = _fetch(
        handle,
        "select current_user, session_user, a.usename from pg_stat_activity a where a.pid = pg_backend_pid()",
        user="md5user",
        password=pg.users["md5user"],
    )
    assert tuple(row) == ("pgwitness", "pgwitness", "pgwitness")
    assert pg.psql("select count(*) from pg_stat_activity where usename = 'md5user'").strip() == "0"


UNICODE_PASSWORD = "IX-\u2168"  # SASLprep (NFKC) makes it "IX-IX", as libpq sends it


def test_a_password_that_saslprep_changes_logs_in_both_ways(make_proxy, pg):
    """SCRAM hashes the SASLprep'd password (RFC 4013): libpq and node-postgres prepare it
    on their side, Postgres builds its verifiers so. Both the client login (a static user)
    and the proxy's own upstream login (a role whose password SASLprep changes) must."""
    role = "saslprep_role"
    drop = (f"DO $$BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN "
            f"EXECUTE 'DROP OWNED BY {role}'; EXECUTE 'DROP ROLE {role}'; END IF; END$$;")  # fmt: skip
    pg.psql(drop + f"CREATE ROLE {role} LOGIN PASSWORD '{UNICODE_PASSWORD}'; "
            f"GRANT CONNECT ON DATABASE app TO {role};")  # fmt: skip
    try:
        handle = make_proxy(**{
            "auth.users": {"uni": UNICODE_PASSWORD},
            "upstream.user": role, "upstream.password": UNICODE_PASSWORD,
        })  # fmt: skip
        for typed in (UNICODE_PASSWORD, "IX-IX"):  # the raw form, and its NFKC equivalent
            with psycopg.connect(host=handle.host, port=handle.port, user="uni", password=typed,
                                 dbname="app", sslmode="disable", connect_timeout=10) as conn:  # fmt: skip
                assert conn.execute("select current_user").fetchone() == (role,)
    finally:
        pg.psql(drop)


def _all_log_text(caplog) -> str:
    fmt = logging.Formatter()
    parts = []
    for rec in caplog.records:
        parts.append(rec.getMessage())
        parts.append(repr(getattr(rec, "fields", "")))
        if rec.exc_info:
            parts.append(fmt.formatException(rec.exc_info))
    return "\n".join(parts)


def test_wrong_upstream_password_is_not_disclosed(make_proxy, caplog):
    caplog.set_level(logging.DEBUG, logger="pgwitness")
    handle = make_proxy(**{"upstream.password": SENTINEL})
    err = _connect_error(handle)
    assert err.sqlstate == "28P01"
    assert "upstream" in err.args[0]
    assert SENTINEL not in " ".join(str(x) for x in (err.args, err.detail, err.hint))
    # Every byte the client is sent.
    with RawClient(handle.host, handle.port) as c:
        c.startup()
        frames = c.authenticate()
        frames += c.frames_until_eof()
    fatal = [error_fields(f) for f in frames if f[:1] == b"E"]
    assert [e["C"] for e in fatal] == ["28P01"], describe(frames)
    assert SENTINEL.encode() not in b"".join(frames)
    # The log says what happened, without the password.
    text = _all_log_text(caplog)
    assert "upstream login failed" in text
    assert SENTINEL not in text


def test_repeated_failed_logins_get_slower_and_are_counted(make_proxy):
    handle = make_proxy(**{"proxy.auth_fail_delay": 0.25})

    def sample() -> float:
        return (
            REGISTRY.get_sample_value("pgwitness_auth_failures_total", {"reason": "password"})
            or 0.0
        )

    before = sample()
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        assert _connect_error(handle, password="wrong").sqlstate == "28P01"
        times.append(time.monotonic() - t0)
    # Delays 0, 0.25, 0.5: each failure makes the next attempt from this address slower.
    assert times[1] >= times[0] + 0.15, times
    assert times[2] >= times[1] + 0.15, times
    assert sample() - before == 3
    # A success (itself delayed by 1 s) clears the address's record.
    t0 = time.monotonic()
    assert _fetch(handle, "select 1 as one")["one"] == 1
    assert time.monotonic() - t0 >= 0.9
    t0 = time.monotonic()
    _connect_error(handle, password="wrong")
    assert time.monotonic() - t0 < times[2]
    assert sample() - before == 4


def test_upstream_refusal_that_carries_no_secret_is_passed_on(proxy):
    with RawClient(proxy.host, proxy.port) as c:
        c.startup(database="nosuchdb")
        frames = c.authenticate()
        frames += c.frames_until_eof()
    err = error_fields(frames[-1])
    assert (err["S"], err["C"], err["M"]) == (
        "FATAL",
        "3D000",
        'database "nosuchdb" does not exist',
    )
    assert_serves(proxy)


# --- TLS toward clients --------------------------------------------------------------


def _tls_proxy(make_proxy, client_tls, **extra):
    return make_proxy(
        **{"proxy.tls_cert": client_tls["cert"], "proxy.tls_key": client_tls["key"], **extra}
    )


def test_client_tls_verify_full(make_proxy, client_tls):
    handle = _tls_proxy(make_proxy, client_tls)
    dsn = handle.dsn(
        sslmode="verify-full", sslrootcert=client_tls["ca"], host="localhost", hostaddr="127.0.0.1"
    )
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("select count(*) from public.customers").fetchone() == (3,)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(
            handle.dsn(sslmode="verify-full", sslrootcert=client_tls["other_ca"]), connect_timeout=5
        )
    with psycopg.connect(handle.dsn(sslmode="disable"), connect_timeout=5) as conn:
        assert not conn.info.pgconn.ssl_in_use  # TLS offered, not required


def test_require_tls_refuses_plaintext(make_proxy, client_tls):
    handle = _tls_proxy(make_proxy, client_tls, **{"proxy.require_tls": True})
    with pytest.raises(psycopg.OperationalError, match="requires TLS"):
        psycopg.connect(handle.dsn(sslmode="disable"), connect_timeout=5)
    with RawClient(handle.host, handle.port) as c:
        c.startup()
        frames = c.frames_until_eof()
    err = error_fields(frames[0])
    assert len(frames) == 1 and (err["S"], err["C"]) == ("FATAL", "28000")
    assert "TLS" in err["M"]
    with psycopg.connect(handle.dsn(sslmode="require"), connect_timeout=5) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)
    wait_sessions(handle, 0)


def _assert_cancel_works(conn, pg, tag: str) -> None:
    """Run a long query on ``conn`` in a thread; libpq's cancel must end it."""
    box: dict = {}

    def run():
        try:
            conn.execute(f"select pg_sleep(20) /* {tag} */")
        except psycopg.Error as exc:
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    sql = f"select count(*) from pg_stat_activity where query like '%{tag} */'"
    while pg.psql(sql).strip() != "1":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    conn.cancel_safe(timeout=3)  # its own connection: TLS negotiated as the session's was
    t.join(3)
    assert isinstance(box.get("error"), psycopg.errors.QueryCanceled), box


def test_cancel_over_tls(make_proxy, client_tls, pg):
    handle = _tls_proxy(make_proxy, client_tls, **{"proxy.require_tls": True})
    with psycopg.connect(handle.dsn(sslmode="require"), connect_timeout=5) as conn:
        _assert_cancel_works(conn, pg, "tls-cancel")  # SSLRequest, then the CancelRequest


def _direct_tls_connect(handle, ca: str, *, alpn: bool = True, **kw):
    """asyncpg with sslnegotiation=direct: a TLS ClientHello instead of SSLRequest."""
    import ssl as ssl_mod

    ctx = ssl_mod.create_default_context(cafile=ca)
    ctx.check_hostname = False  # the certificate names localhost; we dial 127.0.0.1
    if alpn:  # (asyncpg leaves ALPN to a context it is given, as libpq 17 always offers it)
        ctx.set_alpn_protocols(["postgresql"])
    return asyncpg.connect(**handle.connect_kwargs(), ssl=ctx, direct_tls=True, timeout=10, **kw)


def _client_tls_of_sessions(handle) -> list[str]:
    return sorted(s.tls for s in list(handle.server.connections))


def test_direct_tls_like_postgres_17(make_proxy, client_tls):
    handle = _tls_proxy(make_proxy, client_tls, **{"proxy.require_tls": True})

    async def go():
        conn = await _direct_tls_connect(handle, client_tls["ca"])
        try:
            seen = _client_tls_of_sessions(handle)
            rows = await conn.fetch("select count(*) from public.customers")
            return seen, rows[0][0]
        finally:
            await conn.close()

    seen, count = asyncio.run(go())
    assert count == 3
    assert len(seen) == 1 and seen[0].startswith("TLSv1.") and seen[0].endswith(" direct"), seen
    wait_sessions(handle, 0)
    # the ordinary SSLRequest negotiation still works beside it
    with psycopg.connect(handle.dsn(sslmode="require"), connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_direct_tls_with_libpq_repeatedly_and_cancel(make_proxy, client_tls, pg):
    # libpq 17+ sends the ClientHello at once; its first bytes reach the proxy before TLS is
    # set up and must not be lost or reordered, however the reads fall.
    assert psycopg.pq.version() >= 170000  # the test extra's psycopg[binary] bundles 18
    handle = _tls_proxy(make_proxy, client_tls, **{"proxy.require_tls": True})
    dsn = handle.dsn(sslmode="require", sslnegotiation="direct")
    for i in range(15):
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            assert conn.info.pgconn.ssl_in_use
            assert conn.execute("select %s::int", (i,)).fetchone() == (i,)
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        _assert_cancel_works(conn, pg, "direct-tls-cancel")  # the cancel is direct TLS too
    wait_sessions(handle, 0)


def test_direct_tls_without_alpn_is_refused(make_proxy, client_tls):
    # PostgreSQL refuses a direct TLS connection that did not negotiate ALPN "postgresql":
    # without it the peer may be speaking another protocol over TLS.
    handle = _tls_proxy(make_proxy, client_tls)

    async def go():
        with pytest.raises((asyncpg.PostgresError, ConnectionError, OSError)) as info:
            await _direct_tls_connect(handle, client_tls["ca"], alpn=False)
        return info.value

    exc = asyncio.run(go())
    if isinstance(exc, asyncpg.PostgresError):
        assert exc.sqlstate == "08P01" and "ALPN" in str(exc), exc
    wait_sessions(handle, 0)
    assert_serves(handle)


def test_direct_tls_to_a_proxy_without_tls_fails_cleanly(make_proxy, client_tls):
    handle = make_proxy()  # no proxy.tls_cert

    async def go():
        with pytest.raises((asyncpg.PostgresError, ConnectionError, OSError, asyncio.TimeoutError)):
            await _direct_tls_connect(handle, client_tls["ca"])

    asyncio.run(go())
    wait_sessions(handle, 0)
    assert_serves(handle)


def test_tls_record_garbage_and_a_second_hello_are_refused(make_proxy, client_tls):
    handle = _tls_proxy(make_proxy, client_tls)
    # Not a ClientHello at all, only its first byte: the TLS layer fails the handshake.
    with socket.create_connection((handle.host, handle.port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello" + b"\x00" * 64)
        sock.settimeout(5)
        got = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    assert b"pgwitness" not in got  # no plaintext session; just a closed connection
    wait_sessions(handle, 0)
    assert_serves(handle)


def test_direct_tls_handshake_that_never_finishes_times_out(make_proxy, client_tls):
    handle = _tls_proxy(make_proxy, client_tls, **{"proxy.startup_timeout": 1.0})
    with socket.create_connection((handle.host, handle.port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then silence
        started = time.monotonic()
        sock.settimeout(10)
        while sock.recv(4096):
            pass
        waited = time.monotonic() - started
    assert 0.5 < waited < 8, waited  # closed by the startup timeout, not left hanging
    wait_sessions(handle, 0)
    assert_serves(handle)


# --- TLS and login toward the upstream -------------------------------------------------


@pytest.mark.parametrize(
    "sslmode,host,tls",
    [
        ("disable", "127.0.0.1", False),
        ("prefer", "127.0.0.1", True),
        ("require", "127.0.0.1", True),
        ("verify-ca", "127.0.0.1", True),
        ("verify-full", "localhost", True),
    ],
)
def test_upstream_sslmodes(make_proxy, sslmode, host, tls):
    handle = make_proxy(**{"upstream.sslmode": sslmode, "upstream.host": host})
    row = _fetch(handle, "select ssl from pg_stat_ssl where pid = pg_backend_pid()")
    assert row["ssl"] is tls


@pytest.mark.parametrize(
    "sslmode", ["require", "verify-ca", "verify-full"]
)  # libpq: require+root cert verifies
def test_upstream_wrong_ca_fails_cleanly(make_proxy, client_tls, sslmode):
    handle = make_proxy(
        **{"upstream.sslmode": sslmode, "upstream.sslrootcert": client_tls["other_ca"]}
    )
    t0 = time.monotonic()
    err = _connect_error(handle)
    assert time.monotonic() - t0 < 5
    assert err.sqlstate == "08006"
    assert "TLS" in err.args[0]
    wait_sessions(handle, 0)


def test_upstream_unreachable_fails_cleanly(make_proxy):
    handle = make_proxy(**{"upstream.port": free_port(), "upstream.connect_timeout": 2.0})
    t0 = time.monotonic()
    err = _connect_error(handle)
    assert time.monotonic() - t0 < 3
    assert err.sqlstate == "08006"
    wait_sessions(handle, 0)


@pytest.mark.parametrize(
    "role,sslmode",
    [
        ("md5user", "verify-full"),
        ("md5user", "disable"),
        ("plainuser", "verify-full"),
        ("tlsonly", "verify-full"),
    ],
)
def test_upstream_login_methods(make_proxy, pg, role, sslmode):
    handle = make_proxy(
        **{"upstream.user": role, "upstream.password": pg.users[role], "upstream.sslmode": sslmode}
    )
    row = _fetch(
        handle,
        "select current_user as u, (select ssl from pg_stat_ssl where pid = pg_backend_pid()) as ssl",
    )
    assert (row["u"], row["ssl"]) == (role, sslmode != "disable")


def test_upstream_tlsonly_without_tls_fails_cleanly(make_proxy, pg):
    handle = make_proxy(
        **{
            "upstream.user": "tlsonly",
            "upstream.password": pg.users["tlsonly"],
            "upstream.sslmode": "disable",
        }
    )
    t0 = time.monotonic()
    err = _connect_error(handle)
    assert time.monotonic() - t0 < 5
    assert err.sqlstate == "28000"
    assert pg.users["tlsonly"] not in err.args[0]
    wait_sessions(handle, 0)


# --- RDS IAM -------------------------------------------------------------------------


@pytest.fixture
def fake_aws(monkeypatch, tmp_path):
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPGWITNESSTEST000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake/secret/key/for/presigning/only0000")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_rds_iam_token_is_presigned_fresh_per_connection(fake_aws, monkeypatch, tmp_path):
    import botocore.auth

    clock = iter(dt.datetime(2026, 1, 2, 3, 4, 5) + dt.timedelta(minutes=i) for i in range(100))
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: next(clock))
    ca = tmp_path / "ca.crt"
    ca.write_bytes(make_server_tls(["db"], [])[0])
    cfg = load_config(
        None,
        env={},
        overrides={
            "upstream.host": "mydb.abc123.eu-west-1.rds.amazonaws.com",
            "upstream.port": 5432,
            "upstream.user": "agent_ro",
            "upstream.auth": "rds-iam",
            "upstream.rds_region": "eu-west-1",
            "upstream.sslmode": "verify-full",
            "upstream.sslrootcert": str(ca),
            "auth.users": {"a": "b"},
        },
    )
    creds = Credentials(cfg)
    first, second = creds.rds_token(), creds.password()
    assert first != second
    for token in (first, second):
        parts = urlsplit("//" + token)
        assert (parts.hostname, parts.port, parts.path) == (
            "mydb.abc123.eu-west-1.rds.amazonaws.com",
            5432,
            "/",
        )
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert q["Action"] == "connect"
        assert q["DBUser"] == "agent_ro"
        assert q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
        assert q["X-Amz-Credential"].startswith(
            "AKIAPGWITNESSTEST000/20260102/eu-west-1/rds-db/aws4_request"
        )
        assert len(q["X-Amz-Signature"]) == 64 and int(q["X-Amz-Signature"], 16) >= 0
        assert "fake/secret" not in token
    dates = [parse_qs(urlsplit("//" + t).query)["X-Amz-Date"][0] for t in (first, second)]
    assert dates == ["20260102T030405Z", "20260102T030505Z"]


# --- a hostile or broken upstream ----------------------------------------------------


class FakeUpstream:
    """A scripted 'Postgres' on 127.0.0.1: answers the TLS request, reads the startup packet,
    then runs ``script(conn)``; every byte the proxy sends is kept in ``received``."""

    def __init__(self, ssl_answer: bytes, script):
        self.ssl_answer = ssl_answer
        self.script = script
        self.received = bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def proxy_settings(self, sslmode: str = "prefer", **extra) -> dict:
        """make_proxy overrides pointing the upstream at this fake (no CA to verify with)."""
        return {
            "upstream.host": "127.0.0.1",
            "upstream.port": self.port,
            "upstream.sslmode": sslmode,
            "upstream.sslrootcert": "",
            **extra,
        }

    def _recv(self, conn, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = conn.recv(n - len(out))
            if not chunk:
                raise ConnectionError("proxy closed")
            self.received += chunk
            out += chunk
        return out

    def read_packet(self, conn) -> bytes:
        head = self._recv(conn, 4)
        return head + self._recv(conn, struct.unpack("!i", head)[0] - 4)

    def read_message(self, conn) -> bytes:
        head = self._recv(conn, 5)
        return head + self._recv(conn, struct.unpack_from("!i", head, 1)[0] - 4)

    def _serve(self) -> None:
        self.listener.settimeout(30)
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    packet = self.read_packet(conn)
                    if packet == struct.pack("!ii", 8, 80877103):
                        conn.sendall(self.ssl_answer)
                        packet = self.read_packet(conn)
                    self.script(self, conn)
                    while conn.recv(1 << 16):  # keep what the proxy sends until it hangs up
                        pass
                except (OSError, ConnectionError):
                    pass

    def close(self) -> None:
        self.listener.close()


def _auth(code: int, data: bytes = b"") -> bytes:
    from common.wire import messages as m

    return m.auth_request(code, data)


def _logged_in() -> bytes:
    from common.wire import messages as m

    return _auth(0) + b"K" + struct.pack("!iii", 12, 4242, 4242) + m.ready_for_query()


def _ask_cleartext(fake, conn):
    conn.sendall(_auth(3))


def _ok_mid_scram(fake, conn):
    conn.sendall(_auth(10, b"SCRAM-SHA-256\x00\x00"))
    fake.read_message(conn)  # SASLInitialResponse
    conn.sendall(_logged_in())


def _empty_server_signature(fake, conn):
    conn.sendall(_auth(10, b"SCRAM-SHA-256\x00\x00"))
    fake.read_message(conn)
    conn.sendall(_auth(12, b"v=") + _logged_in())


def _nothing(fake, conn):
    pass


HOSTILE = [
    # (id, sslmode, answer to SSLRequest, script, expected SQLSTATE)
    ("cleartext password without TLS", "prefer", b"N", _ask_cleartext, "08006"),
    ("require but TLS refused", "require", b"N", _nothing, "08006"),
    ("plaintext injected after 'S'", "require", b"S" + b"E\x00\x00\x00\x05\x00", _nothing, "08006"),
    ("garbage answer to SSLRequest", "prefer", b"X", _nothing, "08006"),
]


@pytest.mark.parametrize(
    "sslmode,answer,script,sqlstate", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_upstream_gets_no_password(make_proxy, sslmode, answer, script, sqlstate):
    fake = FakeUpstream(answer, script)
    try:
        handle = make_proxy(
            **fake.proxy_settings(
                sslmode, **{"upstream.password": SENTINEL, "upstream.connect_timeout": 3.0}
            )
        )
        err = _connect_error(handle)
        assert err.sqlstate == sqlstate, err
        assert SENTINEL not in err.args[0]
        wait_sessions(handle, 0)
        assert SENTINEL.encode() not in bytes(fake.received)
    finally:
        fake.close()


@pytest.mark.parametrize(
    "script",
    [_ok_mid_scram, _empty_server_signature],
    ids=["AuthOk mid-SCRAM", "empty v= signature"],
)
def test_impostor_upstream_skipping_scram_is_refused(make_proxy, script):
    fake = FakeUpstream(b"N", script)
    try:
        handle = make_proxy(**fake.proxy_settings(**{"upstream.connect_timeout": 3.0}))
        with RawClient(handle.host, handle.port) as c:
            c.startup()
            frames = c.authenticate()
        assert frames[-1][:1] == b"E", f"the proxy accepted the impostor: {describe(frames)}"
        assert error_fields(frames[-1])["C"].startswith(("08", "28"))
    finally:
        fake.close()


def test_upstream_that_never_answers_times_out(make_proxy):
    fake = FakeUpstream(b"", _nothing)  # reads the SSLRequest, says nothing
    try:
        handle = make_proxy(**fake.proxy_settings(**{"upstream.connect_timeout": 1.0}))
        t0 = time.monotonic()
        err = _connect_error(handle)
        assert 0.9 <= time.monotonic() - t0 < 4
        assert err.sqlstate == "08006" and "in time" in err.args[0]
        wait_sessions(handle, 0)
    finally:
        fake.close()


def test_upstream_password_file_is_read_per_connection(make_proxy, pg, tmp_path):
    """Rotating the password file takes effect for new sessions without a restart."""
    secret = tmp_path / "upstream-password"
    secret.write_text("stale-password\n")
    handle = make_proxy(**{"upstream.password": "", "upstream.password_file": str(secret)})
    assert _connect_error(handle).sqlstate == "28P01"
    secret.write_text(pg.users["pgwitness"] + "\n")
    assert _fetch(handle, "select current_user as u")["u"] == "pgwitness"


def _trust_then_hang_up(fake, conn):
    conn.sendall(_logged_in())
    time.sleep(0.3)
    conn.shutdown(socket.SHUT_RDWR)


def test_upstream_closing_mid_session_gives_08006(make_proxy):
    fake = FakeUpstream(b"N", _trust_then_hang_up)
    try:
        handle = make_proxy(**fake.proxy_settings())
        with RawClient(handle.host, handle.port) as c:
            c.login()
            frames = c.frames_until_eof()
        errors = [error_fields(f) for f in frames]
        assert [(e["S"], e["C"]) for e in errors] == [("FATAL", "08006")], describe(frames)
        wait_sessions(handle, 0)
    finally:
        fake.close()


def test_slow_iam_token_does_not_stall_other_sessions(make_proxy, pg, fake_aws, monkeypatch):
    import boto3

    making_token = threading.Event()

    class SlowRds:
        def generate_db_auth_token(self, **kw):
            making_token.set()
            time.sleep(0.8)  # botocore refreshing role credentials over the network
            return pg.users["pgwitness"]

    monkeypatch.setattr(boto3, "client", lambda *a, **k: SlowRds())
    handle = make_proxy(**{"upstream.auth": "rds-iam", "upstream.rds_region": "eu-west-1"})
    with RawClient(handle.host, handle.port) as busy:
        busy.login()
        making_token.clear()
        other = RawClient(handle.host, handle.port)
        login = threading.Thread(target=other.login, daemon=True)
        login.start()
        assert making_token.wait(5)  # the other login is now waiting for its token
        t0 = time.monotonic()
        assert busy.scalar("select 'not stalled'") == "not stalled"
        elapsed = time.monotonic() - t0
        login.join(5)
        other.close()
    assert elapsed < 0.3, f"a live session waited {elapsed:.2f} s for another login's token"
