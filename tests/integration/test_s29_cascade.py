"""CASCADE anywhere in a statement, the server the judge (session 29).

Grant (agent ``s29-bot``): ``read:s29.* write:s29.* ddl:s29.* truncate:s29.*``. Planted
(schema owner), outside the grant in ``s29x``: a view over ``s29.t.c``, a table whose
foreign key references ``s29.t``'s key (one row), a table made ``OF`` the type ``s29.ty``,
a table with a column of that type and a view over its attribute. Each CASCADE statement
changes ``s29x`` when the owner runs it (in a transaction rolled back: the probe is
live); through the proxy it is refused (42501, simple and extended protocol) and
``s29x`` is unchanged. Before session 29 the ``ALTER ... CASCADE`` forms went through
(``ALTER TABLE s29.t DROP COLUMN c CASCADE``: "drop cascades to view s29x.v"). The
same statements without CASCADE: PostgreSQL's RESTRICT refuses them, ``s29x`` unchanged.

What PostgreSQL drops with a relation or column without CASCADE (its AUTO dependents) is
the relation's own but for one kind that may live in another schema: an extended
statistics object (``CREATE STATISTICS s29x.st3 ON c, d FROM s29.t3``) goes with ``ALTER
TABLE s29.t3 DROP COLUMN c`` (or ``DROP TABLE s29.t3``): refused since
``Snapshot.statistics`` (a strict xfail until then). Sequences owned by a column must be in
its schema; indexes, triggers, rules, policies and constraints belong to the table."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import planted

pytestmark = pytest.mark.timeout(300)

AGENT = "s29-bot"
SCOPES = "read:s29.* write:s29.* ddl:s29.* truncate:s29.*"
SETUP = """
SET ROLE pgwitness;
CREATE SCHEMA s29; CREATE SCHEMA s29x;
CREATE TABLE s29.t (k int PRIMARY KEY, c int);
INSERT INTO s29.t VALUES (1, 1);
CREATE VIEW s29x.v AS SELECT c FROM s29.t;
CREATE TABLE s29x.fk (k int REFERENCES s29.t (k));
INSERT INTO s29x.fk VALUES (1);
CREATE TYPE s29.ty AS (a int, b int);
CREATE TABLE s29x.typed OF s29.ty;
CREATE TABLE s29x.usety (x s29.ty);
CREATE VIEW s29x.v2 AS SELECT (x).a FROM s29x.usety;
CREATE TABLE s29.t3 (k int, c int, d int);
CREATE STATISTICS s29x.st3 (dependencies) ON c, d FROM s29.t3;
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS s29, s29x CASCADE;"

# everything of s29x a cascade could reach: relations, constraints, columns and types, rows
STATE = """SELECT string_agg(x, ',' ORDER BY x) FROM (
  SELECT 'rel:' || relname FROM pg_class WHERE relnamespace = 's29x'::regnamespace
  UNION ALL SELECT 'con:' || conname FROM pg_constraint WHERE connamespace = 's29x'::regnamespace
  UNION ALL SELECT 'att:' || attrelid::regclass || '.' || attname || ':' || format_type(atttypid, atttypmod)
    FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped AND attrelid IN
      (SELECT oid FROM pg_class WHERE relnamespace = 's29x'::regnamespace AND relkind IN ('r', 'v'))
  UNION ALL SELECT 'stx:' || stxname FROM pg_statistic_ext WHERE stxnamespace = 's29x'::regnamespace
  UNION ALL SELECT 'rows:' || count(*) FROM s29x.fk) s(x);"""

CASCADING = [
    "ALTER TABLE s29.t DROP COLUMN c CASCADE",
    "ALTER TABLE s29.t DROP CONSTRAINT t_pkey CASCADE",
    "ALTER TYPE s29.ty DROP ATTRIBUTE b CASCADE",
    "ALTER TYPE s29.ty ADD ATTRIBUTE z int CASCADE",
    "ALTER TYPE s29.ty RENAME ATTRIBUTE a TO aa CASCADE",
    "DROP TYPE s29.ty CASCADE",
    "DROP TABLE s29.t CASCADE",
    "TRUNCATE s29.t CASCADE",
]
# (RENAME ATTRIBUTE the policy does not read: refused by it, with or without CASCADE)
RESTRICTED = [s.rpartition(" CASCADE")[0] for s in CASCADING if "RENAME" not in s]


def _state(pg) -> str:
    return pg.psql(STATE, db="app").strip()


@pytest.fixture(scope="module")
def handle(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s29c", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as h:  # fmt: skip
        h.state = _state(pg)
        yield h


@pytest.mark.parametrize("sql", CASCADING)
def test_cascade_changes_what_it_does_not_name_directly(pg, handle, sql):
    changed = pg.psql(f"BEGIN; SET ROLE pgwitness; {sql}; {STATE} ROLLBACK;", db="app")
    assert handle.state not in changed, changed  # the probe reaches s29x
    assert _state(pg) == handle.state


@pytest.mark.parametrize("sql", CASCADING)
def test_cascade_is_refused_through_the_proxy(pg, handle, sql):
    # a simple Query (and a Parse, session 30) runs as RESTRICT where the grant allows it
    # so (test_s29_cascade_as_restrict.py): here something outside depends on each, and
    # the server refuses (or the policy does: a type's columns outside the grant)
    got = planted.simple(handle, [sql])[0]
    assert got.startswith("error "), got
    for mode in ("extended", "prepared"):
        again = asyncio.run(planted.attempt(handle, sql, mode))
        assert again.startswith("error ") and again[:10] == got[:10], (got, again)
        assert _state(pg) == handle.state
    assert _state(pg) == handle.state


@pytest.mark.parametrize("sql", RESTRICTED)
def test_without_cascade_the_server_refuses_what_depends(pg, handle, sql):
    got = planted.simple(handle, [f"BEGIN; {sql}; ROLLBACK"])[0]
    # allowed by the grant; the server's own refusal (2BP01, 0A000, 42809): something
    # outside the grant depends on it. A type whose columns outside the grant would change
    # (s29x.usety) is refused by the policy first (StatementPolicy._beyond_its_objects)
    assert got.startswith("error "), got
    assert ("42501" in got) == sql.startswith("ALTER TYPE"), got
    assert _state(pg) == handle.state


def test_statistics_of_another_schema_outlive_a_dropped_column(pg, handle):
    """(A strict xfail until ``Snapshot.statistics``, red-team round 62.)"""
    try:
        got = planted.simple(handle, ["ALTER TABLE s29.t3 DROP COLUMN c"])[0]
        assert "42501" in got and "statistics object s29x.st3" in got, got
        assert _state(pg) == handle.state, got
    finally:
        pg.psql(TEARDOWN + SETUP, db="app")
