"""Attacks on the gap between what the policy checks and what the server runs.

The policy resolves unqualified names through its own search_path and lexes literals with
standard_conforming_strings on and a UTF-8 client encoding; each test makes the server
disagree and checks pgwitness does not let the difference through.
"""

from __future__ import annotations

import psycopg
import pytest

from policy import StatementPolicy
from policy.scopes import parse_scopes

SCOPES = "read:public.orders,public.customers"


@pytest.fixture(scope="module")
def grant_proxy(pg, tmp_path_factory):
    from tests.support.fixtures_proxy import ProxyHandle, proxy_config

    store = tmp_path_factory.mktemp("hardening") / "grants.db"
    handle = ProxyHandle(proxy_config(pg, **{"grants.store": f"sqlite:///{store}"})).start()
    # A schema named after the proxy's upstream role: "$user" would find it first.
    pg.psql(
        "CREATE SCHEMA IF NOT EXISTS pgwitness AUTHORIZATION pgwitness;"
        "CREATE TABLE IF NOT EXISTS pgwitness.orders (id int, secret text);"
        "INSERT INTO pgwitness.orders VALUES (1, 'shadowed');"
        "ALTER TABLE pgwitness.orders OWNER TO pgwitness;",
        db="app",
    )
    yield handle
    handle.stop()
    pg.psql("DROP SCHEMA pgwitness CASCADE", db="app")


def connect(handle, database="app"):
    grant, token = handle.call(
        handle.runtime.store.issue(
            agent="hardening-bot", task="HARD-1", reason="attack", granted_by="pytest",
            database=database, scopes=SCOPES, ttl="10m",
        )
    )
    return psycopg.connect(
        host=handle.host, port=handle.port, user="hardening-bot", password=token,
        dbname=database, sslmode="disable", connect_timeout=10, autocommit=True,
    )


def test_unqualified_names_resolve_upstream_as_the_policy_resolved_them(grant_proxy, pg):
    # Directly, the upstream role's default search_path ("$user", public) picks the
    # pgwitness schema's table; through the proxy, `orders` must be public.orders.
    direct = psycopg.connect(pg.dsn("pgwitness", pg.users["pgwitness"], "app"))
    with direct:
        assert direct.execute("SELECT secret FROM orders").fetchone() == ("shadowed",)
    with connect(grant_proxy) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("public, pg_temp",)
        cols = [d.name for d in conn.execute("SELECT * FROM orders LIMIT 1").description]
        assert "secret" not in cols and "customer_id" in cols
        for change in ("SET search_path = pgwitness, public", "SET LOCAL search_path = pgwitness",
                       "SELECT set_config('search_path', 'pgwitness, public', false)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(change)
        assert conn.execute("SHOW search_path").fetchone() == ("public, pg_temp",)
        # RESET goes back to the startup packet's value, the pin, not the role's default
        # (which picks the pgwitness schema's table): allowed, on both protocols
        simple = conn.pgconn.exec_(b"RESET search_path")  # a simple Query
        assert simple.status == psycopg.pq.ExecStatus.COMMAND_OK, simple.error_message
        conn.execute("RESET search_path", prepare=True)  # Parse, Bind, Execute
        assert conn.execute("SHOW search_path").fetchone() == ("public, pg_temp",)
        cols = [d.name for d in conn.execute("SELECT * FROM orders LIMIT 1").description]
        assert "secret" not in cols and "customer_id" in cols


def test_upstream_without_standard_conforming_strings_is_refused(grant_proxy, pg):
    pg.psql("DROP DATABASE IF EXISTS scs_off")
    pg.psql("CREATE DATABASE scs_off OWNER pgwitness")
    pg.psql("ALTER DATABASE scs_off SET standard_conforming_strings = off")
    with pytest.raises(psycopg.OperationalError) as err:
        connect(grant_proxy, database="scs_off").close()
    assert "standard_conforming_strings" in str(err.value)
    # the same grant on an ordinary database works
    with connect(grant_proxy) as conn:
        assert conn.execute("SELECT count(*) FROM public.customers").fetchone()[0] >= 3


@pytest.mark.parametrize(
    "sql",
    [
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'BIG5'",
        "SELECT set_config('client_encoding', 'BIG5', false)",
        "SELECT set_config('client_encoding', 'UT' || 'F8', false)",
    ],
)
def test_client_encoding_that_can_hide_quotes_cannot_be_chosen(sql):
    policy = StatementPolicy(parse_scopes(SCOPES), task="HARD-1")
    verdict = policy.check_query(sql)
    assert not verdict.allowed, sql
    assert verdict.message.startswith("pgwitness: task HARD-1")


def test_utf8_client_encoding_stays_allowed():
    policy = StatementPolicy(parse_scopes(SCOPES), task="HARD-1")
    assert policy.check_query("SET client_encoding = 'UTF8'").allowed
