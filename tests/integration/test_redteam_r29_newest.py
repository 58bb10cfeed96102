"""Red-team round 29: the two newest commits, the server the judge.

Attacked: f4a7976 (a migration's DDL sqlglot cannot read decided on PostgreSQL's reading:
``crosscheck._moved_relation``, ``_TABLE_COMMANDS``, ``_ALTERED_KINDS``) and cc3de1e (a
called function's argument and result types count as types the statement names,
``FUNCTION_TYPES_SQL`` / ``Snapshot.function_types`` / ``StatementPolicy._function_types``;
a cast between system types exempts only constants with no cast syntax,
``engine._converts_nothing``).

Grants (agent ``r29-bot``): ``base`` = ``read:r29s.plain`` (no execute on the DBA's cast
function); ``fn`` = ``read:r29s.plain`` and ``execute:`` on harmless functions that
return the enum ``public.r29_mood`` (``r29_getmood``, ``r29_tab`` RETURNS TABLE,
``r29_outs`` with OUT parameters, ``r29_cmood(r29s.plain)``, ``r29_opf``), the aggregate
``r29_agg`` and the DBA's cast function; ``mig`` = ``read: write: ddl:`` on ``r29s.*``,
``r29m.*``, ``r29t.*`` (a migration's grant on three schemas) and the DBA's cast function.

Planted outside every grant: schema ``r29x`` (``r29x.vault``: one marker per family,
``r29x.acc``: another owner's row, ``r29x.kid``: a secret inheritance child of
``r29s.par``, ``r29x.ids``: a secret table named like the granted ``r29s.ids``). By the
schema owner: enum ``public.r29_mood`` with ``CREATE CAST (r29_mood AS text) WITH FUNCTION
r29_moodtext`` (returns ``R29-OUTCAST-8d03``); ``r29s.guarded`` with ROW LEVEL SECURITY
enabled and a policy ``USING (public.r29_polcheck(id))`` that raises ``R29-RLS-8d01``
(inert: the proxy's upstream login owns the table and bypasses it); an aggregate
``public.r29_agg(text)`` whose STYPE is a domain ``public.r29_chk`` whose CHECK raises
``R29-KID-8d05`` for any state but the INITCOND; a barrier view ``r29s.bv`` and a view
without one ``r29m.bv`` over ``r29x.acc``; a NOT VALID ``CHECK (v::int > 0)`` on
``r29s.par``; ``r29s.moody`` (a column of the enum). By the superuser (a DBA): ``CREATE
CAST (int2 AS bool) WITH FUNCTION public.r29_flag(int2) AS IMPLICIT`` (raises
``R29-GLOBAL-8d02``). Every probe first shows its marker run directly as the upstream
login, then goes through the proxy: simple Query, extended unnamed, named prepared and
pipelined (single statements), or separate Queries / one Query / one pipeline in a block.

Leaks (kept as strict xfails until fixed the same session; regression tests now: ENABLE and
FORCE ROW LEVEL SECURITY stay unknown, an identity's SEQUENCE NAME keeps the statement
unknown, the system-type cast exempts only ``SELECT`` of plain constants
(``engine._CONSTANTS_ONLY``), ``FUNCTION_TYPES_SQL`` counts OUT/TABLE columns and an
aggregate's state types, and column syntax brings the types of the functions it may call):

1. **FORCE ROW LEVEL SECURITY arms a policy that runs a user-written function** (f4a7976).
   ``BEGIN; ALTER TABLE r29s.guarded FORCE ROW LEVEL SECURITY; SELECT * FROM
   r29s.guarded`` (``mig``): ErrorResponse ``P0001`` M ``policy: R29-RLS-8d01`` in
   separate Queries, one Query and one pipeline. ``_TABLE_COMMANDS`` admits
   ``AT_ForceRowSecurity`` as "only hides rows", but a policy's USING is an expression the
   owner-login proxy never ran before; the catalog snapshot knows no policies, so the read
   after it is a plain table read. (Of the same kind: ``ENABLE`` on a table whose
   policies are staged; ``VALIDATE CONSTRAINT`` running a NOT VALID CHECK's function:
   "CHECK constraints" is a documented gap, row security is not listed there.)
2. **ADD IDENTITY with ``SEQUENCE NAME`` in another schema is DDL there** (f4a7976).
   ``ALTER TABLE r29s.ids ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME
   r29x.r29_stolen)`` (``mig``) answers ``ALTER TABLE``: PostgreSQL creates
   ``r29x.r29_stolen`` in the secret schema and links it (an INTERNAL dependency, OWNED BY)
   to column ``id`` of the *secret* table ``r29x.ids`` (the altered table's name looked up
   in the sequence's schema): ``pg_get_serial_sequence('r29x.ids', 'id')`` now names it,
   and ``r29s.ids``'s identity is broken (``no owned sequence found``). Every mode.
   ``_moved_relation`` returns ``[]`` for an ``AlterTableStmt`` whose subcommands are in
   ``_TABLE_COMMANDS`` without looking at their options (``sequence_name``), and
   PostgreSQL's walk reports only ``r29s.ids``. (Without a table of that name there,
   PostgreSQL refuses: held below.)
3. **A cast between system types in a boolean context of constants** (cc3de1e). ``SELECT
   NOT smallint '7'``, ``SELECT 1 WHERE smallint '7'``, ``SELECT CASE WHEN smallint '7'
   THEN 1 END``, ``SELECT smallint '7' IS TRUE`` (``base``): ErrorResponse M ``flag:
   R29-GLOBAL-8d02``, every mode. ``_converts_nothing`` exempts a READ with no names and
   no ``::``/``cast``/``treat``/``$``, but a boolean context coerces implicitly, and
   ``smallint`` is the grammar's ``pg_catalog.int2`` (``Classified.types`` is empty). An
   ``AS ASSIGNMENT`` cast (round 28's) found no context of constants without syntax; an
   ``AS IMPLICIT`` one into bool (or int8: ``LIMIT``, int4: a subscript) does.
4. **A function's OUT / TABLE columns are not its types** (cc3de1e). ``SELECT m::text FROM
   public.r29_tab()``, ``... FROM ROWS FROM (public.r29_tab()) AS r(m, n)``, ``SELECT
   m::text FROM public.r29_outs()``, ``SELECT (public.r29_outs()).m::text`` (``fn``):
   DataRow ``R29-OUTCAST-8d03``, every mode. ``FUNCTION_TYPES_SQL`` unnests
   ``proargtypes || prorettype``; ``RETURNS TABLE`` and two OUT parameters give
   ``record``, the columns' types are in ``proallargtypes`` only.
5. **A call by column syntax brings no types** (cc3de1e). ``SELECT (t.r29_cmood)::text
   FROM r29s.plain t`` (``fn``; ``r29_cmood(r29s.plain)`` returns the enum): DataRow
   ``R29-OUTCAST-8d03``, every mode. The call is in ``Classified.attributes``;
   ``StatementPolicy._decide`` adds ``_function_types(c.functions)`` only.
6. **An aggregate's state type** (cc3de1e). ``SELECT public.r29_agg(note) FROM
   r29s.plain`` (``fn``): ErrorResponse M ``chk: R29-KID-8d05`` (the domain CHECK's
   function ``r29_leakchk``, never granted, on the transition value; the transition
   function ``r29_sf`` is not granted either), every mode. ``FUNCTION_TYPES_SQL`` does not
   read ``pg_aggregate.aggtranstype`` (the aggregate returns text).

Held (plain tests): ``r29_getmood()::text`` (round 28's fix); a user operator returning
the enum (refused as an operator); a barrier view and a view without one swapped between
granted schemas by ``SET SCHEMA`` (``Snapshot.unsettled`` follows moves: refused in
every block mode); ``VALIDATE CONSTRAINT`` of a parent with a secret child (refused:
``_through_inheritance``), with ``ONLY`` (PostgreSQL's own 42P16, no value); ``ALTER
SEQUENCE ... OWNED BY`` a secret table (refused; PostgreSQL also insists on one schema);
a sequence or table moved into ``r29x`` (refused);
``SET SCHEMA`` of a table whose column has a cast (its relation casts count for the DDL);
``SEQUENCE NAME`` in a schema without a table of that name (PostgreSQL's 42P01).

Transparency: constants alone still run (``SELECT 1``), and a grant with the cast function
reads a table. Coarse, as documented (docs/policy.md Functions item 7): with the DBA's cast
present, ``base``'s ``SELECT note FROM r29s.plain`` is refused though nothing is cast, and
``mig`` cannot even move ``r29s.moody`` (a column of a cast type) within its own schemas.
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.planted import shows
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(180)

AGENT = "r29-bot"
FLAG = "public.r29_flag"  # the DBA's implicit cast int2 -> bool
SCOPES = "read:r29s.plain"  # base: no execute on the DBA's cast function
GRANTS = {
    "fn": "read:r29s.plain execute:public.r29_tab,public.r29_outs,public.r29_cmood,"
    f"public.r29_opf,public.r29_getmood,public.r29_agg,{FLAG}",
    "mig": "read:r29s.*,r29m.*,r29t.* write:r29s.*,r29m.*,r29t.* ddl:r29s.*,r29m.*,r29t.* "
    f"execute:{FLAG}",
}
R = {  # markers: none may ever come back through the proxy
    "rls": "R29-RLS-8d01",
    "global": "R29-GLOBAL-8d02",
    "cast": "R29-OUTCAST-8d03",
    "acc": "R29-ACC-8d04",
    "kid": "R29-KID-8d05",
}
SECRETS = list(R.values())
ONLY_MINE = "lower(upper(lower(owner))) = 'me'"  # dearer than the probe's cast: runs later


def _vault(key: str) -> str:
    return f"(SELECT val FROM r29x.vault WHERE key = '{key}')"


IDS = (  # a granted table and a secret one of the same name (leak 2), planted again after
    "CREATE TABLE r29s.ids (id int NOT NULL);\n"
    "CREATE TABLE r29x.ids (id int, val text);\n"
    "INSERT INTO r29x.ids VALUES (1, 'r29-secret-row');\n"
)
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r29s; CREATE SCHEMA r29m; CREATE SCHEMA r29t; CREATE SCHEMA r29x;\n"
    "CREATE TABLE r29x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r29x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in R.items()) + ";\n"
    "CREATE TABLE r29s.plain (id int, note text);\n"
    "INSERT INTO r29s.plain VALUES (1, 'r29-ok');\n"
    # row-level security: a policy that runs a user-written function (the owner bypasses it)
    "CREATE FUNCTION public.r29_polcheck(int) RETURNS boolean LANGUAGE plpgsql AS "
    f"$$ BEGIN RAISE EXCEPTION 'policy: %', {_vault('rls')}; END $$;\n"
    "CREATE TABLE r29s.guarded (id int);\n"
    "INSERT INTO r29s.guarded VALUES (1);\n"
    "CREATE POLICY r29_pol ON r29s.guarded USING (public.r29_polcheck(id));\n"
    "ALTER TABLE r29s.guarded ENABLE ROW LEVEL SECURITY;\n"
    # an enum whose cast to text reads the vault; granted functions that return it
    "CREATE TYPE public.r29_mood AS ENUM ('calm');\n"
    "CREATE FUNCTION public.r29_moodtext(public.r29_mood) RETURNS text LANGUAGE sql AS "
    f"$$ SELECT {_vault('cast')} $$;\n"
    "CREATE CAST (public.r29_mood AS text) WITH FUNCTION public.r29_moodtext(public.r29_mood);\n"
    "CREATE FUNCTION public.r29_getmood() RETURNS public.r29_mood LANGUAGE sql AS "
    "$$ SELECT 'calm'::public.r29_mood $$;\n"
    "CREATE FUNCTION public.r29_tab() RETURNS TABLE (m public.r29_mood, n int) LANGUAGE sql "
    "AS $$ SELECT 'calm'::public.r29_mood, 1 $$;\n"
    "CREATE FUNCTION public.r29_outs(OUT m public.r29_mood, OUT n int) LANGUAGE sql "
    "AS $$ SELECT 'calm'::public.r29_mood, 1 $$;\n"
    "CREATE FUNCTION public.r29_cmood(r r29s.plain) RETURNS public.r29_mood LANGUAGE sql "
    "AS $$ SELECT 'calm'::public.r29_mood $$;\n"
    "CREATE FUNCTION public.r29_opf(text, text) RETURNS public.r29_mood LANGUAGE sql "
    "AS $$ SELECT 'calm'::public.r29_mood $$;\n"
    "CREATE OPERATOR public.@~@ (LEFTARG = text, RIGHTARG = text, FUNCTION = public.r29_opf);\n"
    "CREATE TABLE r29s.moody (id int, mood public.r29_mood);\n"
    "INSERT INTO r29s.moody VALUES (1, 'calm');\n"
    # an aggregate whose state is a domain with a CHECK that reads the vault
    "CREATE FUNCTION public.r29_leakchk(text) RETURNS boolean LANGUAGE plpgsql AS "
    "$$ BEGIN IF $1 = 'init' THEN RETURN true; END IF; "
    f"RAISE EXCEPTION 'chk: %', {_vault('kid')}; END $$;\n"
    "CREATE DOMAIN public.r29_chk AS text CHECK (public.r29_leakchk(VALUE));\n"
    "CREATE FUNCTION public.r29_sf(public.r29_chk, text) RETURNS public.r29_chk LANGUAGE sql "
    "AS $$ SELECT $1 || $2 $$;\n"
    "CREATE FUNCTION public.r29_ff(public.r29_chk) RETURNS text LANGUAGE sql "
    "AS $$ SELECT 'done'::text $$;\n"
    "CREATE AGGREGATE public.r29_agg(text) (SFUNC = public.r29_sf, STYPE = public.r29_chk, "
    "FINALFUNC = public.r29_ff, INITCOND = 'init');\n"
    # the function of the DBA's cast between two system types
    "CREATE FUNCTION public.r29_flag(int2) RETURNS boolean LANGUAGE plpgsql AS "
    f"$$ BEGIN RAISE EXCEPTION 'flag: %', {_vault('global')}; END $$;\n"
    # a barrier view and a view without one over another owner's rows
    "CREATE TABLE r29x.acc (owner text, pin text);\n"
    f"INSERT INTO r29x.acc VALUES ('me', '1'), ('other', '{R['acc']}');\n"
    "CREATE VIEW r29s.bv WITH (security_barrier) AS SELECT * FROM r29x.acc WHERE "
    f"{ONLY_MINE};\n"
    f"CREATE VIEW r29m.bv AS SELECT * FROM r29x.acc WHERE {ONLY_MINE};\n"
    # a parent with a secret child and a NOT VALID CHECK that casts
    "CREATE TABLE r29s.par (id int, v text);\n"
    "INSERT INTO r29s.par VALUES (1, '1');\n"
    "CREATE TABLE r29x.kid () INHERITS (r29s.par);\n"
    f"INSERT INTO r29x.kid VALUES (2, '{R['kid']}');\n"
    "ALTER TABLE r29s.par ADD CONSTRAINT r29_vnum CHECK (v::int > 0) NOT VALID;\n"
    "CREATE TABLE r29s.ident (id int NOT NULL);\n"
    "CREATE SEQUENCE r29s.q;\n" + IDS + "RESET ROLE;\n"
    # as the superuser (a DBA): a flag cast between two system types
    f"CREATE CAST (int2 AS bool) WITH FUNCTION {FLAG}(int2) AS IMPLICIT;\n"
)
TEARDOWN = (
    "DROP CAST IF EXISTS (int2 AS bool);\n"
    "DROP SCHEMA IF EXISTS r29s, r29m, r29t, r29x CASCADE;\n"
    "DROP AGGREGATE IF EXISTS public.r29_agg(text);\n"
    "DROP TYPE IF EXISTS public.r29_mood CASCADE;\n"
    "DROP DOMAIN IF EXISTS public.r29_chk CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r29_polcheck(int), public.r29_flag(int2), "
    "public.r29_leakchk(text);\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r29", agent=AGENT, scopes=SCOPES,
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


def probe(pg, px, grant: str, key: str, sql: str) -> None:
    """The server is the judge: the marker comes back directly, never through the proxy."""
    assert shows(direct(pg, [sql]), R[key]), ("precondition", sql)
    assert_no_leak(single(px, grant, sql), sql)


def _ids(params) -> list[str]:
    return [f"{i:02d}-{p.values[1]}" for i, p in enumerate(params)]


# --- leak 1: FORCE ROW LEVEL SECURITY arms a policy's function ----------------------------

RLS = ("ALTER TABLE r29s.guarded FORCE ROW LEVEL SECURITY", "SELECT * FROM r29s.guarded")


def test_held_the_policy_is_inert_for_the_owner(px, pg):
    sql = RLS[1]
    assert not leaked(direct(pg, [sql]))
    for mode, t in single(px, "mig", sql).items():
        assert "ERROR" not in t and not leaked(t), (mode, t[-300:])


def test_force_row_level_security_runs_a_policy(px, pg):
    assert leaked(direct(pg, RLS)) == [R["rls"]]
    assert_no_leak(block(px, "mig", RLS), RLS)


# --- leak 2: an identity's SEQUENCE NAME in a schema outside the grant --------------------

IDENTITY = ("ALTER TABLE r29s.ids ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY "
            "(SEQUENCE NAME r29x.r29_stolen)")  # fmt: skip
_STOLEN = ("SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
           "ON n.oid = c.relnamespace WHERE n.nspname = 'r29x' AND c.relname = 'r29_stolen'")  # fmt: skip


def _replant_ids(pg) -> None:
    pg.psql("DROP TABLE IF EXISTS r29s.ids, r29x.ids CASCADE;\n"
            "DROP SEQUENCE IF EXISTS r29x.r29_stolen;\n"
            f"SET ROLE pgwitness;\n{IDS}RESET ROLE;\n", db="app")  # fmt: skip


def test_an_identitys_sequence_lands_in_the_secret_schema_directly(pg):
    """Precondition: PostgreSQL makes the sequence in r29x and links it to r29x.ids."""
    with RawClient.direct(pg) as c:
        got = planted.text(c.query("BEGIN") + c.query(IDENTITY) + c.query(
            "SELECT pg_get_serial_sequence('r29x.ids', 'id')"))  # fmt: skip
        c.query("ROLLBACK")
    assert "ALTER TABLE" in got and "r29x.r29_stolen" in got, got[-300:]


def test_an_identitys_sequence_name_outside_the_grant(px, pg):
    made, answers = {}, {}
    modes = {**planted.RAW_MODES, "pipelined": lambda c, sql: planted.pipelined(c, [sql])}
    try:
        for mode, send in modes.items():
            with planted.session(px, px.tokens["mig"]) as c:
                answers[mode] = planted.text(send(c, IDENTITY))[-200:]
            made[mode] = pg.psql(_STOLEN, db="app").strip()
            _replant_ids(pg)
    finally:
        _replant_ids(pg)
    assert all(n == "0" for n in made.values()), ("LEAK: DDL in r29x", made, answers)


def test_held_a_sequence_name_where_no_table_of_that_name_is(px, pg):
    sql = ("ALTER TABLE r29s.ident ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY "
           "(SEQUENCE NAME r29x.r29_other)")  # fmt: skip
    for t in single(px, "mig", sql).values():  # refused by the proxy now (SEQUENCE NAME)
        assert "42501" in t and "pgwitness" in t, t[-300:]
    assert pg.psql(_STOLEN.replace("r29_stolen", "r29_other"), db="app").strip() == "0"


# --- leak 3: a cast between system types in a boolean context of constants ----------------

_GLOBAL_WHY = (
    "LEAK: engine._converts_nothing exempts constants with no ::/cast/treat/$ from the DBA's "
    "cast between system types, but a boolean context (NOT, WHERE, CASE WHEN, IS TRUE) "
    "coerces smallint (the grammar's pg_catalog.int2: Classified.types empty) to bool by "
    "the implicit cast's function"
)
GLOBAL = [
    pytest.param("base", "global", "SELECT NOT smallint '7'"),
    pytest.param("base", "global", "SELECT 1 WHERE smallint '7'"),
    pytest.param("base", "global", "SELECT CASE WHEN smallint '7' THEN 1 END"),
    pytest.param("base", "global", "SELECT smallint '7' IS TRUE"),
]


@pytest.mark.parametrize(("grant", "key", "sql"), GLOBAL, ids=_ids(GLOBAL))
def test_a_cast_between_system_types_in_a_boolean_context(px, pg, grant, key, sql):
    probe(pg, px, grant, key, sql)


# --- leaks 4-6: values of a user type a granted call makes, its types unread --------------

_OUT_WHY = ("LEAK: FUNCTION_TYPES_SQL reads proargtypes || prorettype: RETURNS TABLE and "
            "OUT parameters give record, their columns' types (proallargtypes) are never "
            "decided, so the enum's cast to text runs r29_moodtext")  # fmt: skip
_ATTR_WHY = ("LEAK: a call by column syntax (t.r29_cmood) is in Classified.attributes; "
             "StatementPolicy._function_types looks at c.functions only")  # fmt: skip
_AGG_WHY = ("LEAK: an aggregate's transition type (pg_aggregate.aggtranstype, a domain) "
            "is not in FUNCTION_TYPES_SQL: its CHECK's function runs on the state, and the "
            "transition function r29_sf, never granted, with it")  # fmt: skip


def _leak(key: str, sql: str, why: str):
    return pytest.param("fn", key, sql)  # (fixed the same session: a regression test now)


FUNCTIONS = [
    _leak("cast", "SELECT m::text FROM public.r29_tab()", _OUT_WHY),
    _leak("cast", "SELECT m::text FROM ROWS FROM (public.r29_tab()) AS r(m, n)", _OUT_WHY),
    _leak("cast", "SELECT m::text FROM public.r29_outs()", _OUT_WHY),
    _leak("cast", "SELECT (public.r29_outs()).m::text", _OUT_WHY),
    _leak("cast", "SELECT (t.r29_cmood)::text FROM r29s.plain t", _ATTR_WHY),
    _leak("kid", "SELECT public.r29_agg(note) FROM r29s.plain", _AGG_WHY),
    _leak("kid", "SELECT public.r29_agg(x) FROM (VALUES ('a')) v(x)", _AGG_WHY),
    # held: round 28's fix, and a user operator (refused as an operator)
    pytest.param("fn", "cast", "SELECT public.r29_getmood()::text"),
    pytest.param("fn", "cast", "SELECT (text 'a' OPERATOR(public.@~@) text 'b')::text"),
]


@pytest.mark.parametrize(("grant", "key", "sql"), FUNCTIONS, ids=_ids(FUNCTIONS))
def test_values_from_granted_calls(px, pg, grant, key, sql):
    probe(pg, px, grant, key, sql)


# --- held: f4a7976's moves, validation and sequences --------------------------------------


def test_held_views_swapped_by_set_schema(px, pg):
    sqls = ("ALTER VIEW r29s.bv SET SCHEMA r29t", "ALTER VIEW r29m.bv SET SCHEMA r29s",
            "SELECT * FROM r29s.bv WHERE pin::int > 0")  # fmt: skip
    assert leaked(direct(pg, sqls)) == [R["acc"]]
    got = block(px, "mig", sqls)
    assert_no_leak(got, sqls)
    for mode, t in got.items():
        assert "42501" in t and "r29m.bv is a view that hides rows" in t, (mode, t[-400:])


def test_held_validate_constraint_of_a_parent_with_a_secret_child(px, pg):
    sql = "ALTER TABLE r29s.par VALIDATE CONSTRAINT r29_vnum"
    assert leaked(direct(pg, [sql])) == [R["kid"]]
    got = block(px, "mig", [sql])
    assert_no_leak(got, sql)
    for mode, t in got.items():
        assert "42501" in t and "r29x.kid" in t, (mode, t[-400:])
    only = "ALTER TABLE ONLY r29s.par VALIDATE CONSTRAINT r29_vnum"  # PostgreSQL's own 42P16
    got = single(px, "mig", only)
    assert_no_leak(got, only)
    assert all("42P16" in t for t in got.values()), got


@pytest.mark.parametrize("sql", [
    "ALTER SEQUENCE r29s.q OWNED BY r29x.vault.key",
    "ALTER SEQUENCE r29s.q SET SCHEMA r29x",
    "ALTER TABLE r29s.plain SET SCHEMA r29x",
    "ALTER TABLE r29s.moody SET SCHEMA r29m",  # its column's cast counts for the DDL too
])  # fmt: skip
def test_held_ddl_reaching_outside(px, sql):
    got = single(px, "mig", sql)
    planted.assert_denied(got, sql)
    assert_no_leak(got, sql)


# --- transparency --------------------------------------------------------------------------


def test_constants_and_granted_reads_still_run(px):
    out = planted.simple(px, ["SELECT 1", "SELECT true", "SELECT 'x', 2.5"])
    assert not any(o.startswith("error") for o in out), out  # base: constants convert nothing
    # a typed literal may convert (leak 3): not plain constants
    assert planted.simple(px, ["SELECT smallint '7'"])[0].startswith("error 42501")
    out = planted.simple(px, ["SELECT 1", "SELECT note FROM r29s.plain"], token=px.tokens["fn"])
    assert not any(o.startswith("error") for o in out) and "r29-ok" in out[1], out


def test_coarse_refusals_documented(px):
    """With the DBA's cast present, a read that casts nothing needs its function (docs/
    policy.md Functions item 7); kept as the current behaviour, not as a promise."""
    out = planted.simple(px, ["SELECT note FROM r29s.plain"])
    assert out[0].startswith("error 42501") and FLAG in out[0], out
