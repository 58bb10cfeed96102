"""End to end: what drivers and pools send on their own works under an enforcing grant.

asyncpg's and psycopg's pools (and SQLAlchemy's) acquire, use, reset and re-acquire a
connection through the real proxy; the settings drivers send pass over the simple and the
extended protocol; after ``RESET ALL`` and ``DISCARD ALL`` an unqualified name still
resolves where the policy resolved it. The server is the judge: a table named like an
allowed one is planted in the schema PostgreSQL's default search_path would search first
(``"$user"`` = the proxy's upstream role, ``pgwitness``) and holds a secret; it must never
reach the client.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import asyncpg
import psycopg
import pytest

from tests.support.fixtures_proxy import STATIC_PASSWORD, STATIC_USER, ProxyHandle, proxy_config
from tests.support.proxies import issue, metric, sqlite_url

pytestmark = pytest.mark.timeout(120)

AGENT = "e2e-drivers"
SCOPES = "read:public.orders,public.customers listen:drivers_chan"  # the pool test LISTENs
SECRET = "planted-secret-in-user-schema"
UPSTREAM_ROLE = "pgwitness"
PINNED = "public, pg_temp"  # (pg_temp last: red-team round 69)


@pytest.fixture(scope="module")
def dproxy(pg, tmp_path_factory):
    url = sqlite_url(tmp_path_factory.mktemp("drivers") / "grants.db")
    handle = ProxyHandle(proxy_config(pg, **{"grants.store": url})).start()
    handle.grant, handle.token = issue(handle, agent=AGENT, task="DRV-1", scopes=SCOPES)
    handle.dry_grant, handle.dry_token = issue(
        handle, agent=AGENT, task="DRV-DRY", scopes=SCOPES, enforce=False
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def planted(pg):
    """``pgwitness.orders`` with a secret: where an unpinned search_path would look first."""
    pg.psql(
        f"SET ROLE {UPSTREAM_ROLE}; CREATE SCHEMA {UPSTREAM_ROLE}; "
        f"CREATE TABLE {UPSTREAM_ROLE}.orders (id int, customer_id int, total numeric, note text); "
        f"INSERT INTO {UPSTREAM_ROLE}.orders VALUES (1, 1, 1, '{SECRET}');",
        db="app",
    )
    yield
    pg.psql(f"DROP SCHEMA {UPSTREAM_ROLE} CASCADE;", db="app")


def a_kwargs(handle) -> dict:
    return dict(
        host=handle.host,
        port=handle.port,
        user=AGENT,
        password=handle.token,
        database="app",
        ssl=False,
    )


def conninfo(handle, **extra) -> str:
    return handle.dsn(user=AGENT, password=handle.token, sslmode="disable", **extra)


async def assert_pinned(conn: asyncpg.Connection) -> None:
    """Unqualified ``orders`` is public.orders on the server, and search_path is pinned."""
    assert await conn.fetchval("SHOW search_path") == PINNED
    notes = [r["note"] for r in await conn.fetch("SELECT note FROM orders ORDER BY id")]
    assert SECRET not in notes and "first" in notes, notes


# --- pools ------------------------------------------------------------------------------


def test_asyncpg_pool_acquire_release_100_times(dproxy, planted):
    denied_before = metric("pgwitness_statements_total", decision="denied")

    async def go():
        pids = set()
        async with asyncpg.create_pool(min_size=1, max_size=2, **a_kwargs(dproxy)) as pool:
            for i in range(100):
                async with pool.acquire() as conn:
                    # state a release must undo: a setting, a listener, an open cursor
                    await conn.execute(f"SET application_name = 'pool-{i}'")
                    await conn.execute("LISTEN drivers_chan")
                    async with conn.transaction():
                        await conn.execute("DECLARE c CURSOR WITH HOLD FOR SELECT 1")
                    assert await conn.fetchval("SELECT count(*) FROM orders") == 4
                    pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
            async with pool.acquire() as conn:
                await assert_pinned(conn)
                # RESET ALL returned it to the login value: none, on both sides
                assert await conn.fetchval("SHOW application_name") == ""
                assert conn.get_settings().application_name == ""
        return pids

    pids = asyncio.run(go())
    # A failed reset terminates the connection: then each round would need a new backend.
    assert len(pids) <= 2, pids
    assert metric("pgwitness_statements_total", decision="denied") == denied_before


def test_psycopg_pool_acquire_release_100_times(dproxy, planted):
    from psycopg_pool import ConnectionPool

    def reset(conn):
        conn.execute("DISCARD ALL")

    def configure(conn):
        conn.execute("SET application_name = 'psycopg-pool'")

    pids = set()
    with ConnectionPool(
        conninfo(dproxy),
        min_size=1,
        max_size=2,
        # DISCARD ALL drops psycopg's automatically prepared statements (also directly
        # against PostgreSQL): pools that reset with it turn auto-preparing off.
        kwargs={"autocommit": True, "prepare_threshold": None},
        check=ConnectionPool.check_connection,
        reset=reset,
        configure=configure,
        open=True,
    ) as pool:
        for i in range(100):
            with pool.connection() as conn:
                conn.execute(f"SET lock_timeout = '{i + 1}s'")
                assert conn.execute("SELECT count(*) FROM orders").fetchone() == (4,)
                pids.add(conn.info.backend_pid)
                assert conn.execute("SHOW search_path").fetchone() == (PINNED,)
        with pool.connection() as conn:
            assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)
            notes = [r[0] for r in conn.execute("SELECT note FROM orders").fetchall()]
            assert SECRET not in notes
    assert len(pids) <= 2, pids


def test_sqlalchemy_pool_with_pre_ping_and_reset_on_return(dproxy, planted):
    import sqlalchemy as sa

    url = sa.engine.URL.create(
        "postgresql+psycopg",
        username=AGENT,
        password=dproxy.token,
        host=dproxy.host,
        port=dproxy.port,
        database="app",
        query={"sslmode": "disable"},
    )
    engine = sa.create_engine(
        url, pool_size=2, max_overflow=0, pool_pre_ping=True, pool_reset_on_return="rollback"
    )
    try:
        pids = set()
        for _ in range(100):
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 4
                pids.add(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar())
        assert len(pids) <= 2, pids
    finally:
        engine.dispose()


# --- the settings and chores drivers send ------------------------------------------------

DRIVER_STATEMENTS = [
    "SET application_name = 'my-service'",
    "SET extra_float_digits = 3",
    "SET DateStyle = 'ISO, MDY'",
    "SET IntervalStyle = iso_8601",
    "SET TimeZone = 'UTC'",
    "SET TIME ZONE 'Europe/Berlin'",
    "SET client_min_messages TO warning",
    "SET statement_timeout = '30s'",
    "SET lock_timeout = 5000",
    "SET idle_in_transaction_session_timeout = '1min'",
    "SET standard_conforming_strings = on",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SET SESSION AUTHORIZATION DEFAULT",
    "RESET SESSION AUTHORIZATION",
    "RESET ALL",
    "DISCARD ALL",
    "DISCARD PLANS",
    "DISCARD SEQUENCES",
    "DISCARD TEMP",
    "CLOSE ALL",
    "UNLISTEN *",
    "SELECT pg_advisory_unlock_all()",
    "SELECT 1",
    "SELECT version()",
    "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    "SHOW TRANSACTION ISOLATION LEVEL",
    "SELECT current_schema()",
]


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_driver_statements_are_allowed(dproxy, planted, protocol):
    async def go():
        # DISCARD ALL drops the driver's cached prepared statements (as it does directly)
        conn = await asyncpg.connect(**a_kwargs(dproxy), statement_cache_size=0)
        try:
            for sql in DRIVER_STATEMENTS:
                if protocol == "simple":
                    await conn.execute(sql)
                else:
                    await conn.fetch(sql)
                await assert_pinned(conn)
            # asyncpg's own pool reset, as one simple Query
            await conn.execute(conn.get_reset_query())
            await assert_pinned(conn)
        finally:
            await conn.close()

    asyncio.run(go())


@pytest.mark.parametrize(
    "sql",
    [
        "SET standard_conforming_strings = off",
        f"SET search_path = {UPSTREAM_ROLE}, public",
        "SET SESSION AUTHORIZATION plainuser",
        "SELECT set_config('search_path', 'pgwitness', false)",
        "SELECT * FROM pg_stat_activity",
        "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_advisory_unlock_all(), pg_advisory_lock(1)",
    ],
)
@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_harmful_forms_stay_denied(dproxy, planted, sql, protocol):
    async def go():
        conn = await asyncpg.connect(**a_kwargs(dproxy))
        try:
            with pytest.raises(asyncpg.PostgresError) as info:
                if protocol == "simple":
                    await conn.execute(sql)
                else:
                    await conn.fetch(sql)
            assert info.value.sqlstate == "42501", info.value
            await assert_pinned(conn)
        finally:
            await conn.close()

    asyncio.run(go())


@pytest.mark.parametrize("reset", ["RESET ALL", "DISCARD ALL", "RESET search_path"])
def test_reset_keeps_the_pinned_search_path(dproxy, planted, reset):
    """The pin is a startup-packet value, which PostgreSQL makes the session's RESET value."""
    with psycopg.connect(conninfo(dproxy), autocommit=True) as conn:
        conn.execute(reset)
        assert conn.execute("SHOW search_path").fetchone() == (PINNED,)
        notes = [r[0] for r in conn.execute("SELECT note FROM orders").fetchall()]
        assert SECRET not in notes and "first" in notes
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SET search_path = {UPSTREAM_ROLE}, public")
        assert conn.execute("SHOW standard_conforming_strings").fetchone() == ("on",)


# --- options / PGOPTIONS ------------------------------------------------------------------


def p_connect(handle, user=AGENT, password=None, **kw) -> psycopg.Connection:
    return psycopg.connect(
        host=handle.host,
        port=handle.port,
        user=user,
        password=password or handle.token,
        dbname="app",
        sslmode="disable",
        connect_timeout=10,
        autocommit=True,
        **kw,
    )


def show(conn, name: str) -> str:
    return conn.execute(f"SHOW {name}").fetchone()[0]


def test_grant_options_reach_the_server_as_session_defaults(dproxy, planted):
    opts = r"-c statement_timeout=5s --lock-timeout=2s -c intervalstyle=postgres_verbose -c application_name=a\ -c\ search_path=pgwitness"
    with p_connect(dproxy, options=opts) as conn:
        assert show(conn, "statement_timeout") == "5s"
        assert show(conn, "lock_timeout") == "2s"
        assert show(conn, "intervalstyle") == "postgres_verbose"
        # an escaped space is part of the value, not a new switch
        assert conn.info.parameter_status("application_name") == "a -c search_path=pgwitness"
        assert show(conn, "application_name") == "a -c search_path=pgwitness"
        assert show(conn, "search_path") == PINNED
        conn.execute("RESET ALL")  # startup values are what RESET returns to
        assert show(conn, "statement_timeout") == "5s"
        assert show(conn, "search_path") == PINNED
        notes = [r[0] for r in conn.execute("SELECT note FROM orders").fetchall()]
        assert SECRET not in notes


@pytest.mark.parametrize(
    "opts,named",
    [
        ("-c search_path=pgwitness", "search_path"),
        ("-csearch_path=pgwitness,public", "search_path"),
        ("--search-path=pgwitness", "search_path"),
        ("-c statement_timeout=1s -c search_path=pgwitness", "search_path"),
        ("-c role=plainuser", "role"),
        ("-c session_authorization=plainuser", "session_authorization"),
        ("-c client_encoding=SJIS", "client_encoding"),
        ("-c client_encoding=BIG5", "client_encoding"),
        ("-c default_transaction_read_only=on", "default_transaction_read_only"),
        ("-c session_preload_libraries=auto_explain", "session_preload_libraries"),
        ("-c standard_conforming_strings=off", "standard_conforming_strings"),
        ("-c work_mem=1GB", "work_mem"),
        ("-F", "-F"),
        ("-D /tmp", "-D"),
        ("-c", "-c"),
    ],
)
def test_grant_options_with_a_refused_setting_get_a_fatal_naming_it(dproxy, planted, opts, named):
    with pytest.raises(psycopg.OperationalError) as info:
        p_connect(dproxy, options=opts)
    text = str(info.value)
    assert named in text and "pgwitness:" in text, text
    assert "rule deny.setting" in text or "only -c name=value" in text or "needs" in text, text


def test_static_user_options_pass_through_as_postgres_would(dproxy, pg):
    with p_connect(
        dproxy, STATIC_USER, STATIC_PASSWORD, options="-c search_path=secret -c work_mem=8MB"
    ) as conn:
        assert show(conn, "search_path") == "secret"
        assert show(conn, "work_mem") == "8MB"
        assert conn.execute("SELECT count(*) FROM payroll").fetchone() == (3,)
    # what PostgreSQL itself refuses, it refuses through the proxy too, in its own words
    opts = "-c session_preload_libraries=auto_explain"
    with pytest.raises(psycopg.OperationalError) as via_proxy:
        p_connect(dproxy, STATIC_USER, STATIC_PASSWORD, options=opts)
    with pytest.raises(psycopg.OperationalError) as direct:
        psycopg.connect(
            host="localhost",
            port=pg.port,
            user=UPSTREAM_ROLE,
            password=pg.users[UPSTREAM_ROLE],
            dbname="app",
            sslmode="require",
            options=opts,
        )
    assert "permission denied" in str(direct.value)
    said = str(direct.value).split("FATAL:")[-1].strip()
    assert said.startswith("permission denied to set parameter"), said
    assert said in str(via_proxy.value), (str(via_proxy.value), said)


def test_dry_run_grant_sees_the_servers_own_search_path_and_options(dproxy, planted):
    with p_connect(dproxy, password=dproxy.dry_token) as conn:
        assert show(conn, "search_path") == '"$user", public'
    with p_connect(dproxy, password=dproxy.dry_token, options="-c search_path=secret") as conn:
        assert show(conn, "search_path") == "secret"


def test_dry_run_grant_changes_nothing_the_client_sees_of_its_settings(dproxy, planted):
    """A dry run refuses nothing (psycopg2's suite through a dry-run grant, session 18):
    a login asking for standard_conforming_strings = off was refused, and a session that
    set client_encoding = 'SJIS' was ended; both stay as PostgreSQL has them. An
    enforcing grant still ends or refuses both (test_grant_options_with_a_refused_...,
    tests/integration/test_proxy_hardening.py)."""
    dry = dproxy.dry_token
    with p_connect(dproxy, password=dry, options="-c standard_conforming_strings=off") as conn:
        assert show(conn, "standard_conforming_strings") == "off"
        assert conn.execute("SELECT 'a\\b'").fetchone() == ("a\x08",)  # as the server reads it
    with p_connect(dproxy, password=dry) as conn:
        conn.execute("SET client_encoding = 'SJIS'")
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert show(conn, "client_encoding") == "SJIS"
    with p_connect(dproxy) as conn, pytest.raises(psycopg.Error):
        conn.execute("SET client_encoding = 'SJIS'")
        conn.execute("SELECT 1")


def _psql(handle, pg, user, password, pgoptions, command):
    local = pg.bindir / "psql"
    binary = str(local) if local.exists() else (shutil.which("psql") or "psql")
    env = dict(
        os.environ,
        PGPASSWORD=password,
        PGSSLMODE="disable",
        PGCONNECT_TIMEOUT="10",
        PGOPTIONS=pgoptions,
    )
    argv = [binary, "-X", "-At", "-h", handle.host, "-p", str(handle.port), "-U", user, "-d", "app"]
    return subprocess.run(
        [*argv, "-c", command], env=env, capture_output=True, text=True, timeout=30
    )


def test_pgoptions_through_psql(dproxy, pg, planted):
    # PostgreSQL's regression harness exports this one
    ok = _psql(
        dproxy, pg, AGENT, dproxy.token, "-c intervalstyle=postgres_verbose", "SHOW intervalstyle"
    )
    assert ok.returncode == 0 and ok.stdout.strip() == "postgres_verbose", ok.stderr
    bad = _psql(
        dproxy, pg, AGENT, dproxy.token, "-c search_path=pgwitness", "SELECT note FROM orders"
    )
    assert bad.returncode != 0 and 'setting "search_path" in options refused' in bad.stderr, (
        bad.stderr
    )
    assert SECRET not in bad.stdout
    static = _psql(
        dproxy, pg, STATIC_USER, STATIC_PASSWORD, "-c search_path=secret", "SHOW search_path"
    )
    assert static.returncode == 0 and static.stdout.strip() == "secret", static.stderr


def test_dry_run_startup_refusal_is_recorded_not_enforced(make_proxy, tmp_path):
    from tests.support.recording import (
        grants,
        issue_grant,
        one_live_session,
        public_key,
        recording,
        records,
        wait_status,
    )

    h = make_proxy(**recording(tmp_path), **grants(tmp_path))
    _, token = issue_grant(h, enforce=False)
    with p_connect(h, "billing-bot", token, options="-c search_path=secret") as conn:
        sid = one_live_session(h)
        assert show(conn, "search_path") == "secret"  # what the server gives
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    (event,) = [r for r in records(store, sid) if r.type == "startup_would_deny"]
    assert 'setting "search_path" in options refused' in event.json()["reason"]
