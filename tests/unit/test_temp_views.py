"""Writes to a temporary view are writes to what it reads (PostgreSQL updates a simple view
in place); end to end: tests/integration/test_proxy_temp_objects.py."""

from __future__ import annotations

from policy import StatementPolicy, parse_scopes


def policy(enforce: bool = True) -> StatementPolicy:
    return StatementPolicy(
        parse_scopes("read:public.t,public.u write:public.u"), task="T", enforce=enforce, shared=None
    )


def test_a_write_through_a_temporary_view_needs_the_write_scope_on_its_relations():
    p = policy()
    assert p.check_query("INSERT INTO pg_temp.v VALUES (1)").allowed  # no view yet: a table
    assert p.check_query("CREATE TEMP VIEW pg_temp.v AS SELECT * FROM public.t").allowed
    v = p.check_query("INSERT INTO pg_temp.v VALUES (1)")  # the cached verdict is stale now
    assert not v.allowed and "land in public.t" in v.message and "scope.write" in v.message
    assert not p.check_query("UPDATE pg_temp.v SET a = 1").allowed
    assert not p.check_query("DELETE FROM pg_temp.v").allowed
    assert p.check_query("SELECT * FROM pg_temp.v").allowed  # reading it reads public.t
    assert p.check_query("CREATE TEMP VIEW pg_temp.w AS SELECT * FROM public.u").allowed
    assert p.check_query("INSERT INTO pg_temp.w VALUES (1)").allowed  # write:public.u


def test_views_of_views_and_one_message_and_drop():
    p = policy()
    v = p.check_query("CREATE TEMP VIEW pg_temp.x AS SELECT * FROM public.t; UPDATE pg_temp.x SET a = 1")
    assert not v.allowed and "pg_temp.x land in public.t" in v.message
    assert p.check_query("CREATE TEMP VIEW pg_temp.v AS SELECT * FROM public.t").allowed
    assert p.check_query("CREATE TEMP VIEW pg_temp.y AS SELECT * FROM pg_temp.v").allowed
    assert not p.check_query("DELETE FROM pg_temp.y").allowed
    assert p.check_query("DROP VIEW pg_temp.y").allowed
    assert p.check_query("CREATE TEMP TABLE pg_temp.y (a int)").allowed
    assert p.check_query("DELETE FROM pg_temp.y").allowed  # a table now


def test_dry_run_follows_the_views_it_let_run():
    p = policy(enforce=False)
    assert p.check_query("CREATE TEMP VIEW pg_temp.v AS SELECT * FROM public.t").allowed
    assert p.check_query("INSERT INTO pg_temp.v VALUES (1)").would_deny
