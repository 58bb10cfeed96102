"""``Classified.rows_idle`` (``policy.classify.pgparse.rows_idle``): DDL that neither checks,
recomputes nor rebuilds a stored row, so a relation's CHECKs, generated columns and index
expressions do not run and the grant needs no execute scope on them (red-team round 83's
transparency regressions: ``ADD COLUMN note text`` and ``CREATE INDEX ON t (id)`` were
refused on a table whose CHECK calls a function). Everything that may rewrite the table,
validate a constraint or build an index over an expression stays False: a domain or
``serial`` column (a default the rewrite computes per row), a default, a constraint, a type
change, an operator class named, a predicate, CASCADE."""

from __future__ import annotations

import pytest

from policy.classify import classify

IDLE = [
    "ALTER TABLE t ADD COLUMN note text",
    "ALTER TABLE t ADD COLUMN n int",
    "ALTER TABLE t ADD COLUMN a text[]",
    "ALTER TABLE t ADD COLUMN v varchar(10)",
    "ALTER TABLE t ADD COLUMN IF NOT EXISTS ts timestamp with time zone",
    "ALTER TABLE t ADD COLUMN n int, ADD COLUMN m text",
    "ALTER TABLE t ALTER COLUMN v SET DEFAULT 'x'",
    "ALTER TABLE t ALTER COLUMN v DROP DEFAULT",
    "ALTER TABLE t ALTER COLUMN v DROP NOT NULL",
    "ALTER TABLE t DROP COLUMN v",
    "ALTER TABLE t DROP CONSTRAINT c",
    "CREATE INDEX ON t (id)",
    "CREATE INDEX CONCURRENTLY i ON t (id, v DESC NULLS LAST)",
    "CREATE UNIQUE INDEX ON t (id) INCLUDE (v)",
]
BUSY = [
    "ALTER TABLE t ADD COLUMN s serial",
    "ALTER TABLE t ADD COLUMN s bigserial",
    "ALTER TABLE t ADD COLUMN s pg_catalog.serial",
    "ALTER TABLE t ADD COLUMN d public.dom",  # a domain's DEFAULT may be volatile: a rewrite
    "ALTER TABLE t ADD COLUMN d dom",
    "ALTER TABLE t ADD COLUMN d citext",
    "ALTER TABLE t ADD COLUMN x varchar(10) DEFAULT 'a'",
    "ALTER TABLE t ADD COLUMN r float8 DEFAULT random()",
    "ALTER TABLE t ADD COLUMN n int CHECK (n > 0)",
    "ALTER TABLE t ADD COLUMN n int NOT NULL",
    "ALTER TABLE t ADD COLUMN n int REFERENCES u",
    "ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (1) STORED",
    "ALTER TABLE t ADD COLUMN i int GENERATED ALWAYS AS IDENTITY",
    "ALTER TABLE t ALTER COLUMN v TYPE int USING v::int",
    "ALTER TABLE t VALIDATE CONSTRAINT c",
    "ALTER TABLE t DROP COLUMN v CASCADE",
    "ALTER TABLE t SET LOGGED",
    "ALTER TABLE t ADD CONSTRAINT c CHECK (id > 0)",
    "ALTER TABLE t ADD COLUMN n int, ALTER COLUMN v TYPE int",
    "ALTER TABLE t ALTER COLUMN v SET NOT NULL",
    "ALTER TABLE t ATTACH PARTITION p FOR VALUES IN (1)",
    "ALTER TABLE t ENABLE ROW LEVEL SECURITY",
    "CREATE INDEX ON t (id int4_ops)",
    "CREATE INDEX ON t (lower(v))",
    "CREATE INDEX ON t (id) WHERE id > 0",
    "CREATE INDEX ON t (v COLLATE \"C\")",
    "CLUSTER t USING i",
    "REINDEX TABLE t",
    "VACUUM FULL t",
    "SELECT 1",
    "INSERT INTO t VALUES (1)",
]


@pytest.mark.parametrize("sql", IDLE)
def test_ddl_that_touches_no_row_is_idle(sql):
    (c,) = classify(sql)
    assert c.rows_idle, (sql, c)


@pytest.mark.parametrize("sql", BUSY)
def test_everything_else_is_not(sql):
    (c,) = classify(sql)
    assert not c.rows_idle, (sql, c)
