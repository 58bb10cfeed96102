"""StatementPolicy: verdicts, messages, dry-run, session state, caches — and attacks on them."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from policy import StatementPolicy, Verdict, check_startup_params, classify, decide, parse_scopes
from policy.engine import SharedClassifications
from policy.lexer import fingerprint_statements, lex

SCOPES = parse_scopes("read:public.orders,public.customers write:public.orders set:work_mem")


def policy(**kw) -> StatementPolicy:
    return StatementPolicy(kw.pop("scopes", SCOPES), task=kw.pop("task", "INC-4821"), **kw)


def shape(v: Verdict):
    """A verdict without statement texts: what must not depend on literals or layout."""
    return (
        v.allowed,
        v.would_deny,
        tuple(
            (
                c.cls,
                c.command,
                c.reads,
                c.writes,
                c.functions,
                c.write_ops,
                c.detail if c.cls.name != "UNKNOWN" else "",
                d.allowed,
                d.rule,
            )
            for c, d in v.decisions
        ),
    )


# -- verdicts and messages ----------------------------------------------------------------


def test_allowed_query():
    v = policy().check_query("SELECT * FROM orders WHERE id = 1")
    assert v.allowed and not v.would_deny and v.message == ""
    ((c, d),) = v.decisions
    assert c.reads == {"public.orders"} and d.rule == "scope.read"


def test_denied_message_names_task_rule_and_relation():
    v = policy().check_query("UPDATE customers SET name = 'x'")
    assert not v.allowed
    assert v.message == "pgwitness: task INC-4821 may not write public.customers (rule scope.write)"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM payments", "may not read public.payments (rule scope.read)"),
        ("SELECT pg_read_file('x')", "may not execute pg_read_file (rule deny.function)"),
        ("SET ROLE postgres", "may not change role (rule deny.setting)"),
        ("SELECT * FROM pg_authid", "may not read pg_catalog.pg_authid (rule deny.catalog)"),
        ("COPY orders FROM PROGRAM 'x'", "(rule deny.copy_program)"),
        ("GRANT ALL ON orders TO x", "(rule deny.role)"),
        ("CREATE PUBLICATION p FOR ALL TABLES", "(rule deny.unknown)"),  # parses, unclassified
    ],
)
def test_messages(sql, message):
    v = policy().check_query(sql)
    assert not v.allowed and v.message.startswith("pgwitness: task INC-4821 ")
    assert v.message.endswith(message)


def test_a_write_reading_its_target_without_read_says_which_scope_is_missing():
    p = policy(scopes=parse_scopes("update:public.customers"))
    v = p.check_query("UPDATE customers SET name = 'x' WHERE id = 1")
    assert not v.allowed and "may not read public.customers: the statement reads the rows" in v.message
    assert "needs read:public.customers as well as the write or ddl scope" in v.message
    assert p.check_query("UPDATE customers SET name = 'x'").allowed
    # a row lock reads like any SELECT: the plain message
    v = p.check_query("SELECT * FROM customers FOR UPDATE")
    assert v.message.endswith("may not read public.customers (rule scope.read)"), v.message


def test_one_denied_statement_denies_the_whole_query():
    v = policy().check_query("SELECT * FROM orders; DELETE FROM customers; SELECT 1")
    assert not v.allowed
    assert [d.allowed for _, d in v.decisions] == [True, False, True]
    assert "public.customers" in v.message


def test_hidden_statement_after_literal_is_seen():
    v = policy().check_query("SELECT 'a'' ; ' FROM orders; DROP TABLE orders; --'")
    assert not v.allowed and "scope.ddl" in v.message


def test_empty_query_is_allowed():
    v = policy().check_query("  ; -- nothing")
    assert v.allowed and v.decisions == ()


def test_transaction_around_allowed_statements():
    v = policy().check_query("BEGIN; UPDATE orders SET total = 1; COMMIT")
    assert v.allowed
    assert [d.rule for _, d in v.decisions] == [
        "default.transaction",
        "scope.write",
        "default.transaction",
    ]


def test_check_parse_single_statement():
    p = policy()
    assert p.check_parse("SELECT * FROM orders WHERE id = $1").allowed
    v = p.check_parse("DELETE FROM customers WHERE id = $1")
    assert not v.allowed and "public.customers" in v.message


def test_check_parse_with_several_statements_is_all_or_nothing():
    # PostgreSQL rejects several statements in one Parse; we deny if any is denied and
    # otherwise let the server raise its own error.
    p = policy()
    assert not p.check_parse("SELECT 1; DELETE FROM customers").allowed
    assert p.check_parse("SELECT 1; SELECT 2").allowed


def test_function_call_denied_and_dry_run():
    v = policy().check_function_call()
    assert not v.allowed and "deny.function_call" in v.message and v.decisions == ()
    v = policy(enforce=False).check_function_call()
    assert v.allowed and v.would_deny and v.message == ""


# -- dry run --------------------------------------------------------------------------------


def test_dry_run_allows_but_reports_would_deny():
    p = policy(enforce=False)
    v = p.check_query("SELECT 1; DELETE FROM customers")
    assert v.allowed and v.would_deny and v.message == ""
    assert [d.allowed for _, d in v.decisions] == [True, False]
    assert v.decisions[1][1].rule == "scope.write"
    ok = p.check_query("SELECT * FROM orders")
    assert ok.allowed and not ok.would_deny
    # cached answers keep the dry-run flag
    again = p.check_query("SELECT 1; DELETE FROM customers")
    assert again.allowed and again.would_deny


# -- PREPARE / EXECUTE ------------------------------------------------------------------


def test_execute_only_what_this_session_prepared():
    p = policy()
    assert not p.check_query("EXECUTE q(1)").allowed
    assert p.check_query("PREPARE q (int) AS SELECT * FROM orders WHERE id = $1").allowed
    v = p.check_query("EXECUTE q(1)")
    assert v.allowed and v.decisions[0][1].rule == "session.prepared"
    assert p.prepared_names == {"q"}
    assert p.check_query("DEALLOCATE q").allowed
    assert not p.check_query("EXECUTE q(1)").allowed


def test_denied_prepare_is_not_remembered():
    p = policy()
    assert not p.check_query("PREPARE bad AS DELETE FROM customers").allowed
    v = p.check_query("EXECUTE bad")
    assert not v.allowed and "deny.execute" in v.message


def test_prepare_in_a_denied_query_is_not_remembered():
    p = policy()
    assert not p.check_query("PREPARE q AS SELECT 1; DELETE FROM customers").allowed
    assert not p.check_query("EXECUTE q").allowed


def test_prepare_and_execute_in_one_query():
    p = policy()
    assert p.check_query("PREPARE q AS SELECT * FROM orders; EXECUTE q").allowed
    assert not policy().check_query("EXECUTE q; PREPARE q AS SELECT 1").allowed


def test_execute_arguments_are_checked():
    p = policy()
    p.check_query("PREPARE q (text) AS SELECT * FROM orders WHERE note = $1")
    v = p.check_query("EXECUTE q(pg_read_file('/etc/passwd'))")
    assert not v.allowed and "pg_read_file" in v.message


def test_discard_all_and_deallocate_all_forget():
    for reset in ("DISCARD ALL", "DEALLOCATE ALL", "DEALLOCATE PREPARE ALL"):
        p = policy()
        p.check_query("PREPARE q AS SELECT 1")
        assert p.check_query(reset).allowed
        assert not p.check_query("EXECUTE q").allowed, reset


def test_execute_stays_stateful_when_cached():
    p = policy()
    assert not p.check_query("EXECUTE q").allowed  # now cached by text
    p.check_query("PREPARE q AS SELECT 1")
    assert p.check_query("EXECUTE q").allowed
    p.check_query("DEALLOCATE q")
    assert not p.check_query("EXECUTE q").allowed


def test_quoted_prepare_names_are_case_sensitive():
    p = policy()
    p.check_query('PREPARE "Q" AS SELECT 1')
    assert p.check_query('EXECUTE "Q"').allowed
    assert not p.check_query("EXECUTE Q").allowed  # folds to q


# -- caching ----------------------------------------------------------------------------


def test_text_cache_hit():
    p = policy()
    a = p.check_query("SELECT * FROM orders WHERE id = 1")
    b = p.check_query("SELECT * FROM orders WHERE id = 1")
    assert a is b and p.stats["text_hits"] == 1


def test_fingerprint_cache_hit_keeps_own_text():
    p = policy()
    p.check_query("SELECT * FROM orders WHERE id = 1 AND note = 'a'")
    v = p.check_query("select *   from ORDERS where id = 22 /* c */ and note = 'b''c'")
    assert p.stats["fingerprint_hits"] == 1
    assert v.decisions[0][0].sql == "select *   from ORDERS where id = 22 /* c */ and note = 'b''c'"
    assert v.allowed


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("SET work_mem = '1MB'", "SET work_mem = '2MB'"),
        ("COPY orders TO STDOUT", "COPY orders TO STDOUT "),
        ("SELECT nextval('orders_seq')", "SELECT nextval('customers_seq')"),
        ("SELECT 'orders'::regclass", "SELECT 'pg_authid'::regclass"),
        ("SELECT to_regclass('orders')", "SELECT to_regclass('x')"),
        (
            "SELECT has_table_privilege('orders', 'select')",
            "SELECT has_table_privilege('x', 'select')",
        ),
        ("SELECT current_setting('a')", "SELECT current_setting('b')"),
        ("SELECT set_config('jit', 'off', false)", "SELECT set_config('role', 'x', false)"),
        ("PREPARE a AS SELECT 1", "PREPARE b AS SELECT 2"),
        ("SELEC 1", "SELEC 2"),
        ("SELECT 1x FROM orders", "SELECT 2x FROM orders"),
    ],
)
def test_literal_dependent_statements_never_use_the_fingerprint_cache(first, second):
    p = policy()
    p.check_query(first)
    p.check_query(second)
    assert p.stats["fingerprint_hits"] == 0
    assert p.caches.fingerprints == {}


def test_reading_a_custom_setting_needs_a_set_scope_through_every_cache_tier():
    """A custom setting can hold a secret (ALTER DATABASE ... SET app.jwt_secret): it is
    read only with a set: scope naming it. Texts one character (or one digit, the
    number-shape tier's unit) away from an allowed read must not be answered from it."""
    p = StatementPolicy(parse_scopes("read:public.orders set:app.t1,app.tenant"), task="T")
    allowed = [
        "SELECT current_setting('app.t1')",
        "SELECT current_setting('app.tenant', true)",
        "SHOW app.t1",
        "SELECT current_setting('jit')",
    ]
    denied = [
        "SELECT current_setting('app.t2')",
        "SELECT current_setting('app.t1x')",
        "SELECT current_setting('app.tenanT2', true)",
        "SHOW app.t2",
        "SELECT current_setting('app.t1'), current_setting('app.secret')",
        "SELECT pg_catalog.current_setting('app.t3')",
        "SELECT current_setting('primary_conninfo')",
    ]
    for _ in range(3):  # every tier primed, then asked again
        for sql in allowed:
            assert p.check_query(sql).allowed, sql
            assert p.check_parse(sql).allowed, sql
        for sql in denied:
            v = p.check_query(sql)
            assert not v.allowed and "setting" in v.message, (sql, v.message)
            assert not p.check_parse(sql).allowed, sql


def test_set_config_is_decided_like_set():
    p = policy()
    # asyncpg's type introspection turns JIT off this way
    assert p.check_query("SELECT current_setting('jit'), set_config('jit', 'off', false)").allowed
    v = p.check_query("SELECT set_config('role', 'postgres', false)")
    assert not v.allowed and v.message.endswith(
        "may not execute set_config on role (rule deny.function)"
    )
    assert p.check_query("SELECT set_config('work_mem', '1GB', true)").allowed  # set:work_mem


def test_fingerprint_cache_is_used_within_multi_statement_queries():
    p = policy()
    p.check_query("SELECT * FROM orders WHERE id = 1")
    v = p.check_query("SELECT * FROM orders WHERE id = 2; SELECT 'x'")
    assert v.allowed and len(v.decisions) == 2


def test_shared_cache_classifies_once_decides_per_grant():
    shared = SharedClassifications()
    reader = policy(shared=shared)
    assert reader.check_query("UPDATE orders SET total = 1").allowed
    assert reader.stats["misses"] == 1
    other = StatementPolicy(parse_scopes("read:public.orders"), task="T2", shared=shared)
    v = other.check_query("UPDATE orders SET total = 1")
    assert other.stats == {"text_hits": 0, "fingerprint_hits": 0, "shared_hits": 1, "misses": 0}
    assert not v.allowed and "task T2" in v.message
    # a new shape of literals: the shared fingerprint cache, decided for this grant
    v = other.check_query("UPDATE orders SET total = 2")
    assert not v.allowed and other.stats["fingerprint_hits"] == 1


def test_shared_cache_is_keyed_by_search_path():
    shared = SharedClassifications()
    a = StatementPolicy(parse_scopes("read:app.*"), task="T", shared=shared, search_path=("app",))
    assert a.check_query("SELECT * FROM orders").allowed
    b = StatementPolicy(parse_scopes("read:app.*"), task="T", shared=shared)
    assert not b.check_query("SELECT * FROM orders").allowed  # public.orders


def test_no_shared_cache():
    p = policy(shared=None)
    p.check_query("SELECT * FROM orders")
    assert p.stats["misses"] == 1 and p.caches.shared is None


def test_caches_are_bounded():
    p = policy(cache_size=8)
    for i in range(50):
        p.check_query(f"SELECT * FROM orders WHERE id = {i} AND c{i} = 1")
    assert len(p.caches.texts) <= 8 and len(p.caches.fingerprints) <= 8


def test_public_api_exports():
    import policy as pkg

    for name in (
        "classify",
        "decide",
        "parse_scopes",
        "Scopes",
        "ScopeError",
        "Classified",
        "Decision",
        "StatementClass",
        "StatementPolicy",
        "Verdict",
        "check_startup_params",
    ):
        assert name in pkg.__all__ and hasattr(pkg, name)
    assert check_startup_params({"user": "a"}) is None


# -- property: layout never changes a decision ---------------------------------------------

# Statements without quotes or literals whose text could change meaning under case folding.
LAYOUT_CORPUS = [
    "SELECT * FROM orders WHERE id = 1",
    "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.cid WHERE o.total > 10",
    "UPDATE orders SET total = total + 1 WHERE id IN (SELECT id FROM customers)",
    "DELETE FROM customers WHERE id = 3",
    "INSERT INTO orders (id, total) SELECT id, 0 FROM customers",
    "WITH d AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM d",
    "WITH customers AS (SELECT 1 AS id) SELECT * FROM customers",
    "SELECT * FROM payments",
    "SELECT * FROM pg_class JOIN pg_namespace ON true",
    "SELECT * FROM pg_authid",
    "SELECT now(), lower(name) FROM customers",
    "SELECT other_fn(1) FROM orders",
    "BEGIN ISOLATION LEVEL SERIALIZABLE",
    "SET search_path TO evil",
    "SET work_mem TO 100",
    "SET statement_timeout TO 1000",
    "EXPLAIN ANALYZE DELETE FROM orders",
    "EXPLAIN DELETE FROM customers",
    "MERGE INTO orders USING customers ON true WHEN MATCHED THEN DELETE",
    "TRUNCATE orders",
    "CREATE TABLE x AS SELECT * FROM orders",
    "SELECT * FROM orders FOR UPDATE",
    "SELECT * FROM customers FOR UPDATE",
    "COPY orders TO STDOUT",
    "COPY customers FROM STDIN",
    "LISTEN jobs",
    "VACUUM orders",
    "GRANT SELECT ON orders TO x",
    "SELECT * FROM orders, LATERAL (SELECT * FROM customers WHERE id = orders.cid) x",
]
_SEPARATORS = [
    " ",
    "  ",
    "\n",
    "\t",
    "\r\n ",
    " /* c */ ",
    " /* ; DROP TABLE x; */ ",
    " -- ; DELETE FROM x\n",
    "/* a /* nested ; */ b */",
    "\n-- c\n",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(LAYOUT_CORPUS), st.randoms(use_true_random=False))
def test_layout_and_case_never_change_a_decision(sql, rnd: random.Random):
    words = sql.split(" ")
    variant = words[0]
    for w in words[1:]:
        variant += rnd.choice(_SEPARATORS) + w
    variant = "".join(ch.upper() if rnd.random() < 0.5 else ch.lower() for ch in variant)
    variant = rnd.choice(["", " ", "\n", "/* x */"]) + variant + rnd.choice(["", ";", " ;  "])
    fresh_original = policy(shared=None).check_query(sql)
    fresh_variant = policy(shared=None).check_query(variant)
    assert shape(fresh_variant) == shape(fresh_original), (sql, variant)
    warm = policy(shared=SharedClassifications())
    warm.check_query(sql)
    assert shape(warm.check_query(variant)) == shape(fresh_original), (sql, variant)
    other_session = policy(shared=warm.caches.shared)  # the variant via the shared cache only
    assert shape(other_session.check_query(variant)) == shape(fresh_original), (sql, variant)


# -- property: the fingerprint cache never merges statements that classify differently --

# Literal content built from the characters that end or open strings, comments and
# dollar quotes, plus statement fragments.
_ATOMS = [
    "'",
    "''",
    "\\",
    "\\'",
    "$",
    "$$",
    "$a$",
    ";",
    "--",
    "/*",
    "*/",
    '"',
    "\n",
    " ",
    "x",
    "E",
    "e'",
    "DROP TABLE orders",
    "DELETE FROM customers",
    "SELECT",
    "1",
    "0x",
    "U&'",
    "::regclass",
    "nextval('s')",
    ")",
    "(",
    ",",
]
_content = st.lists(st.sampled_from(_ATOMS), max_size=8).map("".join)


def _quote(kind: str, s: str) -> str:
    if kind == "std":
        return "'" + s.replace("'", "''") + "'"
    if kind == "e":
        return "E'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if kind == "dollar":
        tag = "q"
        while f"${tag}$" in s:
            tag += "q"
        return f"${tag}${s}${tag}$"
    return "'" + s + "'"  # raw: the content may break out of the literal


_literal = st.tuples(
    st.sampled_from(["std", "e", "dollar", "raw", "num"]), _content, st.integers(0, 10**6)
).map(lambda t: str(t[2]) if t[0] == "num" else _quote(t[0], t[1]))
TEMPLATES = [
    "SELECT {} FROM orders WHERE note = {}",
    "SELECT * FROM orders WHERE id = {} AND note <> {}",
    "UPDATE orders SET note = {} WHERE id = {}",
    "INSERT INTO orders (id, note) VALUES ({}, {})",
    "SELECT {}, {}",
    "SELECT * FROM customers WHERE name LIKE {} || {}",
    "SELECT {} /* {} */ FROM orders",
    "SELECT {} -- {}\nFROM orders",
    "SELECT jsonb_build_object({}, {}) FROM orders",
    "SELECT {}::text, {}::int FROM orders",
    "SELECT * FROM orders WHERE note = {} ; SELECT {}",
    "SELECT interval {}, date {} FROM orders",
]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TEMPLATES), _literal, _literal, _literal, _literal)
@example("SELECT {} FROM orders WHERE note = {}", "'a'' ; DROP TABLE orders; --'", "1", "'b'", "2")
@example(
    "SELECT {} FROM orders WHERE note = {}", "E'\\' ; DROP TABLE orders; --'", "1", "E'x'", "2"
)
@example("SELECT {}, {}", "$$ ; DELETE FROM customers; $$", "1", "$$x$$", "2")
def test_fingerprint_hit_equals_fresh_classification(template, a1, a2, b1, b2):
    first = template.format(a1, a2)
    second = template.format(b1, b2)
    shared = SharedClassifications()
    warm = policy(shared=shared)
    warm.check_query(first)
    cached = warm.check_query(second)
    fresh = policy(shared=None).check_query(second)
    assert shape(cached) == shape(fresh), (first, second)
    assert shape(policy(shared=shared).check_query(second)) == shape(fresh), (first, second)
    assert [c.sql for c, _ in cached.decisions] == [c.sql for c, _ in fresh.decisions]


_SQLISH = [
    "SELECT",
    " ",
    "\n",
    "*",
    "FROM",
    "orders",
    "customers",
    "'",
    "''",
    "E'",
    "\\",
    "$$",
    "$t$",
    ";",
    "--",
    "/*",
    "*/",
    '"',
    "x",
    "1",
    "1.5",
    "e5",
    ".",
    "(",
    ")",
    ",",
    "=",
    "DELETE",
    "DROP TABLE",
    "é",
    "U&",
    "$1",
    "::",
    "\t",
]


_SLOT_KINDS = ["std", "e", "dollar", "raw", "num"]
_slot = st.sampled_from(_SLOT_KINDS).map(lambda k: ("slot", k))
_sep = st.sampled_from(
    [
        " ",
        "\n",
        "\t",
        " /* ' */ ",
        " /* $$ */ ",
        " -- ' \n",
        "/**/",
        " /* /* ; */ */ ",
        " -- ; DELETE FROM customers\n",
    ]
)


@st.composite
def _skeleton(draw):
    """A mostly valid statement whose literals are slots; separators may hold quotes."""

    def expr():
        form = draw(st.integers(0, 4))
        if form == 0:
            return [draw(_slot)]
        if form == 1:
            return [draw(_slot), draw(_sep), "||", draw(_sep), draw(_slot)]
        if form == 2:
            return ["lower(", draw(_slot), ")"]
        if form == 3:
            return [draw(_slot), "::text"]
        return ["coalesce(", draw(_slot), ",", draw(_sep), draw(_slot), ")"]

    pieces = ["SELECT", draw(_sep), *expr()]
    for _ in range(draw(st.integers(0, 2))):
        pieces += [",", draw(_sep), *expr()]
    table = draw(st.sampled_from(["orders", "customers", "payments", "pg_authid"]))
    pieces += [draw(_sep), "FROM", draw(_sep), table]
    if draw(st.booleans()):
        pieces += [draw(_sep), "WHERE", draw(_sep), "note", draw(_sep), "=", draw(_sep), *expr()]
    if draw(st.booleans()):
        pieces += [";", draw(_sep), "SELECT", draw(_sep), *expr()]
    if draw(st.booleans()):  # a stray fragment that may open a string or comment
        pieces.insert(draw(st.integers(1, len(pieces))), draw(st.sampled_from(_SQLISH)))
    return pieces


def _render(skeleton, fills) -> str:
    out, i = [], 0
    for piece in skeleton:
        if isinstance(piece, tuple):
            content, number = fills[i % len(fills)]
            i += 1
            out.append(str(number) if piece[1] == "num" else _quote(piece[1], content))
        else:
            out.append(piece)
    return "".join(out)


_fills = st.lists(st.tuples(_content, st.integers(0, 10**9)), min_size=1, max_size=4)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_skeleton(), _fills, _fills)
def test_same_skeleton_different_literals(skeleton, fills_a, fills_b):
    """Whatever the cache merges must classify exactly as a fresh classification does."""
    a, b = _render(skeleton, fills_a), _render(skeleton, fills_b)
    shared = SharedClassifications()
    warm = policy(shared=shared)
    warm.check_query(a)
    cached = warm.check_query(b)
    if warm.stats["fingerprint_hits"]:
        event("fingerprint hit")
    fresh = policy(shared=None).check_query(b)
    assert shape(cached) == shape(fresh), (a, b)
    assert shape(policy(shared=shared).check_query(b)) == shape(fresh), (a, b)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_SQLISH), max_size=30).map("".join))
def test_fast_fingerprint_agrees_with_full_lexer(sql):
    fast = fingerprint_statements(sql)
    full = lex(sql)
    if fast is None:
        assert any(s.error for s in full)
    else:
        assert fast == [(s.sql, s.fingerprint, s.cacheable) for s in full]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_SQLISH), max_size=30).map("".join))
def test_classify_never_raises_and_engine_matches_decide(sql):
    classified = classify(sql)
    v = policy(shared=None).check_query(sql)
    assert [c for c, _ in v.decisions] == list(classified)
    assert [d for _, d in v.decisions] == [decide(c, SCOPES) for c in classified]
    assert v.allowed == all(d.allowed for _, d in v.decisions)


@pytest.mark.parametrize(
    ("first", "second", "allowed"),
    [
        # a literal that hides SQL must not make the second statement look like the first
        (
            "SELECT 'a' FROM orders WHERE note = 'b'",
            "SELECT 'a'' ; DELETE FROM customers; --' FROM orders WHERE note = 'b'",
            True,
        ),
        ("SELECT 'a' FROM orders", "SELECT E'\\' ; DELETE FROM customers; --' FROM orders", True),
        ("SELECT 'a' FROM orders", "SELECT 'a\\' ; DELETE FROM customers; --' FROM orders", False),
        ("SELECT 'x' FROM orders", "SELECT $$'$$ FROM orders; DELETE FROM customers; --", False),
        ("SELECT 1 /* c */ FROM orders", "SELECT 1 /* /* */ ; DELETE FROM customers; */", True),
        ("SELECT 1 FROM orders -- x", "SELECT 1 FROM orders -- x\n; DELETE FROM customers", False),
        ("SELECT '/*' FROM orders", "SELECT '/*' FROM orders; DELETE FROM customers; --*/'", False),
        ("SELECT * FROM orders", 'SELECT * FROM "orders""; DELETE FROM customers; --"', False),
        (
            "SELECT * FROM orders WHERE a = 1",
            "SELECT * FROM orders WHERE a = 1e; DELETE FROM customers",
            False,
        ),
        (
            "SELECT $a$x$a$ FROM orders",
            "SELECT $a$ $b$ $a$ FROM orders; DELETE FROM customers",
            False,
        ),
        ("SELECT $a$x$a$ FROM orders", "SELECT $a$ ; DELETE FROM customers; $a$ FROM orders", True),
    ],
)
def test_literal_smuggling_attacks(first, second, allowed):
    warm = policy(shared=SharedClassifications())
    warm.check_query(first)
    cached = warm.check_query(second)
    fresh = policy(shared=None).check_query(second)
    assert shape(cached) == shape(fresh)
    assert cached.allowed is allowed, cached


# --- VALUES rows of literals: collapsed before classification ----------------------------

from policy.classify import classify_statement  # noqa: E402
from policy.lexer import collapse_values  # noqa: E402

_atom = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.decimals(-1000, 1000, places=2, allow_nan=False).map(str),
    st.text(st.sampled_from("ab ,()'x;-"), max_size=8).map(lambda t: "'" + t.replace("'", "''") + "'"),
    st.sampled_from(["NULL", "null", "TRUE", "false", "DEFAULT"]),
)
# Anything else a row may hold: each names a relation or a function, or at least is not a
# literal, so the row it is in (and every row after it) must be kept.
POISON = [
    "(SELECT salary FROM secret.payroll LIMIT 1)",
    "pg_read_file('/etc/passwd')",
    "now()",
    "'secret.payroll'::regclass",
    "1 + 1",
    "id",
    "- -1",
]


@st.composite
def values_statement(draw):
    arity = draw(st.integers(1, 4))
    rows = [
        "(" + ", ".join(draw(st.lists(_atom, min_size=arity, max_size=arity))) + ")"
        for _ in range(draw(st.integers(1, 25)))
    ]
    poison = draw(st.none() | st.sampled_from(POISON))
    if poison is not None:
        at = draw(st.integers(0, len(rows) - 1))
        cells = [poison] + ["1"] * (arity - 1)
        rows.insert(at, "(" + ", ".join(cells) + ")")
    sep = draw(st.sampled_from([", ", ",", " ,\n  "]))
    names = ["id", "note", "amount", "customer_id"][:arity]
    quote = draw(st.booleans())  # as Django writes them
    cols = ", ".join(f'"{c}"' if quote else c for c in names)
    table = draw(st.sampled_from(["public.orders", "secret.payroll", "public.customers",
                                  '"public"."orders"', '"secret"."payroll"']))  # fmt: skip
    tail = draw(st.sampled_from(["", " RETURNING id", " ON CONFLICT DO NOTHING",
                                 " ON CONFLICT (id) DO UPDATE SET note = 'x'"]))  # fmt: skip
    values = draw(st.sampled_from(["VALUES", "values", "VALUES\n"])) + " " + sep.join(rows)
    kind = draw(st.sampled_from(["insert", "select", "join"]))
    if kind == "insert":
        return f"INSERT INTO {table} ({cols}) {values}{tail}"
    if kind == "select":
        return f"SELECT * FROM ({values}) AS v({cols}) WHERE v.id = 'q'"
    return f"SELECT o.id FROM {table} o JOIN ({values}) AS v({cols}) ON v.id = o.id"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sql=values_statement())
def test_collapsing_values_rows_never_changes_a_verdict(sql):
    """Differential: the statement classified whole and with its literal rows cut classify
    and decide the same: classes, commands, relations, functions, rules."""
    (stmt,) = lex(sql)
    collapsed = collapse_values(stmt)
    event("collapsed" if collapsed is not None else "left whole")
    if collapsed is None:
        return
    whole, _ = classify_statement(stmt, ("public",))
    cut, _ = classify_statement(collapsed, ("public",))
    assert collapsed.sql == stmt.sql and len(collapsed.canon) < len(stmt.canon)
    assert shape(Verdict(True, ((whole, decide(whole, SCOPES)),), "")) == shape(
        Verdict(True, ((cut, decide(cut, SCOPES)),), "")
    ), (sql, collapsed.canon)
    for poison in POISON:  # a row that is not all literals is never cut
        if poison in sql:
            assert lex(poison)[0].fingerprint in collapsed.fingerprint


@pytest.mark.parametrize("where", [0, 1, 4999, 9999])
@pytest.mark.parametrize(
    "poison, message",
    [
        ("(SELECT salary FROM secret.payroll LIMIT 1)", "may not read secret.payroll"),
        ("pg_read_file('/etc/passwd')", "pg_read_file"),
    ],
)
def test_a_dangerous_row_anywhere_in_a_bulk_insert_is_denied(where, poison, message):
    rows = [f"({i}, 'note {i}', {i}.5)" for i in range(10_000)]
    rows[where] = f"({where}, {poison}, 1)"
    sql = "INSERT INTO public.orders (id, note, amount) VALUES " + ", ".join(rows)
    v = policy().check_query(sql)
    assert not v.allowed and message in v.message
    assert v.decisions[0][0].sql == sql  # the record names the statement as sent


def test_text_inside_a_quoted_identifier_is_never_collapsed():
    """A quoted identifier may hold anything, a VALUES list of literals included: cutting
    it would rename the relation the policy checks."""
    sql = 'SELECT * FROM "t values (null), (null), (true)" WHERE x = 1' + " " * 1024
    (stmt,) = lex(sql)
    assert stmt._tokens is None  # the fast path, where collapsing applies
    assert collapse_values(stmt) is None
    both = 'INSERT INTO "q values (null), (null)" (a) VALUES (null), (null), (true)'
    collapsed = collapse_values(lex(both)[0])
    assert collapsed.fingerprint == 'insert into "q values (null), (null)" (a) values (null)'
    v = policy().check_query(both + " " * 1024)
    assert not v.allowed and 'q values (null), (null)' in v.message


def test_bulk_inserts_of_any_size_share_one_classification():
    p = policy()

    def bulk(n: int, start: int) -> str:
        rows = ", ".join(f"({i}, 'n{i}', {i}.25)" for i in range(start, start + n))
        return f"INSERT INTO public.orders (id, note, amount) VALUES {rows} RETURNING id"

    first = p.check_query(bulk(5000, 0))
    cached = len(p.caches.fingerprints)
    assert first.allowed and cached == 1
    for n, start in ((3000, 7), (9000, 1), (200, 5)):
        v = p.check_query(bulk(n, start))
        assert shape(v) == shape(first) and v.decisions[0][0].sql == bulk(n, start)
    assert len(p.caches.fingerprints) == cached  # every later size was a fingerprint hit
    denied = p.check_query(bulk(5000, 0).replace("public.orders", "public.customers", 1))
    assert not denied.allowed and "may not" in denied.message


def test_may_read_answers_for_relations_named_as_the_server_names_them():
    p = StatementPolicy(parse_scopes("read:public.orders,reporting.* write:public.audit"), task="T")
    assert p.may_read("public", "orders") and p.may_read("reporting", "x")
    assert not p.may_read("secret", "vault") and not p.may_read("public", "audit")  # write only
    assert p.may_read("pg_temp_3", "scratch")  # the session's own temporary schema
    assert not p.may_read("pg_catalog", "pg_authid") and p.may_read("pg_catalog", "pg_class")
    assert not p.may_read("Public", "orders")  # a quoted, other schema


def test_object_definitions_are_read_with_a_scope_naming_the_catalog_or_deparser():
    plain = StatementPolicy(parse_scopes("read:public.orders"), task="T")
    opted = StatementPolicy(
        parse_scopes("read:public.orders,pg_catalog.pg_proc,pg_catalog.pg_views "
                     "execute:pg_catalog.pg_get_viewdef"),
        task="T",
    )
    for sql in ("SELECT prosrc FROM pg_proc", "SELECT p FROM pg_proc p",
                "SELECT definition FROM pg_views", "SELECT pg_get_viewdef(16384)"):
        assert not plain.check_query(sql).allowed, sql
        assert opted.check_query(sql).allowed, sql
    # what the scopes do not name stays refused
    for sql in ("SELECT definition FROM pg_matviews", "SELECT pg_get_functiondef(16384)"):
        assert not opted.check_query(sql).allowed, sql


def test_writes_unreadable_for_rows_of_a_relation_written_but_not_read():
    """Round 17: the written relation's own CHECK, generated columns, expression indexes
    and triggers run on rows the grant may not read; their errors may quote them."""
    from policy.catalog import Snapshot

    p = StatementPolicy(parse_scopes("read:public.orders,public.trg,public.ruled,public.v "
                                     "write:public.orders,public.wo,public.trg,public.ruled,public.v "
                                     "truncate:public.orders,public.trg"),
                        task="T")  # fmt: skip
    snapshot = Snapshot(frozenset(), {}, triggered=frozenset({"public.trg"}),
                        ruled=frozenset({"public.ruled"}), view_names=frozenset({"public.v"}))  # fmt: skip
    p.catalog = lambda: snapshot
    for sql, expected in [
        ("UPDATE public.wo SET kind = 'n'", True),
        ("DELETE FROM public.wo", True),
        ("INSERT INTO public.wo (kind) VALUES ('n')", True),
        ("MERGE INTO public.wo w USING (SELECT 1) s ON true WHEN MATCHED THEN UPDATE SET kind = 'n'", True),
        ("WITH u AS (UPDATE public.wo SET kind = 'n') SELECT 1", True),
        ("UPDATE public.orders SET id = 2", False),  # read and written: nothing withheld
        ("INSERT INTO public.orders (id) VALUES (1)", False),
        ("SELECT * FROM public.orders", False),
        ("INSERT INTO pg_temp.scratch VALUES (1)", False),  # the session's own
        # round 19: readable, but its trigger, rule or base table may write or check rows
        # the grant may not read
        ("INSERT INTO public.trg (id) VALUES (1)", True),
        ("UPDATE public.ruled SET id = 1", True),
        ("UPDATE public.v SET id = 1", True),
        ("TRUNCATE public.trg", True),  # its ON TRUNCATE triggers run too
        ("TRUNCATE public.orders", False),
    ]:
        verdict = p.check_query(sql)
        assert verdict.allowed, (sql, verdict.message)
        assert p.writes_unreadable(verdict) is expected, sql
        assert p.writes_unreadable(p.check_query(sql)) is expected, sql  # the memo agrees


def test_writes_unreadable_follows_foreign_key_actions_to_relations_the_grant_may_not_read():
    from policy.catalog import Snapshot, cascade_reach

    reach = cascade_reach([("public.orders", "secret.fk"), ("secret.fk", "secret.deeper"),
                           ("public.orders", "public.customers")])  # fmt: skip
    assert reach["public.orders"] == {"secret.fk", "secret.deeper", "public.customers"}
    assert reach["secret.fk"] == {"secret.deeper"}
    snapshot = Snapshot(frozenset(), {}, cascades=reach)
    # (the actions' writes are the grant's too: a write whose actions write what it may
    # not is refused, test_s29_beyond_its_objects.py)
    writes = "write:public.orders,public.customers,secret.fk,secret.deeper"
    p = StatementPolicy(parse_scopes(f"read:public.orders,public.customers {writes}"), task="T")
    p.catalog = lambda: snapshot
    for sql, expected in [
        ("DELETE FROM public.orders WHERE id = 1", True),
        ("UPDATE public.orders SET id = 2 WHERE id = 1", True),
        ("INSERT INTO public.orders (id) VALUES (1)", False),  # inserts run no actions
        ("SELECT * FROM public.orders", False),
    ]:
        verdict = p.check_query(sql)
        assert verdict.allowed, sql
        assert p.writes_unreadable(verdict) is expected, sql
    readable = StatementPolicy(parse_scopes(f"read:public.*,secret.* {writes}"), task="T")
    readable.catalog = lambda: snapshot
    assert not readable.writes_unreadable(readable.check_query("DELETE FROM public.orders"))


def test_a_view_hiding_unreadable_rows_is_read_only_as_a_security_barrier():
    """``Snapshot.views``: a statement naming a view that hides rows of a relation the grant
    may not read is refused (its own conditions could run on the hidden rows first);
    reading what the view reads anyway, or a view that is no such view, is not."""
    from policy.catalog import Snapshot, views_from_rows

    views = views_from_rows(
        [
            ("public", "mine", None, "SELECT id, pin FROM hidden.accounts WHERE owner = 'me'"),
            ("public", "mine_barrier", "{security_barrier=true}",
             "SELECT id, pin FROM hidden.accounts WHERE owner = 'me'"),
            ("public", "ids", None, "SELECT id FROM hidden.accounts"),
            ("public", "over_mine", "{check_option=local}", "SELECT id, pin FROM public.mine"),
            ("public", "over_barrier", None, "SELECT id, pin FROM public.mine_barrier"),
        ],
        [
            ("public", "mine", "hidden", "accounts"),
            ("public", "mine_barrier", "hidden", "accounts"),
            ("public", "ids", "hidden", "accounts"),
            ("public", "over_mine", "public", "mine"),
            ("public", "over_barrier", "public", "mine_barrier"),
        ],
    )  # fmt: skip
    assert views == {
        "public.mine": {"hidden.accounts"},
        "public.over_mine": {"public.mine", "hidden.accounts"},
    }
    snapshot = Snapshot(frozenset(), {}, views=views)
    names = "public.mine,public.mine_barrier,public.ids,public.over_mine,public.over_barrier"
    p = StatementPolicy(parse_scopes(f"read:{names} write:public.mine"), task="T")
    p.catalog = lambda: snapshot
    for sql in ("SELECT * FROM public.mine WHERE pin::int > 0", "SELECT 1 FROM mine",
                "SELECT * FROM public.over_mine", "UPDATE public.mine SET pin = pin WHERE pin::int > 0",
                "SELECT * FROM public.ids JOIN public.mine USING (id)"):  # fmt: skip
        verdict = p.check_query(sql)
        assert not verdict.allowed, sql
        assert verdict.decisions[0][1].rule == "deny.view", sql
        assert "hidden.accounts" in verdict.message and "security_barrier" in verdict.message, sql
    for sql in ("SELECT * FROM public.mine_barrier WHERE pin::int > 0",
                "SELECT * FROM public.over_barrier WHERE pin::int > 0",
                "SELECT * FROM public.ids WHERE id::text::int > 0"):  # fmt: skip
        assert p.check_query(sql).allowed, sql
    # the grant reads the hidden table anyway: nothing is hidden from it
    broad = StatementPolicy(parse_scopes(f"read:{names},hidden.*"), task="T")
    broad.catalog = lambda: snapshot
    assert broad.check_query("SELECT * FROM public.over_mine WHERE pin::int > 0").allowed
    # the check needs the catalog: offline (no snapshot) it is not made
    offline = StatementPolicy(parse_scopes(f"read:{names}"), task="T")
    assert offline.check_query("SELECT * FROM public.mine WHERE pin::int > 0").allowed


def test_explain_of_views_and_user_functions_needs_the_definitions_scopes():
    """A plan shows a view's query and may show a SQL function's inlined body: EXPLAIN of
    a statement naming either needs the scope the catalogs' definitions need."""
    from policy.catalog import Snapshot

    snapshot = Snapshot(
        frozenset(), {}, view_names=frozenset({"public.v"}), ruled=frozenset({"public.r"}),
        user_functions={"is_key": frozenset({"public.is_key"})},
        user_operators={"===": frozenset({"public.eq3"})},
    )  # fmt: skip
    base = "read:public.v,public.t,public.r write:public.r execute:public.is_key,public.eq3"
    plain = StatementPolicy(parse_scopes(base), task="T")
    opted = StatementPolicy(
        parse_scopes(base + " read:pg_catalog.pg_views,pg_catalog.pg_proc,pg_catalog.pg_rules"),
        task="T")  # fmt: skip
    for p in (plain, opted):
        p.catalog = lambda: snapshot
    for sql, scope in [
        ("EXPLAIN SELECT * FROM public.v", "pg_catalog.pg_views"),
        ("EXPLAIN ANALYZE SELECT * FROM v WHERE id > 1", "pg_catalog.pg_views"),
        ("EXPLAIN SELECT * FROM public.t WHERE public.is_key(pin)", "pg_catalog.pg_proc"),
        ("EXPLAIN SELECT is_key(pin) FROM public.t", "pg_catalog.pg_proc"),
        ("EXPLAIN INSERT INTO public.r VALUES (1)", "pg_catalog.pg_rules"),
        ("EXPLAIN SELECT * FROM public.r", "pg_catalog.pg_rules"),
    ]:
        verdict = plain.check_query(sql)
        assert not verdict.allowed and f"read:{scope}" in verdict.message, sql
        assert opted.check_query(sql).allowed, sql
        assert plain.check_query(sql.replace("EXPLAIN ANALYZE ", "").replace("EXPLAIN ", "")).allowed
    # no view, no user-written function: a plan of the grant's own statement
    assert plain.check_query("EXPLAIN SELECT * FROM public.t WHERE lower(pin) = 'a'").allowed
    # a function of that name in another schema is no user-written one the catalog knows:
    # refused for want of an execute scope, not for its body
    verdict = plain.check_query("EXPLAIN SELECT * FROM public.t WHERE other.is_key(pin)")
    assert not verdict.allowed and verdict.decisions[0][1].rule == "scope.execute"


def test_a_call_of_an_inlinable_function_hiding_unreadable_rows_is_refused():
    from policy.catalog import Snapshot, inlinable_from_rows

    snapshot = Snapshot(frozenset(), {}, inlinable=inlinable_from_rows([
        ("public", "mine", "SELECT id, pin FROM hidden.accounts WHERE owner = 'me'"),
        ("public", "local", "SELECT id, pin FROM accounts WHERE owner = 'me'"),
        ("public", "odd", "SELEC x"),
    ]))  # fmt: skip
    p = StatementPolicy(parse_scopes("read:public.* execute:public.mine,public.local,public.odd"),
                        task="T")  # fmt: skip
    p.catalog = lambda: snapshot
    for sql, why in [("SELECT * FROM public.mine() WHERE pin::int > 0", "rows of hidden.accounts"),
                     ("SELECT * FROM mine() m", "rows of hidden.accounts"),
                     ("SELECT * FROM public.odd()", "a query the proxy cannot read")]:  # fmt: skip
        verdict = p.check_query(sql)
        assert not verdict.allowed and verdict.decisions[0][1].rule == "deny.view", sql
        assert why in verdict.message and "VOLATILE" in verdict.message, sql
    # its unqualified relation resolves to public (the search_path), which the grant reads
    assert p.check_query("SELECT * FROM public.local() WHERE pin::int > 0").allowed
    broad = StatementPolicy(parse_scopes("read:public.*,hidden.* execute:public.mine"), task="T")
    broad.catalog = lambda: snapshot
    assert broad.check_query("SELECT * FROM public.mine() WHERE pin::int > 0").allowed


def test_a_decision_resting_on_a_complete_catalog_waits_for_a_snapshot_loaded_after_it():
    """Round 18: argument defaults are allowed while every function with one is the
    grant's, which only a snapshot loaded after the statement arrived can say (another
    session may have made one since): the check answers CATALOG_WAIT and asks for a
    reload; the reloaded snapshot decides; a failed reload refuses, never loops."""
    from dataclasses import replace
    from time import monotonic

    from policy.catalog import Snapshot
    from policy.engine import CATALOG_WAIT

    p = StatementPolicy(parse_scopes("read:public.orders execute:public.fn"), task="T")
    current = [Snapshot(frozenset(), {}, loaded_at=monotonic() - 100,
                        defaulted_functions=frozenset({("public", "fn")}))]  # fmt: skip
    reloads = []
    p.catalog = lambda: current[0]
    p.on_stale = lambda since: reloads.append(since)
    sql = "SELECT pg_get_function_arguments(16999)"
    assert p.check_query(sql) is CATALOG_WAIT and reloads == [p.waiting_since]
    # the reload: a snapshot loaded after the statement arrived, listing what it lists
    current[0] = replace(current[0], loaded_at=monotonic())
    verdict = p.check_query(sql)
    assert verdict.allowed, verdict.message
    # not cached: the next time waits for its own reload
    assert p.check_query(sql) is CATALOG_WAIT
    # a reload that failed (the same old snapshot): refused, no second wait
    verdict = p.check_query(sql)
    assert not verdict.allowed and "run the statement again" in verdict.message
    # a function with defaults outside the grant, made meanwhile: the next reload shows it
    assert p.check_query(sql) is CATALOG_WAIT
    current[0] = replace(current[0], loaded_at=monotonic(),
                         defaulted_functions=frozenset({("public", "fn"), ("secret", "f")}))  # fmt: skip
    verdict = p.check_query(sql)
    assert not verdict.allowed and "secret.f" in verdict.message
    # without a proxy to reload (on_stale None), the snapshot decides as before
    q = StatementPolicy(parse_scopes("read:public.orders execute:public.fn"), task="T")
    q.catalog = lambda: replace(current[0], defaulted_functions=frozenset({("public", "fn")}))
    assert q.check_query(sql).allowed


def test_text_postgres_cannot_parse_is_refused_with_its_own_syntax_error():
    """An agent's mistyped SQL gets what the server would answer (42601 and PostgreSQL's
    parser's message), not a privilege error: nothing is sent upstream either way."""
    p = StatementPolicy(parse_scopes("read:public.*"), task="T")
    for sql, message in [
        ("wat 1", 'syntax error at or near "wat"'),
        ("select 1; wat", 'syntax error at or near "wat"'),  # the whole Query, as the server
        ("select * from t where", "syntax error at end of input"),
    ]:
        verdict = p.check_query(sql)
        assert not verdict.allowed and verdict.message == message, (sql, verdict.message)
        assert getattr(verdict, "sqlstate", None) == "42601"
        assert p.check_parse(sql).message == message
    # what parses stays a policy decision, 42501
    refused = p.check_query("select * from secret.x")
    assert not refused.allowed and getattr(refused, "sqlstate", "42501") == "42501"
    dry = StatementPolicy(parse_scopes("read:public.*"), task="T", enforce=False)
    assert dry.check_query("wat 1").would_deny


def test_a_parent_named_without_only_needs_the_grant_on_every_relation_inheriting_from_it():
    """A read of a parent table without ONLY returns the rows of every table that inherits
    from it, an UPDATE/DELETE/TRUNCATE/ALTER TABLE reaches them, and PostgreSQL asks for the
    parent's privilege alone: each descendant (``Snapshot.descendants``, transitive) is
    decided as if named. ONLY, COPY's table and an INSERT's target are the parent alone."""
    from policy.catalog import Snapshot, cascade_reach

    descendants = cascade_reach([
        ("public.orders", "secret.kid"), ("public.orders", "public.kid2"),
        ("public.kid2", "secret.grandkid"), ("public.lone", "public.lone_kid"),
    ])  # fmt: skip
    assert descendants["public.orders"] == {"secret.kid", "public.kid2", "secret.grandkid"}
    snapshot = Snapshot(frozenset(), {}, descendants=descendants)
    rels = "public.orders,public.kid2,public.lone,public.lone_kid"
    p = StatementPolicy(parse_scopes(f"read:{rels} write:{rels} ddl:{rels}"), task="T")
    p.catalog = lambda: snapshot
    denied = {
        "SELECT * FROM public.orders": "scope.read",
        "SELECT * FROM orders WHERE id = 1": "scope.read",
        "TABLE public.orders": "scope.read",
        "SELECT o FROM public.orders o": "scope.read",
        "SELECT * FROM public.orders*": "scope.read",
        "SELECT * FROM ONLY public.orders, public.orders o2": "scope.read",  # one mention without
        "SELECT * FROM public.kid2": "scope.read",  # a child is a parent too
        "SELECT (SELECT count(*) FROM public.orders)": "scope.read",
        "WITH x AS (SELECT * FROM public.orders) SELECT * FROM x": "scope.read",
        "COPY (SELECT * FROM public.orders) TO STDOUT": "scope.read",
        "UPDATE public.orders SET note = note WHERE id = 1 RETURNING note": "scope.read",
        "UPDATE public.orders SET note = 'x'": "scope.write",
        "DELETE FROM public.orders": "scope.write",
        "ALTER TABLE public.orders ADD COLUMN x int": "scope.ddl",
        "EXPLAIN SELECT * FROM public.orders": "scope.read",
        "SELECT * FROM public.lone JOIN public.orders USING (id)": "scope.read",
    }
    for sql, rule in denied.items():
        verdict = p.check_query(sql)
        assert not verdict.allowed, sql
        assert verdict.decisions[-1][1].rule == rule, (sql, verdict.message)
        assert "inherits from" in verdict.message and "secret." in verdict.message, sql
    for sql in (
        "SELECT * FROM ONLY public.orders",
        "SELECT * FROM ONLY orders WHERE id = 1",
        "COPY public.orders TO STDOUT",
        "COPY (SELECT * FROM ONLY public.orders) TO STDOUT",
        "INSERT INTO public.orders (id) VALUES (1)",
        "UPDATE ONLY public.orders SET note = note WHERE id = 1 RETURNING note",
        "DELETE FROM ONLY public.orders WHERE id = 1",
        "ALTER TABLE ONLY public.orders ADD COLUMN x int",
        "SELECT * FROM public.lone",  # every descendant granted
        "UPDATE public.lone SET x = 1",
        "SELECT * FROM ONLY public.kid2",
    ):
        assert p.check_query(sql).allowed, sql
    # the grant names the descendants: nothing is reached that it does not name
    broad = StatementPolicy(parse_scopes(f"read:{rels},secret.* write:{rels},secret.*"), task="T")
    broad.catalog = lambda: snapshot
    assert broad.check_query("SELECT * FROM public.orders").allowed
    assert broad.check_query("UPDATE public.orders SET note = 'x'").allowed
    # the check needs the catalog: offline (no snapshot) it is not made
    offline = StatementPolicy(parse_scopes(f"read:{rels}"), task="T")
    assert offline.check_query("SELECT * FROM public.orders").allowed


def test_lowering_a_views_security_barrier_is_refused_whatever_the_ddl_scope():
    """A barrier keeps a statement's own conditions away from the rows a view hides; taking
    it away is reading them in effect with any statement decided on a catalog that still
    shows the barrier (the rest of the same message or pipeline, one prepared before:
    red-team round 23). Raising it, or setting other options, is DDL as before."""
    p = StatementPolicy(parse_scopes("read:public.v ddl:public.v"), task="T")
    for sql in (
        "ALTER VIEW public.v SET (security_barrier = false)",
        "ALTER VIEW public.v SET (security_barrier = off)",
        "ALTER VIEW public.v SET (security_barrier = 0)",
        'ALTER VIEW public.v SET ("security_barrier" = FALSE)',
        "ALTER VIEW public.v RESET (security_barrier)",
        "ALTER TABLE public.v SET (fillfactor = 10, security_barrier = no)",
        "ALTER VIEW public.v SET (security_barrier = 'maybe')",
    ):
        verdict = p.check_query(sql)
        assert not verdict.allowed and "security_barrier" in verdict.message, sql
    for sql in (
        "ALTER VIEW public.v SET (security_barrier)",
        "ALTER VIEW public.v SET (security_barrier = true)",
        "ALTER VIEW public.v SET (security_barrier = 1)",
        "ALTER VIEW public.v SET (check_option = local)",
    ):
        assert p.check_query(sql).allowed, sql


def test_lowering_a_barrier_is_refused_by_unknown_star_and_through_every_cache_tier():
    """Round 24 and the regression run: ``unknown:*`` allowed the refusal PostgreSQL's
    reading made (it was an unreadable statement to the policy), and a cached
    ``= 'true'`` (one fingerprint with ``= 'false'``) or ``= 1`` (one number shape with
    ``= 0``) let the lowering by without reading it."""
    p = StatementPolicy(parse_scopes("read:public.* ddl:public.* unknown:*"), task="T")
    for allowed, lowered in (
        ("ALTER VIEW public.v SET (security_barrier = 'true')",
         "ALTER VIEW public.v SET (security_barrier = 'false')"),
        ("ALTER VIEW public.v SET (security_barrier = 1)",
         "ALTER VIEW public.v SET (security_barrier = 0)"),
        ("ALTER TABLE public.v SET (security_barrier = 't')",
         "ALTER TABLE public.v SET (security_barrier = 'f')"),
    ):  # fmt: skip
        for _ in range(3):  # every tier has seen the allowed text by the third time
            assert p.check_query(allowed).allowed, allowed
            v = p.check_query(lowered)
            assert not v.allowed and v.decisions[0][1].rule == "deny.view", (lowered, v.message)
            assert p.check_parse(lowered, (), "").allowed is False
    v = p.check_query("ALTER VIEW public.v RESET (security_barrier)")
    assert not v.allowed and "security_barrier" in v.message
