"""Red-team round 69 (a fresh sweep over the newest transparency features: ``RESET
search_path`` allowed, c59c750; a Parse refused for CASCADE alone re-sent as RESTRICT,
cbc8ec6; row security decisions over cursors, COPY, data-modifying CTEs, ON CONFLICT,
MERGE; and their families), time-boxed; the server the judge.

Grants (agent ``r69-bot``): ``base`` = ``read:r69.* write:r69.* ddl:r69.*``; ``exec`` =
``execute:r69.known execute:r69.knownsql`` (no read, write or ddl scope at all); ``seq`` =
``read:r69.own write:r69.own ddl:r69.own`` (one table). Planted (owner ``pgwitness``, the
upstream login, before the proxy starts), outside every grant: ``r69x.acc (tenant,
secret)``, tenant 2's row holding ``MCV`` (tenant 1's: ``12345``); the view ``r69x.depv`` over ``r69.dep``. In
``r69``: ``r69.known(k text) RETURNS boolean`` (PL/pgSQL: ``DECLARE v text; SELECT secret
INTO v FROM r69x.acc WHERE tenant = 2 ...; RETURN v = k``) and ``r69.knownsql(k text)
RETURNS boolean`` (SQL: ``SELECT EXISTS (SELECT 1 FROM r69x.acc WHERE secret::text =
k)``): granted functions that read the secret and answer only yes or no; ``r69.own (k,
v)`` and the sequence ``r69.ownseq`` (``OWNED BY r69.own.k``: an application's invoice
numbers, ``nextval('r69.ownseq')``); ``r69.rls`` (FORCE row security, ``USING (owner IN
(SELECT secret FROM r69x.acc))``, rows ``MCV`` and ``R69-ABSENT``); ``r69.dep``. Each
leak's harm is shown first directly as the upstream login.

Leaks (strict xfails asserting the safe outcome; simple Query, extended unnamed, named
prepared, each in a session of its own). Session 31: leak 1 fixed (the pin names
``pg_temp`` last, ``proxy/handshake.py``; plain tests since, failing before the fix); leak
2 decided by design (an owned sequence is part of its table, as PostgreSQL's DROP without
CASCADE has it; what the catalog records as using it keeps it: plain tests of both):

1. **A temporary type shadows a built-in type's name inside granted code** (the pinned
   search_path's family). The proxy pins ``search_path = public`` in the startup packet
   (``proxy/handshake.py`` ``_session_params``), without ``pg_temp``; PostgreSQL then
   searches the session's temporary schema *first* for relation and type names (never for
   functions or operators). A grant that may only execute ``r69.known`` runs ``CREATE TEMP
   TABLE text (x int)`` (allowed: temporary DDL needs no scope) and then ``SELECT
   r69.known('x')``: PL/pgSQL compiles ``DECLARE v text`` as the temporary table's row type,
   and assigning the secret to it fails with ``22P02 invalid input syntax for type integer:
   "R69-MCV-5d21"``: the value the function only compares reaches the client, directly and
   through the proxy alike, in every mode. The same with ``CREATE TYPE pg_temp.text AS (x
   int)``, and with ``CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK
   (VALUE::pg_catalog.int4 > 0)`` then ``SELECT r69.knownsql('x')`` (a SQL function's
   ``secret::text`` is cast to the domain, whose CHECK quotes the value). The policy
   decides ``CREATE TEMP TABLE text`` as the session's own temporary relation and the call
   by its execute scope; nothing decides that an unqualified type name in granted code now
   resolves to the session's object. (RESET search_path, RESET ALL and DISCARD ALL keep
   the pin, so they keep this too. PL/pgSQL keeps a function compiled per backend, so the
   probe runs on a backend that has not called it yet: ``planted.renew`` empties the
   upstream pool; a client's new connection usually gets one.) Suggested fix, for the family: pin ``pg_temp``
   explicitly last (``search_path = public, pg_temp``; PostgreSQL's own advice for
   SECURITY DEFINER functions), so the temporary schema is searched after the pinned one
   for types and relations alike; that also makes the server resolve an unqualified
   relation as the policy already does (the "Known gaps" item on temporary tables).
2. **DROP of a table drops a sequence OWNED BY one of its columns** (round 62's and 64's
   family: an AUTO dependency RESTRICT does not protect). ``DROP TABLE r69.own``, ``DROP
   TABLE r69.own CASCADE`` (run as RESTRICT) and ``ALTER TABLE r69.own DROP COLUMN k``
   (``seq``: a grant of ``r69.own`` alone) drop ``r69.ownseq``, which no scope of the grant
   names (directly and through the proxy; checked on the server after each).
   ``_beyond_its_objects`` / ``_ddl_reach`` know statistics objects, publications,
   partitions and typed columns, not owned sequences (``pg_depend`` deptype ``a`` from a
   sequence to a column). Suggested fix, for the family: derive from ``pg_depend`` every
   object with an AUTO dependency on a relation or column the DDL drops or changes (not
   only statistics and publications) and decide a ``ddl`` write on each.

Held (plain tests; every mode): row security over a cursor (``DECLARE ... FETCH``), ``COPY
(SELECT ...) TO STDOUT``, a data-modifying CTE with RETURNING, ``INSERT ... ON CONFLICT DO
NOTHING RETURNING`` (the WITH CHECK oracle), ``SELECT ... FOR UPDATE`` and ``MERGE``: each
refused (the policy reads ``r69x.acc``), where directly each shows which rows the policy
lets through. The pinned search_path: ``SET search_path TO DEFAULT``, ``SET LOCAL``,
``set_config``, ``ALTER ROLE CURRENT_USER SET``, ``ALTER DATABASE ... SET`` refused (each
moves the path directly); ``RESET search_path``, inside a savepoint rolled back,
``DISCARD ALL`` and ``SET SESSION AUTHORIZATION DEFAULT; RESET ALL`` leave ``public``.
CASCADE as RESTRICT: a non-ASCII comment before or after the keyword (the server refuses
the RESTRICT drop, 2BP01, ``r69x.depv`` kept), two targets one of them outside the grant
(42501), a ``U&`` identifier (42501). Client encodings whose trailing bytes may be a quote
or backslash (SJIS, BIG5, GBK, GB18030, UHC, JOHAB): refused.

Not leaks, noted: an unqualified ``SELECT * FROM r69t`` after ``CREATE TEMP TABLE r69t`` is
refused as ``public.r69t`` (the known over-refusal; with ``pg_temp`` pinned last the server
would read ``public``'s wherever it holds the name, as the policy does). Row security's decisions count every policy whatever its command, so each
statement above is refused alike (the over-refusal round 65 noted).
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(300)

AGENT = "r69-bot"
SCOPES = "read:r69.* write:r69.* ddl:r69.*"
GRANTS = {
    "exec": "execute:r69.known execute:r69.knownsql execute:r69.knownpath",
    "seq": "read:r69.own write:r69.own ddl:r69.own",
}
MCV = "R69-MCV-5d21"  # r69x.acc: tenant 2's secret
ABSENT = "R69-ABSENT"  # in no hidden relation
MODES = ["simple", "extended", "prepared"]
OWN = """
CREATE TABLE r69.own (k int, v text);
CREATE SEQUENCE r69.ownseq OWNED BY r69.own.k;
"""
DEP = "CREATE TABLE r69.dep (k int); CREATE VIEW r69x.depv AS SELECT k FROM r69.dep;"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA r69; CREATE SCHEMA r69x;
CREATE TABLE r69x.acc (tenant int, secret text);
INSERT INTO r69x.acc VALUES (1, '12345'), (2, '{MCV}');
CREATE FUNCTION r69.known(k text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE v text;
BEGIN SELECT secret INTO v FROM r69x.acc WHERE tenant = 2 LIMIT 1; RETURN v = k; END $$;
CREATE FUNCTION r69.knownsql(k text) RETURNS boolean LANGUAGE sql AS $$
SELECT EXISTS (SELECT 1 FROM r69x.acc WHERE secret::text = k) $$;
CREATE TABLE r69x.audit (s text);
CREATE FUNCTION r69.knownpath(k text) RETURNS boolean LANGUAGE plpgsql
SET search_path = r69x AS $$
DECLARE v text;
BEGIN SELECT secret INTO v FROM acc WHERE tenant = 2 LIMIT 1; INSERT INTO audit VALUES (v);
RETURN v = k; END $$;
{OWN}
{DEP}
CREATE TABLE r69.rls (owner text); INSERT INTO r69.rls VALUES ('{MCV}'), ('{ABSENT}');
CREATE POLICY p ON r69.rls USING (owner IN (SELECT secret FROM r69x.acc));
ALTER TABLE r69.rls ENABLE ROW LEVEL SECURITY; ALTER TABLE r69.rls FORCE ROW LEVEL SECURITY;
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r69, r69x CASCADE;"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r69", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as h:  # fmt: skip
        yield h


_direct = planted.direct_as_owner
_refused = planted.refused_by_proxy
_proxied = planted.proxied_as


def _tails(got: list[str]) -> list[str]:
    return [g[-240:] for g in got]


# --- 1. a temporary type shadows a built-in type's name inside granted code ---------------

SHADOWS = {
    "temp-table-plpgsql": ["CREATE TEMP TABLE text (x int)", "SELECT r69.known('x')"],
    "temp-type-plpgsql": ["CREATE TYPE pg_temp.text AS (x int)", "SELECT r69.known('x')"],
    "temp-domain-sql": [
        "CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (VALUE::pg_catalog.int4 > 0)",
        "SELECT r69.knownsql('x')",
    ],
}


@pytest.mark.parametrize("key", list(SHADOWS))
def test_shadow_shows_directly(pg, px, key):
    """As the login, the granted functions answer yes or no; after the shadowing type,
    their error quotes the secret."""
    plain = "".join(_direct(pg, "SELECT r69.known('x')", "SELECT r69.knownsql('x')"))
    assert MCV not in plain and "SELECT 1" in plain, plain[-300:]
    got = "".join(_direct(pg, *SHADOWS[key]))
    assert MCV in got and "22P02" in got, got[-300:]


@pytest.mark.parametrize("mode", MODES)
def test_granted_functions_answer_plainly(px, mode):
    """The control: without the shadowing type the execute grant's calls return a boolean."""
    got = _proxied(px, "exec", mode, ["SELECT r69.known('x')", "SELECT r69.knownsql('x')"])
    assert all(MCV not in g and "SELECT 1" in g for g in got), _tails(got)


@pytest.mark.parametrize("key", list(SHADOWS))
@pytest.mark.parametrize("mode", MODES)
def test_shadow(px, key, mode):
    """Fixed (session 31): the pin names ``pg_temp`` last (``public, pg_temp``)."""
    # a backend of its own: one that already ran r69.known keeps its compiled body (an
    # upstream session parked by an earlier probe of the grant)
    planted.renew(px)
    got = _proxied(px, "exec", mode, SHADOWS[key])
    assert MCV not in "".join(got), ("LEAK", _tails(got))


# --- session 31: a function's own search_path that leaves pg_temp out ---------------------
# ``r69.knownpath`` (``SET search_path = r69x``, PL/pgSQL): there PostgreSQL searches
# pg_temp first for relations and types whatever the session's pin, so a temporary ``text``
# or ``audit`` stands for pg_catalog's type and the table it writes. A temporary object may
# not take a name a type or relation has outside the temporary schemas
# (``StatementPolicy._shadowing_temp``, ``Snapshot.type_names``).

OWN_PATH = {
    "temp-type": ["CREATE TEMP TABLE text (x int)", "SELECT r69.knownpath('x')"],
    "temp-written-table": [
        "CREATE TEMP TABLE audit (s text)", "SELECT r69.knownpath('x')",
        "SELECT s FROM pg_temp.audit",
    ],
}


@pytest.mark.parametrize("key", list(OWN_PATH))
def test_own_path_shadow_shows_directly(pg, px, key):
    assert MCV in "".join(_direct(pg, *OWN_PATH[key]))


@pytest.mark.parametrize("key", list(OWN_PATH))
@pytest.mark.parametrize("mode", MODES)
def test_own_path_shadow(px, key, mode):
    planted.renew(px)  # (a backend that has not compiled the function yet)
    got = _proxied(px, "exec", mode, OWN_PATH[key])
    assert MCV not in "".join(got), ("LEAK", _tails(got))
    assert _refused(got[0]) and "deny.temp" in got[0], got[0][-300:]


# --- 2. DROP of a table drops a sequence OWNED BY its column ------------------------------

OWNED = {
    "drop-table": "DROP TABLE r69.own",
    "drop-table-cascade-as-restrict": "DROP TABLE r69.own CASCADE",
    "drop-column": "ALTER TABLE r69.own DROP COLUMN k",
}
SEQ_GONE = "SELECT (to_regclass('r69.ownseq') IS NULL)::text"


def _restore_own(pg) -> None:
    pg.psql("DROP TABLE IF EXISTS r69.own; DROP SEQUENCE IF EXISTS r69.ownseq; "
            f"SET ROLE pgwitness; {OWN} RESET ROLE;", db="app")  # fmt: skip


@pytest.mark.parametrize("key", list(OWNED))
def test_owned_sequence_shows_directly(pg, px, key):
    got = _direct(pg, OWNED[key], SEQ_GONE)
    assert "DROP TABLE" in got[0] or "ALTER TABLE" in got[0], got[0][-300:]
    assert "true" in got[1], got[1][-300:]


@pytest.mark.parametrize("key", list(OWNED))
def test_owned_sequence_goes_with_its_table(pg, px, key):
    """By design (session 31, docs/policy.md "Dropping what DDL reaches"): a sequence OWNED
    BY a column is part of its table, as PostgreSQL's DROP without CASCADE has it (a
    ``serial`` column's, an identity's); a ddl scope on the table covers it. Refusing it
    would refuse every per-table grant's DROP of a table with a ``serial`` column."""
    try:
        got = _proxied(px, "seq", "simple", [OWNED[key]])
        assert not planted.refused_by_proxy(got[0]), got[0][-300:]
        assert pg.psql(SEQ_GONE, db="app").strip() == "true"
    finally:
        _restore_own(pg)


@pytest.mark.parametrize("key", list(OWNED))
@pytest.mark.parametrize("mode", MODES)
def test_a_recorded_use_of_an_owned_sequence_keeps_it(pg, px, key, mode):
    """What the catalog records as using the sequence (another table's DEFAULT) is not
    dropped with it: the server refuses the DROP (2BP01, CASCADE run as RESTRICT), and the
    sequence and the table stay."""
    pg.psql("CREATE TABLE r69x.inv (n bigint DEFAULT nextval('r69.ownseq'))", db="app")
    try:
        got = _proxied(px, "seq", mode, [OWNED[key]])
        assert "2BP01" in got[0], got[0][-300:]
        assert pg.psql(SEQ_GONE, db="app").strip() == "false", _tails(got)
        assert pg.psql("SELECT count(*) FROM r69.own", db="app").strip().isdigit()
    finally:
        pg.psql("DROP TABLE r69x.inv", db="app")
        _restore_own(pg)


# --- held: row security over cursors, COPY, CTEs, ON CONFLICT, FOR UPDATE, MERGE -----------

RLS = {
    "cursor": ["BEGIN", "DECLARE c CURSOR FOR SELECT * FROM r69.rls", "FETCH ALL c", "ROLLBACK"],
    "cursor-with-hold": [
        "DECLARE ch CURSOR WITH HOLD FOR SELECT owner FROM r69.rls", "FETCH ALL ch", "CLOSE ch"
    ],
    "copy-query": ["COPY (SELECT * FROM r69.rls) TO STDOUT"],
    "cte-update-returning": [
        "BEGIN",
        "WITH x AS (UPDATE r69.rls SET owner = owner RETURNING owner) SELECT * FROM x",
        "ROLLBACK",
    ],
    "on-conflict-returning": [
        "BEGIN",
        f"INSERT INTO r69.rls VALUES ('{MCV}') ON CONFLICT DO NOTHING RETURNING owner",
        "ROLLBACK",
    ],
    "for-update": ["SELECT * FROM r69.rls FOR UPDATE"],
    "merge": [
        "BEGIN",
        "MERGE INTO r69.rls t USING (SELECT 1 AS one) s ON true "
        "WHEN MATCHED THEN UPDATE SET owner = t.owner",
        "ROLLBACK",
    ],
}  # fmt: skip


def _no_bookends(sqls: list[str]) -> list[str]:
    return [s for s in sqls if s not in ("BEGIN", "ROLLBACK")]


def test_rls_harm_directly(pg, px):
    """As the login each shows which rows the policy (reading r69x.acc) lets through:
    MCV's row, never R69-ABSENT's (MERGE: one row of two; the INSERT of MCV passes the
    WITH CHECK, R69-ABSENT's does not)."""
    for key, sqls in RLS.items():
        if key in ("merge", "on-conflict-returning", "cursor-with-hold"):
            continue
        got = "".join(_direct(pg, *_no_bookends(sqls)))
        assert MCV in got and ABSENT not in got, (key, got[-300:])
    merged = "".join(_direct(pg, *_no_bookends(RLS["merge"])))
    assert "MERGE 1" in merged, merged[-300:]
    passes = "".join(_direct(pg, *_no_bookends(RLS["on-conflict-returning"])))
    fails = "".join(_direct(pg, f"INSERT INTO r69.rls VALUES ('{ABSENT}') RETURNING owner"))
    assert MCV in passes and "row-level security" in fails, (passes[-200:], fails[-200:])


@pytest.mark.parametrize("key", list(RLS))
@pytest.mark.parametrize("mode", MODES)
def test_rls_held(px, key, mode):
    got = _proxied(px, "base", mode, RLS[key])
    assert any(_refused(t) and "r69x.acc" in t for t in got), _tails(got)
    joined = "".join(got)
    assert MCV not in joined and "MERGE 1" not in joined, _tails(got)


# --- held: the pinned search_path -----------------------------------------------------------

MOVES = {
    "set-to-default": "SET search_path TO DEFAULT",
    "set-local": "SET LOCAL search_path = r69x",
    "set-config": "SELECT set_config('search_path', 'r69x', false)",
    "alter-role": "ALTER ROLE CURRENT_USER SET search_path = r69x",
    "alter-database": "ALTER DATABASE app SET search_path = r69x",
}


def test_path_moves_directly(pg, px):
    """As the login (a block rolled back) each moves what an unqualified name reads (ALTER
    ROLE / DATABASE: a new session's path, and DISCARD ALL's in a session that did not send
    one); after SET LOCAL, ``SELECT secret FROM acc`` reads r69x.acc."""
    with RawClient.direct(pg) as c:
        c.query("BEGIN")
        local = planted.text(c.query(MOVES["set-local"]) + c.query("SELECT secret FROM acc"))
        c.query("ROLLBACK")
    assert MCV in local, local[-300:]
    got = _direct(pg, MOVES["alter-role"], MOVES["alter-database"], MOVES["set-config"])
    assert "ALTER ROLE" in got[0] and "ALTER DATABASE" in got[1] and "r69x" in got[2], got


@pytest.mark.parametrize("key", list(MOVES))
@pytest.mark.parametrize("mode", MODES)
def test_path_moves_refused(px, key, mode):
    sqls = ["BEGIN", MOVES[key], "ROLLBACK", "SHOW search_path"]
    got = _proxied(px, "base", mode, sqls)
    assert _refused(got[1]), _tails(got)
    assert "public" in got[3] and "r69x" not in got[3], _tails(got)


RESETS = {
    "reset": ["RESET search_path", "SHOW search_path"],
    "savepoint": ["BEGIN", "SAVEPOINT a", "RESET search_path", "ROLLBACK TO a",
                  "SHOW search_path", "ROLLBACK"],
    "discard-all": ["DISCARD ALL", "SHOW search_path"],
    "session-authorization": ["SET SESSION AUTHORIZATION DEFAULT", "RESET ALL",
                              "SHOW search_path"],
}  # fmt: skip


@pytest.mark.parametrize("key", list(RESETS))
@pytest.mark.parametrize("mode", MODES)
def test_resets_keep_the_pin(px, key, mode):
    got = _proxied(px, "base", mode, RESETS[key])
    assert not any(planted.is_error(t) for t in got), _tails(got)
    shown = next(t for s, t in zip(RESETS[key], got, strict=True) if s.startswith("SHOW"))
    assert "public" in shown and "$user" not in shown, _tails(got)


# --- held: CASCADE as RESTRICT, client encodings ---------------------------------------------

DEPV_EXISTS = "SELECT (to_regclass('r69x.depv') IS NOT NULL)::text"
CASCADES = {
    "comment-before": "/* caf\u00e9 */ DROP TABLE r69.dep CASCADE",
    "comment-after": "DROP TABLE r69.dep CASCADE /* caf\u00e9 */",
    "two-targets": "DROP TABLE r69.dep, r69x.acc CASCADE",
    "unicode-identifier": 'DROP TABLE U&"r69".dep CASCADE',
}


def test_cascades_directly(pg, px):
    """As the login each drops r69x.depv (a block rolled back)."""
    for sql in CASCADES.values():
        got = _direct(pg, sql, DEPV_EXISTS)
        assert "false" in got[1], (sql, got[0][-200:], got[1][-200:])


@pytest.mark.parametrize("key", list(CASCADES))
@pytest.mark.parametrize("mode", MODES)
def test_cascade_held(pg, px, key, mode):
    try:
        got = _proxied(px, "base", mode, [CASCADES[key]])
        assert planted.is_error(got[0]), _tails(got)
        assert pg.psql(DEPV_EXISTS, db="app").strip() == "true", _tails(got)
    finally:
        if pg.psql(DEPV_EXISTS, db="app").strip() != "true":
            pg.psql(f"DROP TABLE IF EXISTS r69.dep; SET ROLE pgwitness; {DEP} RESET ROLE;",
                    db="app")  # fmt: skip


ENCODINGS = ["SJIS", "BIG5", "GBK", "GB18030", "UHC", "JOHAB"]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("mode", MODES)
def test_multibyte_encodings_refused(px, encoding, mode):
    got = _proxied(px, "base", mode, [f"SET client_encoding TO '{encoding}'",
                                      "SHOW client_encoding"])  # fmt: skip
    assert _refused(got[0]), _tails(got)
    assert encoding not in got[1], _tails(got)
