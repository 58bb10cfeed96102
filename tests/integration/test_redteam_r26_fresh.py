"""Red-team round 26: fresh eyes on the statement policy, with the server as the judge.

Grants (agent ``r26-bot``): ``read:public.r26_t write:public.r26_t`` (base: one table the
agent reads and writes); ``read:public.r26_t`` (ro); ``read:`` and ``ddl:`` on four new
tables' names (ddl). Planted outside every grant:

* rows of ``secret.r26_vault`` (one marker per probe family), ``secret.r26_stat`` (a
  value repeated so ``ANALYZE`` puts it in ``pg_stats``), ``secret.r26_seq`` (a sequence
  whose value is the marker ``4242...``), a custom setting of the database and of the
  upstream role (``app.r26key``, ``app.r26role``);
* by the schema owner (``pgwitness``, the proxy's upstream login): enums
  ``public.r26_mood`` and ``public.r26_mood2`` with casts to ``text`` by user-written
  functions reading ``secret.r26_vault`` (``r26_mood2``'s cast ``AS IMPLICIT``), used as
  column types of the granted ``public.r26_t``; a domain ``public.r26_dom`` whose CHECK
  raises a secret row;
* by a superuser (the DBA): ``CREATE CAST (int2 AS text) WITH FUNCTION
  public.r26_castleak(int2) AS ASSIGNMENT``, a cast between two built-in types by a
  user-written function (owned by the schema owner) reading ``secret.r26_vault``.

Each marker probe is first run directly as the upstream login (its marker comes back),
then through the proxy by a raw client over the simple protocol, the extended one
(unnamed) and a named prepared statement: no byte received may hold a marker. Leaks were
kept as ``xfail(strict=True, ...)`` until fixed; all are fixed (session 20:
``StatementPolicy._casts``, ``policy.catalog.RELATION_CASTS_SQL`` and ``GLOBAL_CASTS_SQL``:
a cast by a user-written function out of or into a user type a relation's values are made
of needs the execute scope on it for every statement reading or writing the relation, and
one between two system types for every statement that evaluates anything).

Leaks found (one family: casts run user-written functions the statement does not name):

1. **A cast between built-in types by a user-written function** (``int2 -> text``): a
   read-only grant's ``SELECT 7::int2::text`` (or ``CAST(7::smallint AS text)``) runs
   ``public.r26_castleak``, which the grant may not execute (refused when called by name),
   and the secret row comes back as the result. All three modes. The cast is ``AS
   ASSIGNMENT``, so a write grant's ``UPDATE public.r26_t SET note = 7::int2 ... RETURNING
   note`` runs it with no cast to text written. The catalog snapshot
   follows casts only into or out of *user* types (``policy.catalog`` ``USER_TYPES_SQL``:
   ``pg_cast`` rows whose ``casttarget``/``castsource`` is in ``usertype``), and
   ``pgparse`` reports types the statement names, so a ``pg_cast`` row between two
   ``pg_catalog`` types is never looked at.
2. **A cast out of a user type the statement does not name**: ``SELECT mood::text FROM
   public.r26_t`` (``mood`` is a column of type ``public.r26_mood``, whose cast to text is
   ``public.r26_moodtext``) runs the cast function; the statement names only ``text``
   (``Classified.types`` comes from TypeName nodes of the parse tree, so a column's own
   type is never decided). No superuser needed: the schema owner made the type and cast.
   All three modes.
3. **An implicit cast runs with no cast written at all**: with ``CREATE CAST
   (public.r26_mood2 AS text) ... AS IMPLICIT``, ``SELECT substr(mood2, 1) FROM
   public.r26_t`` coerces the column through ``public.r26_mood2text`` (and ``WHERE mood2 =
   'calm'`` compares the function's result). All three modes.

   docs/policy.md (Functions, item 6) says what a type runs "includes a cast into or out
   of it by a function", but the check keys on types *named* by the statement;
   ``engine``'s type check (``Snapshot.types`` / ``USER_TYPES_SQL``) never sees a value's
   type when it comes from a column, nor a cast whose ends are both built-in.

Held (regression tests below): ``pg_stats`` / ``pg_stats_ext`` (sampled values of a
secret table), ``pg_stat_activity``; custom settings by ``SHOW`` with quoted or upper-case
names, ``current_setting`` with an upper-case, E-string, parenthesised or
newline-continued name, ``pg_roles.rolconfig`` / ``pg_user.useconfig``,
``pg_options_to_table`` of them; the cast functions called by name; a domain's CHECK via
a ``PREPARE`` parameter type, ``::``, ``CAST``, typed literal, array, ``json_to_recordset``
/ ``xmltable`` / ``ROWS FROM`` column definitions; ``nextval``/``setval`` of a sequence by
OID (a number, an OID string, ``::regclass``); ``pg_sequence_last_value``; ``CREATE
TABLE ... INHERITS`` / ``PARTITION OF`` / ``LIKE ... INCLUDING ALL`` of a secret table and
``OF`` a secret row type. (Also tried by hand: extension C functions that run SQL or read
pages, ``crosstab``, ``connectby``, ``xpath_table``, ``get_raw_page``, ``pgrowlocks``: an
execute scope is needed, since they are not built-ins; ``pg_toast`` tables: the server
refuses USAGE.)
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.planted import shows
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(180)

AGENT = "r26-bot"
SCOPES = "read:public.r26_t write:public.r26_t"
DDL_TARGETS = "public.r26_kid,public.r26_part,public.r26_like,public.r26_typed"
GRANTS = {"ro": "read:public.r26_t",
          "casts": "read:public.r26_t execute:public.r26_moodtext,public.r26_mood2text,"
                   "public.r26_castleak",
          "ddl": f"read:{DDL_TARGETS} ddl:{DDL_TARGETS}"}

R = {  # markers: none may ever come back through the proxy
    "cast": "R26-castval-9a01",  # secret.r26_vault id 1
    "mood": "R26-moodval-9a02",  # id 2
    "implicit": "R26-implval-9a03",  # id 3
    "domain": "R26-domval-9a04",  # id 4
    "stat": "R26-statval-9a05",  # secret.r26_stat, in pg_stats after ANALYZE
    "guc": "R26-gucval-9a06",  # ALTER DATABASE app SET app.r26key
    "role": "R26-roleval-9a07",  # ALTER ROLE pgwitness SET app.r26role
    "seq": "42424",  # secret.r26_seq's values start at 4242400
}
SECRETS = list(R.values())


def _vault(i: int) -> str:
    return f"(SELECT val FROM secret.r26_vault WHERE id = {i})"


SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE TABLE secret.r26_vault (id int PRIMARY KEY, val text);\n"
    "INSERT INTO secret.r26_vault VALUES "
    f"(1, '{R['cast']}'), (2, '{R['mood']}'), (3, '{R['implicit']}'), (4, '{R['domain']}');\n"
    "CREATE TABLE secret.r26_stat (v text);\n"
    f"INSERT INTO secret.r26_stat SELECT '{R['stat']}' FROM generate_series(1, 50);\n"
    "INSERT INTO secret.r26_stat SELECT 'other-' || g FROM generate_series(1, 50) g;\n"
    "CREATE STATISTICS secret.r26_stx ON v, length(v) FROM secret.r26_stat;\n"
    "ANALYZE secret.r26_stat;\n"
    "CREATE SEQUENCE secret.r26_seq START 4242400;\n"
    "SELECT nextval('secret.r26_seq');\n"
    # 2. an explicit cast out of a user type, 3. an implicit one: columns of a granted table
    "CREATE TYPE public.r26_mood AS ENUM ('calm');\n"
    "CREATE FUNCTION public.r26_moodtext(public.r26_mood) RETURNS text LANGUAGE plpgsql AS "
    f"$$ BEGIN RETURN {_vault(2)}; END $$;\n"
    "CREATE CAST (public.r26_mood AS text) WITH FUNCTION public.r26_moodtext(public.r26_mood);\n"
    "CREATE TYPE public.r26_mood2 AS ENUM ('calm');\n"
    "CREATE FUNCTION public.r26_mood2text(public.r26_mood2) RETURNS text LANGUAGE plpgsql AS "
    f"$$ BEGIN RETURN {_vault(3)}; END $$;\n"
    "CREATE CAST (public.r26_mood2 AS text) WITH FUNCTION public.r26_mood2text(public.r26_mood2) "
    "AS IMPLICIT;\n"
    "CREATE TABLE public.r26_t (id int PRIMARY KEY, note text, "
    "mood public.r26_mood DEFAULT 'calm', mood2 public.r26_mood2 DEFAULT 'calm');\n"
    "INSERT INTO public.r26_t (id, note) VALUES (1, 'r26-ok');\n"
    # held: a domain whose CHECK raises a secret row
    "CREATE FUNCTION public.r26_leakchk(text) RETURNS bool LANGUAGE plpgsql AS "
    f"$$ BEGIN RAISE EXCEPTION 'chk %', {_vault(4)}; END $$;\n"
    "CREATE DOMAIN public.r26_dom AS text CHECK (public.r26_leakchk(VALUE));\n"
    # 1. the function of a cast between two built-in types (the cast itself: below)
    "CREATE FUNCTION public.r26_castleak(int2) RETURNS text LANGUAGE plpgsql AS "
    f"$$ BEGIN RETURN {_vault(1)}; END $$;\n"
    "RESET ROLE;\n"
    # as the superuser (a DBA): only an owner of int2 or text may cast between them
    "CREATE CAST (int2 AS text) WITH FUNCTION public.r26_castleak(int2) AS ASSIGNMENT;\n"
    f"ALTER DATABASE app SET app.r26key = '{R['guc']}';\n"
    f"ALTER ROLE pgwitness SET app.r26role = '{R['role']}';\n"
)
TEARDOWN = (
    "DROP CAST IF EXISTS (int2 AS text);\n"
    "DROP TABLE IF EXISTS public.r26_t;\n"
    "DROP CAST IF EXISTS (public.r26_mood AS text);\n"
    "DROP CAST IF EXISTS (public.r26_mood2 AS text);\n"
    "DROP FUNCTION IF EXISTS public.r26_moodtext(public.r26_mood);\n"
    "DROP FUNCTION IF EXISTS public.r26_mood2text(public.r26_mood2);\n"
    "DROP TYPE IF EXISTS public.r26_mood, public.r26_mood2;\n"
    "DROP DOMAIN IF EXISTS public.r26_dom;\n"
    "DROP FUNCTION IF EXISTS public.r26_leakchk(text);\n"
    "DROP FUNCTION IF EXISTS public.r26_castleak(int2);\n"
    "DROP TABLE IF EXISTS public.r26_kid, public.r26_part, public.r26_like, public.r26_typed;\n"
    "DROP TABLE IF EXISTS secret.r26_vault, secret.r26_stat;\n"
    "DROP SEQUENCE IF EXISTS secret.r26_seq;\n"
    "ALTER DATABASE app RESET app.r26key;\n"
    "ALTER ROLE pgwitness RESET app.r26role;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r26fresh", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        handle.oids = dict(
            row.split("=", 1)
            for row in pg.psql(
                "SELECT 'seq=' || 'secret.r26_seq'::regclass::oid", db="app"
            ).split()
        )  # fmt: skip
        yield handle


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


def _direct(pg, sql: str, oids: dict[str, str]) -> str:
    with RawClient.direct(pg) as c:
        got = planted.text(c.query(planted.fill(sql, oids)))
        c.query("ROLLBACK")
    return got


def _check(px, grant: str, key: str, sql: str) -> None:
    got = planted.received_filled(px, sql, token=px.tokens[grant])
    bad = {mode: t[-400:] for mode, t in got.items() if leaked(t)}
    assert not bad, ("LEAK", sorted(bad), sql, bad)


# --- leaks: casts run user-written functions the statement does not name -----------------

_CAST_WHY = (
    "LEAK: a cast whose function is user-written runs without an execute scope when the "
    "statement names no user type: policy.catalog USER_TYPES_SQL follows pg_cast only for "
    "user types, and the type check sees only types the statement names (pgparse TypeName), "
    "never a column's type"
)

CASTS = [
    # (grant, key, sql): each ran a cast's function the grant may not execute
    pytest.param("ro", "cast", "SELECT 7::int2::text"),  # int2 -> text, built-in
    pytest.param("ro", "cast", "SELECT CAST(7::smallint AS text) AS t"),
    # an assignment cast into a text column: no cast to text written
    pytest.param("base", "cast", "UPDATE public.r26_t SET note = 7::int2 WHERE id = 1 RETURNING note"),
    pytest.param("ro", "mood", "SELECT mood::text FROM public.r26_t"),  # a column's type
    pytest.param("ro", "mood", "SELECT CAST(mood AS text) FROM public.r26_t"),
    pytest.param("ro", "implicit", "SELECT substr(mood2, 1) FROM public.r26_t"),  # AS IMPLICIT
    pytest.param("ro", "implicit", "SELECT format('%s', substr(mood2, 1)) AS f FROM public.r26_t"),
]


def _ids(params) -> list[str]:
    return [f"{i:02d}-{p.values[1]}" for i, p in enumerate(params)]


@pytest.mark.parametrize(("grant", "key", "sql"), CASTS, ids=_ids(CASTS))
def test_casts_run_only_functions_the_grant_may_execute(px, pg, grant, key, sql):
    assert shows(_direct(pg, sql, px.oids), R[key]), ("precondition", sql)
    _check(px, grant, key, sql)


def test_a_grant_with_the_cast_functions_runs_the_casts(px):
    """The refusals above are the execute scopes' own: a grant naming the casts' functions
    converts as the server does."""
    for sql in ("SELECT mood::text FROM public.r26_t", "SELECT substr(mood2, 1) FROM public.r26_t",
                "SELECT 7::int2::text"):  # fmt: skip
        out = planted.simple(px, [sql], token=px.tokens["casts"])
        assert not out[0].startswith("error"), (sql, out)
    # constants alone convert nothing: a cast between system types does not stop SELECT 1
    assert not planted.simple(px, ["SELECT 1"], token=px.tokens["ro"])[0].startswith("error")


def test_the_cast_functions_are_refused_by_name(px):
    """The functions behind the casts need an execute scope when called by name: the casts
    are the only way the grant reaches them."""
    for sql in (
        "SELECT public.r26_castleak(7::int2)",
        "SELECT public.r26_moodtext(mood) FROM public.r26_t",
        "SELECT public.r26_mood2text(mood2) FROM public.r26_t",
    ):
        got = planted.received(px, sql, token=px.tokens["ro"])
        planted.assert_denied(got, sql)
        assert not leaked("".join(got.values())), sql


# --- held: probes that must keep failing to show their marker -----------------------------

HELD = [
    # (grant, key, sql): statistics of a secret table, other sessions' statements
    ("ro", "stat", "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'r26_stat'"),
    ("ro", "stat", "SELECT most_common_vals::text FROM pg_catalog.pg_stats_ext"),
    # custom settings (a set: scope names none of them)
    ("ro", "guc", 'SHOW "app.r26key"'),
    ("ro", "guc", 'SHOW app."r26key"'),
    ("ro", "guc", "SHOW APP.R26KEY"),
    ("ro", "guc", "SELECT current_setting('APP.R26KEY')"),
    ("ro", "guc", "SELECT current_setting(E'app.r26key')"),
    ("ro", "guc", "SELECT current_setting(('app.r26key'))"),
    ("ro", "guc", "SELECT current_setting('app.r26'\n'key')"),
    ("ro", "guc", "SELECT current_setting('app.r26key' COLLATE \"C\")"),
    ("ro", "role", "SELECT rolconfig FROM pg_roles"),
    ("ro", "role", "SELECT useconfig FROM pg_user"),
    (
        "ro",
        "role",
        "SELECT * FROM pg_options_to_table((SELECT rolconfig FROM pg_roles "
        "WHERE rolname = 'pgwitness'))",
    ),  # fmt: skip
    # a domain's CHECK, reached through every place a type can be written
    ("base", "domain", "PREPARE r26_q(public.r26_dom) AS SELECT $1; EXECUTE r26_q('x')"),
    ("base", "domain", "PREPARE r26_q2(r26_dom[]) AS SELECT 1; EXECUTE r26_q2('{x}')"),
    ("base", "domain", "SELECT 'x'::r26_dom"),
    ("base", "domain", "SELECT r26_dom 'x'"),
    ("base", "domain", "SELECT '{x}'::public.r26_dom[]"),
    ("base", "domain", 'SELECT * FROM json_to_recordset(\'[{"a":"x"}]\') AS t(a r26_dom)'),
    (
        "base",
        "domain",
        "SELECT * FROM xmltable('/a' PASSING '<a>x</a>' COLUMNS a r26_dom PATH '.')",
    ),
    ("base", "domain", 'SELECT * FROM ROWS FROM (json_to_record(\'{"a":"x"}\') AS (a r26_dom))'),
    # a secret sequence by OID
    ("base", "seq", "SELECT nextval(<<seq>>)"),
    ("base", "seq", "SELECT nextval('<<seq>>')"),
    ("base", "seq", "SELECT nextval('<<seq>>'::regclass)"),
    ("base", "seq", "SELECT setval('<<seq>>', 4242499, false), nextval('<<seq>>')"),
    ("base", "seq", "SELECT pg_catalog.pg_sequence_last_value(<<seq>>)"),
]


def test_held_probes_show_their_marker_directly(px, pg):
    silent = [
        (sql, _direct(pg, sql, px.oids)[-200:])
        for _, key, sql in HELD
        if not shows(_direct(pg, sql, px.oids), R[key])
    ]
    assert not silent, silent


@pytest.mark.parametrize(("grant", "key", "sql"), HELD, ids=[f"{i:02d}-{k}" for i, (_, k, _) in
                                                            enumerate(HELD)])  # fmt: skip
def test_held(px, grant, key, sql):
    _check(px, grant, key, sql)


def test_pg_stat_activity_is_refused(px):
    sql = "SELECT query FROM pg_stat_activity"
    planted.assert_denied(planted.received(px, sql, token=px.tokens["ro"]), sql)


DDL_OVER_SECRET = [
    # a table made from a secret one copies its defaults and CHECKs (object text pinned to a
    # granted name afterwards) or receives its rows' routing: each needs a scope on it
    "CREATE TABLE public.r26_kid () INHERITS (secret.r26_vault)",
    "CREATE TABLE public.r26_part PARTITION OF secret.r26_vault FOR VALUES IN (1)",
    "CREATE TABLE public.r26_like (LIKE secret.r26_vault INCLUDING ALL)",
    "CREATE TABLE public.r26_typed OF secret.r26_vault",
]


@pytest.mark.parametrize("sql", DDL_OVER_SECRET)
def test_tables_made_from_a_secret_table_are_refused(pg, px, sql):
    got = planted.received(px, sql, token=px.tokens["ddl"])
    planted.assert_denied(got, sql)
    made = pg.psql(
        "SELECT count(*) FROM pg_class WHERE relname IN "
        "('r26_kid', 'r26_part', 'r26_like', 'r26_typed')",
        db="app",
    )  # fmt: skip
    assert made.strip() == "0", (sql, made)
