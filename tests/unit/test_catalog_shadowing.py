"""Unqualified calls and operators decided by what PostgreSQL may resolve them to
(policy.catalog.shadowing_calls, StatementPolicy._shadowed); end to end with the server
judging: tests/integration/test_proxy_shadowed_calls.py."""

from __future__ import annotations

from policy import StatementPolicy, parse_scopes
from policy.catalog import CatalogCache, shadowing_calls

SHADOWS = {"lower": frozenset({"public.lower", "app.lower"}), '"Odd"': frozenset({"public.\"Odd\""})}
OPERATORS = {"||": frozenset({"secret.concat_ints"})}


def policy(scopes: str = "read:public.t ddl:public.*", cache: CatalogCache | None = None):
    cache = cache or CatalogCache()
    if cache.get("db") is None:
        cache.put("db", [], {}, True, SHADOWS, OPERATORS)
    p = StatementPolicy(parse_scopes(scopes), task="T", shared=None)
    p.catalog = lambda: cache.get("db")
    p.on_ddl = lambda defined, removed: cache.invalidate("db", defined, removed)
    return p, cache


def test_shadowing_calls_lists_every_candidate_of_bare_names_only():
    snap = CatalogCache().put("db", [], {}, True, SHADOWS, OPERATORS)
    got = shadowing_calls(frozenset({"lower", "public.lower", "upper"}), frozenset({"||", "="}), snap)
    assert sorted(got) == ["app.lower", "public.lower", "secret.concat_ints"]
    assert got["app.lower"].startswith("lower(...) may resolve to app.lower")
    assert got["secret.concat_ints"].startswith("operator || may resolve")


def test_a_shadowed_name_or_operator_needs_execute_on_every_candidate():
    p, _ = policy()
    for sql, target in [
        ("SELECT lower(1)", "app.lower"),  # sorted: app before public
        ("SELECT a FROM public.t WHERE lower(a) = 'x'", "app.lower"),
        ("SELECT 1 || 2", "secret.concat_ints"),
        ('SELECT "Odd"(1)', 'public."Odd"'),
    ]:
        v = p.check_query(sql)
        assert not v.allowed and target in v.message and "scope.execute" in v.message, (sql, v)
    assert p.check_query("SELECT upper('x'), 1 + 2").allowed
    p2, _ = policy("read:public.t execute:public.*,app.lower")
    assert p2.check_query("SELECT lower(1)").allowed
    assert not p2.check_query("SELECT 1 || 2").allowed  # secret.concat_ints is not granted


def test_no_catalog_loaded_denies_unqualified_calls_and_operators():
    p = StatementPolicy(parse_scopes("read:public.t"), task="T", shared=None)
    p.catalog = lambda: None  # the proxy's load failed: unknown, so fail closed
    v = p.check_query("SELECT a FROM public.t WHERE a = 1")
    assert not v.allowed and "no catalog loaded" in v.message
    assert p.check_query("SELECT a FROM public.t").allowed  # no call, no operator
    offline = StatementPolicy(parse_scopes("read:public.t"), task="T", shared=None)
    assert offline.check_query("SELECT a FROM public.t WHERE a = 1").allowed  # no proxy


def test_defining_a_function_with_a_built_ins_name_needs_the_execute_scope_on_it():
    """Statements already checked (prepared, or a driver's cache) are analysed again by the
    server after such a definition: the definition itself is the point to decide."""
    p, _ = policy()
    create = "CREATE FUNCTION public.initcap(int) RETURNS text LANGUAGE sql AS 'SELECT 1::text'"
    v = p.check_query(create)
    assert not v.allowed and "shadow the built-in initcap" in v.message, v.message
    # any other name needs it too (session 19: whatever already calls it runs the new body)
    v = p.check_query(create.replace("initcap", "my_fn"))
    assert not v.allowed and "defining it is running it" in v.message, v.message
    p2, _ = policy("read:public.t ddl:public.* execute:public.initcap,public.my_fn")
    assert p2.check_query(create).allowed
    assert p2.check_query(create.replace("initcap", "my_fn")).allowed


def test_defining_or_replacing_any_function_needs_the_execute_scope_on_it():
    """A trigger, a view or a default that already calls a function runs its new body with
    nobody's statement naming it (red-team round 23): a ddl scope alone may not define or
    replace one; with execute on it, it may (ddl + execute on a name is arbitrary SQL, as
    docs/policy.md says)."""
    ddl_only, _ = policy("read:public.t ddl:public.*")
    both, _ = policy("read:public.t ddl:public.* execute:public.touch,public.proc")
    for sql in (
        "CREATE OR REPLACE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RETURN NEW; END $$",
        'CREATE OR REPLACE FUNCTION public.touch() RETURNS "trigger" LANGUAGE plpgsql '
        "AS $$ BEGIN RETURN NEW; END $$",
        "CREATE FUNCTION touch() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE PROCEDURE public.proc() LANGUAGE sql AS 'SELECT 1'",
        "CREATE OR REPLACE PROCEDURE proc() LANGUAGE sql AS 'SELECT 1'",
    ):
        v = ddl_only.check_query(sql)
        assert not v.allowed, sql
        if "RETURNS trigger" not in sql:  # (sqlglot cannot read that one: UNKNOWN anyway)
            assert "scope.execute" in v.message and "defining it" in v.message, (sql, v.message)
            assert both.check_query(sql).allowed, sql
    assert ddl_only.check_query("DROP FUNCTION public.touch()").allowed  # runs nothing


def test_functions_defined_through_the_proxy_shadow_from_then_on_whatever_a_reload_says():
    maker, cache = policy("read:public.t ddl:public.* execute:public.initcap")
    p, _ = policy(cache=cache)  # another grant's session on the same database
    create = "CREATE FUNCTION public.initcap(int) RETURNS text LANGUAGE sql AS 'SELECT 1::text'"
    assert p.check_query("SELECT initcap('x')").allowed
    assert maker.check_query(create).allowed  # the proxy learns the name
    assert maker.check_query("SELECT initcap('x')").allowed  # its own: execute granted
    assert "public.initcap" in p.check_query("SELECT initcap('x')").message
    cache.put("db", [], {}, True, SHADOWS, OPERATORS)  # a reload that ran before the commit
    assert not p.check_query("SELECT initcap('x')").allowed
    other, _ = policy(cache=cache)  # a later session
    assert not other.check_query("SELECT initcap('x')").allowed


def test_a_definition_and_a_call_in_one_message_are_decided_together():
    p, cache = policy()
    sql = ("CREATE FUNCTION public.colfn(r public.t) RETURNS text LANGUAGE sql AS 'SELECT 1::text';"
           " SELECT x.colfn FROM public.t x")  # fmt: skip
    v = p.check_query(sql)
    assert not v.allowed and "public.colfn" in v.message, v.message
    assert "colfn" not in cache.get("db").user_functions  # denied: nothing ran, nothing learnt
    dry = StatementPolicy(parse_scopes("read:public.t ddl:public.*"), task="T", enforce=False, shared=None)
    dry.catalog = lambda: cache.get("db")
    dry.on_ddl = lambda defined, removed: cache.invalidate("db", defined, removed)
    assert dry.check_query(sql).would_deny
    assert "public.colfn" in cache.get("db").user_functions["colfn"]  # dry run: it ran
    assert "colfn" in cache.get("db").functions  # and column syntax knows it
    assert not p.check_query("SELECT x.colfn FROM public.t x").allowed


def test_parse_parameter_types_by_oid_are_decided_by_what_the_type_runs():
    cache = CatalogCache()
    cache.put("db", [], {}, True, {}, {}, {"public.d": frozenset({"secret.chk"})},
              {16500: frozenset({"secret.chk"})}, [16500, 16600])  # fmt: skip
    p, _ = policy(cache=cache)
    assert p.check_parse("SELECT $1", ()).allowed
    assert p.check_parse("SELECT $1", (16600,)).allowed  # a user type that runs nothing
    v = p.check_parse("SELECT $1", (16500,))
    assert not v.allowed and "secret.chk" in v.message
    v = p.check_parse("SELECT $1", (16700,))  # made after the load: unknown
    assert not v.allowed and "made after the catalog was loaded" in v.message
    assert p.check_parse("SELECT $1").allowed  # the cached text verdict is not changed
