"""Red-team round 32 (sweep, time-boxed): DDL of a granted object that PostgreSQL carries
out over rows outside the grant, user-written casts to json, a checked domain made and used
in one message; the server the judge.

Grants (agent ``r32-bot``): ``base`` = ``read:r32s.*``; ``ddl`` = ``read:r32s.*
write:r32s.* ddl:r32s.*`` (executes nothing; every probe runs under it).

Planted (schema owner; ``r32x`` outside every grant, ``r32x.vault`` one marker per key):
``r32s.dom`` (plain text domain) used by a column of ``r32x.dvault``; ``r32s.iparent``
inherited by ``r32x.ichild``; ``r32s.pparent (k, v) PARTITION BY LIST (k)`` with
partitions ``r32s.pown`` and ``r32x.ppart``; ``r32s.keys``; plpgsql ``public.r32_loud(text)``
and ``public.r32_json(r32s.mood)`` raising a marker; ``r32s.cdom`` (CHECK
``r32_loud(VALUE)``); enum ``r32s.mood`` with ``CREATE CAST (r32s.mood AS json) WITH
FUNCTION public.r32_json`` and a table ``r32s.moods`` of it. Every probe shows its marker
directly as the upstream login first (in a transaction rolled back), then goes through the
proxy: simple Query, extended unnamed, named prepared (each in BEGIN ... ROLLBACK) and
pipelined; the multi-statement probe as separate Queries, one Query and one pipeline.

Leaks: none found.

Held: ``ALTER DOMAIN ... ADD CONSTRAINT`` (validates a secret table's column of the domain;
a cast error would show its value) is unrecognised (``deny.unknown``); ``ALTER TABLE`` of an
inheritance parent (ADD CHECK, ALTER COLUMN TYPE USING) reaching a child outside the grant
(``scope.read``); ``to_json``/``to_jsonb``/``row_to_json``/``json_agg``/
``json_build_object`` of a user enum with a user-written cast to json
(``RELATION_CASTS_SQL``: ``scope.execute``); ``ADD COLUMN``/``ALTER COLUMN TYPE`` of a
checked domain; CREATE DOMAIN with a CHECK calling ``r32_loud`` + a table of it + INSERT in
one message (``scope.execute``); unique-index / foreign-key details naming a partition's
row (withheld).

Not a leak by the promise's measure (documented: "Partitions are not followed", a
partition's rows are its parent's): ``SELECT * FROM r32s.pparent`` returns ``r32x.ppart``'s
rows, and DDL recursing into partitions (ADD CHECK, ALTER COLUMN TYPE USING, CREATE INDEX
on an expression) shows them in cast errors. Transparency: the same partition rows have
their duplicate-key / foreign-key DETAIL withheld ("it shows a row of r32x.ppart, which this
grant may not read") though a SELECT of the parent returns them: the withholding reads a
partition as outside the grant by its own name, the read check as its parent's data.
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.planted import shows

pytestmark = pytest.mark.timeout(180)

AGENT = "r32-bot"
SCOPES = "read:r32s.*"
GRANTS = {"ddl": "read:r32s.* write:r32s.* ddl:r32s.*"}
R = {
    "dom": "R32-DOMAIN-9a01",
    "inh": "R32-INHERIT-9a02",
    "part": "R32-PARTITION-9a03",
    "loud": "R32-LOUD-9a04",
}
SECRETS = list(R.values())

SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r32s; CREATE SCHEMA r32x;\n"
    "CREATE TABLE r32x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r32x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in R.items()) + ";\n"
    "CREATE FUNCTION public.r32_loud(text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'loud: %', (SELECT val FROM r32x.vault WHERE key = 'loud'); END $$;\n"
    "CREATE DOMAIN r32s.dom AS text;\n"
    "CREATE TABLE r32x.dvault (val r32s.dom);\n"
    f"INSERT INTO r32x.dvault VALUES ('{R['dom']}'), ('{R['dom']}');\n"
    "CREATE TABLE r32s.iparent (v text);\n"
    "INSERT INTO r32s.iparent VALUES ('1');\n"
    "CREATE TABLE r32x.ichild () INHERITS (r32s.iparent);\n"
    f"INSERT INTO r32x.ichild VALUES ('{R['inh']}'), ('{R['inh']}');\n"
    "CREATE TABLE r32s.pparent (k int, v text) PARTITION BY LIST (k);\n"
    "CREATE TABLE r32s.pown PARTITION OF r32s.pparent FOR VALUES IN (1);\n"
    "CREATE TABLE r32x.ppart PARTITION OF r32s.pparent FOR VALUES IN (2);\n"
    "INSERT INTO r32s.pparent VALUES (1, '1');\n"
    f"INSERT INTO r32x.ppart VALUES (2, '{R['part']}'), (2, '{R['part']}');\n"
    "CREATE TABLE r32s.keys (k text PRIMARY KEY);\n"
    "INSERT INTO r32s.keys VALUES ('1');\n"
    "CREATE TABLE r32s.plain (a int);\n"
    "INSERT INTO r32s.plain VALUES (1);\n"
    "CREATE DOMAIN r32s.cdom AS text CHECK (public.r32_loud(VALUE));\n"
    "CREATE TYPE r32s.mood AS ENUM ('a', 'b');\n"
    "CREATE FUNCTION public.r32_json(r32s.mood) RETURNS json LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'json: %', (SELECT val FROM r32x.vault WHERE key = 'loud'); END $$;\n"
    "CREATE CAST (r32s.mood AS json) WITH FUNCTION public.r32_json(r32s.mood);\n"
    "CREATE TABLE r32s.moods (m r32s.mood);\n"
    "INSERT INTO r32s.moods VALUES ('a');\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r32s, r32x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r32_loud(text), public.r32_json(r32s.mood) CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r32", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


def direct(pg, sqls) -> str:
    return planted.direct_block(pg, sqls)


def precondition(pg, sqls, key: str) -> None:
    """The marker comes back directly (a RuntimeError: a strict xfail must not swallow a
    probe that proves nothing)."""
    if not shows(direct(pg, sqls), R[key]):
        raise RuntimeError(("precondition: no marker directly", sqls, direct(pg, sqls)[-300:]))


def every_mode(px, grant: str, sql: str) -> dict[str, str]:
    return planted.every_mode(px, px.tokens[grant], sql, in_block=True)


def block(px, grant: str, sqls) -> dict[str, str]:
    return planted.every_block_mode(px, px.tokens[grant], sqls)


def assert_no_leak(got: dict[str, str], sql) -> None:
    bad = {mode: t[-400:] for mode, t in got.items() if leaked(t)}
    assert not bad, ("LEAK", sorted(bad), sql, bad)


HELD = [
    # ALTER DOMAIN ADD CONSTRAINT validates every column of the domain, a secret table's
    # too (r32x.dvault): the cast error would show the value. Unrecognised: deny.unknown.
    ("dom", "ALTER DOMAIN r32s.dom ADD CONSTRAINT c CHECK (VALUE::int > 0)"),
    ("loud", "ALTER DOMAIN r32s.dom ADD CONSTRAINT c CHECK (public.r32_loud(VALUE))"),
    # an inheritance parent's ALTER reaches its child outside the grant: scope.read
    ("inh", "ALTER TABLE r32s.iparent ADD CONSTRAINT c CHECK (v::int > 0)"),
    ("inh", "ALTER TABLE r32s.iparent ALTER COLUMN v TYPE int USING v::int"),
    # a user-written cast to json, used by to_json & co. on a user enum: RELATION_CASTS_SQL
    ("loud", "SELECT to_json(m) FROM r32s.moods"),
    ("loud", "SELECT to_jsonb(t) FROM r32s.moods t"),
    ("loud", "SELECT row_to_json(t) FROM r32s.moods t"),
    ("loud", "SELECT json_agg(m) FROM r32s.moods"),
    ("loud", "SELECT json_build_object('k', m) FROM r32s.moods"),
    # a column of a domain whose CHECK calls a function outside execute: (Functions item 6)
    ("loud", "ALTER TABLE r32s.plain ADD COLUMN b r32s.cdom DEFAULT 'x'"),
    ("loud", "ALTER TABLE r32s.plain ALTER COLUMN a TYPE r32s.cdom"),
]


def _ids(params) -> list[str]:
    return [f"{i:02d}-{k}" for i, (k, _) in enumerate(params)]


@pytest.mark.parametrize(("key", "sql"), HELD, ids=_ids(HELD))
def test_held(px, pg, key, sql):
    precondition(pg, [sql], key)
    got = every_mode(px, "ddl", sql)
    assert_no_leak(got, sql)
    for mode, t in got.items():
        assert "42501" in t and "pgwitness: task" in t, (mode, sql, t[-300:])


BLOCK = (
    "CREATE DOMAIN r32s.d2 AS text CHECK (public.r32_loud(VALUE))",
    "CREATE TABLE r32s.t2 (a r32s.d2)",
    "INSERT INTO r32s.t2 VALUES ('x')",
)


def test_domain_made_and_used_in_one_message(px, pg):
    """A domain whose CHECK calls a function outside the grant, a column of it and a write,
    in one Query / pipeline before any catalog load knows the domain: CREATE DOMAIN's
    CHECK is a call (scope.execute)."""
    precondition(pg, BLOCK, "loud")
    got = block(px, "ddl", BLOCK)
    assert_no_leak(got, BLOCK)
    for mode, t in got.items():
        assert "42501" in t, (mode, t[-300:])


# Partitions are their parent's data (docs/policy.md "Inheritance"): SELECT of
# r32s.pparent returns r32x.ppart's rows under read:r32s.*. Not a leak by the promise's
# measure; recorded so a change of that decision changes this test.
@pytest.mark.parametrize("sql", ["SELECT * FROM r32s.pparent"])
def test_partitions_are_the_parents(px, pg, sql):
    precondition(pg, [sql], "part")
    got = every_mode(px, "ddl", sql)
    assert all(shows(t, R["part"]) for t in got.values()), sql


# DDL of the parent that PostgreSQL recurses into its partitions changes r32x.ppart, a
# relation outside the grant's ddl scope: refused since session 29 (``Snapshot.partitions``,
# red-team round 60). Until then it ran, and showed the partition's values in its errors
# (ADD CHECK, ALTER COLUMN TYPE USING, an expression index) or had their details withheld
# (a unique index or constraint, a foreign key).
PARTITION_DDL = [
    "ALTER TABLE r32s.pparent ADD CONSTRAINT c CHECK (v::int > 0)",
    "ALTER TABLE r32s.pparent ALTER COLUMN v TYPE int USING v::int",
    "CREATE INDEX r32_i ON r32s.pparent ((v::int))",
    "CREATE UNIQUE INDEX r32_u ON r32s.pparent (k, v)",
    "ALTER TABLE r32s.pparent ADD UNIQUE (k, v)",
    "ALTER TABLE r32s.pparent ADD FOREIGN KEY (v) REFERENCES r32s.keys (k)",
]


@pytest.mark.parametrize("sql", PARTITION_DDL)
def test_partition_ddl_is_refused(px, pg, sql):
    precondition(pg, [sql], "part")
    got = every_mode(px, "ddl", sql)
    assert_no_leak(got, sql)
    assert all("42501" in t and "partition r32x.ppart" in t for t in got.values()), sql
