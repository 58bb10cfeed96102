"""End to end: ordinary SQL the two readings disagreed on (session 18), the server as judge.

Differential runs of PostgreSQL 15's regression suite and psycopg2's tests through the
proxy found these refused as ``parse.disagree`` under the broadest grant: ``SET
CONSTRAINTS name``, ``LIKE ... ESCAPE`` / ``SIMILAR TO``, ``bit_and``/``bit_or``/
``bit_xor``, ``CREATE TABLE (LIKE t INCLUDING ...)``, plain ``EXPLAIN CREATE MATERIALIZED
VIEW``/``CREATE TABLE AS``/``SELECT INTO`` and a ``WITH`` attached to an arm of a set
operation (with.sql). Each now runs through the proxy as it runs directly, under a grant
naming what it touches; each attacker variant is refused by the policy (42501, "pgwitness:
task") and shows no marker: a constraint of a secret schema, a user's ``like_escape`` /
``similar_to_escape`` / ``bit_xor`` overload reading a secret table, ``LIKE`` of a secret
table's defaults, LIKE copying expressions without an insert scope, a relation named like
another arm's WITH query, ``CREATE TABLE AS EXECUTE``. (tests/unit/test_policy_transparency_r20.py
has the classification of each.)
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.proxies import issue as grant_issue
from tests.support.rawpg import RawClient, error_fields

pytestmark = pytest.mark.timeout(180)

AGENT = "s18-bot"
BASE = (
    "read:public.s18_src,public.s18_parent,public.s18_child "
    "write:public.s18_parent,public.s18_child ddl:public.s18_like,public.s18_mv"
)
# LIKE ... INCLUDING DEFAULTS of s18_src, and writes of the table made so
WITH_INSERT = BASE + " insert:public.s18_src write:public.s18_like"
NAMES_SECRET = BASE + " read:secret.s18_sparent"  # names something in schema secret

MARK = {
    "fn": "s18-fnval-91a0",  # the user functions' result: read from the secret table
    "default": "s18-defaultval-91a1",  # secret.s18_tpl's column default
    "hidden": "s18-hiddenval-91a2",  # public.s18_hidden: outside every grant
}
SECRETS = list(MARK.values())

_READS_SECRET = f"$$SELECT val FROM secret.s18_vault WHERE val = '{MARK['fn']}'$$"
SETUP = f"""
SET ROLE pgwitness;
CREATE TABLE public.s18_parent (id int PRIMARY KEY);
CREATE TABLE public.s18_child (pid int CONSTRAINT s18_child_fk REFERENCES public.s18_parent
    DEFERRABLE);
CREATE TABLE public.s18_src (id int, n int DEFAULT 7 CHECK (n > 0), s text DEFAULT 'dflt',
    g int GENERATED ALWAYS AS (n * 2) STORED);
CREATE INDEX s18_src_n ON public.s18_src (n) WHERE n > 1;
INSERT INTO public.s18_src (id, n, s) VALUES (1, 12, 'hello'), (2, 10, 'h%llo'), (3, 6, 'abc');
CREATE TABLE public.s18_hidden (v text);
INSERT INTO public.s18_hidden VALUES ('{MARK['hidden']}');
CREATE TABLE secret.s18_vault (val text);
INSERT INTO secret.s18_vault VALUES ('{MARK['fn']}');
CREATE TABLE secret.s18_tpl (id int, v text DEFAULT '{MARK['default']}');
CREATE TABLE secret.s18_sparent (id int PRIMARY KEY);
CREATE TABLE secret.s18_schild (pid int CONSTRAINT s18_secret_fk REFERENCES secret.s18_sparent
    DEFERRABLE);
CREATE FUNCTION public.like_escape(a varchar, b varchar) RETURNS text LANGUAGE sql
    AS {_READS_SECRET};
CREATE FUNCTION public.similar_to_escape(a varchar) RETURNS text LANGUAGE sql
    AS {_READS_SECRET};
CREATE FUNCTION public.bit_xor(a varchar) RETURNS text LANGUAGE sql AS {_READS_SECRET};
RESET ROLE;
"""
TEARDOWN = """
DROP TABLE IF EXISTS public.s18_child, public.s18_parent, public.s18_src, public.s18_hidden,
    public.s18_like, secret.s18_vault, secret.s18_tpl, secret.s18_schild, secret.s18_sparent;
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT c.relname, c.relkind FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
        AND c.relname IN ('s18_mv', 's18_other') LOOP
        EXECUTE format('DROP %s public.%I', CASE r.relkind WHEN 'm' THEN 'MATERIALIZED VIEW'
            ELSE 'TABLE' END, r.relname);
    END LOOP; END $$;
DROP FUNCTION IF EXISTS public.like_escape(varchar, varchar);
DROP FUNCTION IF EXISTS public.similar_to_escape(varchar);
DROP FUNCTION IF EXISTS public.bit_xor(varchar);
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s18transp", agent=AGENT, scopes=BASE,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        handle.oids = {}
        handle.tokens = {
            "base": handle.token,
            "insert": grant_issue(handle, agent=AGENT, task="S18INS", scopes=WITH_INSERT)[1],
            "secret": grant_issue(handle, agent=AGENT, task="S18SEC", scopes=NAMES_SECRET)[1],
        }
        yield handle


def outcome(frames: list[bytes]) -> str:
    """What a statement gave back, comparable between the proxy and the server: its rows
    and command tags, or its error's SQLSTATE and message."""
    errors = [error_fields(f) for f in frames if f[:1] == b"E"]
    if errors:
        return f"error {errors[0].get('C')}: {errors[0].get('M')}"
    return repr([f for f in frames if f[:1] in (b"D", b"C")])


def run(client: RawClient, sqls: list[str]) -> list[str]:
    return [outcome(client.query(sql)) for sql in sqls]


def directly(pg, sqls: list[str]) -> list[str]:
    with RawClient.direct(pg) as c:
        return run(c, sqls)


def proxied(px, sqls: list[str], grant: str = "base") -> list[str]:
    with planted.session(px, px.tokens[grant]) as c:
        return run(c, sqls)


def refused(out: str) -> bool:
    return out.startswith("error 42501: pgwitness: task")


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if planted.shows(text, s)]


def assert_refused_everywhere(px, sql: str, *before: str, grant: str = "base") -> dict[str, str]:
    """Refused by the policy over the simple protocol, the extended one and a named
    prepared statement, with no marker in any byte received."""
    got = planted.received(px, sql, before=before,
                           after=("ROLLBACK",) if before[:1] == ("BEGIN",) else (),
                           token=px.tokens[grant])  # fmt: skip
    planted.assert_denied(got, sql)
    planted.assert_no_leak(got, SECRETS, sql)
    return got


# --- 1. SET CONSTRAINTS name -----------------------------------------------------------

DEFERRED = [
    "BEGIN",
    "SET CONSTRAINTS s18_child_fk DEFERRED",
    "INSERT INTO public.s18_child VALUES (41)",  # its parent comes later: checked at COMMIT
    "INSERT INTO public.s18_parent VALUES (41)",
    "SET CONSTRAINTS public.s18_child_fk IMMEDIATE",
    "COMMIT",
]


def test_set_constraints_runs_as_it_does_directly(px, pg):
    try:
        direct = directly(pg, DEFERRED)
        pg.psql("DELETE FROM public.s18_child; DELETE FROM public.s18_parent", db="app")
        through = proxied(px, DEFERRED)
        assert through == direct, (through, direct)
        assert all(not o.startswith("error") for o in through), through
        assert pg.psql("SELECT count(*) FROM public.s18_child", db="app").strip() == "1"
        # without the deferral the first insert fails at once, through the proxy too
        failed = proxied(px, ["BEGIN", "INSERT INTO public.s18_child VALUES (42)", "ROLLBACK"])
        assert failed[1].startswith("error 23503"), failed
    finally:
        pg.psql("DELETE FROM public.s18_child; DELETE FROM public.s18_parent", db="app")


def test_set_constraints_of_a_schema_the_grant_names_nothing_in_is_refused(px, pg):
    sql = "SET CONSTRAINTS secret.s18_secret_fk DEFERRED"
    assert "SET CONSTRAINTS" in directly(pg, ["BEGIN", sql, "ROLLBACK"])[1]
    got = assert_refused_everywhere(px, sql, "BEGIN")
    assert all("schema secret" in t for t in got.values()), got
    # a grant naming something in the schema may (PostgreSQL asks USAGE on it, no more)
    out = proxied(px, ["BEGIN", sql, "ROLLBACK"], grant="secret")
    assert not out[1].startswith("error"), out


# --- 2. LIKE / ILIKE ... ESCAPE, SIMILAR TO --------------------------------------------

ESCAPES = [
    "SELECT id, s LIKE 'h#%%' ESCAPE '#', s ILIKE 'H%' ESCAPE '!', s NOT LIKE 'a%' ESCAPE '\\' "
    "FROM public.s18_src ORDER BY id",
    "SELECT id FROM public.s18_src WHERE s SIMILAR TO 'h(e|%)%' ORDER BY id",
    "SELECT id FROM public.s18_src WHERE s NOT SIMILAR TO 'a#%' ESCAPE '#' ORDER BY id",
    # the pattern typed varchar, as public.like_escape's parameters are: the grammar's call
    # is pg_catalog's, which no user function can stand for (no marker directly either)
    "SELECT 'x' LIKE 'h%'::varchar ESCAPE '#'::varchar, 'x' SIMILAR TO 'a%'::varchar",
]


@pytest.mark.parametrize("sql", ESCAPES)
def test_escape_clauses_run_as_they_do_directly(px, pg, sql):
    direct = directly(pg, [sql])
    assert not direct[0].startswith("error") and not leaked(direct[0]), direct
    assert proxied(px, [sql]) == direct


@pytest.mark.parametrize(
    ("sql", "direct"),
    [
        # called by name, the user's varchar overloads are picked: each reads the vault
        ("SELECT like_escape('h%'::varchar, '#'::varchar)", MARK["fn"]),
        ("SELECT similar_to_escape('a%'::varchar)", MARK["fn"]),
        (f"SELECT '{MARK['fn']}' LIKE like_escape('h%'::varchar, '#'::varchar)", "t"),
        (f"SELECT '{MARK['fn']}' SIMILAR TO similar_to_escape('a%'::varchar)", "t"),
        # what an ESCAPE clause holds is read as anywhere else
        ("SELECT 'x' LIKE 'h%' ESCAPE (SELECT left(val, 1) FROM secret.s18_vault)", "f"),
    ],
)
def test_a_users_escape_function_called_by_name_is_refused(px, pg, sql, direct):
    with RawClient.direct(pg) as c:
        assert c.scalar(sql) == direct, sql  # the user's function runs, directly
    assert_refused_everywhere(px, sql)


# --- 3. bit_and, bit_or, bit_xor -------------------------------------------------------


def test_bitwise_aggregates_run_as_they_do_directly(px, pg):
    """(bit_xor has a user's overload here, public.bit_xor(varchar): bit_xor(...) may
    resolve to it, so the policy asks an execute scope for it, by name; pg_catalog.bit_xor
    too, as the policy renders pg_catalog's calls bare. bit_xor alone is in the unit tests.)"""
    sql = ("SELECT bit_and(n), bit_or(n), bit_and(n) FILTER (WHERE n > 6) "
           "FROM public.s18_src")  # fmt: skip
    direct = directly(pg, [sql])
    assert not direct[0].startswith("error"), direct
    assert proxied(px, [sql]) == direct


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT bit_xor('x'::varchar)",  # the user's public.bit_xor(varchar) is picked
        "SELECT bit_xor(n) FROM public.s18_src",  # by name, it may be
        "SELECT bit_or(length(val)) FROM secret.s18_vault",
    ],
)
def test_bitwise_aggregates_over_what_the_grant_does_not_name_are_refused(px, pg, sql):
    out = directly(pg, [sql])[0]
    assert not out.startswith("error") and (leaked(out) or "'x'" not in sql), out
    assert_refused_everywhere(px, sql)


# --- 4. CREATE TABLE ... (LIKE t INCLUDING ...) ----------------------------------------

LIKE_ALL = "CREATE TABLE public.s18_like (LIKE public.s18_src INCLUDING ALL)"
DEFINITION = """
SELECT string_agg(a.attname || '=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-'), ',' ORDER BY a.attnum)
    || ';' || (SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.s18_like'::regclass)
    || ';' || (SELECT count(*) FROM pg_index WHERE indrelid = 'public.s18_like'::regclass)
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = 'public.s18_like'::regclass AND a.attnum > 0
"""


def _exists(pg, rel: str) -> bool:
    return pg.psql(f"SELECT to_regclass('{rel}') IS NOT NULL", db="app").strip() == "t"


def test_like_including_all_runs_as_it_does_directly_with_an_insert_scope(px, pg):
    try:
        direct = directly(pg, [LIKE_ALL])
        expected = pg.psql(DEFINITION, db="app").strip()
        pg.psql("DROP TABLE public.s18_like", db="app")
        assert proxied(px, [LIKE_ALL], grant="insert") == direct
        assert pg.psql(DEFINITION, db="app").strip() == expected
        assert "dflt" in expected and expected.endswith(";1;1"), expected  # check, index
        # the copied default runs on the new table's writes, as on the source's
        out = proxied(px, ["INSERT INTO public.s18_like (id) VALUES (9)"], grant="insert")
        assert not out[0].startswith("error"), out
    finally:
        pg.psql("DROP TABLE IF EXISTS public.s18_like", db="app")


def test_like_copying_expressions_needs_an_insert_scope(px, pg):
    got = assert_refused_everywhere(px, LIKE_ALL)
    assert all("insert scope on public.s18_src" in t and "scope.write" in t
               for t in got.values()), got  # fmt: skip
    assert not _exists(pg, "public.s18_like")
    # LIKE without the options that copy expressions reads the source's columns: read
    try:
        out = proxied(px, ["CREATE TABLE public.s18_like (LIKE public.s18_src INCLUDING "
                           "COMMENTS INCLUDING STORAGE)"])  # fmt: skip
        assert not out[0].startswith("error"), out
    finally:
        pg.psql("DROP TABLE IF EXISTS public.s18_like", db="app")


@pytest.mark.parametrize("grant", ["base", "insert"])
def test_like_of_a_secret_tables_defaults_is_refused(px, pg, grant):
    sql = "CREATE TABLE public.s18_like (LIKE secret.s18_tpl INCLUDING DEFAULTS)"
    assert_refused_everywhere(px, sql, grant=grant)
    assert not _exists(pg, "public.s18_like")
    got = planted.received(px, "INSERT INTO public.s18_like (id) VALUES (1) RETURNING v",
                           token=px.tokens[grant])  # fmt: skip
    planted.assert_no_leak(got, SECRETS, sql)


# --- 5. EXPLAIN of CREATE ... AS; a WITH on a set operation's arm ----------------------

EXPLAINS = [
    "EXPLAIN (costs off) CREATE MATERIALIZED VIEW public.s18_mv AS SELECT * FROM public.s18_src "
    "ORDER BY id",
    "EXPLAIN (costs off) CREATE TABLE public.s18_mv AS SELECT n FROM public.s18_src",
    "EXPLAIN (costs off) SELECT n INTO public.s18_mv FROM public.s18_src",
]


@pytest.mark.parametrize("sql", EXPLAINS)
def test_plain_explain_of_a_create_as_runs_as_it_does_directly(px, pg, sql):
    direct = directly(pg, [sql])
    assert not direct[0].startswith("error"), direct
    assert proxied(px, [sql]) == direct
    assert not _exists(pg, "public.s18_mv")  # planned, not made


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN (costs off) CREATE TABLE public.s18_mv AS SELECT val FROM secret.s18_vault",
        "EXPLAIN (costs off) CREATE MATERIALIZED VIEW public.s18_mv AS SELECT * FROM "
        "public.s18_hidden",
        # ANALYZE makes it: the ddl scope is needed (here: the target is not the grant's)
        "EXPLAIN (ANALYZE, costs off) CREATE TABLE public.s18_other AS SELECT n FROM public.s18_src",
        "EXPLAIN (ANALYZE, ANALYZE false) CREATE TABLE public.s18_other AS SELECT 1",
        # a prepared statement's query is not in the text (nor its Bind-time checks)
        "CREATE TABLE public.s18_mv AS EXECUTE s18_q",
        "EXPLAIN CREATE TABLE public.s18_mv AS EXECUTE s18_q",
    ],
)
def test_explain_and_create_as_of_what_the_grant_does_not_name_are_refused(px, pg, sql):
    before = ("PREPARE s18_q AS SELECT n FROM public.s18_src",) if "EXECUTE" in sql else ()
    assert_refused_everywhere(px, sql, *before)
    assert not _exists(pg, "public.s18_mv") and not _exists(pg, "public.s18_other")


WITH_ARMS = [
    # with.sql: WITH attached to an intermediate-level set operation
    "WITH outermost(x) AS (SELECT 1 UNION (WITH innermost AS (SELECT 2) "
    "SELECT * FROM innermost UNION SELECT 3)) SELECT * FROM outermost ORDER BY 1",
    "WITH RECURSIVE outermost(x) AS (SELECT 1 UNION (WITH innermost AS (SELECT 2) "
    "SELECT * FROM outermost UNION SELECT * FROM innermost)) SELECT * FROM outermost ORDER BY 1",
    # subselect.sql
    "with recursive x(a) as ((values ('a'), ('b')) union all (with z as not materialized "
    "(select * from x) select z.a || z1.a as a from z cross join z as z1 "
    "where length(z.a || z1.a) < 5)) select * from x order by 1",
    "with recursive q as (select n from public.s18_src union all (with x as (select * from q) "
    "select n + 1 from x where n < 12)) select count(*) from q",
]


@pytest.mark.parametrize("sql", WITH_ARMS)
def test_a_with_on_a_set_operations_arm_runs_as_it_does_directly(px, pg, sql):
    direct = directly(pg, [sql])
    assert not direct[0].startswith("error"), direct
    assert proxied(px, [sql]) == direct


@pytest.mark.parametrize(
    "sql",
    [
        # the first s18_hidden is the table (the WITH belongs to the other arm)
        "SELECT v FROM s18_hidden UNION (WITH s18_hidden AS (SELECT 'x') "
        "SELECT * FROM s18_hidden)",
        "(WITH s18_hidden AS (SELECT 'x' AS v) SELECT v FROM s18_hidden) UNION ALL "
        "SELECT v FROM s18_hidden",
        "WITH RECURSIVE w(v) AS (SELECT 'a' UNION (WITH s18_hidden AS (SELECT 'b') "
        "SELECT * FROM s18_hidden) UNION SELECT v FROM s18_hidden) SELECT * FROM w",
    ],
)
def test_a_relation_named_like_another_arms_with_query_is_read(px, pg, sql):
    assert leaked(directly(pg, [sql])[0]), sql
    got = assert_refused_everywhere(px, sql)
    assert all("public.s18_hidden" in t for t in got.values()), got
