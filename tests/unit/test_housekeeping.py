"""policy.housekeeping: the driver chores allowed by default, each in one shape only."""

from __future__ import annotations

import pytest

from policy import StatementPolicy, parse_scopes

GRANT = parse_scopes("read:public.orders")

ALLOWED = [
    "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;",  # asyncpg's pool
    "SET SESSION AUTHORIZATION DEFAULT;RESET ALL;CLOSE ALL;UNLISTEN *;"
    "SELECT pg_advisory_unlock_all();DISCARD SEQUENCES;DISCARD TEMP",  # Npgsql
    "DISCARD ALL",  # pgbouncer, Npgsql
    "select pg_catalog.pg_advisory_unlock_all()",
    "RESET SESSION AUTHORIZATION",
    "SET standard_conforming_strings = on",
    "SET standard_conforming_strings TO 'on'",
    "SET SESSION standard_conforming_strings = true",
    "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    "SELECT a.state, a.query AS q FROM pg_catalog.pg_stat_activity AS a WHERE a.pid = pg_backend_pid()",
    "SELECT * FROM pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid() LIMIT 1",
    "",
    "-- ping",
    ";",
    "SELECT 1",
    "SELECT version()",
]
DENIED = [
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_advisory_unlock_all(), pg_advisory_lock(1)",
    "SELECT pg_advisory_unlock_all() FROM public.orders",
    "SELECT pg_advisory_unlock_all() WHERE pg_try_advisory_lock(2)",
    "SET standard_conforming_strings = off",
    "SET standard_conforming_strings = of",
    "SET SESSION AUTHORIZATION plainuser",
    "SET SESSION AUTHORIZATION 'default'",
    "SELECT * FROM pg_stat_activity",
    "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid() OR true",
    "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    "SELECT a.evil FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()",  # fn(row)
    "SELECT b.query FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()",
    "SELECT (SELECT salary FROM secret.payroll) FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid() UNION SELECT query FROM pg_stat_activity",
    "SELECT query FROM pg_stat_activity, public.orders WHERE pid = pg_backend_pid()",
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_allowed(sql):
    v = StatementPolicy(GRANT, task="t", shared=None).check_query(sql)
    assert v.allowed, v.message


@pytest.mark.parametrize("sql", DENIED)
def test_denied(sql):
    v = StatementPolicy(GRANT, task="t", shared=None).check_query(sql)
    assert not v.allowed, sql
