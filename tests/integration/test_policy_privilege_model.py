"""The policy is never wider than PostgreSQL's privileges: the server as the judge of
every SQL text the test suites hold.

A grant's scopes mean privileges (``policy.grants.roles.privilege_statements``, what a
per-grant database role is given). For a few scope sets, every SQL string found in
``tests/`` that the statement policy allows is run by PostgreSQL as a role holding exactly
those privileges (in a transaction, rolled back): if the server refuses it for lack of a
privilege (42501), the policy let through something the grant does not cover. This is how
the write-scope hole was confirmed (a write scope alone ran ``UPDATE ... RETURNING``,
which PostgreSQL refuses a role without SELECT); the corpus grows with the suites.

Two differences are by design: plain EXPLAIN of a write only plans it, so the policy takes
its writes for reads, where PostgreSQL asks for the write privilege; and the policy lets a
session signal its grant's own sessions' backends (``pg_terminate_backend(pg_backend_pid())``,
session 29), which no privilege expresses: a role switched to with SET ROLE may not signal
the backend of the role that logged in, so the server refuses what it allows (narrower, not
wider).
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import psycopg
import pytest

from policy import StatementPolicy, parse_scopes
from policy.grants.roles import Catalog, privilege_statements
from tests.support import planted
from tests.support.pg import direct_dsn
from tests.support.rawpg import UPSTREAM_USER

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROLE = "pgw_privilege_model"
TESTS = Path(__file__).resolve().parent.parent
_SQL = re.compile(
    r"\s*(SELECT|WITH|UPDATE|DELETE|INSERT|MERGE|TABLE|VALUES|EXPLAIN|DECLARE|PREPARE|LOCK"
    r"|TRUNCATE|CREATE|ALTER|DROP)\b",
    re.IGNORECASE,
)
# the fixture cluster's schema (devtools/localpg.py, APP_SCHEMA)
CATALOG = Catalog(
    relations={("public", "orders"): "r", ("public", "customers"): "r",
               ("secret", "payroll"): "r", ("public", "orders_id_seq"): "S",
               ("public", "customers_id_seq"): "S"},  # fmt: skip
    sequences={("public", "orders"): [("public", "orders_id_seq")],
               ("public", "customers"): [("public", "customers_id_seq")]},  # fmt: skip
    schemas={"public", "secret"},
)
SCOPE_SETS = [
    "read:public.orders",
    "insert:public.orders update:public.customers",
    "read:public.* write:public.orders delete:public.customers",
    "delete:public.orders truncate:public.customers read:secret.payroll",
]


@functools.cache
def corpus() -> tuple[str, ...]:
    """Every one-line SQL string constant of the test suites (no format placeholders, no
    COPY: its data would follow). Read once a session (every file of tests/ parsed: ~1.6 s)."""
    found: set[str] = set()
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                sql = node.value.strip()
                if (_SQL.match(sql) and "{" not in sql and "\n" not in sql
                        and "COPY" not in sql.upper() and len(sql) < 500):  # fmt: skip
                    found.add(sql)
    return tuple(sorted(found))


def refused_by_the_server(pg, scopes: str, statements: list[str]) -> list[tuple[str, str]]:
    """The statements PostgreSQL refuses a role holding what ``scopes`` mean (42501)."""
    pg.psql(planted.drop_role(ROLE), db="app")
    grants = privilege_statements(parse_scopes(scopes), ROLE, "app", CATALOG)
    pg.psql(f"CREATE ROLE {ROLE} NOLOGIN; GRANT {ROLE} TO {UPSTREAM_USER};\n"
            + "".join(g + ";\n" for g in grants), db="app")  # fmt: skip
    refused = []
    conn = psycopg.connect(direct_dsn(pg), autocommit=True)
    try:
        for sql in statements:
            try:
                conn.execute("BEGIN")
                conn.execute("SET LOCAL statement_timeout = '200ms'")
                conn.execute(f"SET LOCAL ROLE {ROLE}")
                conn.execute(sql)
            except psycopg.OperationalError:  # a statement that broke the session
                conn.close()
                conn = psycopg.connect(direct_dsn(pg), autocommit=True)
                continue
            except psycopg.Error as exc:
                if exc.sqlstate == "42501":
                    refused.append((sql, str(exc).splitlines()[0]))
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                conn.close()
                conn = psycopg.connect(direct_dsn(pg), autocommit=True)
    finally:
        conn.close()
        pg.psql(planted.drop_role(ROLE), db="app")
    return refused


def test_the_corpus_is_the_suites_sql():
    statements = corpus()
    assert len(statements) > 1000, len(statements)
    assert "UPDATE public.wo_jobs SET n = 1 RETURNING 1" in statements


@pytest.mark.parametrize("scopes", SCOPE_SETS)
def test_what_the_policy_allows_the_grants_privileges_allow(pg, scopes):
    policy = StatementPolicy(parse_scopes(scopes), task="PRIV-MODEL")
    allowed = [sql for sql in corpus() if policy.check_query(sql).allowed]
    assert len(allowed) > 100, len(allowed)  # the comparison has something to compare
    wider = [(sql, why) for sql, why in refused_by_the_server(pg, scopes, allowed)
             if not re.match(r"EXPLAIN\s+(?!ANALY[SZ]E)", sql, re.IGNORECASE)
             and not re.search(r"pg_(terminate|cancel)_backend", sql, re.IGNORECASE)]  # fmt: skip
    assert not wider, wider
