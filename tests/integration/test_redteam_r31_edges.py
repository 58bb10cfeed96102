"""Red-team round 31: the edges of round 30's fixes (default operator classes in
``catalog._COMPARES``, ``EVENT_TRIGGERS_SQL``, ``TRIGGERED_SQL`` + ``writes_unreadable``),
the server the judge.

Grants (agent ``r31-bot``): ``base`` = ``read:r31s.*`` (executes nothing); ``rw`` =
``read:r31s.* write:r31s.*``; ``ddl`` = ``read:r31s.* write:r31s.* ddl:r31s.*
execute:public.r31_evt`` (may run the event trigger, which raises on none of the DDL used
with it); ``ddlx`` = the same without ``execute``.

Planted outside every grant: ``r31x.vault`` (one marker per family). By the schema owner:
plpgsql IMMUTABLE ``public.r31_cmp(int4, int4)``, ``r31_lt`` (behind operator
``r31s.<<<``), ``r31_ix``, ``r31_pred``, ``r31_pk``, ``r31_def``, each raising its vault
marker (quiet only while planting: ``SET r31.quiet``), ``r31_gen`` returning one;
``r31s.plain`` (2000 rows); ``r31s.opced`` (20000 rows, index ``(a r31s.evil_ops)``);
``r31s.ixed`` (index on ``public.r31_ix(a)``); ``r31s.partial`` (index ``WHERE
public.r31_pred(a)``); ``r31s.parted`` (``PARTITION BY RANGE (public.r31_pk(a))``);
``r31s.oparted`` (``PARTITION BY RANGE (a r31s.evil_ops)``); ``r31s.defs`` (``DEFAULT
public.r31_def()``); ``r31s.gens`` (``GENERATED ALWAYS AS (public.r31_gen(id)) STORED``);
``r31s.mv``; ``r31s.ext`` of citext, hstore, ltree, isbn and earth columns. By the superuser
(a DBA): the **non-default** ``CREATE OPERATOR CLASS r31s.evil_ops FOR TYPE int4 USING
btree`` (its own family: ``OPERATOR 1 r31s.<<<``, the built-in ``<= = >= >``, ``FUNCTION 1
public.r31_cmp``); the extensions citext, hstore, cube, earthdistance, pg_trgm, btree_gist,
ltree, isn in ``r31e``; an event trigger ``ON ddl_command_start`` (``public.r31_evt``)
raising ``R31-EVENT-7c05`` for ``SELECT INTO``, ``CREATE TABLE AS``, ``REFRESH
MATERIALIZED VIEW`` and ``COMMENT``. Every probe shows its marker directly as the upstream
login first, then goes through the proxy: simple Query, extended unnamed, named prepared
and pipelined (single statements), separate Queries / one Query / one pipeline in a block
rolled back (DDL), simple and extended ``COPY FROM STDIN``.

Leaks (kept as strict xfails until fixed the same session; regression tests now: the
operator classes of a relation's indexes and partition keys, default or not, count as what
a read or write of it runs (``RELATION_OPCLASS_SQL``, merged into ``relation_casts``, up
through its ancestors); an operator class a statement names needs its family's
user-written functions (``OPCLASS_FUNCTIONS_SQL``; a partition key naming one is no longer
decided on PostgreSQL's reading alone); index expressions and predicates, partition key
expressions, and indexes using such classes make a relation "triggered", so errors of its
writes are withheld (``TRIGGERED_SQL``)):

1. **A non-default operator class runs user-written functions through an index or a
   partition key.** ``SELECT a FROM r31s.opced WHERE a = 5`` (``base``: the planner picks
   the evil_ops index because its family holds the built-in ``=``; the btree scan calls
   FUNCTION 1), ``INSERT INTO r31s.opced VALUES (5)`` (index maintenance), ``INSERT INTO
   r31s.oparted VALUES (5)`` (partition routing) (``rw``), ``CREATE INDEX r31_i ON
   r31s.plain (a r31s.evil_ops)``, ``CREATE TABLE r31s.pp (a int4) PARTITION BY RANGE (a
   r31s.evil_ops)`` + ``CREATE TABLE r31s.pp1 PARTITION OF r31s.pp FOR VALUES FROM (0) TO
   (10)`` (``ddl``): ErrorResponse P0001 M ``cmp: R31-OPCLASS-7c01``, every mode.
   ``_COMPARES`` follows ``opcdefault`` classes only; the classifier reads an index
   element's operator class as a *relation* read (``r31s.evil_ops``, inside ``read:r31s.*``);
   ``TRIGGERED_SQL`` knows no index.
2. **Index expressions, partial-index predicates and partition key expressions** (docs:
   "index expressions" are the table's own behaviour, "what they say is not") raise the
   marker on writes and the error passes whole: ``INSERT INTO r31s.ixed VALUES (5)`` (also
   ``ON CONFLICT DO NOTHING``, ``INSERT ... SELECT``, ``UPDATE``, ``MERGE ... WHEN NOT
   MATCHED THEN INSERT``, ``COPY r31s.ixed (a) FROM STDIN``), ``INSERT INTO r31s.partial
   VALUES (5)``, ``INSERT INTO r31s.parted VALUES (5)`` (``rw``): M ``ix: R31-INDEXEXPR-7c02``
   / ``pred: R31-PREDICATE-7c03`` / ``part: R31-PARTKEY-7c04``, every mode.
   ``TRIGGERED_SQL`` follows ``pg_depend`` rows of ``pg_attrdef`` and ``pg_constraint``
   only; an index's expressions/predicate and a partition key's expressions depend with
   classid ``pg_class`` (the index, or the partitioned table).

Held: round 30's withholding for a defaulted table in every mode, pipelined and ``COPY FROM
STDIN`` (simple and extended) included; ``ORDER BY a USING OPERATOR(r31s.<<<)``
(``deny.operator``; ``USING r31s.<<<`` is a syntax error); ``ALTER TABLE ... ADD EXCLUDE
USING btree (a r31s.evil_ops WITH =)`` (``deny.unknown``); a partition key naming
``public.r31_pk`` (``scope.execute``); the event trigger on ``SELECT INTO``, ``CREATE TABLE
AS``, ``REFRESH MATERIALIZED VIEW``, ``COMMENT`` (all classified DDL; GRANT and ALTER
DEFAULT PRIVILEGES are ``deny.role``, SECURITY LABEL / IMPORT FOREIGN SCHEMA unknown;
TRUNCATE fires no event trigger). Not a leak by the promise's measure: ``INSERT ...
RETURNING`` a STORED generated column computed from the vault shows what ``SELECT g`` shows
afterwards (the table's own data, as a view's).

Transparency: columns of citext, hstore, ltree, isbn and earth (extensions' C classes; earth
a domain whose CHECK calls SQL-language ``earth()``) read, sort, DISTINCT and GROUP BY under
``base``; a plain int4 ``ORDER BY`` is unaffected by the DBA's non-default class.
"""

from __future__ import annotations

import struct

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import shows
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(180)

AGENT = "r31-bot"
SCOPES = "read:r31s.*"  # base: reads r31s, executes nothing
GRANTS = {
    "rw": "read:r31s.* write:r31s.*",
    # DDL in r31s; may run the event trigger (it raises on none of the DDL used with it)
    "ddl": "read:r31s.* write:r31s.* ddl:r31s.* execute:public.r31_evt",
    "ddlx": "read:r31s.* write:r31s.* ddl:r31s.*",  # the same without the event trigger
}
R = {
    "opc": "R31-OPCLASS-7c01",
    "ix": "R31-INDEXEXPR-7c02",
    "pred": "R31-PREDICATE-7c03",
    "part": "R31-PARTKEY-7c04",
    "evt": "R31-EVENT-7c05",
    "def": "R31-DEFAULT-7c06",
    "gen": "R31-GENERATED-7c07",
}
SECRETS = list(R.values())
QUIET = "current_setting('r31.quiet', true) = 'on'"


def _vault(key: str) -> str:
    return f"(SELECT val FROM r31x.vault WHERE key = '{key}')"


def _loud(kind: str, key: str, quiet: str) -> str:
    return (f"$$ BEGIN IF {QUIET} THEN RETURN {quiet}; END IF; "
            f"RAISE EXCEPTION '{kind}: %', {_vault(key)}; END $$")  # fmt: skip


_FN = "LANGUAGE plpgsql IMMUTABLE AS "
_EVT_TAGS = "('SELECT INTO', 'CREATE TABLE AS', 'REFRESH MATERIALIZED VIEW', 'COMMENT')"
SETUP = (
    "SET r31.quiet = 'on';\n"
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r31s; CREATE SCHEMA r31x;\n"
    "CREATE TABLE r31x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r31x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in R.items()) + ";\n"
    "CREATE FUNCTION public.r31_cmp(int4, int4) RETURNS int "
    + _FN
    + _loud("cmp", "opc", "pg_catalog.btint4cmp($1, $2)")
    + ";\n"
    "CREATE FUNCTION public.r31_lt(int4, int4) RETURNS boolean "
    + _FN
    + _loud("lt", "opc", "$1 < $2")
    + ";\n"
    "CREATE OPERATOR r31s.<<< (LEFTARG = int4, RIGHTARG = int4, FUNCTION = public.r31_lt);\n"
    "CREATE FUNCTION public.r31_ix(int4) RETURNS int4 " + _FN + _loud("ix", "ix", "$1") + ";\n"
    "CREATE FUNCTION public.r31_pred(int4) RETURNS boolean "
    + _FN
    + _loud("pred", "pred", "true")
    + ";\n"
    "CREATE FUNCTION public.r31_pk(int4) RETURNS int4 " + _FN + _loud("part", "part", "$1") + ";\n"
    "CREATE FUNCTION public.r31_def() RETURNS text LANGUAGE plpgsql AS "
    + _loud("def", "def", "'d'")
    + ";\n"
    "CREATE FUNCTION public.r31_gen(int4) RETURNS text LANGUAGE plpgsql IMMUTABLE AS "
    "$$ BEGIN RETURN " + _vault("gen") + "; END $$;\n"
    "RESET ROLE;\n"
    # a DBA's non-default operator class (its own family) for int4: the built-in =, <=, >=,
    # > and a user-written < (r31s.<<<), the user-written comparison function
    "CREATE OPERATOR CLASS r31s.evil_ops FOR TYPE int4 USING btree AS OPERATOR 1 r31s.<<<, "
    "OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, "
    "FUNCTION 1 public.r31_cmp(int4, int4);\n"
    "SET ROLE pgwitness;\n"
    "CREATE TABLE r31s.plain (a int4);\n"
    "INSERT INTO r31s.plain SELECT g FROM generate_series(1, 2000) g;\n"
    "CREATE TABLE r31s.opced (a int4);\n"
    "INSERT INTO r31s.opced SELECT g FROM generate_series(1, 20000) g;\n"
    "CREATE INDEX r31_opced_i ON r31s.opced (a r31s.evil_ops);\n"
    "ANALYZE r31s.opced;\n"
    "CREATE TABLE r31s.ixed (a int4);\n"
    "INSERT INTO r31s.ixed SELECT g FROM generate_series(1, 10) g;\n"
    "CREATE INDEX r31_ixed_i ON r31s.ixed (public.r31_ix(a));\n"
    "CREATE TABLE r31s.partial (a int4);\n"
    "CREATE INDEX r31_partial_i ON r31s.partial (a) WHERE public.r31_pred(a);\n"
    "CREATE TABLE r31s.parted (a int4) PARTITION BY RANGE (public.r31_pk(a));\n"
    "CREATE TABLE r31s.parted_1 PARTITION OF r31s.parted FOR VALUES FROM (0) TO (1000000);\n"
    "CREATE TABLE r31s.oparted (a int4) PARTITION BY RANGE (a r31s.evil_ops);\n"
    "CREATE TABLE r31s.oparted_1 PARTITION OF r31s.oparted FOR VALUES FROM (0) TO (1000000);\n"
    "CREATE TABLE r31s.defs (id int4, v text DEFAULT public.r31_def());\n"
    "CREATE TABLE r31s.gens (id int4, g text GENERATED ALWAYS AS (public.r31_gen(id)) STORED);\n"
    "CREATE MATERIALIZED VIEW r31s.mv AS SELECT a FROM r31s.plain;\n"
    "RESET ROLE;\n"
    # common extensions (a DBA's), in their own schema; a table of their types
    "CREATE SCHEMA r31e AUTHORIZATION pgwitness;\n"
    + "".join(
        f"CREATE EXTENSION {e} SCHEMA r31e;\n"
        for e in (
            "citext",
            "hstore",
            "cube",
            "earthdistance",
            "pg_trgm",
            "btree_gist",
            "ltree",
            "isn",
        )
    )
    + "SET ROLE pgwitness;\n"
    "CREATE TABLE r31s.ext (id int4, c r31e.citext, h r31e.hstore, l r31e.ltree, "
    "i r31e.isbn, e r31e.earth);\n"
    "SET search_path = public, r31e;\n"  # earthdistance's SQL functions name cube bare
    "INSERT INTO r31s.ext VALUES (1, 'Ab', 'k=>v', 'a.b', '978-0-393-04002-9', "
    "r31e.ll_to_earth(1, 2)), (2, 'ab', 'k=>w', 'a.c', '978-0-393-04002-9', NULL);\n"
    "RESET search_path;\n"
    "RESET ROLE;\n"
    "CREATE FUNCTION public.r31_evt() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"IF coalesce({QUIET}, false) THEN RETURN; END IF; IF tg_tag IN {_EVT_TAGS} "
    f"THEN RAISE EXCEPTION 'evt: %', {_vault('evt')}; END IF; END $$;\n"
    "CREATE EVENT TRIGGER r31_evt ON ddl_command_start EXECUTE FUNCTION public.r31_evt();\n"
    "RESET r31.quiet;\n"
)
TEARDOWN = (
    "DROP EVENT TRIGGER IF EXISTS r31_evt;\n"
    "DROP SCHEMA IF EXISTS r31s, r31x, r31e CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r31_evt(), public.r31_cmp(int4, int4), "
    "public.r31_lt(int4, int4), public.r31_ix(int4), public.r31_pred(int4), "
    "public.r31_pk(int4), public.r31_def(), public.r31_gen(int4) CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r31", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


def direct(pg, sqls) -> str:
    return planted.direct_block(pg, sqls)


def single(px, grant: str, sql: str) -> dict[str, str]:
    return planted.every_mode(px, px.tokens[grant], sql)


def block(px, grant: str, sqls) -> dict[str, str]:
    return planted.every_block_mode(px, px.tokens[grant], sqls)


def assert_no_leak(got: dict[str, str], sql) -> None:
    bad = {mode: t[-400:] for mode, t in got.items() if leaked(t)}
    assert not bad, ("LEAK", sorted(bad), sql, bad)


def precondition(pg, sqls, key: str) -> None:
    """The marker comes back directly (a RuntimeError, not an AssertionError: a strict xfail
    must not swallow a probe that proves nothing)."""
    if not shows(direct(pg, sqls), R[key]):
        raise RuntimeError(("precondition: no marker directly", sqls))


def _ids(params) -> list[str]:
    return [f"{i:02d}-{p.values[1]}" for i, p in enumerate(params)]


# --- leak 1: a DBA's non-default operator class, used by an index or a partition key ------

_OPC_WHY = (
    "LEAK: a non-default operator class (a DBA's, r31s.evil_ops, its own family holding the "
    "built-in = and a user-written FUNCTION 1) runs public.r31_cmp whenever an index or a "
    "partition key using it compares: an index scan for a plain `a = 5`, index maintenance "
    "and partition routing on INSERT, an index build or partition bound check in DDL that "
    "names the class (read as a relation r31s.evil_ops); _COMPARES follows default classes "
    "only, TRIGGERED_SQL knows no index or partition key"
)
_EXPR_WHY = (
    "LEAK: an index expression / partial-index predicate / partition key expression calling "
    "a user-written function runs on every write to the table and its error passes whole: "
    "TRIGGERED_SQL follows pg_attrdef and pg_constraint dependencies only (an index's and a "
    "partitioned table's pg_depend rows have classid pg_class)"
)


def _leak(grant: str, key: str, sql: str, why: str):
    return pytest.param(grant, key, sql)  # (fixed the same session: a regression test now)


LEAKS = [
    _leak("base", "opc", "SELECT a FROM r31s.opced WHERE a = 5", _OPC_WHY),
    _leak("rw", "opc", "INSERT INTO r31s.opced VALUES (5)", _OPC_WHY),
    _leak("rw", "opc", "INSERT INTO r31s.oparted VALUES (5)", _OPC_WHY),
    _leak("rw", "ix", "INSERT INTO r31s.ixed VALUES (5)", _EXPR_WHY),
    _leak("rw", "ix", "INSERT INTO r31s.ixed VALUES (5) ON CONFLICT DO NOTHING", _EXPR_WHY),
    _leak("rw", "ix", "INSERT INTO r31s.ixed SELECT a FROM r31s.plain LIMIT 1", _EXPR_WHY),
    _leak("rw", "ix", "UPDATE r31s.ixed SET a = a + 100 WHERE a = 1", _EXPR_WHY),
    _leak(
        "rw",
        "ix",
        "MERGE INTO r31s.ixed t USING (SELECT 500 AS a) s ON t.a = s.a "
        "WHEN NOT MATCHED THEN INSERT VALUES (s.a)",
        _EXPR_WHY,
    ),
    _leak("rw", "pred", "INSERT INTO r31s.partial VALUES (5)", _EXPR_WHY),
    _leak("rw", "part", "INSERT INTO r31s.parted VALUES (5)", _EXPR_WHY),
]


@pytest.mark.parametrize(("grant", "key", "sql"), LEAKS, ids=_ids(LEAKS))
def test_code_of_an_index_or_partition_key(px, pg, grant, key, sql):
    precondition(pg, [sql], key)
    assert_no_leak(single(px, grant, sql), sql)


DDL_LEAKS = [
    _leak("ddl", "opc", ("CREATE INDEX r31_i ON r31s.plain (a r31s.evil_ops)",), _OPC_WHY),
    _leak(
        "ddl",
        "opc",
        (
            "CREATE TABLE r31s.pp (a int4) PARTITION BY RANGE (a r31s.evil_ops)",
            "CREATE TABLE r31s.pp1 PARTITION OF r31s.pp FOR VALUES FROM (0) TO (10)",
        ),
        _OPC_WHY,
    ),
]


@pytest.mark.parametrize(("grant", "key", "sqls"), DDL_LEAKS, ids=_ids(DDL_LEAKS))
def test_ddl_naming_a_non_default_operator_class(px, pg, grant, key, sqls):
    precondition(pg, list(sqls), key)
    assert_no_leak(block(px, grant, list(sqls)), sqls)


def _copy_frames(c: RawClient, sql: str, rows: bytes, extended: bool) -> list[bytes]:
    """COPY ... FROM STDIN over the simple protocol or Parse/Bind/Execute, ``rows`` sent as
    one CopyData, then CopyDone (and Sync): everything received."""
    if extended:
        c.send(m.parse("", sql), m.bind_no_params(), m.execute())
        c.send(b"H\x00\x00\x00\x04")  # Flush
    else:
        c.send(m.query(sql))
    frames = []
    while True:
        f = c.read_frame()
        assert f is not None
        frames.append(f)
        if f[:1] in (b"G", b"E", b"Z"):
            break
    if frames[-1][:1] == b"G":
        c.send(b"d" + struct.pack("!I", 4 + len(rows)) + rows, b"c\x00\x00\x00\x04")
        if extended:
            c.send(m.SYNC)
    elif extended:
        c.send(m.SYNC)
    return frames + c.frames_until_ready()


def copy_in(px, grant: str, sql: str, rows: bytes) -> dict[str, str]:
    out = {}
    for mode in ("simple", "extended"):
        with planted.session(px, px.tokens[grant]) as c:
            frames = _copy_frames(c, sql, rows, mode == "extended")
            assert any(f[:1] == b"D" for f in c.query("SELECT 1")), mode
        out[mode] = planted.text(frames)
    return out


def _direct_copy(pg, sql: str, rows: bytes) -> str:
    with RawClient.direct(pg) as c:
        return planted.text(_copy_frames(c, sql, rows, False))


def test_copy_into_an_index_expression_table(px, pg):
    sql = "COPY r31s.ixed (a) FROM STDIN"
    assert shows(_direct_copy(pg, sql, b"7\n"), R["ix"]), "precondition"
    assert_no_leak(copy_in(px, "rw", sql, b"7\n"), sql)


# --- held ------------------------------------------------------------------------------------


def test_held_copy_into_a_defaulted_table_is_withheld(px, pg):
    """Round 30's withholding covers COPY FROM STDIN too (simple and extended)."""
    sql = "COPY r31s.defs (id) FROM STDIN"
    assert shows(_direct_copy(pg, sql, b"1\n"), R["def"]), "precondition"
    got = copy_in(px, "rw", sql, b"1\n")
    assert_no_leak(got, sql)
    assert all("withheld" in t for t in got.values()), got


def test_held_insert_into_a_defaulted_table_is_withheld_in_every_mode(px, pg):
    sql = "INSERT INTO r31s.defs (id) VALUES (1)"
    precondition(pg, [sql], "def")
    got = single(px, "rw", sql)
    assert_no_leak(got, sql)
    assert all("withheld" in t for t in got.values()), got


def test_held_order_by_using_a_user_operator(px, pg):
    sql = "SELECT a FROM r31s.plain ORDER BY a USING OPERATOR(r31s.<<<) LIMIT 1"
    precondition(pg, [sql], "opc")
    got = single(px, "base", sql)
    assert_no_leak(got, sql)
    assert all("deny.operator" in t for t in got.values()), got


@pytest.mark.parametrize("sql", [
    "ALTER TABLE r31s.plain ADD EXCLUDE USING btree (a r31s.evil_ops WITH =)",
    "CREATE TABLE r31s.pq (a int4) PARTITION BY RANGE (public.r31_pk(a))",
])  # fmt: skip
def test_held_ddl_refused(px, sql):
    got = block(px, "ddl", [sql])
    assert_no_leak(got, sql)
    assert all("42501" in t for t in got.values()), got


@pytest.mark.parametrize("sql", [
    "SELECT a INTO r31s.n FROM r31s.plain",
    "CREATE TABLE r31s.n AS SELECT a FROM r31s.plain",
    "REFRESH MATERIALIZED VIEW r31s.mv",
    "COMMENT ON TABLE r31s.plain IS 'x'",
])  # fmt: skip
def test_held_event_trigger_on_ddl_of_other_shapes(px, pg, sql):
    """ddl_command_start fires on SELECT INTO, CREATE TABLE AS, REFRESH and COMMENT: all
    classified DDL, so the event trigger's function needs the execute scope."""
    precondition(pg, [sql], "evt")
    got = block(px, "ddlx", [sql])
    assert_no_leak(got, sql)
    assert all("an event trigger runs public.r31_evt" in t for t in got.values()), got


def test_not_a_leak_generated_column_returning(px, pg):
    """A STORED generated column computed from the vault is the table's own data: RETURNING
    shows what ``SELECT g`` shows after the insert (a grant on a table is a grant on what it
    holds, as for a view). Recorded, not a leak by the promise's measure."""
    sql = "INSERT INTO r31s.gens (id) VALUES (1) RETURNING g"
    precondition(pg, [sql], "gen")
    got = single(px, "rw", sql)
    assert all(R["gen"] in t for t in got.values()), got


# --- transparency -----------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "SELECT c, h, l, i FROM r31s.ext ORDER BY c, l, i",
    "SELECT DISTINCT c FROM r31s.ext",
    "SELECT c, count(*) FROM r31s.ext GROUP BY c",
    "SELECT e FROM r31s.ext",
    "SELECT a FROM r31s.plain ORDER BY a LIMIT 3",
])  # fmt: skip
def test_transparency_common_extension_types_read(px, sql):
    """Extensions' C operator classes and casts are not user-written: columns of citext,
    hstore, ltree, isbn and earth (a domain whose CHECK calls SQL-language earth()) read,
    sort and group under a read grant naming nothing else."""
    got = single(px, "base", sql)
    for mode, t in got.items():
        assert "42501" not in t and "C\x00\x00\x00" in t, (mode, t[-300:])
