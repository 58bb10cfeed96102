"""Red-team round 5 (session 10): a read-only grant's free pg_temp space, judged by the
server with a planted secret and a table the grant may only read.

* A temporary view over a granted table is a simple, updatable view: writes to it land in
  the table (the policy used to see only a write to pg_temp). Now a write to a temporary
  view this session made is decided as a write to what it reads.
* A temporary table made from a read relation (CREATE TABLE AS, SELECT INTO, LIKE) keeps
  its columns' domain types, so writes of chosen values run the domain's CHECK (which here
  raises the secret) or DEFAULT (which returns it as a row). Now a relation made from
  others is decided as values of their row types: their domains' functions need an
  execute scope.

Each probe asserts "no bypass": on the tree before the fixes 11 of them fail.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support import planted

pytestmark = pytest.mark.timeout(300)

AGENT = "e2e-temp"
SCOPES = "read:public.orders,public.customers,public.r5_dt"
SECRET = "r5-secret-8c2a"
READ_SECRET = "SELECT secret FROM secret.r5_vault LIMIT 1"

BASE_SETUP = f"""
SET ROLE pgwitness;
CREATE TABLE secret.r5_vault (secret text);
INSERT INTO secret.r5_vault VALUES ('{SECRET}');
"""
BASE_TEARDOWN = """
DROP TABLE IF EXISTS secret.r5_vault;
"""


def _start(pg, tmp_path_factory, name, setup, teardown, extra_scopes=""):
    return planted.start(pg, tmp_path_factory, name, agent=AGENT, scopes=SCOPES + extra_scopes,
                         setup=BASE_SETUP + setup, teardown=teardown + BASE_TEARDOWN)  # fmt: skip


def _stop(pg, handle, teardown):
    planted.stop(pg, handle, teardown + BASE_TEARDOWN)


def _simple_seq(handle, sqls, token=None):
    return planted.simple(handle, sqls, token)


async def _ext_seq(handle, sqls):
    return await planted.extended(handle, sqls)


# ======================================================================================
# A. a read-only grant on a table with a domain column: a temp table made LIKE it / AS a
#    SELECT of it has a column of the domain type, whose CHECK then runs on chosen input
# ======================================================================================
DOM_SETUP = f"""
CREATE FUNCTION secret.r5_tchk(text) RETURNS bool LANGUAGE plpgsql AS
  $$BEGIN IF $1 = 'boom' THEN RAISE EXCEPTION 'r5leak: %', ({READ_SECRET}); END IF; RETURN true; END$$;
CREATE DOMAIN public.r5_tdom AS text CHECK (secret.r5_tchk(VALUE));
CREATE TABLE public.r5_dt (id int, d public.r5_tdom);
INSERT INTO public.r5_dt VALUES (1, 'ok');
"""
DOM_TEARDOWN = """
DROP TABLE IF EXISTS public.r5_dt;
DROP DOMAIN IF EXISTS public.r5_tdom;
DROP FUNCTION IF EXISTS secret.r5_tchk(text);
"""


@pytest.fixture(scope="class")
def domproxy(pg, tmp_path_factory):
    h = _start(pg, tmp_path_factory, "r5dom", DOM_SETUP, DOM_TEARDOWN)
    try:
        yield h
    finally:
        _stop(pg, h, DOM_TEARDOWN)


class TestDomainThroughTemp:
    def test_server_judges(self, domproxy, pg):
        from devtools.localpg import LocalClusterError

        with pytest.raises(LocalClusterError, match=SECRET):
            pg.psql("CREATE TEMP TABLE r5_j AS SELECT d FROM public.r5_dt; "
                    "INSERT INTO r5_j VALUES ('boom')", db="app")

    @pytest.mark.parametrize(
        "seq",
        [
            ["CREATE TEMP TABLE pg_temp.r5_a AS SELECT d FROM public.r5_dt",
             "INSERT INTO pg_temp.r5_a VALUES ('boom')"],
            ["CREATE TEMP TABLE pg_temp.r5_b (LIKE public.r5_dt)",
             "INSERT INTO pg_temp.r5_b (d) VALUES ('boom')"],
            ["SELECT d INTO TEMP pg_temp.r5_c FROM public.r5_dt",
             "UPDATE pg_temp.r5_c SET d = 'boom'"],
            ["CREATE TEMP TABLE pg_temp.r5_e AS SELECT * FROM public.r5_dt WITH NO DATA; "
             "INSERT INTO pg_temp.r5_e (d) VALUES ('boom') RETURNING d"],
            ["CREATE TEMP TABLE pg_temp.r5_f (LIKE public.r5_dt)",
             "INSERT INTO pg_temp.r5_f (d) SELECT 'boom'"],
        ],
    )
    def test_temp_of_read_relation(self, domproxy, seq):
        outs = _simple_seq(domproxy, seq)
        assert not any(SECRET in o for o in outs), ("BYPASS", outs)

    def test_temp_extended(self, domproxy):
        outs = asyncio.run(_ext_seq(domproxy, [
            "CREATE TEMP TABLE pg_temp.r5_g AS SELECT d FROM public.r5_dt",
            "INSERT INTO pg_temp.r5_g VALUES ('boom')",
        ]))
        assert not any(SECRET in o for o in outs), ("BYPASS", outs)


# ======================================================================================
# B. same family: a domain's DEFAULT carried by LIKE (no INCLUDING) / CTAS; a composite
#    column holding the domain; an implicit cast out of a column's user type
# ======================================================================================
B_SETUP = f"""
CREATE FUNCTION secret.r5_def() RETURNS text LANGUAGE sql AS '{READ_SECRET}';
CREATE DOMAIN public.r5_ddef AS text DEFAULT secret.r5_def();
CREATE FUNCTION secret.r5_tchk(text) RETURNS bool LANGUAGE plpgsql AS
  $$BEGIN IF $1 = 'boom' THEN RAISE EXCEPTION 'r5leak: %', ({READ_SECRET}); END IF; RETURN true; END$$;
CREATE DOMAIN public.r5_tdom AS text CHECK (secret.r5_tchk(VALUE));
CREATE TYPE public.r5_comp AS (x public.r5_tdom);
CREATE TABLE public.r5_dt (id int, d public.r5_ddef, c public.r5_comp);
INSERT INTO public.r5_dt VALUES (1, 'ok', ROW('ok'));
"""
B_TEARDOWN = """
DROP TABLE IF EXISTS public.r5_dt;
DROP TYPE IF EXISTS public.r5_comp;
DROP DOMAIN IF EXISTS public.r5_tdom;
DROP DOMAIN IF EXISTS public.r5_ddef;
DROP FUNCTION IF EXISTS secret.r5_tchk(text);
DROP FUNCTION IF EXISTS secret.r5_def();
"""


@pytest.fixture(scope="class")
def bproxy(pg, tmp_path_factory):
    h = _start(pg, tmp_path_factory, "r5b", B_SETUP, B_TEARDOWN)
    try:
        yield h
    finally:
        _stop(pg, h, B_TEARDOWN)


class TestDomainDefaultThroughTemp:
    @pytest.mark.parametrize(
        "seq",
        [
            ["CREATE TEMP TABLE pg_temp.r5_h (LIKE public.r5_dt)",
             "INSERT INTO pg_temp.r5_h (id) VALUES (1) RETURNING d"],
            ["CREATE TEMP TABLE pg_temp.r5_i AS SELECT d FROM public.r5_dt WITH NO DATA",
             "INSERT INTO pg_temp.r5_i DEFAULT VALUES RETURNING d"],
            ["CREATE TEMP TABLE pg_temp.r5_k AS SELECT c FROM public.r5_dt",
             "INSERT INTO pg_temp.r5_k VALUES ('(boom)')"],
            ["CREATE TEMP TABLE pg_temp.r5_l AS SELECT c FROM public.r5_dt",
             "UPDATE pg_temp.r5_l SET c.x = 'boom'"],
        ],
    )
    def test_b(self, bproxy, seq):
        outs = _simple_seq(bproxy, seq)
        assert not any(SECRET in o for o in outs), ("BYPASS", outs)


class TestTempViewWrites:
    """A temporary view over a relation the grant may only read is auto-updatable: writes
    to pg_temp.v go to the base relation."""

    def test_write_through_temp_view(self, domproxy, pg):
        before = pg.psql("SELECT count(*) FROM public.r5_dt", db="app").strip()
        outs = _simple_seq(domproxy, [
            "CREATE TEMP VIEW pg_temp.r5_v AS SELECT * FROM public.r5_dt",
            "INSERT INTO pg_temp.r5_v (id, d) VALUES (77, 'via-view')",
            "UPDATE pg_temp.r5_v SET d = 'changed' WHERE id = 1",
            "DELETE FROM pg_temp.r5_v WHERE id = 77",
        ])
        after = pg.psql("SELECT string_agg(id || ':' || d, ',') FROM public.r5_dt", db="app").strip()
        print("before", before, "after", after)
        assert "changed" not in after and not any(o.startswith("C") and "INSERT 0 1" in o for o in outs), ("BYPASS", outs, after)

    def test_write_through_temp_view_rules(self, domproxy, pg):
        outs = _simple_seq(domproxy, [
            "CREATE TEMP VIEW pg_temp.r5_w AS SELECT * FROM public.r5_dt WITH LOCAL CHECK OPTION",
            "INSERT INTO pg_temp.r5_w (id, d) VALUES (78, 'via-view2')",
        ])
        after = pg.psql("SELECT string_agg(id || ':' || d, ',') FROM public.r5_dt", db="app").strip()
        print("after", after)
        assert "via-view2" not in after, ("BYPASS", outs, after)

    def test_temp_view_param_insert_domain(self, domproxy):
        outs = asyncio.run(_ext_seq(domproxy, [
            "CREATE TEMP TABLE pg_temp.r5_p AS SELECT d FROM public.r5_dt WITH NO DATA",
        ]))
        assert not any(SECRET in o for o in outs)
