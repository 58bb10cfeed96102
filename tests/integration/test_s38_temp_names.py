"""Session 38's changes to the temporary-relation rule (``StatementPolicy._temp_of_code``),
attacked with a secret that granted code copies into a temporary table, the server judging.

Where code may make temporary relations, an unqualified name no relation of the search
path has may be the temporary one code made (with ``pg_temp`` pinned last, the server finds
it there). Three things changed (the drivers' differential of session 37):

* such a read is refused with the server's SQLSTATE for a name it cannot find, 42P01 (was
  42501): the refusal must still hold, in every protocol mode, and show no secret;
* on a snapshot DDL went through since its load, it is decided after a load;
* a name the statement's own ``CREATE TEMP`` makes counts as that table (a foreign key of
  the new table naming itself). Here code made one of that name first: every such CREATE
  must reach the server and fail there (42P07) before its query reads a row, never
  quote the code's row (``v::int`` does, directly: the control below).
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(300)

AGENT = "s38-temp"
SECRET = "S38-VAULT-ROW"
SCOPES = "read:public.* write:public.* ddl:public.* execute:public.s38_stage"
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA s38v;
CREATE TABLE s38v.vault (v text);
INSERT INTO s38v.vault VALUES ('{SECRET}');
CREATE FUNCTION public.s38_stage() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  CREATE TEMP TABLE s38_copy AS SELECT v FROM s38v.vault;
END $$;
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS s38v CASCADE;\nDROP FUNCTION IF EXISTS public.s38_stage();\n"
STAGE = ("SELECT public.s38_stage()",)

# statements that make a temporary table of the name code's table has, reading that name
MADE_HERE = {
    "ctas": "CREATE TEMP TABLE s38_copy AS SELECT v::int FROM s38_copy",
    "ctas-cte": ("CREATE TEMP TABLE s38_copy AS WITH w AS MATERIALIZED "
                 "(SELECT v::int AS n FROM s38_copy) SELECT n FROM w"),
    "ctas-sublink": "CREATE TEMP TABLE s38_copy AS SELECT (SELECT v::int FROM s38_copy LIMIT 1)",
    "select-into": "SELECT v::int AS n INTO TEMP s38_copy FROM s38_copy",
    "fk-self": "CREATE TEMP TABLE s38_copy (v text REFERENCES s38_copy (v))",
    "view": "CREATE TEMP VIEW s38_copy AS SELECT v::int FROM s38_copy",
}


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s38temp", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


def _directly(pg, sql: str) -> str:
    """``sql`` after the staging call, as the upstream login, in one session."""
    with RawClient.direct(pg) as c:
        return planted.text([f for s in (*STAGE, sql) for f in c.query(s)])


def test_the_control_the_secret_is_in_codes_table_and_a_cast_quotes_it(pg, px):
    got = _directly(pg, "SELECT v::int FROM s38_copy")
    assert "22P02" in got and SECRET in got, got


@pytest.mark.parametrize("sql", ["SELECT * FROM s38_copy", "SELECT v::int FROM s38_copy",
                                 "TABLE s38_copy", "SELECT count(*) FROM s38_copy"])  # fmt: skip
def test_codes_table_by_its_bare_name_is_refused_as_undefined(px, sql):
    got = planted.received(px, sql, before=STAGE)
    planted.assert_no_leak(got, [SECRET], sql)
    for mode, t in got.items():
        assert "C42P01" in t and "pgwitness:" in t and "deny.temp" in t, (mode, t[-500:])


def test_codes_table_qualified_is_refused_as_before(px):
    sql = "SELECT v::int FROM pg_temp.s38_copy"
    got = planted.received(px, sql, before=STAGE)
    planted.assert_no_leak(got, [SECRET], sql)
    for mode, t in got.items():
        assert "C42501" in t and "pgwitness:" in t, (mode, t[-500:])


@pytest.mark.parametrize("key", sorted(MADE_HERE))
def test_a_create_of_codes_name_reaches_the_server_and_reads_nothing(pg, px, key):
    sql = MADE_HERE[key]
    assert "42P07" in _directly(pg, sql)  # what the server says: the name is taken
    got = planted.received(px, sql, before=STAGE)
    planted.assert_no_leak(got, [SECRET], sql)
    for mode, t in got.items():
        assert "C42P07" in t, (mode, t[-500:])


def test_a_new_temporary_table_naming_itself_is_made(px):
    """The honest case: no table of the name before, the CREATE makes it."""
    sql = "CREATE TEMP TABLE s38_own (v int PRIMARY KEY, r int REFERENCES s38_own (v))"
    got = planted.received(px, sql, after=("INSERT INTO s38_own VALUES (1, 1)",
                                           "SELECT r FROM pg_temp.s38_own"))  # fmt: skip
    for mode, t in got.items():
        assert "CREATE TABLE" in t and "INSERT 0 1" in t and "pgwitness:" not in t, (mode, t)
