"""Round 53's per-grant-role residue, fixed in session 27: a row security policy of a
relation the proxy's login owns is inert for that login, so the policy's functions were
asked for only where the policy applies to it (FORCE, or a relation it does not own). A
session that logs in as a role of its own (``upstream.roles = per-grant``) owns nothing:
the policy runs on its reads, and what its function says (here a SECURITY DEFINER
function's NOTICE quoting a table outside the grant) reached the client though the grant
holds no execute scope on it. Such sessions now count every policy's functions
(``Snapshot.relation_casts_role``, ``StatementPolicy.own_login``). The server the judge.
"""

from __future__ import annotations

import time

import pytest

from common.wire.errors import frame
from tests.support.fixtures_proxy import ProxyHandle, per_grant_overrides, proxy_config
from tests.support.planted import run_steps
from tests.support.proxies import drop_grant_roles
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(120)

AGENT = "s27p-bot"
MARK = "S27P-VAULT-91ac"
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA s27p; CREATE SCHEMA s27q;\n"
    "CREATE TABLE s27p.t (id int); INSERT INTO s27p.t VALUES (1), (2);\n"
    f"CREATE TABLE s27q.vault (pin text); INSERT INTO s27q.vault VALUES ('{MARK}');\n"
    "CREATE FUNCTION s27p.peek(i int) RETURNS bool LANGUAGE plpgsql SECURITY DEFINER AS "
    "$$ DECLARE s text; BEGIN SELECT pin INTO s FROM s27q.vault; RAISE NOTICE 'seen %', s; "
    "RETURN true; END $$;\n"
    "ALTER TABLE s27p.t ENABLE ROW LEVEL SECURITY;\n"
    "CREATE POLICY p ON s27p.t USING (s27p.peek(id));\n"
    "RESET ROLE;\n"
    "CREATE ROLE s27p_reader NOLOGIN; GRANT s27p_reader TO pgwitness;\n"
    "GRANT USAGE ON SCHEMA s27p TO s27p_reader; GRANT SELECT ON s27p.t TO s27p_reader;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS s27p, s27q CASCADE;\n"
    "DROP OWNED BY s27p_reader; DROP ROLE IF EXISTS s27p_reader;\n"
)
READ = "SELECT id FROM s27p.t ORDER BY id"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    pg.psql("DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 's27p_reader') THEN "
            "EXECUTE 'DROP OWNED BY s27p_reader'; END IF; END $$;\n"
            "DROP SCHEMA IF EXISTS s27p, s27q CASCADE; DROP ROLE IF EXISTS s27p_reader;\n",
            db="app")  # fmt: skip
    pg.psql(SETUP, db="app")
    workdir = tmp_path_factory.mktemp("s27p")
    handle = ProxyHandle(proxy_config(pg, **per_grant_overrides(pg, workdir))).start()
    try:
        yield handle
    finally:
        handle.stop()
        drop_grant_roles(pg)
        pg.psql(TEARDOWN, db="app")


def _issue(handle: ProxyHandle, scopes: str) -> tuple:
    return handle.call(handle.runtime.store.issue(
        agent=AGENT, task=f"S27P-{time.monotonic_ns() % 10**9}", reason="row security",
        granted_by="pytest", database="app", scopes=scopes, ttl="10m",
    ))  # fmt: skip


def _read(handle: ProxyHandle, token: str) -> tuple[str, str]:
    """The read over the simple protocol, then over the extended one (unnamed and named
    statements, described): every byte received."""
    with RawClient.session(handle.host, handle.port, AGENT, token, "app") as c:
        who = c.scalar("SELECT current_user")
        got = run_steps(c, [
            (query(READ),),
            (parse("", READ), bind(), execute(), SYNC),
            (parse("s27p", READ), SYNC),
            (frame(b"D", b"Ss27p\x00"), bind("", "s27p"), execute(), SYNC),
        ])  # fmt: skip
    return who, got


def test_directly_a_role_that_owns_nothing_hears_the_policys_function(pg, px):
    with RawClient.direct(pg) as c:
        assert MARK not in b"".join(c.query(READ)).decode("utf-8", "replace"), "owner: inert"
        c.query("SET ROLE s27p_reader")
        assert MARK in b"".join(c.query(READ)).decode("utf-8", "replace")


def test_a_per_grant_role_must_hold_the_execute_scope_of_the_policys_function(px):
    grant, token = _issue(px, "read:s27p.t")
    who, got = _read(px, token)
    assert who == grant.db_role, "the session runs as the grant's own role"
    assert MARK not in got, got[-400:]
    assert got.count("C42501") == 3, got[-600:]  # the Query, the unnamed and named Parses
    assert "s27p.peek" in got and "row security" in got, got[-400:]


def test_with_that_scope_the_read_goes_through(px):
    _grant, token = _issue(px, "read:s27p.t execute:s27p.peek")
    _who, got = _read(px, token)
    assert "C42501" not in got, got[-400:]
    assert got.count("SELECT 2") == 3, got[-400:]  # the policy keeps both rows, each way
