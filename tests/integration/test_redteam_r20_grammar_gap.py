"""Red-team round 20: where the policy's reading of a statement and the server's part ways
because they are not the same PostgreSQL, and names a statement gives to objects that are
not relations.

1. The grammar gap. The policy reads every statement with PostgreSQL's own parser, but
   pglast 8 ships PostgreSQL 18's grammar and the server is 15. docs/policy.md says the two
   "differ only by additions, so a statement 18 reads that 15 does not is an error on the
   server". Not so for the SQL/JSON keywords PostgreSQL 16 and 17 added as
   ``col_name_keyword`` with productions of their own: ``json_value(a, b)``,
   ``json_query(a, b)``, ``json_exists(a, b)``, ``json_array(...)``, ``json_object()``,
   ``json_arrayagg(a)``, ``json_serialize(a)``, ``json_scalar(a)``, ``json(a)`` and
   ``merge_action()`` are SQL/JSON syntax (``JsonFuncExpr``, ``JsonArrayConstructor``,
   ``JsonObjectConstructor``, ``JsonArrayAgg``, ``JsonSerializeExpr``, ``JsonScalarExpr``,
   ``JsonParseExpr``, ``MergeSupportFunc``) to the policy's parser, which reports no call
   (``policy.classify.pgparse``: it collects ``FuncCall`` nodes), while PostgreSQL 15, to
   which none of them is a keyword, reads each as a plain call resolved through the
   search_path: a user-written function of that name in ``public`` runs. The shadowing
   rule (docs/policy.md, Functions item 5) never sees a name to check, and sqlglot's extra
   reading is not a disagreement (only calls PostgreSQL's reading has and sqlglot's lacks
   are). So a read grant runs ``public.json_value`` without an execute scope (here it reads
   a secret table, as the upstream login may), and a grant with ``ddl:public.json_scalar``
   and no ``execute:`` defines the function and calls it: arbitrary SQL
   (``engine._defines_a_built_in_name`` lets the definition by, as ``json_scalar`` is no
   built-in name to the policy, and the call is never seen).
2. ``COMMENT ON SCHEMA s`` and ``COMMENT ON DATABASE d`` are read by sqlglot as comments on
   a table named ``s`` / ``d`` in the first search_path schema
   (``policy.classify.classifier``, the ``exp.Comment`` branch: its ``ops`` come from the
   collector's walk of ``tree.this``), and PostgreSQL's reading adds nothing
   (``OBJECT_SCHEMA`` and ``OBJECT_DATABASE`` are not in ``pgparse._RELATION_OBJECTS``), so
   no disagreement: a ``ddl:public.*`` grant rewrites the comment of any schema and of the
   database (the denial for a grant without it reads "may not change the definition of
   public.<schema>"). A write outside the grant, into object text psql's ``\\dn+`` and
   ``\\l+`` show every user.

Grant: ``read:public.r20_orders write:public.r20_orders``; a second adds
``ddl:public.json_scalar`` (never ``execute:``), a third ``ddl:public.*``. Planted by the
schema owner (``pgwitness``, the proxy's upstream login) outside the grants: a secret
table ``secret.r20_vault`` and, in ``public``, plain SQL functions that read it, named like
the SQL/JSON keywords above, and like built-ins PostgreSQL 15 lacks (``crc32``,
``any_value``, ``pg_input_is_valid``, ``to_regtypemod``: the policy's built-in lists know
them, the shadowing rule must still ask for a scope); a schema ``r20_sec`` with a comment.

Each marker probe is first run directly as the upstream login (the server shows its
marker), then through the proxy by a raw client over the simple protocol, the extended one
(unnamed) and a named prepared statement (set-up statements over the simple protocol in
the same session): no byte received may hold a marker.

Leaks found (all three protocols), closed the same session (pgparse decides each SQL/JSON
or MERGE construct as PostgreSQL 15's call of that name; COMMENT ON kinds other than a
relation's, a type's or a column's are refused by both readings): every SQL/JSON spelling above, in a SELECT list, in FROM, in a
scalar subquery, a CTE, COPY TO, an INSERT/UPDATE RETURNING, PREPARE/EXECUTE, a cursor, a
temporary table's DEFAULT and CREATE TABLE AS, with a bound parameter; a ddl-only grant
defining and calling one; COMMENT ON SCHEMA / DATABASE with ``ddl:public.*``.

Held: the same functions called by a quoted name (``"json_value"(...)``: PostgreSQL's
reading then has the call, sqlglot's not: ``parse.disagree``), qualified, or with SQL/JSON
clauses PostgreSQL 15 cannot parse (a syntax error there); user functions named like
built-ins PostgreSQL 16-18 added (the shadowing rule asks for the scope); COMMENT ON a
secret table, column or type, and COMMENT ON SCHEMA without a ddl scope.
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import shows
from tests.support.proxies import issue as grant_issue
from tests.support.rawpg import RawClient, bind, parse

pytestmark = pytest.mark.timeout(180)

AGENT = "r20-bot"
SCOPES = "read:public.r20_orders write:public.r20_orders"
SCOPES_DDL_FN = "read:public.r20_orders ddl:public.json_scalar"  # no execute: scope
SCOPES_DDL = "read:public.r20_orders ddl:public.*"

R = {  # outside the grants: must never come back through the proxy
    "vault": "r20-vaultval-5c01",
    "crc": "r20-crcval-5c02",
}
SECRETS = list(R.values())
SCHEMA_OK = "r20-ok-schema-5c03"

_BODY = f"$$SELECT val FROM secret.r20_vault WHERE val = '{R['vault']}'$$"
_NEW = f"$$SELECT val FROM secret.r20_vault WHERE val = '{R['crc']}'$$"
# name(argument types): each reads the secret table, as a plain SQL function
JSON_FUNCTIONS = [
    "json_value(a text, b text)",
    "json_query(a text, b text)",
    "json_exists(a text, b text)",
    "json_array(a text)",
    "json_array()",
    "json_object()",
    "json_arrayagg(a text)",
    "json_serialize(a text)",
    "json(a int)",
    "merge_action()",
]
NEWER_BUILTINS = ["crc32(a text)", "any_value(a text)", "pg_input_is_valid(a text, b text)",
                  "to_regtypemod(a text)"]  # fmt: skip


def _quoted(signature: str) -> str:
    name, args = signature.split("(", 1)
    return f'public."{name}"({args}'


def _drop(signature: str) -> str:
    name, args = signature.split("(", 1)
    types = ", ".join(a.split()[-1] for a in args.rstrip(")").split(",") if a.strip())
    return f'DROP FUNCTION IF EXISTS public."{name}"({types});'


SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE TABLE public.r20_orders (id int, note text);\n"
    "INSERT INTO public.r20_orders VALUES (1, 'r20-ok');\n"
    "CREATE TABLE secret.r20_vault (id int, val text);\n"
    f"INSERT INTO secret.r20_vault VALUES (1, '{R['vault']}'), (2, '{R['crc']}');\n"
    + "".join(
        f"CREATE FUNCTION {_quoted(sig)} RETURNS text LANGUAGE sql AS {_BODY};\n"
        for sig in JSON_FUNCTIONS
    )
    + "".join(
        f"CREATE FUNCTION {_quoted(sig)} RETURNS text LANGUAGE sql AS {_NEW};\n"
        for sig in NEWER_BUILTINS
    )
    + "CREATE SCHEMA r20_sec;\n"
    f"COMMENT ON SCHEMA r20_sec IS '{SCHEMA_OK}';\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP TABLE IF EXISTS public.r20_orders, secret.r20_vault;\n"
    "DROP SCHEMA IF EXISTS r20_sec;\n"
    + "".join(_drop(sig) for sig in [*JSON_FUNCTIONS, *NEWER_BUILTINS, "json_scalar(a text)"])
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r20grammar", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        handle.oids = {}
        handle.ddl_fn_token = grant_issue(handle, agent=AGENT, task="R20DDLFN",
                                          scopes=SCOPES_DDL_FN)[1]  # fmt: skip
        handle.ddl_token = grant_issue(handle, agent=AGENT, task="R20DDL", scopes=SCOPES_DDL)[1]
        yield handle


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


def _token(px, grant: str) -> str:
    return {"base": px.token, "ddl_fn": px.ddl_fn_token, "ddl": px.ddl_token}[grant]


def P(sql: str, key: str, *before: str, grant: str = "base"):
    """A probe that holds: its SQL, the marker, its set-up statements, the grant."""
    return pytest.param(sql, key, before, grant)


def leak(sql: str, key: str, reason: str, *before: str, grant: str = "base"):
    """A probe that leaked until the round's fix (``reason`` says what reached the client:
    pgparse reads the SQL/JSON syntax as PostgreSQL 15's call)."""
    return pytest.param(sql, key, before, grant)


GAP = (
    "{spelling} is SQL/JSON syntax to the policy's parser (PostgreSQL 18's grammar, no "
    "FuncCall, so no call to decide on), a plain call to PostgreSQL 15, which runs "
    "public.{name} (reading secret.r20_vault) without an execute scope"
)


def gap(sql: str, spelling: str, name: str, *before: str, grant: str = "base"):
    return leak(sql, "vault", GAP.format(spelling=spelling, name=name), *before, grant=grant)


# --- 1. the grammar gap: SQL/JSON keywords PostgreSQL 15 reads as calls ------------------

PROBES = [
    gap("SELECT json_value('a', 'b')", "json_value(a, b)", "json_value"),
    gap("SELECT json_query('a', 'b')", "json_query(a, b)", "json_query"),
    gap("SELECT json_exists('a', 'b')", "json_exists(a, b)", "json_exists"),
    gap("SELECT json_array('a')", "json_array(a)", "json_array"),
    gap("SELECT json_array()", "json_array()", "json_array"),
    gap("SELECT json_object()", "json_object()", "json_object"),
    gap("SELECT json_arrayagg('a')", "json_arrayagg(a)", "json_arrayagg"),
    gap("SELECT json_serialize('a')", "json_serialize(a)", "json_serialize"),
    gap("SELECT json(1)", "json(a)", "json"),
    gap("SELECT merge_action()", "merge_action()", "merge_action"),
    # the same call in other places of a statement
    gap("SELECT v FROM json_array('x') AS t(v)", "json_array(a) in FROM", "json_array"),
    gap("SELECT json_array((SELECT 'x'))", "json_array((subquery))", "json_array"),
    gap("SELECT (SELECT json_value('a', 'b'))", "a scalar subquery's json_value", "json_value"),
    gap(
        "WITH c AS (SELECT json_query('a', 'b') AS v) SELECT v FROM c",
        "a CTE's json_query",
        "json_query",
    ),  # fmt: skip
    gap("COPY (SELECT json_exists('a', 'b')) TO STDOUT", "COPY (json_exists)", "json_exists"),
    gap(
        "SELECT note FROM public.r20_orders WHERE id = 1 AND json_array() IS NOT NULL "
        "UNION ALL SELECT json_array()",
        "json_array() beside a granted table",
        "json_array",
    ),  # fmt: skip
    gap(
        "INSERT INTO public.r20_orders VALUES (7, json_value('a', 'b')) RETURNING note",
        "an INSERT's json_value",
        "json_value",
        "BEGIN",
    ),  # fmt: skip
    gap(
        "UPDATE public.r20_orders SET note = json_serialize('a') WHERE id = 1 RETURNING note",
        "an UPDATE's json_serialize",
        "json_serialize",
        "BEGIN",
    ),  # fmt: skip
    gap(
        "EXECUTE r20p",
        "a PREPAREd json_query",
        "json_query",
        "PREPARE r20p AS SELECT json_query('a', 'b')",
    ),  # fmt: skip
    gap(
        "FETCH ALL FROM r20c",
        "a cursor's merge_action()",
        "merge_action",
        "BEGIN",
        "DECLARE r20c CURSOR FOR SELECT merge_action()",
    ),  # fmt: skip
    gap(
        "INSERT INTO pg_temp.r20_td DEFAULT VALUES RETURNING v",
        "a temporary table's DEFAULT json_array()",
        "json_array",
        "CREATE TEMP TABLE r20_td (v text DEFAULT json_array())",
    ),  # fmt: skip
    gap(
        "SELECT v FROM pg_temp.r20_ct",
        "CREATE TABLE AS json_object()",
        "json_object",
        "CREATE TEMP TABLE r20_ct AS SELECT json_object() AS v",
    ),  # fmt: skip
    # a ddl scope on the function and no execute scope: define it, then call it
    leak(
        "SELECT json_scalar('a')",
        "vault",
        "a grant with ddl:public.json_scalar and no execute scope defines "
        'public."json_scalar"(text) (allowed: json_scalar is no built-in name to the '
        "policy, engine._defines_a_built_in_name) with a body reading secret.r20_vault, "
        "then json_scalar('a') runs it: JsonScalarExpr to the policy, a call to "
        "PostgreSQL 15. ddl without execute is arbitrary SQL",
        'CREATE OR REPLACE FUNCTION public."json_scalar"(a text) RETURNS text '
        f"LANGUAGE sql AS {_BODY}",
        grant="ddl_fn",
    ),
    # held: the same functions, named so that PostgreSQL's reading has the call
    P("SELECT \"json_value\"('a', 'b')", "vault"),
    P("SELECT public.json_value('a', 'b')", "vault"),
    P('SELECT "merge_action"()', "vault"),
    P('SELECT public."json"(1)', "vault"),
    P(
        "SELECT public.\"json_scalar\"('a')",
        "vault",
        'CREATE OR REPLACE FUNCTION public."json_scalar"(a text) RETURNS text '
        f"LANGUAGE sql AS {_BODY}",
        grant="ddl_fn",
    ),  # fmt: skip
    # held: built-in names PostgreSQL 15 lacks (the policy's lists have them), shadowed
    P("SELECT crc32('a')", "crc"),
    P("SELECT any_value('a')", "crc"),
    P("SELECT pg_input_is_valid('a', 'b')", "crc"),
    P("SELECT to_regtypemod('a')", "crc"),
]


def test_each_probe_reaches_its_marker_directly(px, pg):
    silent = planted.silent_directly(pg, px.oids, PROBES, R.__getitem__)
    assert not silent, "\n".join(map(repr, silent))


@pytest.mark.parametrize(("sql", "key", "before", "grant"), PROBES, ids=planted.ids(PROBES))
def test_probe_shows_no_marker_through_the_proxy(px, sql, key, before, grant):
    bad = planted.leaks(px, sql, leaked, before, token=_token(px, grant))
    assert not bad, ("LEAK", sorted(bad), sql, bad)


# SQL/JSON clauses PostgreSQL 15 cannot parse: its parser refuses them before any lookup
# (through the proxy the server answers 42601), so no user function runs
SYNTAX_ONLY_18 = [
    "SELECT json_value('{\"a\": 1}', '$.a' RETURNING text)",
    "SELECT json_query('[1]', '$' WITH WRAPPER)",
    "SELECT json_object('a' VALUE 'b')",
    "SELECT json_array('a' RETURNING text)",
    "SELECT json_serialize('a' RETURNING text)",
    "SELECT '{}' IS JSON",
]


@pytest.mark.parametrize("sql", SYNTAX_ONLY_18)
def test_sql_json_clauses_postgres_15_cannot_parse_run_nothing(px, pg, sql):
    with RawClient.direct(pg) as c:
        direct = planted.result(c.query(sql))
    assert direct.startswith("error 42601"), direct
    got = planted.received(px, sql)
    bad = {mode: t[-400:] for mode, t in got.items() if leaked(t)}
    assert not bad, ("LEAK", sorted(bad), sql, bad)


def test_bound_parameter_reaches_the_user_function(px):
    """The extended protocol with a real parameter, as drivers send it."""
    with planted.session(px) as c:
        c.send(parse("r20b", "SELECT json_value($1, 'b')", oids=(25,)),
               bind(statement="r20b", params=(b"a",)), m.execute(), m.SYNC)  # fmt: skip
        got = planted.text(c.frames_until_ready())
    assert not leaked(got), ("LEAK", got[-400:])


# --- 2. COMMENT ON SCHEMA / DATABASE: comments on a "table" of that name -----------------


def _schema_comment(pg) -> str:
    return pg.psql("SELECT obj_description('r20_sec'::regnamespace, 'pg_namespace')",
                   db="app").strip()  # fmt: skip


def _database_comment(pg) -> str:
    return pg.psql(
        "SELECT coalesce(shobj_description(oid, 'pg_database'), '<none>') FROM pg_database "
        "WHERE datname = 'app'",
        db="app",
    ).strip()


def _restore_database_comment(pg, before: str) -> None:
    value = "NULL" if before == "<none>" else "'" + before.replace("'", "''") + "'"
    pg.psql(f"COMMENT ON DATABASE app IS {value}", db="app")


def _run(px, mode: str, sql: str, token: str) -> str:
    with planted.session(px, token) as c:
        got = planted.text(planted.RAW_MODES[mode](c, sql))
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), mode
    return got


@pytest.mark.parametrize("mode", list(planted.RAW_MODES))
def test_comment_on_schema_outside_the_grant(px, pg, mode):
    try:
        got = _run(px, mode, "COMMENT ON SCHEMA r20_sec IS 'r20-written'", px.ddl_token)
        after = _schema_comment(pg)
    finally:
        pg.psql(f"COMMENT ON SCHEMA r20_sec IS '{SCHEMA_OK}'", db="app")
    assert after == SCHEMA_OK, (mode, after, got[-300:])
    assert "42501" in got, (mode, got[-300:])


@pytest.mark.parametrize("mode", list(planted.RAW_MODES))
def test_comment_on_database_outside_the_grant(px, pg, mode):
    before = _database_comment(pg)
    try:
        got = _run(px, mode, "COMMENT ON DATABASE app IS 'r20-written-db'", px.ddl_token)
        after = _database_comment(pg)
    finally:
        _restore_database_comment(pg, before)
    assert after == before, (mode, after, got[-300:])
    assert "42501" in got, (mode, got[-300:])


HELD_COMMENTS = [
    # (sql, token): refused, and the object's comment is unchanged (checked for the schema)
    ("COMMENT ON SCHEMA r20_sec IS 'r20-written'", "base"),  # no ddl scope at all
    ("COMMENT ON TABLE secret.r20_vault IS 'r20-written'", "ddl"),
    ("COMMENT ON COLUMN secret.r20_vault.val IS 'r20-written'", "ddl"),
    ("COMMENT ON TYPE secret.r20_vault IS 'r20-written'", "ddl"),
    ("COMMENT ON FUNCTION public.json_value(text, text) IS 'r20-written'", "base"),
]


@pytest.mark.parametrize(("sql", "grant"), HELD_COMMENTS)
def test_comment_on_objects_outside_the_grant_is_refused(px, pg, sql, grant):
    for mode in planted.RAW_MODES:
        got = _run(px, mode, sql, _token(px, grant))
        assert "42501" in got and "pgwitness: task" in got, (mode, sql, got[-300:])
    assert _schema_comment(pg) == SCHEMA_OK
    direct = pg.psql(
        "SELECT coalesce(obj_description('secret.r20_vault'::regclass, 'pg_class'), '-') || "
        "coalesce(col_description('secret.r20_vault'::regclass, 2), '-')",
        db="app",
    )  # fmt: skip
    assert "r20-written" not in direct, direct
