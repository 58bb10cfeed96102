"""A verdict from the caches (fingerprint hits, shared classifications) is the verdict a
fresh session with empty caches reaches for the same text: same outcome, message and
(classification, decision) pairs."""

from __future__ import annotations

import pytest

from policy import StatementPolicy, parse_scopes
from policy.engine import ShapeVerdict, SharedClassifications, exact

SCOPES = parse_scopes(
    "read:public.orders,public.customers write:public.orders execute:public.refund_fn"
)
# Each shape twice with other literals: the second is a fingerprint hit in a warm session.
SHAPES = [
    "SELECT id FROM orders WHERE id = {n}",
    "UPDATE orders SET total = total + {n} WHERE id = {n}",
    "DELETE FROM customers WHERE id = {n}",  # denied
    "SELECT name FROM customers WHERE id = {n}; SELECT {n}",
    "SELECT id FROM orders WHERE id = {n}; DELETE FROM orders WHERE id = {n}",
    "CREATE TABLE t{n} (id int)",  # DDL: denied, not plain
    "PREPARE p AS SELECT id FROM orders WHERE id = {n}",  # session state: not plain
    "EXECUTE p({n})",
    "DEALLOCATE p",
    "SELECT public.refund_fn({n})",
    "SELECT secret FROM payroll WHERE id = {n}",
    "SET statement_timeout = {n}",
]


def _fresh(enforce: bool, shared=None) -> StatementPolicy:
    return StatementPolicy(SCOPES, task="T-1", enforce=enforce, shared=shared)


@pytest.mark.parametrize("enforce", [True, False])
@pytest.mark.parametrize("shared", [False, True])
def test_cached_verdicts_equal_fresh_ones(enforce, shared):
    warm = _fresh(enforce, SharedClassifications() if shared else None)
    for n in range(1, 6):
        for shape in SHAPES:
            sql = shape.format(n=n)
            cached = exact(warm.check_query(sql), sql)  # (a shape's verdict: its text's own)
            reference = _fresh(enforce)
            for earlier in SHAPES[: SHAPES.index(shape)]:  # the same session state
                if earlier.startswith(("PREPARE", "EXECUTE", "DEALLOCATE")):
                    reference.check_query(earlier.format(n=n))
            fresh = reference.check_query(sql)
            assert (cached.allowed, cached.would_deny, cached.message) == (
                fresh.allowed, fresh.would_deny, fresh.message,
            ), sql  # fmt: skip
            assert cached.decisions == fresh.decisions, sql
    assert warm.stats["fingerprint_hits"] > 0


def test_shape_path_equals_the_reference_path():
    """A text decided by its number shape (``_from_shape``: one lookup, for a single plain
    statement) gets the verdict the full path gives in a fresh session: statement text cut
    out of the text as the lexer cuts it (``exact``), same classification and decision.
    The hit itself is the shape's one ``ShapeVerdict``: the same object for every text."""
    texts = [
        "SELECT id FROM orders WHERE id = {n}",
        "  SELECT id FROM orders WHERE id = {n} ;  ",
        "/* c */ SELECT id FROM orders WHERE id = {n};\n-- trailing\n",
        "UPDATE orders SET total = total + {n} WHERE id = {m}",
        "SELECT name FROM customers WHERE id = {n}",
        # the scanner is not run on a shape hit: digits next to strings, comments,
        # dollar quotes, escapes, casts, operators; out-of-int32 numbers
        "SELECT id FROM orders WHERE id = {n} -- ;{m}\n",
        "/* ; */ SELECT id FROM orders WHERE id = {n} /* {m}; */",
        "SELECT id FROM orders WHERE id = -{n} AND total > +{m}::numeric({m}, {n})",
        "SELECT 'x;{n}' || $$ {m}; $$ || E'\\{n} ', id FROM orders WHERE id = {n}",
        "SELECT E'\\{n} ', id FROM orders WHERE id = {m}",
        "SELECT id FROM orders WHERE id = {n}{m}{n}{m}{n}{m}{n}{m}{n}{m}",
        "SELECT id FROM orders WHERE id IN ({n}, {m}) LIMIT {m} OFFSET {n};",
        "SELECT 'a;b', $$;$$, E'\\\\;', \"x;\" FROM orders WHERE id = {n} -- ;\n/* ; */",
        "SELECT id FROM orders WHERE id = {n}.{m}",
        "SELECT id FROM orders WHERE id = {n}e{m}",
        "SELECT id FROM orders WHERE id = 0x{n}",
        "SELECT \"id\" FROM orders WHERE id = {n} AND '{m}' = '{m}'",
    ]
    warm = _fresh(True, SharedClassifications())
    shape_hits = 0
    pairs = [(1, 2), (3, 4), (57, 86), (90, 11), (5, 6), (123, 4), (905, 7), (0, 0), (999, 9)]
    for n, m in pairs + [(0, 400), (377, 1), (2147483, 64), (9999999, 99)]:
        for text in texts:
            sql = text.format(n=n, m=m)
            shaped = warm._from_shape(sql)
            cached = exact(warm.check_query(sql), sql)
            fresh = _fresh(True).check_query(sql)
            assert (cached.allowed, cached.message, cached.decisions) == (
                fresh.allowed, fresh.message, fresh.decisions), sql  # fmt: skip
            if shaped:
                assert type(shaped) is ShapeVerdict, sql
                assert warm._from_shape(sql) is shaped, sql  # nothing made per hit
                assert exact(shaped, sql) == fresh, sql
                own = exact(shaped, sql).decisions[0][0]
                assert own.sql == fresh.decisions[0][0].sql != "", sql
                shape_hits += 1
    assert len(warm.caches.shapes) >= 10  # the shape path was taken
    assert shape_hits >= 50


def test_a_new_catalog_snapshot_redecides_every_session_tier():
    """The session tiers hold decisions, and a column-syntax decision depends on the catalog:
    when the snapshot changes, a text, number-shape or fingerprint hit must not answer with
    the old decision (``SessionCaches.forget_decisions``). Here ``c.leak`` is first a column
    of customers, then (the column dropped, a function ``leak(customers)`` created) a call
    outside the grant."""
    from policy.catalog import Snapshot

    column = Snapshot(frozenset(), {"public.customers": frozenset({"id", "leak"})})
    call = Snapshot(frozenset({"leak"}), {"public.customers": frozenset({"id"})})
    current = [column]
    warm = _fresh(True, SharedClassifications())
    warm.catalog = lambda: current[0]
    shape = "SELECT c.leak FROM customers c WHERE c.id = {n}"
    for n in (1, 2, 3):  # a miss, then fingerprint and shape hits
        assert warm.check_query(shape.format(n=n)).allowed
    assert warm.caches.texts and warm.caches.fingerprints and warm.caches.shapes
    current[0] = call
    for n in (1, 2, 7):  # the text tier, the shape tier, the fingerprint tier
        verdict = warm.check_query(shape.format(n=n))
        assert not verdict.allowed and "column syntax" in verdict.message, n
    current[0] = column
    assert warm.check_query(shape.format(n=9)).allowed


def test_with_sql_and_allowed_equal_the_dataclass_constructors():
    """A hit's Classified and allowed Verdict are built slot by slot (``caches.with_sql``,
    ``engine._allowed``): the same objects the dataclasses' constructors build, for
    classifications of every kind."""
    from dataclasses import fields

    from policy.caches import with_sql
    from policy.classify import Classified
    from policy.engine import Verdict, _allowed

    policy = _fresh(False)
    texts = [shape.format(n=3) for shape in SHAPES] + [
        "SELECT 1",
        "INSERT INTO orders (id) VALUES (1) RETURNING id",
        "COPY orders TO STDOUT",
        "not sql (",
        "SELECT c.leak FROM customers c",
        "SELECT id FROM orders o JOIN customers c ON o.id = c.id WHERE o.id > 3",
    ]
    for text in texts:
        verdict = policy.check_query(text)
        for c, _d in verdict.decisions:
            values = {f.name: getattr(c, f.name) for f in fields(Classified)}
            for sql in ("other text", c.sql, ""):
                built = with_sql(c, sql)
                want = Classified(**{**values, "sql": sql})
                assert type(built) is Classified and built == want and hash(built) == hash(want)
                assert repr(built) == repr(want)
                assert all(getattr(built, f.name) is getattr(want, f.name) for f in fields(want))
        fast = _allowed(verdict.decisions)
        want = Verdict(True, verdict.decisions, "")
        assert type(fast) is Verdict and fast == want and repr(fast) == repr(want)
        assert fast.would_deny is False and fast.message == "" and fast.allowed is True


# A string literal can name what is decided on (a setting, a relation, a function, an
# encoding): a statement of one shape with another name in it is another decision. For
# each shape, a session that first ran it allowed with one name (and the next session,
# sharing its caches) must decide every other name as a fresh session does: a cached
# allow standing for a name a fresh session refuses is a hole (the shape allowed for
# pg_settings' 'jit' once stood for 'data_directory').
NAMES = [
    "jit", "data_directory", "app.secret", "app.ok", "public.orders", "secret.t", "orders",
    "pg_authid", "public.customers", "secret.s", "off", "UTF8", "SJIS", "role", "16412",
    "public.refund_fn", "secret.f", "select",
]  # fmt: skip
NAMED_SHAPES = [
    "SELECT current_setting('{}')", "SELECT current_setting('{}', true)",
    "SELECT pg_catalog.current_setting(E'{}')", "SELECT set_config('{}', 'off', false)",
    "SELECT set_config('jit', '{}', false)", "SELECT set_config('client_encoding', '{}', false)",
    "SELECT set_config('standard_conforming_strings', '{}', false)",
    "SELECT nextval('{}')", "SELECT currval('{}')", "SELECT setval('{}', 1)",
    "SELECT has_table_privilege('{}', 'select')", "SELECT to_regclass('{}')",
    "SELECT pg_relation_size('{}')", "SELECT '{}'::regclass", "SELECT '{}'::regclass::oid",
    "SELECT '{}'::regproc", "SELECT '{}'::regprocedure", "SELECT '{}'::regnamespace",
    "SELECT pg_get_serial_sequence('{}', 'id')", "SELECT pg_get_viewdef('{}')",
    "SELECT setting FROM pg_settings WHERE name = '{}'",
    "SELECT * FROM pg_catalog.pg_settings s WHERE s.name = '{}' AND true",
    "SET client_encoding = '{}'", "SET standard_conforming_strings = '{}'", "SET jit = '{}'",
    "SELECT obj_description('{}'::regclass, 'pg_class')", "SELECT id FROM orders WHERE note = '{}'",
    "SELECT has_function_privilege('{}', 'execute')", "SELECT to_regproc('{}')",
    "DECLARE c CURSOR FOR SELECT current_setting('{}')", "EXPLAIN SELECT current_setting('{}')",
    "SELECT id FROM orders WHERE note IN (SELECT current_setting('{}'))",
    "WITH x AS (SELECT '{}'::regclass) SELECT * FROM x", "SELECT pg_read_file('{}')",
]  # fmt: skip


@pytest.mark.parametrize("shape", NAMED_SHAPES)
def test_a_name_in_a_literal_is_decided_on_whatever_the_caches_hold(shape):
    scopes = parse_scopes(
        "read:public.orders,public.customers write:public.orders execute:public.refund_fn "
        "set:app.ok"
    )

    def policy(shared: SharedClassifications, task: str = "T-1") -> StatementPolicy:
        return StatementPolicy(scopes, task=task, shared=shared)

    fresh = {name: policy(SharedClassifications()).check_query(shape.format(name)).allowed
             for name in NAMES}  # fmt: skip
    for first in (name for name in NAMES if fresh[name]):
        shared = SharedClassifications()
        warm = policy(shared)
        assert warm.check_query(shape.format(first)).allowed
        following = policy(shared, "T-2")
        for name in NAMES:
            for session in (warm, following):
                got = session.check_query(shape.format(name)).allowed
                assert got == fresh[name], (shape.format(first), shape.format(name), got)
