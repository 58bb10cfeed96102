"""LocalCluster as the other tests rely on it: auth methods, TLS, the ``app`` schema."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat

import asyncpg
import psycopg
import pytest


def run(coro):
    return asyncio.run(coro)


async def _fetchval(dsn: str, sql: str, **kwargs):
    conn = await asyncpg.connect(dsn, timeout=10, **kwargs)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_scram_login_and_app_schema(pg):
    n = run(
        _fetchval(
            pg.dsn("pgwitness", pg.users["pgwitness"], "app"), "SELECT count(*) FROM public.orders"
        )
    )
    assert n == 4
    method = pg.psql("SELECT left(rolpassword, 13) FROM pg_authid WHERE rolname = 'pgwitness'")
    assert method.strip() == "SCRAM-SHA-256"


def test_wrong_password_is_refused(pg):
    with pytest.raises(asyncpg.InvalidPasswordError):
        run(_fetchval(pg.dsn("pgwitness", "not-the-password", "app"), "SELECT 1"))


def test_tls_verify_full_with_local_ca(pg):
    dsn = pg.dsn("pgwitness", pg.users["pgwitness"], "app", sslmode="verify-full")
    assert run(_fetchval(dsn, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
    # The same through an explicit SSLContext, as the proxy's upstream will build it.
    ctx = ssl.create_default_context(cafile=str(pg.ca_cert))
    plain = pg.dsn("pgwitness", pg.users["pgwitness"], "app")
    assert run(
        _fetchval(plain, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", ssl=ctx)
    )
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        assert conn.info.pgconn.ssl_in_use


def test_tls_without_the_ca_fails_verification(pg):
    ctx = ssl.create_default_context()  # system roots only: our local CA is unknown
    with pytest.raises(ssl.SSLCertVerificationError):
        run(_fetchval(pg.dsn("pgwitness", pg.users["pgwitness"], "app"), "SELECT 1", ssl=ctx))


@pytest.mark.parametrize("user", ["md5user", "plainuser"])
def test_md5_and_password_methods(pg, user):
    dsn = pg.dsn(user, pg.users[user], "app")
    assert run(_fetchval(dsn, "SELECT current_user")) == user
    # Both psycopg (libpq) and asyncpg speak every method.
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        assert conn.execute("SELECT count(*) FROM secret.payroll").fetchone() == (3,)


def test_md5user_has_an_md5_hash(pg):
    out = pg.psql("SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'md5user'")
    assert out.strip() == "md5"


def test_tlsonly_needs_tls(pg):
    pw = pg.users["tlsonly"]
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        run(_fetchval(pg.dsn("tlsonly", pw, "app", sslmode="disable"), "SELECT 1"))
    dsn = pg.dsn("tlsonly", pw, "app", sslmode="verify-full")
    assert run(_fetchval(dsn, "SELECT current_user")) == "tlsonly"


def test_server_key_is_private(pg):
    st = os.stat(pg.server_key)
    assert stat.S_IMODE(st.st_mode) == 0o600
    if os.geteuid() == 0:
        import pwd

        assert pwd.getpwuid(st.st_uid).pw_name == "postgres"


def test_psql_reports_errors(pg):
    from devtools.localpg import LocalClusterError

    with pytest.raises(LocalClusterError, match="does_not_exist"):
        pg.psql("SELECT * FROM does_not_exist")
