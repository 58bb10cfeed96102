"""The text of the session's cursors and prepared statements is code's own where
user-written code may have left one (session 31; red-team round 72: a granted PL/pgSQL
function's OPEN showed its query in ``pg_cursors``, a trigger's too, and code's ``EXECUTE
'PREPARE ...'`` in ``pg_prepared_statements``). Refused without ``read:pg_catalog.pg_proc``
in a database whose code may do that (``Snapshot.cursor_code``); elsewhere it is the
client's own (psycopg's suite lists its prepared statements' text)."""

from __future__ import annotations

import pytest

from policy import StatementPolicy
from policy.catalog import CatalogCache
from policy.scopes import parse_scopes

READS = [
    "SELECT name, statement FROM pg_cursors",
    "SELECT * FROM pg_cursors WHERE name = 'foo'",
    "SELECT to_jsonb(c) FROM pg_cursors c",
    "SELECT c FROM pg_catalog.pg_prepared_statements c",
    "select name, regexp_replace(statement, 'prepare _pg3_\\d+ as ', '', 'i') as statement "
    "from pg_prepared_statements where name != ''",
    "SELECT name FROM pg_prepared_statements WHERE statement LIKE '%x%'",
]
OTHER = [
    "SELECT name FROM pg_cursors",
    "select count(*) from pg_prepared_statements where name != ''",
]


def _policy(scopes: str, cursor_code: bool) -> StatementPolicy:
    c = CatalogCache()
    c.put("db", [], {"public.t": frozenset({"k"})}, cursor_code=cursor_code)
    p = StatementPolicy(parse_scopes(scopes), task="x", shared=None)
    p.catalog = lambda: c.get("db")
    return p


@pytest.mark.parametrize("sql", READS)
def test_refused_where_code_may_have_left_one(sql):
    p = _policy("execute:public.f", cursor_code=True)
    for _ in range(2):  # (never cached)
        v = p.check_query(sql)
        assert not v.allowed and "may not read statement of pg_catalog.pg_" in v.message, v


@pytest.mark.parametrize("sql", READS + OTHER)
def test_the_clients_own_where_no_code_may_and_with_the_scope(sql):
    assert _policy("execute:public.f", cursor_code=False).check_query(sql).allowed
    assert _policy("read:pg_catalog.pg_proc", cursor_code=True).check_query(sql).allowed


@pytest.mark.parametrize("sql", OTHER)
def test_other_columns_stay_readable(sql):
    assert _policy("execute:public.f", cursor_code=True).check_query(sql).allowed


def test_a_loaded_snapshot_says_so_and_a_bare_one_fails_closed():
    from policy.catalog import Snapshot

    assert Snapshot(frozenset(), {}).cursor_code  # (made without a load: code assumed)
