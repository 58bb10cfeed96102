"""Red-team round 6 (session 10): writes through temporary views to a table the grant may
only read, judged by the server (a marker row must never appear in, nor row 1 change in,
``public.r6_ro``), over the simple and the extended protocol.

The routes: a temporary view shadowing an unqualified granted name (PostgreSQL looks in
pg_temp first), one renamed, one whose DROP failed or was rolled back, one re-created
over a writable table by a statement that failed, and a prepared INSERT analysed again
after its temporary table was swapped for a view. Round 5's name-by-name tracking of
temporary views missed all of them; the rule now is that a temporary view may only show
relations the grant may write anyway (``policy/decide.py`` ``_temp_view``). Before it, 15
of these failed.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support import planted
from tests.support.planted import result
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(300)

AGENT = "e2e-r6"
SCOPES = "read:public.r6_ro,public.r6_rw write:public.r6_rw"
SETUP = """
SET ROLE pgwitness;
CREATE TABLE public.r6_ro (id int, note text);
INSERT INTO public.r6_ro VALUES (1, 'orig');
CREATE TABLE public.r6_rw (id int, note text);
INSERT INTO public.r6_rw VALUES (1, 'orig');
"""
TEARDOWN = """
DROP TABLE IF EXISTS public.r6_ro CASCADE;
DROP TABLE IF EXISTS public.r6_rw CASCADE;
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r6", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as h:  # fmt: skip
        yield h


def seq(h, sqls):
    return planted.simple(h, sqls)


def ro_state(pg):
    return pg.psql("SELECT string_agg(id || ':' || note, ',' ORDER BY id) FROM public.r6_ro", db="app").strip()


def judge(pg, h, sqls, marker):
    outs = seq(h, sqls)
    st = ro_state(pg)
    print("RO", st)
    assert marker not in st, ("BYPASS", outs, st)


V = "CREATE TEMP VIEW {n} AS SELECT * FROM public.r6_ro"


def test_p1_unqualified_shadow(px, pg):
    judge(pg, px, ["CREATE TEMP VIEW r6_rw AS SELECT * FROM public.r6_ro",
                   "INSERT INTO r6_rw VALUES (11, 'p1')"], "p1")


def test_p2_failed_drop(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v2"), "DROP TABLE pg_temp.r6_v2",
                   "INSERT INTO pg_temp.r6_v2 VALUES (12, 'p2')"], "p2")


def test_p3_rollback_drop(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v3"), "BEGIN", "DROP VIEW pg_temp.r6_v3", "ROLLBACK",
                   "INSERT INTO pg_temp.r6_v3 VALUES (13, 'p3')"], "p3")


def test_p4_rename(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v4"), "ALTER VIEW pg_temp.r6_v4 RENAME TO r6_v4b",
                   "INSERT INTO pg_temp.r6_v4b VALUES (14, 'p4')"], "p4")


def test_p4b_rename_table(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v4c"), "ALTER TABLE pg_temp.r6_v4c RENAME TO r6_v4d",
                   "INSERT INTO pg_temp.r6_v4d VALUES (15, 'p4b')"], "p4b")


def test_p5_return_rule(px, pg):
    judge(pg, px, ["CREATE TEMP TABLE pg_temp.r6_t5 (id int, note text)",
                   'CREATE RULE "_RETURN" AS ON SELECT TO pg_temp.r6_t5 DO INSTEAD SELECT * FROM public.r6_ro',
                   "INSERT INTO pg_temp.r6_t5 VALUES (16, 'p5')"], "p5")


def test_p6_prepare_then_swap(px, pg):
    judge(pg, px, ["CREATE TEMP TABLE pg_temp.r6_t6 (id int, note text)",
                   "PREPARE r6p AS INSERT INTO pg_temp.r6_t6 VALUES (17, 'p6')",
                   "DROP TABLE pg_temp.r6_t6",
                   V.format(n="pg_temp.r6_t6"),
                   "EXECUTE r6p"], "p6")


def test_p7_real_temp_schema_name(px, pg):
    outs = seq(px, [V.format(n="pg_temp.r6_v7"),
                    "SELECT pg_my_temp_schema()::regnamespace::text"])
    print(outs)


def test_p7b_real_temp_schema_name(px, pg):
    with RawClient.session(px.host, px.port, AGENT, px.token) as c:
        o1 = result(c.query(V.format(n="pg_temp.r6_v7")))
        ns = result(c.query("SELECT pg_my_temp_schema()::regnamespace::text"))
        print(o1, ns)
        import re
        m = re.search(r"pg_temp_\d+", ns)
        name = m.group(0) if m else "pg_temp_3"
        o2 = result(c.query(f"INSERT INTO {name}.r6_v7 VALUES (18, 'p7')"))
        print(o2)
    st = ro_state(pg)
    assert "p7" not in st, ("BYPASS", o2, st)


def test_p8_rule_on_temp_table(px, pg):
    judge(pg, px, ["CREATE TEMP TABLE pg_temp.r6_t8 (id int, note text)",
                   "CREATE RULE r6_r8 AS ON INSERT TO pg_temp.r6_t8 DO ALSO INSERT INTO public.r6_ro VALUES (NEW.id, NEW.note)",
                   "INSERT INTO pg_temp.r6_t8 VALUES (19, 'p8')"], "p8")


def test_p9_cte_on_view(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v9"),
                   "WITH x AS (INSERT INTO pg_temp.r6_v9 VALUES (20, 'p9') RETURNING 1) SELECT * FROM x"], "p9")


def test_p10_same_message_rename(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v10") + "; ALTER VIEW pg_temp.r6_v10 RENAME TO r6_v10b; INSERT INTO pg_temp.r6_v10b VALUES (21, 'p10')"], "p10")


def test_p11_ext_prepared_swap(px, pg):
    async def go():
        conn = await asyncpg.connect(host=px.host, port=px.port, user=AGENT, password=px.token,
                                     database="app", ssl=False, timeout=10)
        outs = []
        try:
            await conn.execute("CREATE TEMP TABLE pg_temp.r6_t11 (id int, note text)")
            st = await conn.prepare("INSERT INTO pg_temp.r6_t11 VALUES (22, 'p11')")
            await conn.execute("DROP TABLE pg_temp.r6_t11")
            try:
                await conn.execute(V.format(n="pg_temp.r6_t11"))
            except asyncpg.InsufficientPrivilegeError as e:
                outs.append(repr(e))  # the view is refused: nothing to swap in
            try:
                outs.append(await st.fetch())
            except Exception as e:
                outs.append(repr(e))
        finally:
            await conn.close()
        return outs
    outs = asyncio.run(go())
    print(outs)
    st = ro_state(pg)
    assert "p11" not in st, ("BYPASS", outs, st)


async def _ext(px, sqls):
    return await planted.extended(px, sqls)


def ext_judge(pg, px, sqls, marker):
    outs = asyncio.run(_ext(px, sqls))
    print("\nEXT", outs)
    st = ro_state(pg)
    assert marker not in st, ("BYPASS", outs, st)


def test_e1_unqualified_shadow_ext(px, pg):
    ext_judge(pg, px, ["CREATE TEMP VIEW r6_rw AS SELECT * FROM public.r6_ro",
                       "INSERT INTO r6_rw VALUES (31, 'e1')"], "e1")


def test_e2_failed_drop_ext(px, pg):
    ext_judge(pg, px, [V.format(n="pg_temp.r6_e2"), "DROP TABLE pg_temp.r6_e2",
                       "UPDATE pg_temp.r6_e2 SET note = 'e2' WHERE id = 1"], "e2")


def test_e4_rename_ext(px, pg):
    ext_judge(pg, px, [V.format(n="pg_temp.r6_e4"), "ALTER VIEW pg_temp.r6_e4 RENAME TO r6_e4b",
                       "INSERT INTO pg_temp.r6_e4b VALUES (34, 'e4')"], "e4")


def test_p12_quoted_case(px, pg):
    judge(pg, px, ['CREATE TEMP VIEW pg_temp."R6_V12" AS SELECT * FROM public.r6_ro',
                   "INSERT INTO pg_temp.\"R6_V12\" VALUES (40, 'p12')"], "p12")


def test_p13_uescape(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v13"),
                   "INSERT INTO pg_temp.U&\"r6_v\\0031\\0033\" VALUES (41, 'p13')"], "p13")


def test_p14_drop_multi_failing(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v14"), "DROP VIEW pg_temp.r6_v14, pg_temp.r6_nonexist",
                   "DELETE FROM pg_temp.r6_v14 WHERE id = 1",
                   "INSERT INTO pg_temp.r6_v14 VALUES (42, 'p14')"], "p14")


def test_p15_unqualified_rename_same_temp(px, pg):
    # view created unqualified, renamed unqualified
    judge(pg, px, ["CREATE TEMP VIEW r6_v15 AS SELECT * FROM public.r6_ro",
                   "ALTER VIEW r6_v15 RENAME TO r6_v15b",
                   "INSERT INTO r6_v15b VALUES (43, 'p15')"], "p15")


def test_p16_search_path_pg_temp(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v16"),
                   "SET search_path = pg_temp, public",
                   "INSERT INTO r6_v16 VALUES (44, 'p16')"], "p16")


def test_p17_cursor_current_of(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v17"), "BEGIN",
                   "DECLARE r6c CURSOR FOR SELECT * FROM pg_temp.r6_v17 FOR UPDATE",
                   "FETCH r6c",
                   "UPDATE pg_temp.r6_v17 SET note = 'p17' WHERE CURRENT OF r6c", "COMMIT"], "p17")


def test_p18_update_unqualified_shadow(px, pg):
    judge(pg, px, ["CREATE TEMP VIEW r6_rw AS SELECT * FROM public.r6_ro",
                   "UPDATE r6_rw SET note = 'p18' WHERE id = 1"], "p18")


def test_p19_view_over_unqualified_shadow(px, pg):
    judge(pg, px, ["CREATE TEMP TABLE r6_rw AS SELECT * FROM public.r6_ro WITH NO DATA",
                   "DROP TABLE pg_temp.r6_rw",
                   "CREATE TEMP VIEW pg_temp.r6_rw AS SELECT * FROM public.r6_ro",
                   "CREATE TEMP VIEW pg_temp.r6_v19 AS SELECT * FROM r6_rw",
                   "INSERT INTO pg_temp.r6_v19 VALUES (45, 'p19')"], "p19")


def test_p26_as_table(px, pg):
    judge(pg, px, ["CREATE TEMP VIEW pg_temp.r6_v26 AS TABLE public.r6_ro",
                   "INSERT INTO pg_temp.r6_v26 VALUES (50, 'p26')"], "p26")


def test_p27_create_or_replace(px, pg):
    judge(pg, px, ["CREATE OR REPLACE TEMP VIEW r6_v27 AS SELECT * FROM public.r6_ro",
                   "INSERT INTO pg_temp.r6_v27 VALUES (51, 'p27')"], "p27")


def test_p33_failed_recreate_retargets(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v33"),
                   "CREATE TEMP VIEW pg_temp.r6_v33 AS SELECT * FROM public.r6_rw",
                   "INSERT INTO pg_temp.r6_v33 VALUES (52, 'p33')"], "p33")


def test_p34_rolled_back_replace(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v34"), "BEGIN",
                   "CREATE OR REPLACE TEMP VIEW pg_temp.r6_v34 AS SELECT * FROM public.r6_rw",
                   "ROLLBACK",
                   "INSERT INTO pg_temp.r6_v34 VALUES (53, 'p34')"], "p34")


def test_p35_on_conflict_and_merge(px, pg):
    judge(pg, px, [V.format(n="pg_temp.r6_v35"),
                   "INSERT INTO pg_temp.r6_v35 VALUES (54, 'p35') ON CONFLICT DO NOTHING"], "p35")
