"""What a write or DDL changes beyond the objects it names, without CASCADE (session 29,
red-team round 60: tests/integration/test_redteam_r60_cascade.py, the server the judge):
foreign-key actions' rows (``Snapshot.cascades``), the partitions DDL of their parent
changes (``Snapshot.partitions``), the columns elsewhere of a type an ALTER changes
(``Snapshot.type_users``). Each is decided as if the statement named it."""

from __future__ import annotations

import pytest

from policy import StatementPolicy, parse_scopes
from policy.catalog import CatalogCache

SCOPES = "read:app.* write:app.* ddl:app.* truncate:app.*"


def _policy(scopes: str = SCOPES, **snapshot) -> StatementPolicy:
    c = CatalogCache()
    c.put("db", [], {"app.p": frozenset({"k", "c"}), "app.t": frozenset({"k"})}, **snapshot)
    p = StatementPolicy(parse_scopes(scopes), task="T", shared=None)
    p.catalog = lambda: c.get("db")
    return p


_REACH = {"app.p": frozenset({"other.child", "app.mid"})}
CASCADES = {"cascades": _REACH, "update_cascades": _REACH}


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM app.p WHERE k = 1",
        "UPDATE app.p SET k = 2",
        "WITH d AS (DELETE FROM app.p RETURNING k) SELECT count(*) FROM d",
        "MERGE INTO app.p t USING (SELECT 1 AS k) s ON t.k = s.k WHEN MATCHED THEN DELETE",
        "EXPLAIN ANALYZE DELETE FROM app.p",
        "DELETE FROM ONLY app.p",
    ],
)
def test_foreign_key_actions_outside_the_grant_are_refused(sql):
    v = _policy(**CASCADES).check_query(sql)
    assert not v.allowed and "other.child" in v.message and "foreign key" in v.message


@pytest.mark.parametrize(
    "sql",
    ["INSERT INTO app.p VALUES (1, 1)", "SELECT * FROM app.p", "DELETE FROM app.t"],
)
def test_what_runs_no_such_action_is_not(sql):
    assert _policy(**CASCADES).check_query(sql).allowed


def test_foreign_key_actions_inside_the_grant_are_allowed():
    p = _policy(SCOPES + " write:other.child", **CASCADES)
    assert p.check_query("DELETE FROM app.p WHERE k = 1").allowed
    assert p.check_query("UPDATE app.p SET k = 2").allowed


def test_a_delete_needs_update_too_an_update_only_update():
    """A DELETE's actions delete (CASCADE) or update (SET NULL, SET DEFAULT) the rows that
    reference it; an UPDATE's only update them."""
    p = _policy("read:app.* write:app.* update:other.child", **CASCADES)
    assert p.check_query("UPDATE app.p SET k = 2").allowed
    assert not p.check_query("DELETE FROM app.p").allowed


def test_an_update_follows_on_update_actions_alone():
    """ON DELETE actions alone (the common ``ON DELETE CASCADE``): an UPDATE runs none."""
    p = _policy(cascades=_REACH)
    assert p.check_query("UPDATE app.p SET c = 2").allowed
    assert not p.check_query("DELETE FROM app.p").allowed


def test_a_partitioned_parent_reaches_its_partitions_actions():
    p = _policy(
        cascades={"app.p1": frozenset({"other.child"})},
        partitions={"app.p": frozenset({"app.p1"})},
    )
    assert not p.check_query("DELETE FROM app.p").allowed


PARTITIONS = {"partitions": {"app.p": frozenset({"app.p1", "other.p2"})}}


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE app.p",
        "ALTER TABLE app.p ADD COLUMN z int",
        "ALTER TABLE app.p DROP COLUMN c",
        "ALTER TABLE app.p RENAME COLUMN c TO c2",
        "CREATE INDEX ON app.p (c)",
    ],
)
def test_ddl_of_a_parent_with_a_partition_outside_the_grant_is_refused(sql):
    v = _policy(**PARTITIONS).check_query(sql)
    assert not v.allowed and "other.p2" in v.message and "partition" in v.message


@pytest.mark.parametrize(
    "sql", ["DELETE FROM app.p", "UPDATE app.p SET c = 1", "TRUNCATE app.p", "SELECT * FROM app.p"]
)
def test_a_partitions_rows_are_its_parents_data(sql):
    assert _policy(**PARTITIONS).check_query(sql).allowed


def test_ddl_of_a_parent_with_its_partitions_in_the_grant_is_allowed():
    p = _policy(SCOPES + " ddl:other.p2", **PARTITIONS)
    assert p.check_query("ALTER TABLE app.p ADD COLUMN z int").allowed


USERS = {"type_users": {"app.ty": frozenset({"other.uses"}), "app.t": frozenset({"app.x"})}}


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TYPE app.ty ADD ATTRIBUTE z int",
        "ALTER TYPE app.ty DROP ATTRIBUTE b",
        "ALTER TYPE app.ty RENAME VALUE 'a' TO 'b'",
    ],
)
def test_altering_a_type_used_outside_the_grant_is_refused(sql):
    v = _policy(**USERS).check_query(sql)
    assert not v.allowed and "other.uses" in v.message


def test_altering_a_type_used_inside_the_grant_is_allowed():
    p = _policy(**USERS)
    assert p.check_query("ALTER TABLE app.t ADD COLUMN z int").allowed
    assert (
        _policy(SCOPES + " ddl:other.uses", **USERS)
        .check_query("ALTER TYPE app.ty ADD ATTRIBUTE z int")
        .allowed
    )


# --- through views (red-team round 61) ----------------------------------------------------

VIEWS = {
    "cascades": {"app.p": frozenset({"other.child"})},
    "update_cascades": {"app.p": frozenset({"other.child"})},
    "view_bases": {"app.v": frozenset({"app.p"}), "app.vv": frozenset({"app.v", "app.p"})},
}


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM app.v WHERE k = 1",
        "UPDATE app.vv SET k = 2",
        "INSERT INTO app.v VALUES (1) ON CONFLICT (k) DO UPDATE SET k = 3",
    ],
)
def test_foreign_key_actions_through_a_view(sql):
    v = _policy(**VIEWS).check_query(sql)
    assert not v.allowed and "other.child" in v.message


@pytest.mark.parametrize("one_query", [False, True])
def test_through_a_view_the_session_made(one_query):
    p = _policy(cascades={"app.p": frozenset({"other.child"})})
    make, write = "CREATE VIEW app.mine AS SELECT k FROM app.p", "DELETE FROM app.mine"
    if one_query:
        assert not p.check_query(f"{make}; {write}").allowed
    else:
        assert p.check_query(make).allowed
        v = p.check_query(write)
        assert not v.allowed and "other.child" in v.message
        assert p.check_query("CREATE TEMP VIEW tv AS SELECT k FROM app.p").allowed
        assert not p.check_query("DELETE FROM tv").allowed  # (pg_temp.tv may be the one)


# --- extended statistics objects of another schema (red-team rounds 60, 62) -----------------

STATS = {"statistics": {"app.t": frozenset({"other.st"})}}


@pytest.mark.parametrize(
    "sql", ["DROP TABLE app.t", "ALTER TABLE app.t DROP COLUMN k", "ALTER TABLE app.t RENAME TO t2"]
)
def test_ddl_of_a_relation_with_statistics_outside_the_grant(sql):
    v = _policy(**STATS).check_query(sql)
    assert not v.allowed and "other.st" in v.message


def test_statistics_inside_the_grant_or_writes():
    assert _policy(SCOPES + " ddl:other.st", **STATS).check_query("DROP TABLE app.t").allowed
    assert _policy(**STATS).check_query("DELETE FROM app.t").allowed
    assert _policy(**STATS).check_query("CREATE INDEX ON app.t (k)").allowed
