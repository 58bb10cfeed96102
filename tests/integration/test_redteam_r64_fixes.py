"""Red-team round 64 (attacks on cbc8ec6 + e2d95f5: a Parse refused for CASCADE alone runs
as RESTRICT; and on 507efe9: EXPLAIN counts the code a statement runs without naming it,
and EXPLAIN of a view needs a read of what the view reads), time-boxed; the server the judge.

Grants (agent ``r64-bot``): ``base`` = ``read:r64.* write:r64.* ddl:r64.* truncate:r64.*``;
``views`` = ``read:r64.* read:pg_catalog.pg_views``; ``tok`` = ``read:r64.* write:r64.*
ddl:r64.* execute:r64x.token``. None has ``read:pg_catalog.pg_proc``. Planted (owner
``pgwitness``), outside every grant in ``r64x``: ``r64x.token()`` (a SQL function whose body
holds ``SALT``), ``r64x.acc`` (1000 rows ANALYZEd, 400 of tenant 2 holding ``MCV``),
``r64x.accf()`` (a STABLE SQL set-returning function reading ``r64x.acc``: inlinable),
``r64x.kid`` (inherits ``r64.par``; 400 rows of ``KID``), ``r64x.pp2`` (a partition of
``r64.pp``; 400 rows of ``PART``), ``r64x.v`` (a view of ``r64.t.c``), ``r64x.fk``
(references ``r64.t``). In ``r64``: security-barrier views of tenant 1 ``r64.bv`` (over
``r64x.acc``), ``r64.fbv`` (over ``r64x.accf()``), ``r64.ibv`` (over ``r64.par``), ``r64.pbv``
(over ``r64.pp``); ``r64.tok`` (default ``r64x.token()``), ``r64.tok2`` (no default),
``r64.rls`` (FORCE row security, ``USING (owner <> POLICY)``), ``r64.rls2`` (FORCE row
security, ``USING (owner IN (SELECT secret FROM r64x.acc))``, rows ``MCV`` and
``R64-ABSENT``). Each probe's harm is shown first directly as the upstream login.

Leaks (strict xfails asserting the safe outcome), all fixed the same session (session 30;
plain tests since): 1-2 ``StatementPolicy._estimated_over`` (what a plan is estimated on:
view bases, their inheritance children, inlined SQL functions' queries, transitively, and
``Snapshot.view_calls``); 3 EXPLAIN in the DDL's message (``_explains_after_ddl``) or
transaction (``ddl_open``) refused, after it decided on a load that started later; 4
``Snapshot.policy_reads`` (POLICY_READS_SQL), ``_policies_read``; 5 ``Snapshot.published``
(PUBLISHED_SQL), a DROP of a relation a publication lists refused. The over-refusal
noted (``EXPLAIN SELECT k FROM r64.tok``: the defaults of a relation only read count) is
kept: EXPLAIN without ANALYZE names what it would write as read.

1. **A barrier view over an inlinable SQL function estimates on the hidden table.**
   ``EXPLAIN SELECT * FROM r64.fbv WHERE secret = 'R64-MCV-7a21'`` (``views``; simple,
   extended, prepared): ``rows=200``, with ``'R64-NOPE'`` ``rows=1`` (through the view
   ``count(*)`` is 0); 64 range EXPLAINs recover ``7a21`` through the proxy. PostgreSQL
   inlines ``r64x.accf()`` into the barrier's subquery and pushes the leakproof comparison
   into the scan of ``r64x.acc``; ``Snapshot.view_bases`` of ``r64.fbv`` is empty (the
   view's rule depends on the function, not on ``r64x.acc``), so ``_explained_code`` asks
   for nothing.
2. **A barrier view over an inheritance parent estimates on the child's statistics.**
   ``EXPLAIN SELECT * FROM r64.ibv WHERE secret = 'R64-KID-7a22'`` (``views``; every
   mode): ``Seq Scan on kid ... rows=222`` vs ``rows=1``. ``view_bases`` holds ``r64.par``
   (readable) but not its descendant ``r64x.kid`` (which ``SELECT * FROM r64.par`` is refused
   for: "without ONLY").
3. **EXPLAIN right after the session's own DDL is decided on the stale snapshot.**
   ``ALTER TABLE r64.tok2 ALTER COLUMN t SET DEFAULT r64x.token()`` then ``EXPLAIN (VERBOSE,
   COSTS OFF) INSERT INTO r64.tok2 (k) VALUES (1)`` (``tok``: the execute scope, no
   ``pg_proc``): ``Output: 1, md5(('R64-SALT-7a20'::text || ...))``: as two Queries, one
   Query, one pipeline (Parse/Bind/Execute each, one Sync), asyncpg's extended protocol;
   also ``CREATE TABLE r64.n (... DEFAULT r64x.token()); EXPLAIN ...`` and a ``CREATE
   DOMAIN r64.d ... DEFAULT r64x.token()`` with a table of it. Once the snapshot has
   reloaded (``wait_catalog_quiet``) the same EXPLAIN is refused (the control).
4. **A row security policy reading outside the grant filters the grant's SELECT.**
   ``SELECT owner FROM r64.rls2`` (``base``; every mode) returns ``R64-MCV-7a21`` and not
   ``R64-ABSENT``: which rows come back tells which values ``r64x.acc`` holds (the grant may
   write any value into ``r64.rls2``); its EXPLAIN shows ``Seq Scan on acc`` too. A policy
   calling a function is refused (round 63); one with a subquery is not.
5. **Dropping a table removes it from a publication** (r62's family: an automatic
   dependency; arguable). ``DROP TABLE r64.pubt`` (simple) and ``DROP TABLE r64.pubt
   CASCADE`` (extended, prepared: run as RESTRICT) empty ``r64pub``'s table list
   (``pg_publication_tables``); RESTRICT does not protect it. Not the rewrite's own.

Held (plain tests): CASCADE on a Parse (extended unnamed and named prepared) of ``TRUNCATE
r64.t``, ``DROP TABLE r64.t``, ``ALTER TABLE r64.t DROP COLUMN c``, ``ALTER TABLE r64.t DROP
CONSTRAINT t_pkey``: each changes ``r64x`` directly; through the proxy sent as RESTRICT,
the server refuses (2BP01, 0A000), ``r64x`` unchanged. Two CASCADE Parses pipelined before
one Sync (the second's 2BP01 rolls back the first's drop); Describe before Bind and a
named portal; a statement name reused after Close; a statement parsed while nothing
depends on ``r64.lone``, re-bound after the owner made ``r64x.lv`` over it (directly the
CASCADE statement drops the view; through the proxy 2BP01: the server holds RESTRICT); SQL
``EXECUTE`` of the Parse's name; CASCADE mixed with another reason (``DROP TABLE r64.lone,
r64x.fk``, ``DROP TABLE r64x.fk``, ``DROP VIEW r64x.v``, ``TRUNCATE r64.lone, r64x.fk``:
42501, nothing dropped); declared parameter types kept (int4, text in the server's
ParameterDescription, the drop ran); LATIN1, WIN1252 and EUC_JP client encodings (the
text's bytes come back as sent); EUC_JP ``0x8FA2B7`` (22P05 plainly, 42501 with CASCADE);
a 70 KB text; inside ``BEGIN`` with a later failure (rolled back). SQL ``PREPARE`` cannot
hold DDL (syntax). EXPLAIN refused (42501): ``MERGE`` and a data-modifying CTE into a
defaulted table (directly the CTE prints the salt), the planted default with the execute
scope, ``EXPLAIN DECLARE`` of the barrier view (deny.unknown; directly it prints the
marker's estimate), round 63's barrier view, ``r64.par`` without ONLY, a new table's
default without the execute scope, ``pg_policy`` unpinned. Not leaks: a barrier view over
the partitioned ``r64.pp`` estimates on ``r64x.pp2``, but the grant reads its rows through
``r64.pp`` (400); the policy literal ``EXPLAIN SELECT * FROM r64.rls`` prints is readable
pinned (``pg_policy WHERE polrelid = 'r64.rls'::regclass``).

Over-refusal observed: ``EXPLAIN SELECT k FROM r64.tok`` (no write, no default run) is
refused for r64.tok's default (``_unnamed_code`` counts the defaults of every relation
named).
"""

from __future__ import annotations

import asyncio
import re
import struct

import pytest

from common.wire import messages as m
from common.wire.errors import frame
from tests.support import planted
from tests.support.rawpg import RawClient, bind, error_fields, parse

pytestmark = pytest.mark.timeout(300)

AGENT = "r64-bot"
SCOPES = "read:r64.* write:r64.* ddl:r64.* truncate:r64.*"
GRANTS = {
    "views": "read:r64.* read:pg_catalog.pg_views",
    "tok": "read:r64.* write:r64.* ddl:r64.* execute:r64x.token",
}
SALT = "R64-SALT-7a20"
MCV = "R64-MCV-7a21"  # r64x.acc: tenant 2's value (hidden by every view here)
KID = "R64-KID-7a22"  # r64x.kid (inherits r64.par): tenant 2's value
PART = "R64-PART-7a23"  # r64x.pp2 (a partition of r64.pp): tenant 2's value
POLICY = "R64-POLICY-7a24"  # r64.rls's row security policy's literal

SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r64; CREATE SCHEMA r64x;
CREATE FUNCTION r64x.token() RETURNS text LANGUAGE sql VOLATILE
  AS $$ SELECT md5('{SALT}' || clock_timestamp()::text) $$;
CREATE TABLE r64.tok (k int UNIQUE, t text DEFAULT r64x.token());
CREATE TABLE r64.tok2 (k int, t text);
CREATE TABLE r64x.acc (tenant int, secret text);
INSERT INTO r64x.acc SELECT 1, 'mine-' || (g % 50) FROM generate_series(1, 500) g;
INSERT INTO r64x.acc SELECT 2, '{MCV}' FROM generate_series(1, 400) g;
INSERT INTO r64x.acc SELECT 2, 'other-' || g FROM generate_series(1, 100) g;
ANALYZE r64x.acc;
CREATE VIEW r64.bv WITH (security_barrier) AS SELECT secret FROM r64x.acc WHERE tenant = 1;
CREATE FUNCTION r64x.accf() RETURNS TABLE (tenant int, secret text) LANGUAGE sql STABLE
  AS $$ SELECT tenant, secret FROM r64x.acc $$;
CREATE VIEW r64.fbv WITH (security_barrier) AS SELECT secret FROM r64x.accf() WHERE tenant = 1;
CREATE TABLE r64.par (tenant int, secret text);
INSERT INTO r64.par SELECT 1, 'mine-' || (g % 50) FROM generate_series(1, 500) g;
CREATE TABLE r64x.kid () INHERITS (r64.par);
INSERT INTO r64x.kid SELECT 1, 'mine-' || (g % 50) FROM generate_series(1, 500) g;
INSERT INTO r64x.kid SELECT 2, '{KID}' FROM generate_series(1, 400) g;
ANALYZE r64.par; ANALYZE r64x.kid;
CREATE VIEW r64.ibv WITH (security_barrier) AS SELECT secret FROM r64.par WHERE tenant = 1;
CREATE TABLE r64.pp (k int, tenant int, secret text) PARTITION BY RANGE (k);
CREATE TABLE r64.pp1 PARTITION OF r64.pp FOR VALUES FROM (0) TO (1000);
CREATE TABLE r64x.pp2 PARTITION OF r64.pp FOR VALUES FROM (1000) TO (3000);
INSERT INTO r64.pp SELECT g, 1, 'mine-' || (g % 50) FROM generate_series(1, 500) g;
INSERT INTO r64.pp SELECT 1000 + g, 1, 'mine-' || (g % 50) FROM generate_series(1, 500) g;
INSERT INTO r64.pp SELECT 2000 + g, 2, '{PART}' FROM generate_series(1, 400) g;
ANALYZE r64.pp1; ANALYZE r64x.pp2; ANALYZE r64.pp;
CREATE VIEW r64.pbv WITH (security_barrier) AS SELECT secret FROM r64.pp WHERE tenant = 1;
CREATE TABLE r64.rls (owner text); INSERT INTO r64.rls VALUES ('x');
CREATE POLICY p ON r64.rls USING (owner <> '{POLICY}');
ALTER TABLE r64.rls ENABLE ROW LEVEL SECURITY; ALTER TABLE r64.rls FORCE ROW LEVEL SECURITY;
CREATE TABLE r64.t (k int PRIMARY KEY, c int, d int); INSERT INTO r64.t VALUES (1, 1, 1);
CREATE VIEW r64x.v AS SELECT c FROM r64.t;
CREATE TABLE r64x.fk (k int REFERENCES r64.t); INSERT INTO r64x.fk VALUES (1);
CREATE TABLE r64.rls2 (owner text); INSERT INTO r64.rls2 VALUES ('{MCV}'), ('R64-ABSENT');
CREATE POLICY p ON r64.rls2 USING (owner IN (SELECT secret FROM r64x.acc));
ALTER TABLE r64.rls2 ENABLE ROW LEVEL SECURITY; ALTER TABLE r64.rls2 FORCE ROW LEVEL SECURITY;
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r64, r64x CASCADE;"

# everything of r64x a CASCADE could change, and r64.t's columns (one line)
STATE = """
SELECT coalesce(string_agg(x, ' | ' ORDER BY x), '') FROM (
  SELECT 'rel:' || c.relname || ':' || c.relkind::text
    || coalesce(':' || pg_get_viewdef(c.oid), '') FROM pg_class c
    WHERE c.relnamespace = 'r64x'::regnamespace
  UNION ALL SELECT 'fk:' || count(*) FROM r64x.fk
  UNION ALL SELECT 'con:' || conname FROM pg_constraint WHERE conrelid = 'r64x.fk'::regclass
  UNION ALL SELECT 'att:' || attname FROM pg_attribute
    WHERE attrelid = 'r64.t'::regclass AND attnum > 0 AND NOT attisdropped
) s(x);"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r64", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        h.state = planted.state(pg, STATE)
        assert "rel:v:v:" in h.state and "fk:1" in h.state and "att:c" in h.state, h.state
        yield h


def _outcomes(px, key: str, sql: str) -> dict[str, str]:
    return planted.outcomes(px, sql, px.tokens[key])


def _direct(pg, sql: str) -> str:
    return planted.direct_block(pg, [sql])


def _rows(text: str) -> list[str]:
    return re.findall(r"rows=(\d+)", text)


# -- EXPLAIN: the harm is real ----------------------------------------------------------

VIEW_ESTIMATES = {
    # barrier view over hidden rows, their marker, the leak's reason (False: not a leak)
    "inlined-srf": (
        "r64.fbv",
        MCV,
        "LEAK: a barrier view over an inlinable SQL function "
        "reading r64x.acc: view_bases has no relation (the rule depends on the "
        "function), the plan estimates on r64x.acc's statistics",
    ),
    "inheritance-child": (
        "r64.ibv",
        KID,
        "LEAK: a barrier view over r64.par: view_bases "
        "holds r64.par, not its child r64x.kid, whose statistics the "
        "Append's scan of it is estimated on",
    ),
}


@pytest.mark.parametrize("key", list(VIEW_ESTIMATES) + ["partition"])
def test_estimate_tells_directly(pg, px, key):
    view, marker = VIEW_ESTIMATES[key][:2] if key != "partition" else ("r64.pbv", PART)
    hit = _rows(_direct(pg, f"EXPLAIN SELECT * FROM {view} WHERE secret = '{marker}'"))
    miss = _rows(_direct(pg, f"EXPLAIN SELECT * FROM {view} WHERE secret = 'R64-NOPE'"))
    assert int(hit[0]) > 10 * int(miss[0]), (hit, miss)
    assert _recover_suffix(RawClient.direct(pg), view, marker[:-4]) == marker[-4:]


def test_the_views_show_no_such_row(pg, px):
    for view, marker in (("r64.fbv", MCV), ("r64.ibv", KID)):
        sql = f"SELECT count(*) FROM {view} WHERE secret = '{marker}'"
        for mode, t in _outcomes(px, "views", sql).items():
            assert "count=0" in t or "\x00\x00\x00\x010C" in t, (view, mode, t[-200:])


def test_policy_subquery_filters_directly(pg, px):
    got = _direct(pg, "SET ROLE pgwitness; SELECT owner FROM r64.rls2")
    assert MCV in got and "R64-ABSENT" not in got, got[-300:]


def test_same_session_default_shows_directly(pg, px):
    try:
        for key, sqls in SAME_SESSION.items():
            assert SALT in planted.direct_block(pg, ["SET ROLE pgwitness", *sqls]), key
    finally:
        _reset_same_session(pg)


# -- EXPLAIN: leaks ---------------------------------------------------------------------


def _recover_suffix(c: RawClient, view: str, prefix: str) -> str:
    """The hidden value's last four characters by range estimates (round 63's bisection)."""
    with c:
        start = prefix

        def est(where: str) -> int:
            got = planted.text(c.query(f"EXPLAIN SELECT * FROM {view} WHERE {where}"))
            rows = _rows(got)
            return int(rows[0]) if rows and "SERROR" not in got else -1

        for _ in range(4):
            floor = est(f"secret >= '{prefix}~' AND secret < '{prefix}~~'")
            for ch in "0123456789abcdef":
                nxt = chr(ord(ch) + 1)
                if est(f"secret >= '{prefix}{ch}' AND secret < '{prefix}{nxt}'") > floor:
                    prefix += ch
                    break
            else:
                break
        return prefix[len(start) :]


@pytest.mark.parametrize("key", planted.cases({k: (False,) for k in VIEW_ESTIMATES}))
@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_leak_view_estimate(pg, px, key, mode):
    """(Strict xfails until session 30: ``StatementPolicy._estimated_over``.)"""
    view, marker, _ = VIEW_ESTIMATES[key]
    plans = {}
    for value in (marker, "R64-NOPE"):
        t = _outcomes(px, "views", f"EXPLAIN SELECT * FROM {view} WHERE secret = '{value}'")[mode]
        plans[value] = t.startswith("error 42501") or _rows(t)
    assert plans[marker] == plans["R64-NOPE"], ("LEAK", plans)


def test_leak_inlined_function_view_estimates_recover_the_value(pg, px):
    got = _recover_suffix(planted.session(px, px.tokens["views"]), "r64.fbv", MCV[:-4])
    assert got != MCV[-4:], ("LEAK", MCV[:-4] + got)


SAME_SESSION = {
    "separate": [
        "ALTER TABLE r64.tok2 ALTER COLUMN t SET DEFAULT r64x.token()",
        "EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO r64.tok2 (k) VALUES (1)",
    ],
    "one-query": [
        "ALTER TABLE r64.tok2 ALTER COLUMN t SET DEFAULT r64x.token(); "
        "EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO r64.tok2 (k) VALUES (1)",
    ],
    "new-table": [
        "CREATE TABLE r64.n (k int, t text DEFAULT r64x.token()); "
        "EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO r64.n (k) VALUES (1)",
    ],
    "new-domain": [
        "CREATE DOMAIN r64.d AS text DEFAULT r64x.token(); CREATE TABLE r64.nd (k int, d r64.d); "
        "EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO r64.nd (k) VALUES (1)",
    ],
}
STALE = (
    "LEAK: the EXPLAIN right after the session's own DDL giving a column (or a domain) "
    "a default calling r64x.token is decided on the stale snapshot (no default_functions "
    "entry yet) and prints the inlined body"
)


def _reset_same_session(pg):
    pg.psql("ALTER TABLE r64.tok2 ALTER COLUMN t DROP DEFAULT; DROP TABLE IF EXISTS r64.n, "
            "r64.nd; DROP DOMAIN IF EXISTS r64.d", db="app")  # fmt: skip


@pytest.mark.parametrize("key", list(SAME_SESSION))
def test_leak_explain_right_after_own_ddl_simple(pg, px, key):
    """(Strict xfails until session 30: refused in the DDL's message or transaction, and
    decided on a load after it: ``_explains_after_ddl``, ``_explained_code``.)"""
    try:
        got = planted.simple(px, SAME_SESSION[key], token=px.tokens["tok"])
        assert not any(SALT in g for g in got), ("LEAK", [g[-200:] for g in got])
    finally:
        _reset_same_session(pg)


def test_leak_explain_right_after_own_ddl_pipelined(pg, px):
    try:
        with planted.session(px, px.tokens["tok"]) as c:
            got = planted.text(planted.pipelined(c, SAME_SESSION["separate"]))
        assert SALT not in got, ("LEAK", got[-300:])
    finally:
        _reset_same_session(pg)


def test_leak_explain_right_after_own_ddl_extended(pg, px):
    try:
        got = asyncio.run(planted.extended(px, SAME_SESSION["separate"], px.tokens["tok"]))
        assert not any(SALT in g for g in got), ("LEAK", got)
    finally:
        _reset_same_session(pg)


def test_explain_after_the_reload_is_refused(pg, px):
    """The control: once the snapshot has reloaded the same EXPLAIN is refused (42501)."""
    try:
        with planted.session(px, px.tokens["tok"]) as c:
            first = planted.text(c.query(SAME_SESSION["separate"][0]))
            assert planted.wait_catalog_quiet(c, 10)
            got = planted.text(c.query(SAME_SESSION["separate"][1]))
        assert "SERROR" not in first and "C42501" in got and SALT not in got, got[-300:]
    finally:
        _reset_same_session(pg)


POLICY_ORACLE = (
    "LEAK: r64.rls2's row security policy reads r64x.acc (owner IN (SELECT "
    "secret FROM r64x.acc)); SELECT of r64.rls2 is allowed, so which rows come "
    "back tells which values r64x.acc holds (the grant writes r64.rls2: any value)"
)


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_leak_row_security_policy_reads_outside_the_grant(pg, px, mode):
    """(A strict xfail until session 30: ``StatementPolicy._policies_read``.)"""
    t = _outcomes(px, "base", "SELECT owner FROM r64.rls2")[mode]
    assert t.startswith("error 42501") and "row security policy" in t, t[-300:]
    assert not (MCV in t and "R64-ABSENT" not in t), ("LEAK", t[-200:])


PUBLICATION = (
    "LEAK (r62's family: an automatic dependency outside the grant): dropping "
    "r64.pubt removes it from publication r64pub (pg_publication_rel), an object "
    "outside every scope; RESTRICT does not protect it"
)


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_leak_drop_changes_a_publication(pg, px, mode):
    """(A strict xfail until session 30's ``Snapshot.published``; the publication is made
    outside the proxy, so the probe runs on a catalog loaded after it: ``planted.renew``.)"""
    pg.psql("SET ROLE pgwitness; CREATE TABLE r64.pubt (k int); "
            "CREATE PUBLICATION r64pub FOR TABLE r64.pubt; RESET ROLE;", db="app")  # fmt: skip
    planted.renew(px)
    try:
        sql = "DROP TABLE r64.pubt" + ("" if mode == "simple" else " CASCADE")
        got = (planted.simple(px, [sql])[0] if mode == "simple"
               else asyncio.run(planted.attempt(px, sql, mode)))  # fmt: skip
        members = pg.psql("SELECT count(*) FROM pg_publication_tables "
                          "WHERE pubname = 'r64pub'", db="app").strip()  # fmt: skip
        assert members == "1", ("LEAK", got[:200], members)
        assert "42501" in got and "publication r64pub" in got, got[:300]
    finally:
        pg.psql("DROP PUBLICATION IF EXISTS r64pub; DROP TABLE IF EXISTS r64.pubt", db="app")


# -- EXPLAIN: held ----------------------------------------------------------------------

REFUSED = {
    "merge-default": (
        "base",
        "EXPLAIN (VERBOSE, COSTS OFF) MERGE INTO r64.tok t USING "
        "(VALUES (1)) v(k) ON t.k = v.k WHEN NOT MATCHED THEN INSERT (k) "
        "VALUES (v.k)",
    ),
    "cte-insert-default": (
        "base",
        "EXPLAIN (VERBOSE, COSTS OFF) WITH i AS (INSERT INTO "
        "r64.tok (k) VALUES (1) RETURNING t) SELECT 1",
    ),
    "planted-default-with-execute": (
        "tok",
        "EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO r64.tok (k) VALUES (1)",
    ),
    "declare-barrier": (
        "views",
        f"EXPLAIN DECLARE c CURSOR FOR SELECT * FROM r64.bv WHERE secret = '{MCV}'",
    ),
    "barrier-view": ("views", f"EXPLAIN SELECT * FROM r64.bv WHERE secret = '{MCV}'"),
    "parent-without-only": ("base", f"EXPLAIN SELECT * FROM r64.par WHERE secret = '{KID}'"),
    "new-table-without-execute": (
        "base",
        "CREATE TABLE r64.n (k int, t text DEFAULT r64x.token())",
    ),
    "policy-unpinned": ("base", "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy"),
}


@pytest.mark.parametrize("key", list(REFUSED))
def test_refused(pg, px, key):
    grant, sql = REFUSED[key]
    try:
        for mode, t in _outcomes(px, grant, sql).items():
            assert t.startswith("error 42501"), (mode, t[-300:])
            assert SALT not in t and MCV not in t[60:] and POLICY not in t, (mode, t[-300:])
    finally:
        _reset_same_session(pg)


def test_merge_and_cte_bodies_show_directly(pg, px):
    assert SALT in _direct(pg, REFUSED["cte-insert-default"][1])
    assert MCV in _direct(pg, REFUSED["declare-barrier"][1])


def test_partition_rows_are_the_grants(pg, px):
    """Not a leak: a barrier view over r64.pp estimates on its partition r64x.pp2's rows,
    but the grant reads them through r64.pp (a partitioned table's rows are its
    partitions'): 400 rows of the marker."""
    sql = f"SELECT count(*) FROM r64.pp WHERE secret = '{PART}'"
    for mode, t in _outcomes(px, "base", sql).items():
        assert "400" in t, (mode, t[-200:])


def test_policy_literal_is_the_grants(pg, px):
    """Not a leak: EXPLAIN of r64.rls prints its policy's literal, which the grant reads
    pinned to its relation (pg_policy, pg_policies) anyway."""
    for sql in ("EXPLAIN SELECT * FROM r64.rls",
                "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy "
                "WHERE polrelid = 'r64.rls'::regclass"):  # fmt: skip
        for mode, t in _outcomes(px, "base", sql).items():
            assert POLICY in t, (sql, mode, t[-200:])


def test_over_refusal_explain_of_a_select(pg, px):
    """Observed over-refusal: a plain EXPLAIN of a SELECT of r64.tok runs no default, yet
    is refused for r64.tok's default (``_unnamed_code`` counts every relation named)."""
    for mode, t in _outcomes(px, "base", "EXPLAIN SELECT k FROM r64.tok").items():
        assert t.startswith("error 42501") and "a default of r64.tok" in t, (mode, t[-200:])


# ============================ CASCADE on a Parse ===================================


def _restore(pg, handle) -> None:
    pg.psql("DROP VIEW IF EXISTS r64x.lv; DROP TABLE IF EXISTS r64.lone", db="app")
    if (
        planted.state(pg, STATE) != handle.state
        or pg.psql("SELECT to_regclass('r64.t') IS NULL", db="app").strip() == "t"
    ):
        pg.psql(TEARDOWN + SETUP, db="app")
        planted.renew(handle)
    assert planted.state(pg, STATE) == handle.state


@pytest.fixture
def fresh(pg, px):
    _restore(pg, px)
    yield px
    _restore(pg, px)


def _lone(pg) -> None:
    pg.psql("SET ROLE pgwitness; CREATE TABLE r64.lone (k int); RESET ROLE;", db="app")


def _gone(pg, name: str) -> bool:
    return pg.psql(f"SELECT to_regclass('{name}') IS NULL", db="app").strip() == "t"


def _states(frames) -> list[str]:
    return [error_fields(f).get("C", "") for f in frames if f[:1] == b"E"]


def _describe(name: str) -> bytes:
    return frame(b"D", b"S" + name.encode() + b"\x00")


def _parse_bytes(name: str, sql: bytes, oids=()) -> bytes:
    body = name.encode() + b"\x00" + sql + b"\x00" + struct.pack("!h", len(oids))
    return frame(b"P", body + b"".join(struct.pack("!i", o) for o in oids))


CASCADES = {
    "truncate": "TRUNCATE r64.t CASCADE",
    "drop-table": "DROP TABLE r64.t CASCADE",
    "drop-column": "ALTER TABLE r64.t DROP COLUMN c CASCADE",
    "drop-constraint": "ALTER TABLE r64.t DROP CONSTRAINT t_pkey CASCADE",
}


@pytest.mark.parametrize("key", list(CASCADES))
def test_cascade_changes_r64x_directly(pg, px, key):
    assert planted.state_after(pg, CASCADES[key], STATE) != px.state


@pytest.mark.parametrize("key", list(CASCADES))
@pytest.mark.parametrize("mode", ["extended", "prepared"])
def test_parse_cascade_runs_as_restrict(pg, fresh, key, mode):
    got = asyncio.run(planted.attempt(fresh, CASCADES[key], mode))
    assert got.startswith("error") and "42501" not in got[:12], got
    assert planted.state(pg, STATE) == fresh.state


def _run(c, *steps) -> list[bytes]:
    return planted.run_frames(c, list(steps))


def _ok_frames(c) -> None:
    assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"


def test_parse_pipelined_two_cascades(pg, fresh):
    _lone(pg)
    with planted.session(fresh) as c:
        got = _run(
            c,
            (
                parse("a", "DROP TABLE r64.lone CASCADE"),
                parse("b", "DROP TABLE r64.t CASCADE"),
                m.bind_no_params(statement="a"),
                m.execute(),
                m.bind_no_params(statement="b"),
                m.execute(),
                m.SYNC,
            ),
        )
        _ok_frames(c)
    assert _states(got) == ["2BP01"], planted.result(got)
    # one Sync, one implicit transaction: b's error rolls a's drop back
    assert not _gone(pg, "r64.lone") and planted.state(pg, STATE) == fresh.state


def test_parse_describe_and_named_portal(pg, fresh):
    with planted.session(fresh) as c:
        got = _run(
            c,
            (parse("s", "DROP TABLE r64.t CASCADE"), _describe("s"), m.SYNC),
            (m.bind_no_params(portal="p1", statement="s"), m.execute("p1"), m.SYNC),
        )
        _ok_frames(c)
    assert _states(got) == ["2BP01"], planted.result(got)
    assert planted.state(pg, STATE) == fresh.state


def test_parse_name_reused_after_close(pg, fresh):
    _lone(pg)
    with planted.session(fresh) as c:
        got = _run(
            c,
            (parse("s", "DROP TABLE r64.lone CASCADE"), m.SYNC),
            (
                m.close_statement("s"),
                parse("s", "DROP TABLE r64.t CASCADE"),
                m.bind_no_params(statement="s"),
                m.execute(),
                m.SYNC,
            ),
        )
        _ok_frames(c)
    assert _states(got) == ["2BP01"], planted.result(got)
    assert not _gone(pg, "r64.lone") and planted.state(pg, STATE) == fresh.state


def test_parse_rebound_after_a_dependent_appears(pg, fresh):
    """Parsed while nothing depends on r64.lone; the owner then makes r64x.lv over it: the
    statement the server holds is RESTRICT, so its Execute is refused (2BP01)."""
    _lone(pg)
    lv = "SET ROLE pgwitness; CREATE VIEW r64x.lv AS SELECT k FROM r64.lone; RESET ROLE;"
    with RawClient.direct(pg) as d:  # the harm is real: the CASCADE statement drops r64x.lv
        direct = _run(
            d,
            (parse("s", "DROP TABLE r64.lone CASCADE"), m.SYNC),
            lambda _c: pg.psql(lv, db="app"),
            (m.bind_no_params(statement="s"), m.execute(), m.SYNC),
        )
    assert not _states(direct) and _gone(pg, "r64x.lv")
    _lone(pg)
    with planted.session(fresh) as c:
        got = _run(
            c,
            (parse("s", "DROP TABLE r64.lone CASCADE"), m.SYNC),
            lambda _c: pg.psql(lv, db="app"),
            (m.bind_no_params(statement="s"), m.execute(), m.SYNC),
        )
        _ok_frames(c)
    assert _states(got) == ["2BP01"], planted.result(got)
    assert not _gone(pg, "r64x.lv") and not _gone(pg, "r64.lone")


def test_parse_then_sql_execute(pg, fresh):
    with planted.session(fresh) as c:
        got = _run(c, (parse("s", "DROP TABLE r64.t CASCADE"), m.SYNC), (m.query("EXECUTE s"),))
        _ok_frames(c)
    assert _states(got) and planted.state(pg, STATE) == fresh.state


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE r64.lone, r64x.fk CASCADE",
        "DROP TABLE r64x.fk CASCADE",
        "DROP VIEW r64x.v CASCADE",
        "TRUNCATE r64.lone, r64x.fk CASCADE",
    ],
)
@pytest.mark.parametrize("mode", ["extended", "prepared"])
def test_parse_cascade_with_another_reason(pg, fresh, sql, mode):
    _lone(pg)
    got = asyncio.run(planted.attempt(fresh, sql, mode))
    assert got.startswith("error 42501"), got
    assert not _gone(pg, "r64.lone") and planted.state(pg, STATE) == fresh.state


def test_parse_parameter_types_kept(pg, fresh):
    _lone(pg)
    with planted.session(fresh) as c:
        got = _run(
            c,
            (
                parse("s", "DROP TABLE r64.lone CASCADE", (23, 25)),
                _describe("s"),
                bind("", "s", [b"1", b"x"]),
                m.execute(),
                m.SYNC,
            ),
        )
        _ok_frames(c)
    assert not _states(got), planted.result(got)
    desc = [f for f in got if f[:1] == b"t"]
    assert desc and desc[0][5:] == struct.pack("!hii", 2, 23, 25), desc
    assert _gone(pg, "r64.lone")


@pytest.mark.parametrize(
    "encoding,codec,word",
    [
        ("LATIN1", "latin-1", "ñé¡ÿ"),
        ("WIN1252", "cp1252", "€‚ƒ„"),
        ("EUC_JP", "euc_jp", "日本語"),
    ],
)
def test_parse_client_encoding(pg, fresh, encoding, codec, word):
    _lone(pg)
    with planted.session(fresh) as c:
        assert not _states(c.query(f"SET client_encoding TO '{encoding}'"))
        got = _run(
            c,
            (
                _parse_bytes("s", f"DROP TABLE r64.lone /*{word}*/ CASCADE".encode(codec)),
                m.bind_no_params(statement="s"),
                m.execute(),
                m.SYNC,
            ),
            (
                _parse_bytes("", f"DROP TABLE r64.t /*{word}*/ CASCADE".encode(codec)),
                m.bind_no_params(),
                m.execute(),
                m.SYNC,
            ),
            (
                _parse_bytes("", f"SELECT '{word}' AS cascade_".encode(codec)),
                m.bind_no_params(),
                m.execute(),
                m.SYNC,
            ),
        )
        _ok_frames(c)
    assert _states(got) == ["2BP01"], planted.result(got)
    assert word.encode(codec) in b"".join(f for f in got if f[:1] == b"D")
    assert _gone(pg, "r64.lone") and planted.state(pg, STATE) == fresh.state


def test_parse_euc_jp_untranslatable(pg, fresh):
    _lone(pg)
    tilde = b"\x8f\xa2\xb7"
    with planted.session(fresh) as c:
        assert not _states(c.query("SET client_encoding TO 'EUC_JP'"))
        plain = _run(
            c,
            (
                _parse_bytes("", b"SELECT 'ab' " + tilde + b" 'b'"),
                m.bind_no_params(),
                m.execute(),
                m.SYNC,
            ),
        )
        again = _run(
            c,
            (
                _parse_bytes("", b"DROP TABLE r64.lone /*" + tilde + b"*/ CASCADE"),
                m.bind_no_params(),
                m.execute(),
                m.SYNC,
            ),
        )
        _ok_frames(c)
    assert _states(plain) == ["22P05"] and _states(again) == ["42501"], (plain, again)
    assert not _gone(pg, "r64.lone")


def test_parse_longer_than_the_off_loop_threshold(pg, fresh):
    _lone(pg)
    pad = "x" * 70_000
    with planted.session(fresh) as c:
        got = _run(
            c,
            (
                parse("", f"DROP TABLE r64.t /* {pad} */ CASCADE"),
                m.bind_no_params(),
                m.execute(),
                m.SYNC,
            ),
            (
                parse("", f"DROP TABLE r64.lone /* {pad} */ CASCADE"),
                m.bind_no_params(),
                m.execute(),
                m.SYNC,
            ),
        )
        _ok_frames(c)
    assert _states(got) == ["2BP01"], planted.result(got)[:300]
    assert _gone(pg, "r64.lone") and planted.state(pg, STATE) == fresh.state


def test_parse_in_a_block_that_fails(pg, fresh):
    _lone(pg)
    with planted.session(fresh) as c:
        got = _run(
            c,
            (m.query("BEGIN"),),
            (
                parse("", "DROP TABLE r64.lone CASCADE"),
                m.bind_no_params(),
                m.execute(),
                parse("", "SELECT 1/0"),
                m.bind_no_params(),
                m.execute(),
                m.SYNC,
            ),
            (m.query("ROLLBACK"),),
        )
        _ok_frames(c)
    assert _states(got) == ["22012"], planted.result(got)
    assert not _gone(pg, "r64.lone")


# -- session 30: what DDL in the EXPLAIN's transaction may attach --------------------------


@pytest.mark.parametrize(
    "ddl, refused",
    [
        # asyncpg's test_prepare_14_explain (the drivers' differential): a plain table
        ("CREATE TABLE r64.mytab (a int)", False),
        ("CREATE TABLE r64.mytab (a int, b text DEFAULT now()::text)", False),
        # a default calling a user-written function, copied defaults, a parent's
        ("CREATE TABLE r64.mytab (a int, t text DEFAULT r64x.token())", True),
        ("CREATE TABLE r64.mytab (LIKE r64.tok INCLUDING DEFAULTS)", True),
        ("CREATE TABLE r64.mytab (a int) INHERITS (r64.tok)", True),
        ("CREATE VIEW r64.mytab AS SELECT 1 AS a", True),
    ],
)
def test_explain_in_the_transaction_of_ddl(pg, px, ddl, refused):
    """In one transaction, DDL then EXPLAINs (one of an INSERT into what it made): refused
    only where the DDL may have attached code a plan prints (``_attaches_code``); the
    server judges the rest. The body never shows."""
    sqls = ["BEGIN", ddl, "EXPLAIN SELECT 1",
            "EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO r64.mytab (a) VALUES (1)", "ROLLBACK"]  # fmt: skip
    try:
        with planted.session(px, px.tokens["tok"]) as c:
            got = [planted.text(c.query(sql)) for sql in sqls]
        assert "SERROR" not in got[1], got[1][-300:]
        assert ("C42501" in got[2]) == refused, got[2][-300:]  # (what the DDL did decides)
        assert SALT not in got[3], got[3][-300:]
        assert ("C42501" in got[3]) == refused or "C25P02" in got[3], got[3][-300:]
    finally:
        pg.psql("DROP VIEW IF EXISTS r64.mytab; DROP TABLE IF EXISTS r64.mytab", db="app")
