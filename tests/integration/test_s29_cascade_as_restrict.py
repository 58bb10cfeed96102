"""A simple Query refused for CASCADE alone runs as RESTRICT (session 29), the server the
judge.

psycopg's composite and range fixtures (69 tests in the drivers' differential) begin with
``drop type if exists testcomp cascade; ...`` in one simple Query: refused whole since CASCADE
is (it removes what it does not name). Now the proxy sends the same text with each CASCADE
keyword blanked (``pgparse.restrict_cascade``: PostgreSQL's reading otherwise unchanged) where
the grant allows it so: where nothing depends the server drops what is named, as CASCADE
would; where something does it refuses (2BP01) and nothing outside the grant changes. The
decision record keeps the text sent (``run_as``) beside the client's. A Parse is run so too
(session 30: JDBC sends every statement as one, its test fixtures ``DROP ... CASCADE``): the
frame goes upstream with the policy's text, its name and parameter types kept.

Grant (agent ``s29r-bot``): ``read:s29r.* write:s29r.* ddl:s29r.*``; ``s29rx`` outside it holds
a view over ``s29r.used``."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from common.wire import messages as m
from common.wire.errors import frame
from policy.grants.model import make_dsn
from tests.support import planted
from tests.support.fixtures_proxy import ProxyHandle, proxy_config
from tests.support.proxies import issue as grant_issue
from tests.support.proxies import sqlite_url
from tests.support.rawpg import RawClient, error_fields
from tests.support.recording import (
    audit_rows,
    decisions,
    one_live_session,
    public_key,
    recording,
    records,
    wait_status,
)

pytestmark = pytest.mark.timeout(120)

AGENT = "s29r-bot"
SCOPES = "read:s29r.* write:s29r.* ddl:s29r.*"
SETUP = """
SET ROLE pgwitness;
CREATE SCHEMA s29r; CREATE SCHEMA s29rx;
CREATE TABLE s29r.used (k int, c int);
CREATE VIEW s29rx.v AS SELECT c FROM s29r.used;
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS s29r, s29rx CASCADE;"
FIXTURE = """
    create schema if not exists s29r;

    drop type if exists s29r.testcomp2 cascade;
    drop type if exists s29r.testcomp cascade;

    create type s29r.testcomp as (foo text, bar int8, baz float8);
    create type s29r.testcomp2 as (qux int8, quux s29r.testcomp);
    """


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    pg.psql(TEARDOWN, db="app")
    pg.psql(SETUP, db="app")
    tmp = tmp_path_factory.mktemp("s29r")
    url = sqlite_url(tmp / "grants.db")
    handle = ProxyHandle(proxy_config(pg, **{"grants.store": url}, **recording(tmp))).start()
    handle.tmp = tmp
    try:
        handle.token = grant_issue(handle, agent=AGENT, task="S29R", scopes=SCOPES)[1]
        handle.agent = AGENT
        yield handle
    finally:
        handle.stop()
        pg.psql(TEARDOWN, db="app")


def _connect(px) -> psycopg.Connection:
    return psycopg.connect(make_dsn(AGENT, px.token, px.host, px.port, "app"), autocommit=True)


def _types(pg) -> str:
    return pg.psql(
        "SELECT string_agg(typname, ',' ORDER BY typname) FROM pg_type "
        "WHERE typnamespace = 's29r'::regnamespace AND typname LIKE 'testcomp%' "
        "AND typtype = 'c'",
        db="app",
    ).strip()


def test_psycopgs_fixture_runs_twice(pg, px):
    for _ in range(2):  # the second time each type exists, and testcomp2 depends on testcomp
        with _connect(px) as conn:
            conn.execute(FIXTURE)
        assert _types(pg) == "testcomp,testcomp2"


def test_what_something_outside_depends_on_is_refused_by_the_server(pg, px):
    with _connect(px) as conn:
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            conn.execute("DROP TABLE s29r.used CASCADE")
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            conn.execute("ALTER TABLE s29r.used DROP COLUMN c CASCADE")
    assert (
        pg.psql("SELECT count(*) FROM pg_views WHERE schemaname = 's29rx'", db="app").strip() == "1"
    )


def test_what_nothing_depends_on_is_dropped(pg, px):
    with _connect(px) as conn:
        conn.execute("CREATE TABLE s29r.lone (k int); CREATE INDEX lone_k ON s29r.lone (k)")
        conn.execute("ALTER TABLE s29r.lone DROP COLUMN k CaScAdE")
        conn.execute("DROP TABLE s29r.lone /* bye */ CASCADE")
    assert pg.psql("SELECT to_regclass('s29r.lone') IS NULL", db="app").strip() == "t"


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE s29rx.v CASCADE",  # outside the grant: the reason is the scope's
        "select 1 as cascade; drop type if exists s29r.nope cascade",  # the word as a name
    ],
)
def test_refused_as_before(pg, px, sql):
    got = planted.simple(px, [sql])[0]
    assert "42501" in got, got


@pytest.mark.parametrize("mode", ["extended", "prepared"])
def test_a_parse_runs_as_restrict_too(pg, px, mode):
    """Unnamed (JDBC's Statement.execute, asyncpg without a cache) and named: the Parse goes
    upstream with the keyword blanked, so the server judges what depends."""
    got = asyncio.run(planted.attempt(px, "DROP TABLE s29r.used CASCADE", mode))
    assert got.startswith("error 2BP01"), got  # the server's RESTRICT: s29rx.v depends
    assert pg.psql("SELECT count(*) FROM pg_views WHERE schemaname = 's29rx'", db="app").strip() == "1"
    pg.psql("CREATE TABLE s29r.lone_p (k int)", db="app")
    got = asyncio.run(planted.attempt(px, "DROP TABLE IF EXISTS s29r.lone_p CASCADE", mode))
    assert not got.startswith("error"), got
    assert pg.psql("SELECT to_regclass('s29r.lone_p') IS NULL", db="app").strip() == "t"
    # still refused: outside the grant, and the word as a name beside it
    got = asyncio.run(planted.attempt(px, "DROP VIEW s29rx.v CASCADE", mode))
    assert got.startswith("error 42501"), got


def test_a_parse_that_does_not_encode_back_is_refused(pg, px):
    """EUC_JP 0x8F 0xA2 0xB7 (in a comment): Python's codec reads "~", the server an
    untranslatable character (22P05, nothing runs): the Parse sent in the client's place
    would be "~", not the client's bytes but for the keyword, and the server would run it;
    so it is refused (``relay.NOT_ROUND_TRIP``), and nothing runs."""
    pg.psql("CREATE TABLE IF NOT EXISTS s29r.lone_e (k int)", db="app")
    tilde = b"\x8f\xa2\xb7"
    with RawClient.session(px.host, px.port, AGENT, px.token) as c:
        assert c.query("SET client_encoding TO 'EUC_JP'")[-1][:1] == b"Z"
        c.send(frame(b"P", b"\x00DROP TABLE s29r.lone_e /* " + tilde + b" */ CASCADE\x00\x00\x00"),
               m.bind_no_params(), m.execute(), m.SYNC)  # fmt: skip
        got = c.frames_until_ready()
    errors = [error_fields(f) for f in got if f[:1] == b"E"]
    assert errors and errors[0]["C"] == "42501" and "encode back" in errors[0]["M"], errors
    assert pg.psql("SELECT to_regclass('s29r.lone_e') IS NOT NULL", db="app").strip() == "t"


def test_the_record_keeps_the_text_sent(pg, px):
    with _connect(px) as conn:
        sid = one_live_session(px)
        conn.execute("drop type if exists s29r.gone cascade")
        conn.execute("drop type if exists s29r.gone_p cascade", prepare=True)  # a Parse
    store = px.runtime.recorder.store
    wait_status(store, sid, public_key(px.tmp), "closed")
    found = [d for d in decisions(records(store, sid)) if "s29r.gone " in str(d.get("sql"))]
    assert found, decisions(records(store, sid))
    (d,) = found
    assert d["sql"] == "drop type if exists s29r.gone cascade"
    assert d["run_as"] == "drop type if exists s29r.gone        "
    assert not d["denied"]
    # the auditor's row of it: the client's text, and what the server ran
    (row,) = [r for r in audit_rows(px, sid) if "s29r.gone " in (r.get("text") or "")]
    assert row["text"] == "drop type if exists s29r.gone cascade", row
    assert row["decision"] == "allowed" and row["reason"].endswith(
        ": drop type if exists s29r.gone        "
    ), row
    parsed = [d for d in decisions(records(store, sid)) if "s29r.gone_p" in str(d.get("sql"))]
    assert [(d["sql"], d.get("run_as"), d["denied"]) for d in parsed] == [
        ("drop type if exists s29r.gone_p cascade", "drop type if exists s29r.gone_p        ", False)
    ], parsed
    (row,) = [r for r in audit_rows(px, sid) if "s29r.gone_p" in (r.get("text") or "")]
    assert row["decision"] == "allowed" and row["reason"].endswith(
        ": drop type if exists s29r.gone_p        "
    ), row
