"""CASCADE removes or changes objects a statement does not name (session 29).

``DROP ... CASCADE`` and ``TRUNCATE ... CASCADE`` were refused, but the same drop behaviour
in other statements was not: ``ALTER TABLE t DROP COLUMN c CASCADE`` dropped a view of
another schema over ``t.c``, ``ALTER TABLE t DROP CONSTRAINT t_pkey CASCADE`` another
table's foreign key, ``ALTER TYPE ty DROP ATTRIBUTE b CASCADE`` a column of a table made
``OF`` the type outside the grant (tests/integration/test_s29_cascade.py, the server the
judge). PostgreSQL's reading flags a ``DROP_CASCADE`` behaviour anywhere in a statement
(``pgparse.CASCADE``), and such a statement is refused whatever else it is. Without it
(PostgreSQL's default, RESTRICT) the server refuses where anything depends; a simple Query
refused for CASCADE alone is sent so (the keyword blanked: ``StatementPolicy.rewritten``)."""

from __future__ import annotations

import pytest

from policy import StatementPolicy, parse_scopes
from policy.classify import classify
from policy.classify.pgparse import CASCADE, parse

SCOPES = "read:public.* write:public.* ddl:public.*"

CASCADING = [
    "ALTER TABLE t DROP COLUMN c CASCADE",
    "ALTER TABLE public.t DROP COLUMN IF EXISTS c cascade",
    "ALTER TABLE t DROP CONSTRAINT t_pkey CASCADE",
    "ALTER TABLE ONLY t DROP CONSTRAINT IF EXISTS k /* x */ CaScAdE",
    "ALTER TABLE t ADD COLUMN d int, DROP COLUMN c CASCADE",
    "ALTER TABLE IF EXISTS t DROP c CASCADE",
    "ALTER TYPE ty DROP ATTRIBUTE b CASCADE",
    "ALTER TYPE ty ADD ATTRIBUTE z int CASCADE",
    "ALTER TYPE ty ALTER ATTRIBUTE a TYPE bigint CASCADE",
    "ALTER TYPE ty RENAME ATTRIBUTE a TO b CASCADE",
    "ALTER DOMAIN d DROP CONSTRAINT k CASCADE",
    "ALTER FOREIGN TABLE ft DROP COLUMN c CASCADE",
    "DROP TABLE t CASCADE",
    "DROP TYPE IF EXISTS ty CASCADE",
    "DROP FUNCTION f(int) CASCADE",
    "DROP DOMAIN d CASCADE",
    "DROP INDEX i CASCADE",
    "DROP VIEW v CASCADE",
    "DROP SCHEMA public CASCADE",
    "TRUNCATE t CASCADE",
    "TRUNCATE TABLE t RESTART IDENTITY CASCADE",
    "REVOKE ALL ON t FROM PUBLIC CASCADE",
    "SELECT 1; ALTER TABLE t DROP COLUMN c CASCADE",
    "ALTER TABLE t DROP COLUMN c CASCADE; SELECT 1",
]

# the same statements without CASCADE: decided as before (the server's RESTRICT refuses
# where anything depends)
RESTRICTED = [
    "ALTER TABLE t DROP COLUMN c",
    "ALTER TABLE t DROP COLUMN c RESTRICT",
    "ALTER TABLE t DROP CONSTRAINT t_pkey",
    "ALTER TYPE ty DROP ATTRIBUTE b",
    "DROP TABLE t",
    "DROP TYPE IF EXISTS ty RESTRICT",
    "TRUNCATE t",
]

# the word, not the behaviour: not flagged
NOT_CASCADING = [
    "SELECT 'DROP TABLE t CASCADE'",
    "SELECT 1 AS cascade",
    "CREATE VIEW v AS SELECT k FROM t WITH CASCADED CHECK OPTION",
    'SELECT "behavior" FROM t',
    "CREATE TABLE t2 (k int REFERENCES t (k) ON DELETE CASCADE)",
]


@pytest.mark.parametrize("sql", CASCADING)
def test_postgres_reading_flags_cascade_anywhere(sql):
    assert any(CASCADE in st.flags for st in parse(sql))


@pytest.mark.parametrize("sql", RESTRICTED + NOT_CASCADING)
def test_the_word_or_restrict_is_not_flagged(sql):
    assert not any(CASCADE in st.flags for st in parse(sql))


@pytest.mark.parametrize("sql", CASCADING)
def test_cascade_never_goes_upstream(sql):
    """A simple Query is refused, or allowed as RESTRICT (below: the text sent has no
    CASCADE); a Parse is refused."""
    policy = StatementPolicy(parse_scopes(SCOPES + " execute:public.* truncate:public.*"), task="t")
    verdict = policy.check_query(sql)
    if verdict.allowed:
        assert policy.rewritten is not None and len(policy.rewritten) == len(sql)
        assert not any(CASCADE in st.flags for st in parse(policy.rewritten))
    else:  # for CASCADE, or what the statement is as RESTRICT (REVOKE: roles; unsupported)
        assert policy.rewritten is None
    assert not policy.check_parse(sql).allowed


@pytest.mark.parametrize("sql", [s for s in RESTRICTED if not s.startswith("TRUNCATE")])
def test_without_cascade_ddl_is_decided_as_before(sql):
    policy = StatementPolicy(parse_scopes(SCOPES), task="t")
    verdict = policy.check_query(sql)
    assert verdict.allowed, verdict.message


def test_truncate_without_cascade_needs_its_scope():
    policy = StatementPolicy(parse_scopes(SCOPES + " truncate:public.t"), task="t")
    assert policy.check_query("TRUNCATE t").allowed and policy.rewritten is None
    assert policy.check_query("TRUNCATE t CASCADE").allowed
    assert policy.rewritten == "TRUNCATE t        "


def test_a_foreign_key_action_is_not_a_drop_behaviour():
    (c,) = classify("CREATE TABLE t2 (k int REFERENCES t (k) ON DELETE CASCADE)")
    assert c.cls.name == "DDL"


def test_cascade_restricted_from_a_cached_text_too():
    policy = StatementPolicy(parse_scopes(SCOPES), task="t")
    assert policy.check_query("ALTER TABLE t DROP COLUMN c").allowed
    for _ in range(2):
        assert policy.check_query("ALTER TABLE t DROP COLUMN c CASCADE").allowed
        assert policy.rewritten == "ALTER TABLE t DROP COLUMN c        "
    assert policy.check_query("ALTER TABLE t DROP COLUMN c").allowed
    assert policy.rewritten is None


# --- a simple Query refused for CASCADE alone runs as RESTRICT ----------------------------


@pytest.mark.parametrize(
    "sql, sent",
    [
        ("DROP TABLE t CASCADE", "DROP TABLE t        "),
        ("drop type if exists a cascade; drop type b CASCADE; create type a as (x int)",
         "drop type if exists a        ; drop type b        ; create type a as (x int)"),
        ("ALTER TABLE t DROP COLUMN c /* x */ CaScAdE", "ALTER TABLE t DROP COLUMN c /* x */        "),
        ('DROP TABLE "cascade" CASCADE', 'DROP TABLE "cascade"        '),
    ],
)  # fmt: skip
def test_a_query_refused_for_cascade_alone_runs_as_restrict(sql, sent):
    policy = StatementPolicy(parse_scopes(SCOPES), task="t")
    verdict = policy.check_query(sql)
    assert verdict.allowed and policy.rewritten == sent
    assert len(sent) == len(sql)
    assert not any(CASCADE in st.flags for st in parse(sent))
    assert policy.check_query("SELECT 1").allowed and policy.rewritten is None


@pytest.mark.parametrize(
    "sql, why",
    [
        ("DROP TABLE other.t CASCADE", "other.t"),  # the grant's own reason, not CASCADE's
        ("SELECT 1 AS cascade; DROP TABLE t CASCADE", "CASCADE"),  # the word as a name too
        ("TRUNCATE t CASCADE", "may not truncate"),  # no truncate scope
    ],
)
def test_refused_as_restrict_too(sql, why):
    policy = StatementPolicy(parse_scopes(SCOPES), task="t")
    verdict = policy.check_query(sql)
    assert not verdict.allowed and why in verdict.message and policy.rewritten is None


def test_a_parse_and_a_dry_run_are_not_rewritten():
    policy = StatementPolicy(parse_scopes(SCOPES), task="t")
    assert not policy.check_parse("DROP TABLE t CASCADE").allowed
    dry = StatementPolicy(parse_scopes(SCOPES), task="t", enforce=False)
    verdict = dry.check_query("DROP TABLE t CASCADE")
    assert verdict.would_deny and dry.rewritten is None  # a dry run runs what it was sent
