"""Decision records rendered from cached per-shape parts are byte for byte the reference
rendering (``dump_json(decision_payload(...))``), whatever the verdict and the text."""

from __future__ import annotations

import json

import pytest

from policy import StatementPolicy, parse_scopes
from policy.engine import SharedClassifications
from proxy.decision_records import DecisionRecords, decision_payload
from proxy.relay import UNRECORDED
from recorder.records import dump_json

SCOPES = "read:public.orders,public.customers write:public.orders"

TEXTS = [
    "SELECT id FROM orders WHERE id = 1",
    "SELECT id FROM orders WHERE id = 2",  # same shape, new literal: the cached parts
    "select total from orders where note = 'é \"quoted\" \\ ünïcode ☃ \U0001f600'",
    "SELECT 1; SELECT name FROM customers WHERE id = 7; UPDATE orders SET total = 3",
    "UPDATE orders SET total = total + 5 WHERE id = 9",
    "DELETE FROM customers WHERE id = 1",  # denied: not in scope
    "SELECT secret FROM payroll",  # denied
    "SELECT upper(name), now() FROM customers",
    "BEGIN",
    "not sql at all (",
    "",
]


def _policy(enforce: bool) -> StatementPolicy:
    return StatementPolicy(
        parse_scopes(SCOPES), task="T-1", enforce=enforce, shared=SharedClassifications()
    )


@pytest.mark.parametrize("enforce", [True, False])
@pytest.mark.parametrize("grant_id", ["g-1", "", None])
def test_rendered_records_equal_the_reference(enforce, grant_id):
    policy = _policy(enforce)
    records = DecisionRecords(grant_id, size=4)  # small: entries are evicted and re-made
    seen = set()
    for _ in range(3):  # first sight, then the session's and the shape caches
        for sql in TEXTS:
            for message, extra in (("Query", {}), ("Parse", {"statement": "s1"}),
                                   ("Parse", {"statement": ""})):  # fmt: skip
                verdict = policy.check_query(sql) if message == "Query" else policy.check_parse(sql)
                want = dump_json(decision_payload(grant_id, verdict, message, sql, **extra))
                got = records.render(verdict, message, sql, **extra)
                assert got == want, sql
                seen.add(json.loads(got)["outcome"])
    assert seen == ({"allowed", "denied"} if enforce else {"allowed", "would_deny"})


def test_a_shape_cached_for_one_text_carries_the_next_texts_own_sql():
    policy = _policy(True)
    records = DecisionRecords("g-1")
    for n in range(50):
        sql = f"SELECT id FROM orders WHERE id = {n}"
        doc = json.loads(records.render(policy.check_query(sql), "Query", sql))
        assert doc["sql"] == sql and doc["statements"][0]["sql"] == sql
        assert doc["statements"][0]["reads"] == ["public.orders"]


def test_refusals_and_unusual_extras_use_the_reference():
    records = DecisionRecords("g-1")
    assert records.render(UNRECORDED, "Query", "") == dump_json(
        decision_payload("g-1", UNRECORDED, "Query", "")
    )
    verdict = _policy(True).check_query("SELECT id FROM orders")
    extra = {"statement": "s", "portal": "p"}
    assert records.render(verdict, "Parse", "SELECT id FROM orders", **extra) == dump_json(
        decision_payload("g-1", verdict, "Parse", "SELECT id FROM orders", **extra)
    )


def test_one_decision_object_with_other_classifications_renders_each():
    """The renderer finds a statement's cached parts by the identity of its decision and
    its classification's sets; the same Decision object with another classification (or
    equal sets that are other objects) must render that classification."""
    from policy.classify import Classified, StatementClass
    from policy.decide import Decision
    from policy.engine import Verdict

    decision = Decision(True, "read", "reads public.orders")
    variants = [
        Classified("q1", StatementClass.READ, "SELECT", frozenset({"public.orders"}),
                   frozenset(), frozenset()),
        Classified("q2", StatementClass.READ, "SELECT", frozenset({"public.customers"}),
                   frozenset(), frozenset()),
        Classified("q3", StatementClass.WRITE, "UPDATE", frozenset({"public.orders"}),
                   frozenset({"public.orders"}), frozenset({"now"})),
        Classified("q4", StatementClass.READ, "TABLE", frozenset({"public.orders"}),
                   frozenset(), frozenset()),
    ]  # fmt: skip
    records = DecisionRecords("g-1", size=2)
    for _ in range(3):
        for c in variants + [v for v in reversed(variants)]:
            for d in (decision, Decision(True, "read", "reads public.orders")):
                verdict = Verdict(True, ((c, d),), "")
                want = dump_json(decision_payload("g-1", verdict, "Query", c.sql))
                assert records.render(verdict, "Query", c.sql) == want, c
