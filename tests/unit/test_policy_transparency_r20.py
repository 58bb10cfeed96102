"""Ordinary SQL the two readings disagreed on (session 18): differential runs of
PostgreSQL 15's regression suite and psycopg2's tests through the proxy found these refused
as ``parse.disagree`` under the broadest grant. Each is read alike by both parsers now, and
allowed exactly when the grant allows what it touches (docs/decisions.md, "Ordinary SQL
the two readings disagreed on (session 18)"; tests/integration/test_policy_transparency_s18.py
runs them against the server)."""

from __future__ import annotations

import pytest

from policy.catalog import Snapshot
from policy.classify import StatementClass, classify
from policy.classify.crosscheck import DISAGREE
from policy.classify.pgparse import parse
from policy.decide import decide
from policy.engine import StatementPolicy
from policy.scopes import parse_scopes

S = StatementClass


def one(sql: str):
    (c,) = classify(sql)
    assert not c.detail.startswith(DISAGREE), c.detail
    return c


def policy(scopes: str, snapshot: Snapshot | None = None) -> StatementPolicy:
    p = StatementPolicy(parse_scopes(scopes), task="t", shared=None)
    if snapshot is not None:
        p.catalog = lambda: snapshot
    return p


def snap(**user_functions: frozenset[str]) -> Snapshot:
    return Snapshot(
        frozenset(),
        {"public.orders": frozenset({"id", "n", "s"}), "secret.t": frozenset({"k"})},
        loaded_at=1.0,
        user_functions=dict(user_functions),
    )


# --- 1. SET CONSTRAINTS name [, ...] ---------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SET CONSTRAINTS sc_child_fk DEFERRED",
        "SET CONSTRAINTS sc_child_fk, other_fk IMMEDIATE",
        "set constraints public.sc_child_fk deferred",
        "SET CONSTRAINTS ALL DEFERRED",
    ],
)
def test_set_constraints_names_no_relation(sql):
    c = one(sql)
    assert (c.cls, c.command) == (S.TRANSACTION, "SET CONSTRAINTS")
    assert c.reads == c.writes == c.functions == frozenset()
    (pg,) = parse(sql)
    assert pg.kind == "ConstraintsSetStmt" and pg.relations == frozenset()


def test_set_constraints_is_allowed_as_set_constraints_all_is():
    narrow = policy("read:public.orders")
    for sql in ("SET CONSTRAINTS ALL DEFERRED", "SET CONSTRAINTS sc_child_fk DEFERRED"):
        v = narrow.check_query(sql)
        assert v.allowed and v.decisions[0][1].rule == "default.transaction", sql


def test_set_constraints_in_a_schema_the_grant_names_nothing_in_is_refused():
    """A qualified name is looked up in its schema, on which PostgreSQL asks USAGE: as an
    object of a schema (a type, a name in a literal), the grant must name something there."""
    (pg,) = parse("SET CONSTRAINTS public.a, secret.k IMMEDIATE")
    assert ("schema", "secret") in pg.describes and pg.relations == frozenset()
    v = policy("read:public.orders").check_query("SET CONSTRAINTS secret.k IMMEDIATE")
    assert not v.allowed and "schema secret" in v.message and "deny.catalog" in v.message
    assert policy("read:public.orders read:secret.t").check_query(
        "SET CONSTRAINTS secret.k IMMEDIATE"
    ).allowed


# --- 2. LIKE / ILIKE ... ESCAPE, SIMILAR TO ------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'x' LIKE 'h%' ESCAPE '#'",
        "SELECT 'x' NOT LIKE 'h%' ESCAPE '#'",
        "SELECT 'x' ILIKE 'h%' ESCAPE '#'",
        "SELECT 'x' NOT ILIKE 'h%' ESCAPE '#'",
        "SELECT 'x' SIMILAR TO 'a%'",
        "SELECT 'x' NOT SIMILAR TO 'a%' ESCAPE '#'",
    ],
)
def test_the_grammars_escape_calls_are_syntax(sql):
    """The grammar's like_escape / similar_to_escape are pg_catalog-qualified: no user's
    function can stand for them, so they are syntax (as EXTRACT's call is), not a name."""
    c = one(sql)
    assert c.cls is S.READ and c.functions == frozenset()
    (pg,) = parse(sql)
    assert pg.functions == frozenset()
    # a user's public.like_escape / similar_to_escape does not matter to them
    shadowed = snap(like_escape=frozenset({"public.like_escape"}),
                    similar_to_escape=frozenset({"public.similar_to_escape"}))  # fmt: skip
    assert policy("read:public.orders", shadowed).check_query(sql).allowed


def test_what_an_escape_clause_holds_is_still_read():
    (pg,) = parse("SELECT s LIKE public.f('h%') ESCAPE (SELECT k FROM secret.t) FROM public.orders")
    assert ("public", "f") in pg.functions and ("secret", "t", "read") in pg.relations
    p = policy("read:public.orders")
    v = p.check_query("SELECT s LIKE 'h%' ESCAPE (SELECT k FROM secret.t) FROM public.orders")
    assert not v.allowed and "secret.t" in v.message
    v = p.check_query("SELECT s SIMILAR TO public.f('a') FROM public.orders")
    assert not v.allowed and "public.f" in v.message
    assert p.check_query("SELECT s LIKE 'h%' ESCAPE '#' FROM public.orders").allowed
    assert not p.check_query("SELECT k LIKE 'h%' ESCAPE '#' FROM secret.t").allowed


def test_an_explicit_unqualified_like_escape_call_may_be_a_users():
    """Written by the agent, ``like_escape(p, e)`` is looked up through the search path:
    a built-in unless a user's function of the name may be picked."""
    sql = "SELECT 'x' LIKE like_escape('h%', '#')"
    c = one(sql)
    assert "like_escape" in c.functions
    assert policy("read:public.orders", snap()).check_query(sql).allowed
    shadowed = snap(like_escape=frozenset({"public.like_escape"}))
    v = policy("read:public.orders", shadowed).check_query(sql)
    assert not v.allowed and "public.like_escape" in v.message
    assert policy("read:public.orders execute:public.like_escape", shadowed).check_query(sql).allowed


# --- 3. bit_and, bit_or, bit_xor ---------------------------------------------------------


def test_bitwise_aggregates_are_read_alike_and_built_in():
    sql = "SELECT bit_and(n), bit_or(n), bit_xor(n) FILTER (WHERE n > 0) FROM public.orders"
    c = one(sql)
    assert c.cls is S.READ and c.reads == {"public.orders"}
    assert c.functions == {"bit_and", "bit_or", "bit_xor"}
    assert policy("read:public.orders", snap()).check_query(sql).allowed
    v = policy("read:public.customers", snap()).check_query(sql)
    assert not v.allowed and "scope.read" in v.message and "public.orders" in v.message


def test_a_users_bit_and_is_a_call_of_it():
    sql = "SELECT bit_and(n) FROM public.orders"
    shadowed = snap(bit_and=frozenset({"public.bit_and"}))
    v = policy("read:public.orders", shadowed).check_query(sql)
    assert not v.allowed and "public.bit_and" in v.message
    c = one("SELECT public.bit_and(n) FROM public.orders")
    assert c.functions == {"public.bit_and"}
    assert not decide(c, parse_scopes("read:public.orders")).allowed


def test_pow_is_a_built_in_as_power_is():
    """numeric_big.sql: sqlglot reads POW(a, b) as its Pow node (``power``), PostgreSQL's
    reading names ``pow``, pg_catalog's alias of power."""
    sql = "SELECT POW(numeric '10', 2), power(2, 3) FROM public.orders"
    c = one(sql)
    assert {"pow", "power"} <= c.functions
    assert decide(c, parse_scopes("read:public.orders")).allowed
    shadowed = snap(pow=frozenset({"public.pow"}))
    v = policy("read:public.orders", shadowed).check_query(sql)
    assert not v.allowed and "public.pow" in v.message


# --- 4. CREATE TABLE ... (LIKE t INCLUDING ...) --------------------------------------------

LIKE_GRANT = "ddl:public.t2 read:public.orders"


@pytest.mark.parametrize(
    "options",
    [
        "INCLUDING DEFAULTS",
        "INCLUDING CONSTRAINTS",
        "INCLUDING INDEXES",
        "INCLUDING GENERATED",
        "INCLUDING STATISTICS",
        "INCLUDING ALL",
        "INCLUDING ALL EXCLUDING COMMENTS",
        "EXCLUDING ALL INCLUDING DEFAULTS",
    ],
)
def test_like_copying_expressions_is_an_insert_of_its_source(options):
    sql = f"CREATE TABLE public.t2 (LIKE public.orders {options})"
    c = one(sql)
    assert c.cls is S.DDL and c.command == "CREATE TABLE"
    assert c.write_ops == {("ddl", "public.t2"), ("insert", "public.orders")}
    assert c.reads == {"public.orders"}
    d = decide(c, parse_scopes(LIKE_GRANT))
    assert not d.allowed and d.rule == "scope.write"
    assert "LIKE public.orders" in d.reason and "insert scope" in d.reason
    assert decide(c, parse_scopes(LIKE_GRANT + " insert:public.orders")).allowed
    assert not decide(c, parse_scopes("ddl:public.t2 insert:public.orders")).allowed  # read


@pytest.mark.parametrize(
    "options",
    [
        "",
        "INCLUDING COMMENTS INCLUDING STORAGE INCLUDING COMPRESSION INCLUDING IDENTITY",
        "INCLUDING ALL EXCLUDING CONSTRAINTS EXCLUDING DEFAULTS EXCLUDING GENERATED "
        "EXCLUDING INDEXES EXCLUDING STATISTICS",
        "INCLUDING DEFAULTS EXCLUDING ALL",
    ],
)
def test_like_copying_no_expression_is_a_read_of_its_source(options):
    c = one(f"CREATE TABLE public.t2 (LIKE public.orders {options})")
    assert c.write_ops == {("ddl", "public.t2")} and c.reads == {"public.orders"}
    assert decide(c, parse_scopes(LIKE_GRANT)).allowed
    (pg,) = parse(f"CREATE TABLE public.t2 (LIKE public.orders {options})")
    assert ("public", "orders", "read") in pg.relations


def test_like_a_secret_table_with_its_defaults_is_refused_by_scope():
    c = one("CREATE TABLE public.t2 (LIKE secret.t INCLUDING DEFAULTS)")
    d = decide(c, parse_scopes(LIKE_GRANT + " insert:public.orders"))
    assert not d.allowed and d.rule == "scope.write" and "secret.t" in d.reason
    d = decide(c, parse_scopes("ddl:public.t2 insert:secret.t"))
    assert not d.allowed and d.rule == "scope.read" and "secret.t" in d.reason
    # unqualified in a two-schema search path: both candidates
    (c,) = classify("CREATE TABLE public.t2 (LIKE orders INCLUDING ALL)", ("public", "app"))
    assert {("insert", "public.orders"), ("insert", "app.orders")} <= c.write_ops


# --- 5. EXPLAIN of CREATE TABLE AS / MATERIALIZED VIEW / SELECT INTO; WITH in set operations


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN (costs off) CREATE MATERIALIZED VIEW public.mv AS SELECT * FROM public.orders",
        "EXPLAIN CREATE TABLE public.mv AS SELECT id FROM public.orders",
        "explain (costs off) select id into public.mv from public.orders",
        "EXPLAIN (ANALYZE false) CREATE TABLE public.mv AS SELECT id FROM public.orders",
    ],
)
def test_plain_explain_of_a_create_as_needs_the_scope_the_statement_would(sql):
    """Plain EXPLAIN plans the query and makes no table (ExplainOneUtility), but PostgreSQL
    looks the target up first (its schema's CREATE privilege, "already exists"): the
    target needs the ddl scope (red-team round 21: leaving it out made an existence oracle
    on any schema); the query's relations are reads."""
    c = one(sql)
    assert (c.cls, c.command) == (S.READ, "EXPLAIN")
    assert c.reads == {"public.orders"} and c.write_ops == {("ddl", "public.mv")}
    assert decide(c, parse_scopes("read:public.orders ddl:public.mv")).allowed
    assert not decide(c, parse_scopes("read:public.orders")).allowed
    d = decide(c, parse_scopes("ddl:public.mv"))
    assert not d.allowed and "public.orders" in d.reason


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN ANALYZE CREATE MATERIALIZED VIEW public.mv AS SELECT * FROM public.orders",
        "EXPLAIN (ANALYZE, costs off) CREATE TABLE public.mv AS SELECT id FROM public.orders",
        "EXPLAIN (ANALYZE true) SELECT id INTO public.mv FROM public.orders",
    ],
)
def test_explain_analyze_of_a_create_as_makes_the_table(sql):
    c = one(sql)
    assert c.cls is S.DDL and ("ddl", "public.mv") in c.write_ops
    assert not decide(c, parse_scopes("read:public.orders")).allowed
    assert decide(c, parse_scopes("read:public.orders ddl:public.mv")).allowed


def test_whether_explain_makes_the_table_is_read_on_both_sides():
    # the handler reads ANALYZE on if any option says so (PostgreSQL's last one wins):
    # the table is then the statement's DDL
    (c,) = classify("EXPLAIN (ANALYZE, ANALYZE false) CREATE TABLE public.mv AS SELECT 1")
    assert c.cls is S.DDL and ("ddl", "public.mv") in c.write_ops
    # planned only or run, the target is the grant's to name
    for sql in [
        "EXPLAIN CREATE TABLE secret.mv AS SELECT 1",
        "EXPLAIN (ANALYZE off, ANALYSE 0, costs off) CREATE TABLE secret.mv AS SELECT 1",
        "EXPLAIN CREATE MATERIALIZED VIEW secret.mv AS SELECT 1",
        "EXPLAIN SELECT 1 INTO secret.mv",
        "EXPLAIN CREATE TABLE IF NOT EXISTS secret.mv AS SELECT 1",
    ]:
        (c,) = classify(sql)
        assert ("ddl", "secret.mv") in c.write_ops, sql
        assert not decide(c, parse_scopes("read:public.orders ddl:public.*")).allowed, sql


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE public.mv AS EXECUTE q",
        "CREATE TABLE public.mv AS EXECUTE q(1, 'x')",
        "EXPLAIN CREATE TABLE public.mv AS EXECUTE q",
        "EXPLAIN ANALYZE CREATE TABLE public.mv AS EXECUTE q(1)",
    ],
)
def test_create_table_as_execute_is_refused(sql):
    """It runs a prepared statement (a protocol-level one too, its Bind checks skipped)
    whose query is not in the text: sqlglot read q(1, 'x') as a call, PostgreSQL as none,
    and the DDL scope alone allowed it before."""
    (c,) = classify(sql)
    assert c.cls is S.UNKNOWN and "AS EXECUTE" in c.detail
    v = policy("ddl:public.mv read:public.orders").check_query(sql)
    assert not v.allowed


WITH_IN_SET_OPERATIONS = [
    # with.sql: WITH attached to an intermediate-level set operation
    "WITH outermost(x) AS (SELECT 1 UNION (WITH innermost AS (SELECT 2) "
    "SELECT * FROM innermost UNION SELECT 3)) SELECT * FROM outermost ORDER BY 1",
    "WITH RECURSIVE outermost(x) AS (SELECT 1 UNION (WITH innermost AS (SELECT 2) "
    "SELECT * FROM outermost UNION SELECT * FROM innermost)) SELECT * FROM outermost ORDER BY 1",
    "WITH RECURSIVE x(n) AS ((WITH x1 AS (SELECT 1 FROM x) SELECT * FROM x1) UNION SELECT 0) "
    "SELECT * FROM x",
    # subselect.sql
    "with recursive x(a) as ((values ('a'), ('b')) union all (with z as not materialized "
    "(select * from x) select z.a || z1.a as a from z cross join z as z1 "
    "where length(z.a || z1.a) < 5)) select * from x",
    "with recursive q as (select * from public.orders union all (with recursive x as "
    "(select * from public.orders union all (select * from q union all select * from x)) "
    "select * from x)) select * from q limit 32",
]


@pytest.mark.parametrize("sql", WITH_IN_SET_OPERATIONS)
def test_a_with_on_a_set_operations_arm_scopes_its_names(sql):
    c = one(sql)
    assert c.cls is S.READ and c.reads <= {"public.orders"}
    assert decide(c, parse_scopes("read:public.orders")).allowed
    (pg,) = parse(sql)
    assert {rel for _s, rel, _r in pg.relations} <= {"orders"}


def test_a_with_on_one_arm_is_not_visible_in_the_other():
    for sql in (
        "SELECT 1 UNION (WITH w AS (SELECT 2) SELECT * FROM w) UNION SELECT * FROM w",
        "(WITH w AS (SELECT 2) SELECT * FROM w) UNION SELECT * FROM w",
        "SELECT * FROM w UNION (WITH w AS (SELECT 2) SELECT * FROM w)",
    ):
        c = one(sql)
        assert c.reads == {"public.w"}, sql
        (pg,) = parse(sql)
        assert (None, "w", "read") in pg.relations, sql
        d = decide(c, parse_scopes("read:public.orders"))
        assert not d.allowed and "public.w" in d.reason
