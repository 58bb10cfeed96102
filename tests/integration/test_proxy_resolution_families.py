"""Red-team round 4 (session 10): more places PostgreSQL runs a user-written function a
statement does not name, each judged by the server with a planted secret that must never
reach a read-only grant's client, over the simple and the extended protocol.

Families: ``x IN (SELECT ...)`` (= looked up by name); column syntax on rows that are not
a relation's (an alias renaming columns, a subquery, a WITH query, ``(expr).name``);
multirange types of a dangerous range; a domain's DEFAULT (temporary tables of it, or of a
row type with a column of it); ``CREATE TABLE ... (LIKE t INCLUDING DEFAULTS)`` running
t's defaults; ``jsonb_populate_record(t, ...)`` rebuilding a granted table's row with
chosen values (its domain columns' checks run). Each probe asserts "no leak": before the
fixes 25 of them failed. Each group plants its objects before its own proxy starts (the
catalog snapshot sees them) and drops them after.
"""

from __future__ import annotations

import asyncpg
import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.rawpg import RawClient
from tests.support.rawpg import bind as rawbind
from tests.support.rawpg import parse as rawparse

pytestmark = pytest.mark.timeout(300)

AGENT = "e2e-r4"
SCOPES = "read:public.orders,public.customers,public.r4_ct,public.r4_dt"
SECRET = "r4-secret-31d7"
READ_SECRET = "SELECT secret FROM secret.r4_vault LIMIT 1"
RAISE = f"$$BEGIN RAISE EXCEPTION 'r4leak: %', ({READ_SECRET}); END$$"

BASE_SETUP = f"""
SET ROLE pgwitness;
CREATE TABLE secret.r4_vault (secret text);
INSERT INTO secret.r4_vault VALUES ('{SECRET}');
"""
BASE_TEARDOWN = """
DROP TABLE IF EXISTS secret.r4_vault;
"""


def _start(pg, tmp_path_factory, name, setup, teardown, extra_scopes=""):
    return planted.start(pg, tmp_path_factory, name, agent=AGENT, scopes=SCOPES + extra_scopes,
                         setup=BASE_SETUP + setup, teardown=teardown + BASE_TEARDOWN)  # fmt: skip


def _stop(pg, handle, teardown):
    planted.stop(pg, handle, teardown + BASE_TEARDOWN)


outcomes = planted.outcomes
result = planted.result


def no_leak(got):
    print(got)
    for mode, text in got.items():
        assert SECRET not in text, ("BYPASS", mode, text)


# ======================================================================================
# A. operators PostgreSQL looks up by name without the tree naming them
# ======================================================================================
EQ_SETUP = f"""
CREATE FUNCTION secret.r4_raise(int, bool) RETURNS bool LANGUAGE plpgsql AS {RAISE};
CREATE OPERATOR public.= (LEFTARG = int, RIGHTARG = bool, FUNCTION = secret.r4_raise);
CREATE OPERATOR public.<> (LEFTARG = int, RIGHTARG = bool, FUNCTION = secret.r4_raise);
"""
EQ_TEARDOWN = """
DROP OPERATOR IF EXISTS public.= (int, bool);
DROP OPERATOR IF EXISTS public.<> (int, bool);
DROP FUNCTION IF EXISTS secret.r4_raise(int, bool);
"""


@pytest.fixture(scope="class")
def eqproxy(pg, tmp_path_factory):
    h = _start(pg, tmp_path_factory, "r4eq", EQ_SETUP, EQ_TEARDOWN)
    try:
        yield h
    finally:
        _stop(pg, h, EQ_TEARDOWN)


class TestG1:
    def test_eq_server_judges(self, eqproxy, pg):
        from devtools.localpg import LocalClusterError

        for sql in ("SELECT 1 IN (SELECT true)",):
            with pytest.raises(LocalClusterError, match=SECRET):
                pg.psql(sql, db="app")


    @pytest.mark.parametrize(
        "sql",
        [
            "SELECT 1 = true",  # control: named
            "SELECT 1 IN (SELECT true)",
            "SELECT 1 NOT IN (SELECT true)",
            "SELECT id FROM public.orders WHERE 1 IN (SELECT true) LIMIT 1",
            "SELECT 1 IN (true)",
            "SELECT NULLIF(1, true)",
            "SELECT 1 IS DISTINCT FROM true",
            "SELECT (1, 1) = (1, true)",
            "SELECT 1 = ANY (ARRAY[true])",
            "SELECT CASE 1 WHEN true THEN 1 END",
            "SELECT 1 NOT IN (true)",
            "SELECT 1 <> ALL (SELECT true)",
        ],
    )
    def test_eq_implied(self, eqproxy, sql):
        no_leak(outcomes(eqproxy, sql))


# ======================================================================================
# B. column syntax: a relation alias' column list / subquery renames the column away
# ======================================================================================
COL_SETUP = f"""
CREATE TABLE public.r4_ct (id int, r4_col text, r4_rec text);
INSERT INTO public.r4_ct VALUES (1, 'plain', 'plain');
CREATE FUNCTION public.r4_col(public.r4_ct) RETURNS text LANGUAGE sql AS '{READ_SECRET}';
CREATE FUNCTION public.r4_rec(record) RETURNS text LANGUAGE plpgsql
    AS $$BEGIN RETURN ({READ_SECRET}); END$$;
"""
COL_TEARDOWN = """
DROP FUNCTION IF EXISTS public.r4_col(public.r4_ct);
DROP FUNCTION IF EXISTS public.r4_rec(record);
DROP TABLE IF EXISTS public.r4_ct;
"""


@pytest.fixture(scope="class")
def colproxy(pg, tmp_path_factory):
    h = _start(pg, tmp_path_factory, "r4col", COL_SETUP, COL_TEARDOWN)
    try:
        yield h
    finally:
        _stop(pg, h, COL_TEARDOWN)


class TestG2:
    def test_col_server_judges(self, colproxy, pg):
        assert SECRET in pg.psql("SELECT t.r4_col FROM public.r4_ct t(a, b)", db="app")
        assert SECRET in pg.psql("SELECT s.r4_rec FROM public.r4_ct t, (SELECT 1 AS x) s", db="app")


    def test_col_control_plain_column_allowed(self, colproxy):
        got = outcomes(colproxy, "SELECT t.r4_col FROM public.r4_ct t")
        print(got)
        assert all("plain" in v and not v.startswith("error") for v in got.values()), got


    @pytest.mark.parametrize(
        "sql",
        [
            "SELECT t.r4_col FROM public.r4_ct t(a, b)",
            "SELECT (t).r4_col FROM public.r4_ct t(a, b, c)",
            "SELECT s.r4_col FROM (SELECT id, r4_col AS z, r4_rec FROM public.r4_ct) s",
            "WITH s AS (SELECT id, r4_col AS z, r4_rec FROM public.r4_ct) SELECT s.r4_col FROM s",
            "SELECT s.r4_rec FROM public.r4_ct t, (SELECT 1 AS x) s",
            "SELECT t.r4_rec FROM public.r4_ct t(a, b, c)",
            "SELECT s.r4_rec FROM public.r4_ct t CROSS JOIN LATERAL (SELECT t.id) s",
            "SELECT (SELECT s FROM (SELECT 1) s).r4_rec FROM public.r4_ct",
        ],
    )
    def test_col_renamed(self, colproxy, sql):
        no_leak(outcomes(colproxy, sql))


# ======================================================================================
# C. multiranges (and other types made of a dangerous type the closure may miss)
# ======================================================================================
RNG_SETUP = f"""
CREATE FUNCTION secret.r4_chk(int) RETURNS bool LANGUAGE plpgsql AS
  $$BEGIN IF VALUE_IS_BOOM THEN RAISE EXCEPTION 'r4leak: %', ({READ_SECRET}); END IF; RETURN true; END$$;
CREATE DOMAIN public.r4_dom AS int CHECK (secret.r4_chk(VALUE));
CREATE TYPE public.r4_rng AS RANGE (SUBTYPE = public.r4_dom, MULTIRANGE_TYPE_NAME = public.r4_mrng);
CREATE FUNCTION secret.r4_tchk(text) RETURNS bool LANGUAGE plpgsql AS
  $$BEGIN IF $1 = 'boom' THEN RAISE EXCEPTION 'r4leak: %', ({READ_SECRET}); END IF; RETURN true; END$$;
CREATE DOMAIN public.r4_tdom AS text CHECK (secret.r4_tchk(VALUE));
CREATE TABLE public.r4_dt (id int, d public.r4_tdom);
INSERT INTO public.r4_dt VALUES (1, 'ok');
""".replace("VALUE_IS_BOOM", "$1 = 666")
RNG_TEARDOWN = """
DROP TABLE IF EXISTS public.r4_dt;
DROP DOMAIN IF EXISTS public.r4_tdom;
DROP FUNCTION IF EXISTS secret.r4_tchk(text);
DROP TYPE IF EXISTS public.r4_rng;
DROP DOMAIN IF EXISTS public.r4_dom;
DROP FUNCTION IF EXISTS secret.r4_chk(int);
"""


@pytest.fixture(scope="class")
def rngproxy(pg, tmp_path_factory):
    h = _start(pg, tmp_path_factory, "r4rng", RNG_SETUP, RNG_TEARDOWN)
    try:
        yield h
    finally:
        _stop(pg, h, RNG_TEARDOWN)


class TestG3:
    def test_rng_server_judges(self, rngproxy, pg):
        from devtools.localpg import LocalClusterError

        for sql in ("SELECT '{[1,666]}'::public.r4_mrng",
                    "SELECT jsonb_populate_record(t, '{\"d\": \"boom\"}') FROM public.r4_dt t"):
            with pytest.raises(LocalClusterError, match=SECRET):
                pg.psql(sql, db="app")


    @pytest.mark.parametrize(
        "sql",
        [
            "SELECT '[1,666]'::public.r4_rng",  # control
            "SELECT '{[1,666]}'::public.r4_mrng",
            "SELECT '{[1,666]}'::r4_mrng",
            "SELECT ARRAY['{[1,666]}']::public.r4_mrng[]",
            "SELECT public.r4_mrng '{[1,666]}'",
        ],
    )
    def test_rng_values(self, rngproxy, sql):
        no_leak(outcomes(rngproxy, sql))


    @pytest.mark.parametrize(
        "sql",
        [
            "SELECT jsonb_populate_record(t, '{\"d\": \"boom\"}') FROM public.r4_dt t",
            "SELECT json_populate_record(t, '{\"d\": \"boom\"}') FROM public.r4_dt t",
            "SELECT (jsonb_populate_recordset(t, '[{\"d\": \"boom\"}]')).d FROM public.r4_dt t",
        ],
    )
    def test_row_of_granted_table_rebuilt(self, rngproxy, sql):
        no_leak(outcomes(rngproxy, sql))


def _oid(pg, name):
    return int(pg.psql(f"SELECT '{name}'::regtype::oid", db="app").strip())


class TestG4:
    @pytest.mark.parametrize("typ", ["public.r4_mrng", "public.r4_mrng[]", "public.r4_rng", "public.r4_dom[]"])
    def test_rng_parse_oid(self, rngproxy, pg, typ):
        oid = _oid(pg, typ)
        val = {"public.r4_mrng": b"{[1,666]}", "public.r4_mrng[]": b'{"{[1,666]}"}',
               "public.r4_rng": b"[1,666]", "public.r4_dom[]": b"{666}"}[typ]
        with RawClient.session(rngproxy.host, rngproxy.port, AGENT, rngproxy.token) as c:
            c.send(rawparse("", "SELECT $1", (oid,)), rawbind(params=[val]), m.execute(), m.SYNC)
            got = result(c.frames_until_ready())
        print(typ, got)
        assert SECRET not in got, ("BYPASS", typ, got)


# ======================================================================================
# E. domain DEFAULTs (recorded in pg_depend on the type, not on a constraint), LIKE
# INCLUDING DEFAULTS of a granted table, into a temporary table (default.temp)
# ======================================================================================
DEF_SETUP = f"""
CREATE FUNCTION secret.r4_def() RETURNS text LANGUAGE sql AS '{READ_SECRET}';
CREATE DOMAIN public.r4_ddef AS text DEFAULT secret.r4_def();
CREATE TYPE public.r4_dcomp AS (a public.r4_ddef);
CREATE TABLE public.r4_ct (id int, r4_col text DEFAULT secret.r4_def(), r4_rec text);
"""
DEF_TEARDOWN = """
DROP TABLE IF EXISTS public.r4_ct;
DROP TYPE IF EXISTS public.r4_dcomp;
DROP DOMAIN IF EXISTS public.r4_ddef;
DROP FUNCTION IF EXISTS secret.r4_def();
"""


@pytest.fixture(scope="class")
def defproxy(pg, tmp_path_factory):
    h = _start(pg, tmp_path_factory, "r4def", DEF_SETUP, DEF_TEARDOWN)
    try:
        yield h
    finally:
        _stop(pg, h, DEF_TEARDOWN)


def _simple_seq(handle, sqls, token=None):
    return planted.simple(handle, sqls, token)


class TestDefaults:
    def test_domain_default_temp_table(self, defproxy):
        outs = _simple_seq(defproxy, [
            "CREATE TEMP TABLE pg_temp.r4_x (a public.r4_ddef)",
            "INSERT INTO pg_temp.r4_x DEFAULT VALUES RETURNING a",
        ])
        assert not any(SECRET in o for o in outs), ("BYPASS", outs)

    def test_domain_default_one_message(self, defproxy):
        outs = _simple_seq(defproxy, [
            "CREATE TEMP TABLE pg_temp.r4_y (a public.r4_ddef); "
            "INSERT INTO pg_temp.r4_y DEFAULT VALUES RETURNING a",
        ])
        assert not any(SECRET in o for o in outs), ("BYPASS", outs)

    def test_like_including_defaults(self, defproxy):
        outs = _simple_seq(defproxy, [
            "CREATE TEMP TABLE pg_temp.r4_z (LIKE public.r4_ct INCLUDING DEFAULTS)",
            "INSERT INTO pg_temp.r4_z (id) VALUES (1) RETURNING r4_col",
        ])
        assert not any(SECRET in o for o in outs), ("BYPASS", outs)

    def test_typed_temp_table_of_composite_with_default_domain(self, defproxy):
        outs = _simple_seq(defproxy, [
            "CREATE TEMP TABLE pg_temp.r4_w OF public.r4_dcomp",
            "INSERT INTO pg_temp.r4_w DEFAULT VALUES RETURNING a",
        ])
        assert not any(SECRET in o for o in outs), ("BYPASS", outs)

    def test_domain_default_extended(self, defproxy):
        import asyncio as _a

        async def run():
            conn = await asyncpg.connect(host=defproxy.host, port=defproxy.port, user=AGENT,
                                         password=defproxy.token, database="app", ssl=False)
            try:
                await conn.execute("CREATE TEMP TABLE pg_temp.r4_v (a public.r4_ddef)")
                return repr(await conn.fetch("INSERT INTO pg_temp.r4_v DEFAULT VALUES RETURNING a"))
            except asyncpg.PostgresError as exc:
                return f"error {exc.sqlstate}: {exc}"
            finally:
                await conn.close()

        got = _a.run(run())
        print(got)
        assert SECRET not in got, ("BYPASS", got)
