"""A temporary object may not take the name of a type or relation outside the temporary
schemas (session 31; red-team round 69). The pin names ``pg_temp`` last, but a function's
own ``SET search_path`` that leaves it out searches it first for relations and types, so a
temporary ``text`` would be what the function's ``text`` means, and a temporary table named
like one it writes would take what it writes. ``Snapshot.type_names`` (TYPE_NAMES_SQL):
every type's name (built-ins, user types, each relation's row type) and every sequence's."""

from __future__ import annotations

import pytest

from policy import StatementPolicy
from policy.catalog import CatalogCache
from policy.scopes import parse_scopes
from tests.support.ddl_code import wired_session

NAMES = ["text", "int4", "t", "log", "invoice_seq"]  # (a built-in, a table's row type, ...)


def _policy(scopes: str, names=NAMES) -> StatementPolicy:
    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"k"})}, type_names=names)
    p = StatementPolicy(parse_scopes(scopes), task="x", shared=None)
    p.catalog = lambda: c.get("db")
    return p


SCOPES = [
    "execute:public.f",  # temporary tables need no scope
    "read:public.* write:public.* ddl:public.*",
    "ddl:pg_temp.*",  # not even an explicit one makes it
]


@pytest.mark.parametrize("scopes", SCOPES)
@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TEMP TABLE text (x int)",
        "CREATE TEMPORARY TABLE IF NOT EXISTS int4 (x int)",
        "CREATE TABLE pg_temp.log (s text)",
        "CREATE TYPE pg_temp.text AS (x int)",
        "CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (VALUE <> '')",
        "CREATE TEMP VIEW log AS SELECT 1 AS s",
        "CREATE TEMP SEQUENCE invoice_seq",
        "CREATE TEMP TABLE t AS SELECT 1 AS k",
        "SELECT 1 AS s INTO TEMP log",
        'CREATE TEMP TABLE "text" (x int)',
        "ALTER TABLE pg_temp.mine RENAME TO log",
    ],
)
def test_a_temporary_object_named_like_another_is_refused(scopes, sql):
    v = _policy(scopes).check_query(sql)
    assert not v.allowed and "may not make pg_temp." in v.message, (sql, v.message)
    assert "rule deny.temp" in v.message


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TEMP TABLE scratch (x int)",
        'CREATE TEMP TABLE "Text" (x int)',  # (a quoted name of its own case: no type's)
        "CREATE TYPE pg_temp.mood AS ENUM ('a')",
        "DROP TABLE IF EXISTS pg_temp.text",  # (dropping shadows nothing)
        "ALTER TABLE pg_temp.scratch ADD COLUMN y int",
    ],
)
def test_other_temporary_objects_still_need_no_scope(sql):
    v = _policy("execute:public.f").check_query(sql)
    assert v.allowed, (sql, v.message)


def test_without_the_names_loaded_nothing_is_refused_by_it():
    """(A snapshot of an older proxy's load, or a unit test's: the rule needs the names.)"""
    assert _policy("execute:public.f", names=()).check_query("CREATE TEMP TABLE text (x int)").allowed


@pytest.mark.parametrize(
    "rename",
    [
        "ALTER TABLE scratch RENAME TO text",  # (unqualified: the session's temporary one)
        "ALTER TABLE IF EXISTS scratch RENAME TO log",
        "ALTER TABLE pg_temp.scratch RENAME TO t",
    ],
)
def test_a_rename_of_what_may_be_the_sessions_temporary_relation_is_refused(rename):
    """``CREATE TEMP TABLE scratch`` then an unqualified rename: the server renames the
    temporary table within pg_temp, whatever schema the policy reads the name in."""
    p = _policy("read:public.* write:public.* ddl:public.*")
    assert p.check_query("CREATE TEMP TABLE scratch (x int)").allowed
    v = p.check_query(rename)
    assert not v.allowed and "rule deny.temp" in v.message, (rename, v.message)
    assert p.check_query("ALTER TABLE scratch RENAME TO scratch2").allowed  # (a name of its own)


def test_a_rename_with_no_temporary_relation_made_is_decided_as_before():
    p = _policy("read:public.* write:public.* ddl:public.*")
    assert p.check_query("ALTER TABLE public.mine RENAME TO log").allowed


@pytest.mark.parametrize(
    "sql, refused",
    [
        # a range's multirange type is a second type it makes (red-team round 70)
        ("CREATE TYPE pg_temp.r AS RANGE (subtype = int4, multirange_type_name = pg_temp.text)",
         "may not make pg_temp.text"),
        # unqualified, PostgreSQL makes it in the path's first schema: a ddl write there
        ("CREATE TYPE pg_temp.r AS RANGE (subtype = int4, multirange_type_name = r70mr)",
         "public.r70mr"),
        # named by PostgreSQL itself, in the range's schema
        ("CREATE TYPE pg_temp.log_range AS RANGE (subtype = int4)", None),
    ],
)
def test_a_ranges_multirange_is_a_type_it_makes(sql, refused):
    v = _policy("execute:public.f").check_query(sql)
    if refused is None:
        assert v.allowed, v.message
    else:
        assert not v.allowed and refused in v.message, v.message


def test_the_multirange_name_postgresql_gives_is_decided_too():
    p = _policy("execute:public.f", names=[*NAMES, "t_multirange", "logmultirange"])
    for sql in ("CREATE TYPE pg_temp.t AS RANGE (subtype = int4)",
                "CREATE TYPE pg_temp.logrange AS RANGE (subtype = int4)"):  # fmt: skip
        v = p.check_query(sql)
        assert not v.allowed and "rule deny.temp" in v.message, (sql, v.message)


def test_names_the_sessions_own_ddl_made_since_the_load_count():
    """A relation the session just made is in no loaded snapshot yet: a temporary one of its
    name (in a later message, or later in the same one) is refused as if it were."""
    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"k"})}, type_names=NAMES)
    p, _asks = wired_session(c, "read:public.* write:public.* ddl:public.*", "x", entry=True)
    assert p.check_query("CREATE TABLE public.r31_w (a int)").allowed  # (sent: on_ddl)
    p.settle_ddl()
    c.put("db", [], {"public.t": frozenset({"k"})}, type_names=NAMES, loaded_at=0.0)
    v = p.check_query("CREATE TEMP TABLE r31_w (a int)")
    assert not v.allowed and "rule deny.temp" in v.message, v.message
    v = p.check_query("CREATE TABLE public.r31_v (a int); CREATE TEMP TABLE r31_v (a int)")
    assert not v.allowed and "may not make pg_temp.r31_v" in v.message, v.message


@pytest.mark.parametrize(
    "sql",
    [
        # red-team round 71: the sequence a serial or identity column makes takes a name
        "CREATE TEMP TABLE note (log_id serial)",  # pg_temp.note_log_id_seq
        "CREATE TEMP TABLE note (a int); ALTER TABLE pg_temp.note ADD COLUMN log_id bigserial",
        "CREATE TEMP TABLE q (id int GENERATED BY DEFAULT AS IDENTITY "
        "(SEQUENCE NAME note_log_id_seq))",
        "CREATE TEMP TABLE q (id int)",  # (then below: ADD GENERATED with the name)
        "CREATE TEMP TABLE note (LIKE public.t INCLUDING ALL)",  # (column names not read)
    ],
)
def test_a_sequence_a_temporary_table_makes_is_decided_by_its_name(sql):
    p = _policy("read:public.* write:public.*", names=[*NAMES, "note_log_id_seq"])
    v = p.check_query(sql)
    if sql == "CREATE TEMP TABLE q (id int)":
        assert v.allowed, v.message
        v = p.check_query("ALTER TABLE pg_temp.q ALTER COLUMN id ADD GENERATED ALWAYS AS "
                          "IDENTITY (SEQUENCE NAME note_log_id_seq)")  # fmt: skip
        assert not v.allowed, v.message  # (an unrecognised ALTER already: deny.unknown)
        return
    assert not v.allowed and "may not make pg_temp.note_log_id_seq" in v.message, v.message


def test_serial_columns_of_other_names_and_permanent_tables_are_decided_as_before():
    p = _policy("read:public.* write:public.* ddl:public.t", names=[*NAMES, "note_log_id_seq"])
    assert p.check_query("CREATE TEMP TABLE mine (id serial, n bigserial)").allowed
    assert p.check_query("CREATE TEMP TABLE mine2 (LIKE public.t INCLUDING ALL)").allowed
    # a per-table grant's serial column: its sequence is the table's (its own schema)
    assert p.check_query("CREATE TABLE public.t (id serial)").allowed


def test_an_identity_sequence_named_in_another_schema_is_a_ddl_write_there():
    p = _policy("read:r71.* write:r71.* ddl:r71.*")
    v = p.check_query("CREATE TABLE r71.acc (tenant int GENERATED BY DEFAULT AS IDENTITY "
                      "(SEQUENCE NAME r71x.r71made))")  # fmt: skip
    assert not v.allowed and "r71x.r71made" in v.message, v.message
    assert p.check_query("CREATE TABLE r71.acc2 (tenant int GENERATED BY DEFAULT AS IDENTITY "
                         "(SEQUENCE NAME r71.acc2_seq))").allowed  # fmt: skip
