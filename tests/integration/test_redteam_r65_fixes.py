"""Red-team round 65 (attacks on 83c2f09: ``_estimated_over``, ``_explains_after_ddl`` and
the DDL window in ``_explained_code``, ``_policies_read`` / POLICY_READS_SQL, the
publication check in ``_beyond_its_objects`` / PUBLISHED_SQL), time-boxed; the server the
judge.

Grants (agent ``r65-bot``): ``base`` = ``read:r65.* write:r65.* ddl:r65.*``; ``views`` =
``read:r65.* read:pg_catalog.pg_views``; ``tok`` = ``base`` + ``execute:r65x.token``;
``vddl`` = ``base`` + ``read:pg_catalog.pg_views``. None has ``read:pg_catalog.pg_proc``.
Planted (owner ``pgwitness``, before the proxy starts): ``r65x.token()`` (SQL, body holds
``SALT``); ``r65x.acc`` (1000 rows ANALYZEd, 400 of tenant 2 holding ``MCV``); the barrier
view ``r65.bv`` (tenant 1 of ``r65x.acc``) and ``r65.myv`` over it; ``r65.tokd`` (default
``r65x.token()``), ``r65.tok2`` (none); ``r65x.accf()`` (inlinable SRF over ``r65x.acc``),
``r65x.accg()`` (over ``r65x.accf()``), barrier view ``r65.gbv`` over ``r65x.accg()``;
FORCE row security tables: ``r65.rlsp`` (``USING (EXISTS (SELECT 1 FROM pg_catalog.pg_proc
WHERE prosrc LIKE '%' || owner || '%'))``, rows ``SALT``, ``R65-ABSENT``), ``r65.rlsq``
(``USING (strpos(query_to_xml('SELECT secret FROM r65x.acc', ...)::text, owner) > 0)``),
``r65.rls2`` (``owner IN (SELECT secret FROM r65x.acc)``, rows ``MCV``, ``R65-ABSENT``),
``r65.rls3`` (``owner IN (SELECT secret FROM r65.bv)``), ``r65.wc`` (SELECT ``USING
(true)``, INSERT ``WITH CHECK (owner IN (SELECT secret FROM r65x.acc))``), ``r65.rlsr``
(the ``r65x.acc`` policy ``TO md5user`` only, ``TO PUBLIC USING (true)``); views ``r65.fv``
over ``r65x.rlsf()`` (inlinable SQL, ``SELECT owner FROM r65.rls2``) and ``r65.fv2`` over
``r65x.rlspl()`` (PL/pgSQL, the same); publications ``r65pm`` (``r65.mp1a``, a
sub-partition of ``r65.mp`` two levels down), ``r65pc`` (``r65.pc (k, c)``: a column
list), ``r65pf`` (``r65.pf WHERE (d > 0)``: a row filter). Each probe's harm is shown
first directly as the upstream login.

Leaks (strict xfails asserting the safe outcome; simple Query, extended unnamed, named
prepared); fixed the same session (session 30) but for the PL/pgSQL function of 3, a
documented residue (what granted code reads is its own): 1-3 each applicable policy's
expressions are decided as if the statement ran ``SELECT (expression) FROM relation``
(POLICY_EXPRS_SQL, ``Snapshot.policy_exprs``, ``StatementPolicy._policy_decision``), for
every relation a statement names or reaches through views, inheritance and inlined SQL
functions (``_reach``), and only where the policy applies to the login (its roles, FORCE,
BYPASSRLS; the over-refusal of ``r65.rlsr`` noted below is gone with it); 4 EXPLAIN of a
statement that may name a temporary relation is refused.

1. **A policy reading a pinned catalog.** ``SELECT * FROM r65.rlsp`` (``base``) returns
   ``SALT``'s row and not ``R65-ABSENT``: PostgreSQL records no dependency on
   ``pg_catalog.pg_proc`` (pinned), so POLICY_READS_SQL has no row for it. The grant
   drives it: ``INSERT INTO r65.rlsp VALUES ('R65-SALT-<p><c>')`` succeeds iff a function
   body holds it (else the server's "new row violates row-level security policy"); at
   most 64 INSERTs through the proxy (simple Query) recover ``5c10``.
2. **A policy reading through dynamic SQL.** ``SELECT * FROM r65.rlsq`` (``base``) returns
   ``MCV``'s row only: ``query_to_xml``'s SQL text reads ``r65x.acc`` with no dependency.
3. **A view whose function reads a policy's table.** ``SELECT * FROM r65.fv`` (inlinable
   SQL function) and ``SELECT * FROM r65.fv2`` (PL/pgSQL) (``base``) return ``MCV`` and
   not ``R65-ABSENT``: ``r65.rls2``'s policy (reading ``r65x.acc``) filters; ``_policies_read``
   follows ``view_bases`` (empty: the rule depends on the function), not ``view_calls``
   or what a called function reads. (``TABLE``, ``COPY r65.rls2``, ``COPY (SELECT ...)``
   of ``r65.rls2`` itself: refused.)
4. **Temporary objects** (the catalog's queries leave out or mis-key ``pg_temp``): in one
   session, the object made, ``wait_catalog_quiet``, then the probe:
   a. ``CREATE TEMP TABLE tt (k int, t text DEFAULT r65x.token())`` (``tok``), then
      ``EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO pg_temp.tt (k) VALUES (1)``: ``Output: 1,
      md5(('R65-SALT-5c10'::text || ...))``. The same with ``r65.n`` (the control) is
      refused ("a default of r65.n").
   b. ``CREATE TEMP TABLE tl (LIKE r65.tokd INCLUDING DEFAULTS)`` (``base``: no execute
      scope at all; naming the function in a temp default is refused), then ``EXPLAIN
      (VERBOSE, COSTS OFF) INSERT INTO pg_temp.tl (k) VALUES (1)``: the body.
   c. ``CREATE TEMP VIEW tv AS SELECT secret FROM r65.bv`` (``vddl``), then ``EXPLAIN
      SELECT * FROM pg_temp.tv WHERE secret = 'R65-MCV-5c11'``: ``Seq Scan on acc ...
      rows=200`` (``rows=1`` for ``'R65-NOPE'``; ``count(*)`` is 0): VIEWS_SQL leaves
      ``pg_temp`` out, so ``view_bases`` knows no ``pg_temp.tv``. The same view made as
      ``r65.myv`` is refused (the control).

Held (plain tests): ``EXPLAIN`` of the barrier view over an inlinable function over an
inlinable function (``r65.gbv``: refused, the inner query "which the proxy cannot read");
``EXPLAIN INSERT ... SELECT`` from ``r65.bv``, ``EXPLAIN ... WHERE EXISTS (... r65.bv
...)``, ``r65.myv`` (a view over the barrier view): refused; INSERT into ``r65.wc`` (the
WITH CHECK oracle: directly ``MCV`` inserts, ``R65-ABSENT`` is refused) refused;
``CREATE TEMP VIEW tv3 AS SELECT owner FROM r65.rls2`` (or its SELECT) refused; ``DROP TABLE r65.mp`` (the
publication lists a sub-partition: directly ``r65pm`` is emptied) refused; ``ALTER TABLE
r65.pc DROP COLUMN c CASCADE`` / ``r65.pf DROP COLUMN d CASCADE`` (directly "drop cascades
to publication of table ...") end in 2BP01, the publications unchanged; EXPLAIN after the
DDL of another session of the same grant (also inside the other's REPEATABLE READ block),
after ``SAVEPOINT``/DDL/``RELEASE``, after ``ROLLBACK TO`` then the DDL again and
``COMMIT``: refused (42501). Not a leak: ``r65.rls3``'s policy reads the barrier view
``r65.bv``; the subquery is hashed, no condition reaches the scan of ``r65x.acc`` (the
same estimates for ``MCV`` as for a value no row holds).

Over-refusals observed: ``SELECT * FROM r65.rlsr`` (the policy reading ``r65x.acc`` is
``TO md5user``; POLICY_READS_SQL ignored ``polroles``: read since the fix) and ``SELECT * FROM r65.wc`` (that
policy is ``FOR INSERT``; ``polcmd`` ignored) are refused; ``INSERT INTO tt`` of the
session's own temporary table is refused as ``public.tt`` (the server resolves ``pg_temp``
first). (Not from this round: ``ALTER DOMAIN ... SET DEFAULT`` and ``CREATE FUNCTION pg_temp...``
are deny.unknown.)
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.support import planted
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(300)

AGENT = "r65-bot"
SCOPES = "read:r65.* write:r65.* ddl:r65.*"
GRANTS = {
    "views": "read:r65.* read:pg_catalog.pg_views",
    "tok": "read:r65.* write:r65.* ddl:r65.* execute:r65x.token",
    "vddl": "read:r65.* write:r65.* ddl:r65.* read:pg_catalog.pg_views",
}
SALT = "R65-SALT-5c10"  # r65x.token()'s body only
MCV = "R65-MCV-5c11"  # r65x.acc: tenant 2's value
ABSENT = "R65-ABSENT"  # in no hidden relation, no function body
MODES = ["simple", "extended", "prepared"]

SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r65; CREATE SCHEMA r65x;
CREATE FUNCTION r65x.token() RETURNS text LANGUAGE sql VOLATILE
  AS $$ SELECT md5('{SALT}' || clock_timestamp()::text) $$;
CREATE TABLE r65.tok2 (k int, t text);
CREATE TABLE r65.tokd (k int, t text DEFAULT r65x.token());
CREATE TABLE r65x.acc (tenant int, secret text);
INSERT INTO r65x.acc SELECT 1, 'mine-' || (g % 50) FROM generate_series(1, 500) g;
INSERT INTO r65x.acc SELECT 2, '{MCV}' FROM generate_series(1, 400) g;
INSERT INTO r65x.acc SELECT 2, 'other-' || g FROM generate_series(1, 100) g;
ANALYZE r65x.acc;
CREATE FUNCTION r65x.accf() RETURNS TABLE (tenant int, secret text) LANGUAGE sql STABLE
  AS $$ SELECT tenant, secret FROM r65x.acc $$;
CREATE FUNCTION r65x.accg() RETURNS TABLE (tenant int, secret text) LANGUAGE sql STABLE
  AS $$ SELECT tenant, secret FROM r65x.accf() $$;
CREATE VIEW r65.gbv WITH (security_barrier) AS SELECT secret FROM r65x.accg() WHERE tenant = 1;
CREATE VIEW r65.bv WITH (security_barrier) AS SELECT secret FROM r65x.acc WHERE tenant = 1;
CREATE VIEW r65.myv AS SELECT secret FROM r65.bv;
CREATE TABLE r65.rlsp (owner text); INSERT INTO r65.rlsp VALUES ('{SALT}'), ('R65-ABSENT');
CREATE POLICY p ON r65.rlsp USING (EXISTS (SELECT 1 FROM pg_catalog.pg_proc
  WHERE prosrc LIKE '%' || owner || '%'));
ALTER TABLE r65.rlsp ENABLE ROW LEVEL SECURITY; ALTER TABLE r65.rlsp FORCE ROW LEVEL SECURITY;
CREATE TABLE r65.rlsq (owner text); INSERT INTO r65.rlsq VALUES ('{MCV}'), ('R65-ABSENT');
CREATE POLICY p ON r65.rlsq USING (strpos(query_to_xml('SELECT secret FROM r65x.acc', false,
  false, '')::text, owner) > 0);
ALTER TABLE r65.rlsq ENABLE ROW LEVEL SECURITY; ALTER TABLE r65.rlsq FORCE ROW LEVEL SECURITY;
CREATE TABLE r65.rls2 (owner text); INSERT INTO r65.rls2 VALUES ('{MCV}'), ('R65-ABSENT');
CREATE POLICY p ON r65.rls2 USING (owner IN (SELECT secret FROM r65x.acc));
ALTER TABLE r65.rls2 ENABLE ROW LEVEL SECURITY; ALTER TABLE r65.rls2 FORCE ROW LEVEL SECURITY;
CREATE FUNCTION r65x.rlsf() RETURNS SETOF text LANGUAGE sql STABLE
  AS $$ SELECT owner FROM r65.rls2 $$;
CREATE VIEW r65.fv AS SELECT o FROM r65x.rlsf() o;
CREATE FUNCTION r65x.rlspl() RETURNS SETOF text LANGUAGE plpgsql STABLE
  AS $$ BEGIN RETURN QUERY SELECT owner FROM r65.rls2; END $$;
CREATE VIEW r65.fv2 AS SELECT o FROM r65x.rlspl() o;
CREATE TABLE r65.rls3 (owner text); INSERT INTO r65.rls3 VALUES ('mine-1');
CREATE POLICY p ON r65.rls3 USING (owner IN (SELECT secret FROM r65.bv));
ALTER TABLE r65.rls3 ENABLE ROW LEVEL SECURITY; ALTER TABLE r65.rls3 FORCE ROW LEVEL SECURITY;
CREATE TABLE r65.wc (owner text);
CREATE POLICY s ON r65.wc FOR SELECT USING (true);
CREATE POLICY i ON r65.wc FOR INSERT WITH CHECK (owner IN (SELECT secret FROM r65x.acc));
ALTER TABLE r65.wc ENABLE ROW LEVEL SECURITY; ALTER TABLE r65.wc FORCE ROW LEVEL SECURITY;
CREATE TABLE r65.rlsr (owner text); INSERT INTO r65.rlsr VALUES ('x');
CREATE POLICY p ON r65.rlsr TO md5user USING (owner IN (SELECT secret FROM r65x.acc));
CREATE POLICY q ON r65.rlsr TO PUBLIC USING (true);
ALTER TABLE r65.rlsr ENABLE ROW LEVEL SECURITY; ALTER TABLE r65.rlsr FORCE ROW LEVEL SECURITY;
CREATE TABLE r65.mp (k int) PARTITION BY RANGE (k);
CREATE TABLE r65.mp1 PARTITION OF r65.mp FOR VALUES FROM (0) TO (100) PARTITION BY RANGE (k);
CREATE TABLE r65.mp1a PARTITION OF r65.mp1 FOR VALUES FROM (0) TO (50);
CREATE PUBLICATION r65pm FOR TABLE r65.mp1a;
CREATE TABLE r65.pc (k int PRIMARY KEY, c int, d int);
CREATE PUBLICATION r65pc FOR TABLE r65.pc (k, c);
CREATE TABLE r65.pf (k int PRIMARY KEY, c int, d int);
CREATE PUBLICATION r65pf FOR TABLE r65.pf WHERE (d > 0);
RESET ROLE;
"""
TEARDOWN = (
    "DROP PUBLICATION IF EXISTS r65pm, r65pc, r65pf; DROP SCHEMA IF EXISTS r65, r65x CASCADE;"
)


PUBS = """SELECT 'pubs=' || coalesce(string_agg(pubname || ':' || schemaname || '.' || tablename
  || ':' || coalesce(attnames::text, '') || ':' || coalesce(rowfilter, ''), ' | '
  ORDER BY pubname, tablename), '') FROM pg_publication_tables WHERE pubname LIKE 'r65p%'"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r65", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        h.pubs = planted.state(pg, PUBS)
        assert "r65pm:r65.mp1a" in h.pubs and "r65pc:r65.pc:{k,c}" in h.pubs, h.pubs
        assert "r65pf:r65.pf" in h.pubs and "(d > 0)" in h.pubs, h.pubs
        yield h


def _rows(text: str) -> list[str]:
    return re.findall(r"rows=(\d+)", text)


def _direct(pg, *sqls: str) -> str:
    return planted.direct_block(pg, ["SET ROLE pgwitness", *sqls])


def _reset(pg) -> None:
    pg.psql("ALTER TABLE r65.tok2 ALTER COLUMN t DROP DEFAULT; DROP TABLE IF EXISTS r65.n; "
            f"DELETE FROM r65.rlsp WHERE owner NOT IN ('{SALT}', '{ABSENT}')", db="app")  # fmt: skip


# -- leaks: row security policies reading what POLICY_READS_SQL does not see -------------

# relation (or view) the grant reads, the marker its rows show, the leak's reason
ORACLES = {
    "pinned-catalog": (
        "r65.rlsp",
        SALT,
        False,  # fixed in session 30 (StatementPolicy._policies_read: the expression decided)
    ),
    "dynamic-sql": (
        "r65.rlsq",
        MCV,
        False,  # fixed in session 30 (StatementPolicy._policies_read: the expression decided)
    ),
    "view-inlined-function": (
        "r65.fv",
        MCV,
        False,  # fixed in session 30 (StatementPolicy._policies_read: the expression decided)
    ),
    "view-plpgsql-function": (
        "r65.fv2",
        MCV,
        "LEAK (residue, documented: what granted code reads is its own; a PL/pgSQL body is "
        "not followed): r65.fv2 calls r65x.rlspl() reading r65.rls2, whose policy reads "
        "r65x.acc",
    ),
}


@pytest.mark.parametrize("key", list(ORACLES))
def test_oracle_shows_directly(pg, px, key):
    rel, marker, _ = ORACLES[key]
    got = _direct(pg, f"SELECT * FROM {rel}")
    assert marker in got and ABSENT not in got, got[-300:]


@pytest.mark.parametrize("key", planted.cases(ORACLES))
@pytest.mark.parametrize("mode", MODES)
def test_leak_policy_oracle(pg, px, key, mode):
    rel, marker, _ = ORACLES[key]
    t = planted.outcomes(px, f"SELECT * FROM {rel}")[mode]
    assert not (marker in t and ABSENT not in t), ("LEAK", t[-200:])
    assert t.startswith("error 42501"), t[-300:]


def _inserted(c: RawClient, value: str) -> bool:
    got = planted.text(c.query(f"INSERT INTO r65.rlsp VALUES ('{value}')"))
    assert "INSERT 0 1" in got or "new row violates row-level security" in got, got[-300:]
    return "INSERT 0 1" in got


def _salt_suffix(c: RawClient) -> str:
    """r65x.token()'s salt's last four characters by INSERTs the policy lets through (its
    USING is the WITH CHECK: a value no body holds is refused by the server)."""
    with c:
        prefix = SALT[:-4]
        for _ in range(4):
            prefix += next((ch for ch in "0123456789abcdef" if _inserted(c, prefix + ch)), "?")
        return prefix[-4:]


def test_pinned_catalog_recovers_the_salt_directly(pg, px):
    try:
        c = RawClient.direct(pg)
        with c:
            c.query("SET ROLE pgwitness")
            assert _salt_suffix(c) == SALT[-4:]
    finally:
        _reset(pg)


def test_leak_pinned_catalog_recovers_the_salt(pg, px):
    """64 INSERTs at most through the proxy (simple Query, one session) read the salt of
    r65x.token()'s body (``SELECT prosrc`` is refused to this grant). (A strict xfail until
    session 30: the INSERT is refused, its policy's expression decided as the grant's.)"""
    try:
        with planted.session(px) as c:
            got = planted.text(c.query(f"INSERT INTO r65.rlsp VALUES ('{SALT}')"))
        assert "C42501" in got and "row security policy" in got, got[-300:]
        assert "INSERT 0 1" not in got and "new row violates" not in got, got[-300:]
    finally:
        _reset(pg)


# -- leaks: temporary objects (the catalog's queries and names miss pg_temp) --------------

TEMP_EXPLAIN = "EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO pg_temp.{} (k) VALUES (1)"
# grant, the temporary object made, the probes after the load, the leak's reason
TEMPS = {
    "default-with-execute": (
        "tok",
        "CREATE TEMP TABLE tt (k int, t text DEFAULT r65x.token())",
        [TEMP_EXPLAIN.format("tt")],
        False,  # fixed in session 30 (EXPLAIN of what may name a temporary relation)
    ),
    "like-including-defaults": (
        "base",
        "CREATE TEMP TABLE tl (LIKE r65.tokd INCLUDING DEFAULTS)",
        [TEMP_EXPLAIN.format("tl")],
        False,  # fixed in session 30 (EXPLAIN of what may name a temporary relation)
    ),
    "view-estimate": (
        "vddl",
        "CREATE TEMP VIEW tv AS SELECT secret FROM r65.bv",
        [f"EXPLAIN SELECT * FROM pg_temp.tv WHERE secret = '{v}'" for v in (MCV, "R65-NOPE")],
        False,  # fixed in session 30 (EXPLAIN of what may name a temporary relation)
    ),
    "view-policy": (
        "vddl",
        "CREATE TEMP VIEW tv3 AS SELECT owner FROM r65.rls2",
        ["SELECT * FROM pg_temp.tv3"],
        False,
    ),
}


def _temp_leaked(key: str, got: list[str]) -> bool:
    if key == "view-estimate":  # tenant 1's values are 10 rows each: 200 is tenant 2's
        rows = _rows(got[0])
        return bool(rows) and int(rows[0]) >= 100
    if key == "view-policy":
        return MCV in got[0] and ABSENT not in got[0]
    return SALT in got[0]


@pytest.mark.parametrize("key", list(TEMPS))
def test_temp_shows_directly(pg, px, key):
    _grant, made, probes, _ = TEMPS[key]
    with RawClient.direct(pg) as c:
        c.query("SET ROLE pgwitness")
        c.query(made)
        got = [planted.text(c.query(q)) for q in probes]
    assert _temp_leaked(key, got), got


@pytest.mark.parametrize("key", planted.cases(TEMPS))
@pytest.mark.parametrize("mode", MODES)
def test_leak_temp_objects(pg, px, key, mode):
    grant, made, probes, _ = TEMPS[key]
    with planted.session(px, px.tokens[grant]) as c:
        first = planted.text(c.query(made))
        assert planted.wait_catalog_quiet(c, 10)
        got = [planted.text(planted.RAW_MODES[mode](c, q)) for q in probes]
    assert not _temp_leaked(key, got), ("LEAK", [g[-250:] for g in got])
    assert "SERROR" in first or all("C42501" in g for g in got), (first[-200:], got)


def test_permanent_default_refused_after_the_load(pg, px):
    """The control: the same with a table of r65 (r64's ``new-table``)."""
    try:
        with planted.session(px, px.tokens["tok"]) as c:
            made = planted.text(c.query("CREATE TABLE r65.n (k int, t text DEFAULT r65x.token())"))
            assert "CREATE TABLE" in made and planted.wait_catalog_quiet(c, 10), made[-200:]
            got = planted.text(
                c.query("EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO r65.n (k) VALUES (1)")
            )
        assert "C42501" in got and "a default of r65.n" in got and SALT not in got, got[-300:]
    finally:
        _reset(pg)


# -- held ------------------------------------------------------------------------------

REFUSED = {
    "view-over-barrier-after-load": (  # the control of ``view-estimate``: planted as r65
        "vddl",
        f"EXPLAIN SELECT * FROM r65.myv WHERE secret = '{MCV}'",
    ),
    "insert-select-barrier": (
        "vddl",
        f"EXPLAIN INSERT INTO r65.tok2 (t) SELECT secret FROM r65.bv WHERE secret = '{MCV}'",
    ),
    "exists-barrier": (
        "vddl",
        f"EXPLAIN SELECT 1 WHERE EXISTS (SELECT 1 FROM r65.bv WHERE secret = '{MCV}')",
    ),
    # inlined function over an inlined function (the inner one's relations unread)
    "nested-inlined-estimate": ("views", f"EXPLAIN SELECT * FROM r65.gbv WHERE secret = '{MCV}'"),
    "with-check-insert": ("base", f"INSERT INTO r65.wc VALUES ('{MCV}')"),
    "copy": ("base", "COPY r65.rls2 TO STDOUT"),
    "copy-query": ("base", "COPY (SELECT * FROM r65.rls2) TO STDOUT"),
    "table": ("base", "TABLE r65.rls2"),
    "publication-sub-partition": ("base", "DROP TABLE r65.mp"),
}


def test_refused_harm_directly(pg, px):
    est = [_rows(_direct(pg, f"EXPLAIN SELECT * FROM r65.gbv WHERE secret = '{v}'"))[0]
           for v in (MCV, "R65-NOPE")]  # fmt: skip
    assert int(est[0]) > 10 * int(est[1]), est
    assert "INSERT 0 1" in _direct(pg, REFUSED["with-check-insert"][1])
    assert "new row violates" in _direct(pg, f"INSERT INTO r65.wc VALUES ('{ABSENT}')")
    assert "pubs=r65pc" in _direct(pg, "DROP TABLE r65.mp", PUBS)  # r65pm's member gone


@pytest.mark.parametrize("key", list(REFUSED))
def test_refused(pg, px, key):
    grant, sql = REFUSED[key]
    for mode, t in planted.outcomes(px, sql, px.tokens[grant]).items():
        assert t.startswith("error 42501"), (mode, t[-300:])
        assert MCV not in t[60:] and not _rows(t), (mode, t[-300:])
    assert planted.state(pg, PUBS) == px.pubs


DROP_COLUMNS = {"column-list": "ALTER TABLE r65.pc DROP COLUMN c CASCADE",
                "row-filter": "ALTER TABLE r65.pf DROP COLUMN d CASCADE"}  # fmt: skip


@pytest.mark.parametrize("key", list(DROP_COLUMNS))
def test_drop_column_cascade_changes_a_publication_directly(pg, px, key):
    got = _direct(pg, DROP_COLUMNS[key], PUBS)
    assert "drop cascades to publication of table" in got and "ALTER TABLE" in got, got[-300:]


@pytest.mark.parametrize("key", list(DROP_COLUMNS))
@pytest.mark.parametrize("mode", MODES)
def test_drop_column_cascade_keeps_the_publication(pg, px, key, mode):
    sql = DROP_COLUMNS[key]
    got = (planted.simple(px, [sql])[0] if mode == "simple"
           else asyncio.run(planted.attempt(px, sql, mode)))  # fmt: skip
    assert got.startswith("error"), got[:300]
    assert planted.state(pg, PUBS) == px.pubs


def test_policy_through_a_barrier_view_estimates_alike(pg, px):
    """Not a leak: r65.rls3's policy reads the barrier view r65.bv (over r65x.acc); the
    subquery is hashed, no condition of the statement reaches the scan of r65x.acc: the
    same estimates for the marker as for a value no row holds (directly and proxied)."""
    plans = {}
    for v in (MCV, "R65-NOPE"):
        sql = f"EXPLAIN SELECT * FROM r65.rls3 WHERE owner = '{v}'"
        plans[v] = [_rows(_direct(pg, sql))] + [
            _rows(t) for t in planted.outcomes(px, sql, px.tokens["views"]).values()
        ]
    assert plans[MCV] == plans["R65-NOPE"] and plans[MCV][0], plans


def _explain_tok2(c) -> str:
    return planted.text(c.query("EXPLAIN (VERBOSE, COSTS OFF) INSERT INTO r65.tok2 (k) VALUES (1)"))


@pytest.mark.parametrize("block", [False, True])
def test_explain_after_another_sessions_ddl(pg, px, block):
    try:
        with planted.session(px, px.tokens["tok"]) as a, planted.session(px, px.tokens["tok"]) as b:
            for sql in (["BEGIN ISOLATION LEVEL REPEATABLE READ"] if block else []) + ["SELECT 1"]:
                b.query(sql)
            ddl = planted.text(
                a.query("ALTER TABLE r65.tok2 ALTER COLUMN t SET DEFAULT r65x.token()")
            )
            got = _explain_tok2(b)
            if block:
                b.query("ROLLBACK")
        assert "ALTER TABLE" in ddl and "C42501" in got and SALT not in got, got[-300:]
    finally:
        _reset(pg)


SAVEPOINTS = {
    "released": ["BEGIN", "SAVEPOINT s", "ALTER TABLE r65.tok2 ALTER COLUMN t SET DEFAULT "
                 "r65x.token()", "RELEASE SAVEPOINT s"],
    "rolled-back-then-again": ["BEGIN", "SAVEPOINT s", "ALTER TABLE r65.tok2 ALTER COLUMN t "
                               "SET DEFAULT r65x.token()", "ROLLBACK TO SAVEPOINT s",
                               "ALTER TABLE r65.tok2 ALTER COLUMN t SET DEFAULT r65x.token()",
                               "COMMIT"],
}  # fmt: skip


@pytest.mark.parametrize("key", list(SAVEPOINTS))
def test_explain_after_savepoints(pg, px, key):
    try:
        with planted.session(px, px.tokens["tok"]) as c:
            for sql in SAVEPOINTS[key]:
                assert "SERROR" not in planted.text(c.query(sql)), sql
            got = _explain_tok2(c)
            c.query("ROLLBACK")
        assert "C42501" in got and SALT not in got, got[-300:]
    finally:
        _reset(pg)


# -- over-refusals (observed) ----------------------------------------------------------


def test_over_refusal_policy_of_another_role(pg, px):
    """r65.rlsr's policy reading r65x.acc applies TO md5user only (the proxy's login gets
    ``USING (true)``): refused when found (POLICY_READS_SQL ignored polroles); read since
    session 30 (a policy counts where it applies to the login)."""
    assert "D\x00" in _direct(pg, "SELECT * FROM r65.rlsr")
    for mode, t in planted.outcomes(px, "SELECT * FROM r65.rlsr").items():
        assert not t.startswith("error") and "x" in t, (mode, t[-200:])


def test_over_refusal_insert_policy_on_select(pg, px):
    """r65.wc's policy reading r65x.acc is FOR INSERT (WITH CHECK): a SELECT runs only
    ``USING (true)``, refused all the same (POLICY_READS_SQL ignores polcmd)."""
    for mode, t in planted.outcomes(px, "SELECT * FROM r65.wc").items():
        assert t.startswith("error 42501") and "row security policy" in t, (mode, t[-200:])


def test_over_refusal_unqualified_temp_table(pg, px):
    """``INSERT INTO tt`` of the session's own temporary table: the server resolves ``tt``
    in pg_temp first; the proxy reads it as public.tt and refuses it."""
    with planted.session(px, px.tokens["tok"]) as c:
        assert "CREATE TABLE" in planted.text(c.query(TEMPS["default-with-execute"][1]))
        got = planted.text(c.query("INSERT INTO tt (k) VALUES (1)"))
    assert "C42501" in got and "public.tt" in got, got[-300:]
