"""A temporary view may only show relations the grant may write anyway: a simple view is
updatable, so writes to it land in what it reads, under whatever name the session gives
it later (red-team rounds 5 and 6: writes through a view, then through one renamed, one
whose DROP failed or was rolled back, one shadowing an unqualified granted name, and a
prepared INSERT analysed again after a temporary table was swapped for a view). End to
end: tests/integration/test_proxy_temp_objects.py."""

from __future__ import annotations

import pytest

from policy import StatementPolicy, parse_scopes


def policy(enforce: bool = True) -> StatementPolicy:
    return StatementPolicy(
        parse_scopes("read:public.t,public.u write:public.u"), task="T", enforce=enforce, shared=None
    )


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TEMP VIEW pg_temp.v AS SELECT * FROM public.t",
        "CREATE TEMP VIEW u AS SELECT * FROM public.t",  # shadows the granted public.u
        "CREATE OR REPLACE TEMP VIEW pg_temp.v AS SELECT * FROM public.t",
        "CREATE TEMP VIEW pg_temp.v AS SELECT * FROM public.u JOIN public.t USING (a)",
        "CREATE TEMP VIEW pg_temp.v AS SELECT 1; CREATE TEMP VIEW pg_temp.w AS TABLE public.t",
    ],
)
def test_a_temporary_view_over_a_relation_the_grant_may_not_write_is_denied(sql):
    v = policy().check_query(sql)
    assert not v.allowed and "deny.temp_view" in v.message and "public.t" in v.message, v.message


def test_temporary_views_over_writable_temporary_or_catalog_relations_are_allowed():
    p = policy()
    assert p.check_query("CREATE TEMP VIEW pg_temp.w AS SELECT * FROM public.u").allowed
    assert p.check_query("CREATE TEMP TABLE pg_temp.x (a int)").allowed
    assert p.check_query("CREATE TEMP VIEW pg_temp.y AS SELECT * FROM pg_temp.x").allowed
    assert p.check_query("CREATE TEMP VIEW pg_temp.z AS SELECT relname FROM pg_catalog.pg_class").allowed
    assert p.check_query("CREATE TEMP TABLE pg_temp.c AS SELECT * FROM public.t").allowed  # a copy


def test_other_spellings_are_denied_too():
    v = policy().check_query("CREATE TEMPORARY VIEW pg_temp.v WITH (security_barrier) AS SELECT a FROM public.t")
    assert not v.allowed  # unrecognised by sqlglot: denied before the view rule


def test_dry_run_reports_it():
    assert policy(enforce=False).check_query("CREATE TEMP VIEW pg_temp.v AS SELECT * FROM public.t").would_deny
