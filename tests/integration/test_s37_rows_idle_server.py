"""The server judges ``Classified.rows_idle`` (session 37): every statement the classifier
reads as DDL that checks, recomputes and rebuilds no stored row is run directly on a table
whose CHECK, generated column and expression index call a function that raises once it is
replaced, and none may run it; every statement it reads otherwise that runs the function
shows that it does (so the probe can fail). The same statements as
tests/unit/test_s37_rows_idle.py, on a real table."""

from __future__ import annotations

import pytest

from devtools.localpg import LocalClusterError
from policy.classify import classify

SETUP = """
DROP SCHEMA IF EXISTS s37i CASCADE;
CREATE SCHEMA s37i;
CREATE FUNCTION s37i.judge(v text) RETURNS boolean IMMUTABLE LANGUAGE plpgsql
  AS $$ BEGIN RETURN true; END $$;
CREATE DOMAIN s37i.dom AS text;
CREATE TABLE s37i.t (id int PRIMARY KEY, v text, w text,
  g boolean GENERATED ALWAYS AS (s37i.judge(v)) STORED,
  CONSTRAINT c CHECK (s37i.judge(v)));
CREATE INDEX ON s37i.t (s37i.judge(w));
CREATE TABLE s37i.u (id int PRIMARY KEY);
INSERT INTO s37i.u VALUES (1);
INSERT INTO s37i.t (id, v, w) SELECT g, 'v' || g, 'w' || g FROM generate_series(1, 5) g;
CREATE OR REPLACE FUNCTION s37i.judge(v text) RETURNS boolean IMMUTABLE LANGUAGE plpgsql
  AS $$ BEGIN RAISE EXCEPTION 'S37-RAN %', v; END $$;
"""

# the unit test's statements, on s37i.t (a name it cannot have is left out)
IDLE = [
    "ALTER TABLE s37i.t ADD COLUMN note text",
    "ALTER TABLE s37i.t ADD COLUMN n int",
    "ALTER TABLE s37i.t ADD COLUMN a text[]",
    "ALTER TABLE s37i.t ADD COLUMN x varchar(10)",
    "ALTER TABLE s37i.t ADD COLUMN IF NOT EXISTS ts timestamp with time zone",
    "ALTER TABLE s37i.t ADD COLUMN n int, ADD COLUMN m text",
    "ALTER TABLE s37i.t ALTER COLUMN w SET DEFAULT 'x'",
    "ALTER TABLE s37i.t ALTER COLUMN w DROP DEFAULT",
    "ALTER TABLE s37i.t ALTER COLUMN w DROP NOT NULL",
    "ALTER TABLE s37i.t DROP CONSTRAINT c",
    "CREATE INDEX ON s37i.t (id)",
    "CREATE INDEX ON s37i.t (id, v DESC NULLS LAST)",
    "CREATE UNIQUE INDEX ON s37i.t (id) INCLUDE (v)",
]
# statements that do run it: the probe can see a run
BUSY = [
    "ALTER TABLE s37i.t ADD COLUMN s serial",
    "ALTER TABLE s37i.t ADD COLUMN r float8 DEFAULT random()",
    "ALTER TABLE s37i.t ALTER COLUMN w TYPE varchar(20)",
    "ALTER TABLE s37i.t SET UNLOGGED",
    "ALTER TABLE s37i.t ADD CONSTRAINT c2 CHECK (s37i.judge(w))",
    "REINDEX TABLE s37i.t",
    "VACUUM FULL s37i.t",
]


def _runs_it(pg, sql: str) -> bool:
    pg.psql(SETUP, db="app")
    try:
        # (VACUUM cannot run in a block; SETUP makes everything again for the next one)
        pg.psql(sql + ";" if sql.startswith("VACUUM") else f"BEGIN;\n{sql};\nROLLBACK;", db="app")
    except LocalClusterError as exc:
        if "S37-RAN" in str(exc):
            return True
        raise
    return False


@pytest.fixture(scope="module", autouse=True)
def _drop(pg):
    yield
    pg.psql("DROP SCHEMA IF EXISTS s37i CASCADE;", db="app")


@pytest.mark.parametrize("sql", IDLE)
def test_idle_ddl_runs_no_stored_code(pg, sql):
    (c,) = classify(sql)
    assert c.rows_idle, sql
    assert not _runs_it(pg, sql), f"{sql}: the server ran the table's code"


@pytest.mark.parametrize("sql", BUSY)
def test_ddl_that_runs_it_is_not_idle(pg, sql):
    (c,) = classify(sql)
    assert not c.rows_idle, sql
    assert _runs_it(pg, sql), f"{sql}: the probe saw no run (it cannot tell)"
