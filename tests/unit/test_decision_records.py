"""Decision records rendered from cached per-shape parts are byte for byte the reference
rendering (``dump_json(decision_payload(...))``), whatever the verdict and the text; an
allowed statement's record that refers to a ``decision.shape`` expands, with the shapes a
reader has seen, to that reference without the statement's text."""

from __future__ import annotations

import json

import pytest

from policy import StatementPolicy, parse_scopes
from policy.engine import SharedClassifications
from proxy.decision_records import DecisionRecords, decision_payload
from proxy.relay import UNRECORDED
from recorder.records import DecisionShapes, dump_json

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
                got = records.render_whole(verdict, message, sql, **extra)
                assert got == want, sql
                seen.add(json.loads(got)["outcome"])
    assert seen == ({"allowed", "denied"} if enforce else {"allowed", "would_deny"})


def test_a_shape_cached_for_one_text_carries_the_next_texts_own_sql():
    policy = _policy(True)
    records = DecisionRecords("g-1")
    for n in range(50):
        sql = f"SELECT id FROM orders WHERE id = {n}"
        doc = json.loads(records.render_whole(policy.check_query(sql), "Query", sql))
        assert doc["sql"] == sql and doc["statements"][0]["sql"] == sql
        assert doc["statements"][0]["reads"] == ["public.orders"]


def test_refusals_and_unusual_extras_use_the_reference():
    records = DecisionRecords("g-1")
    assert records.render_whole(UNRECORDED, "Query", "") == dump_json(
        decision_payload("g-1", UNRECORDED, "Query", "")
    )
    verdict = _policy(True).check_query("SELECT id FROM orders")
    extra = {"statement": "s", "portal": "p"}
    assert records.render_whole(verdict, "Parse", "SELECT id FROM orders", **extra) == dump_json(
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
    shapes = DecisionShapes()
    for _ in range(3):
        for c in variants + [v for v in reversed(variants)]:
            for d in (decision, Decision(True, "read", "reads public.orders")):
                verdict = Verdict(True, ((c, d),), "")
                want = dump_json(decision_payload("g-1", verdict, "Query", c.sql))
                assert records.render_whole(verdict, "Query", c.sql) == want, c
                shape, body = records.render(verdict, "Query", c.sql)
                if shape is not None:
                    shapes.define(shape)
                assert _without_texts(shapes.expand(json.loads(body))) == _without_texts(
                    json.loads(want)), c


def _without_texts(payload: dict) -> dict:
    """A decision payload less what a shape leaves to the client frame: the texts, and the
    shape's number."""
    out = {k: v for k, v in payload.items() if k not in ("sql", "shape")}
    out["statements"] = [{k: v for k, v in s.items() if k != "sql"} for s in payload["statements"]]
    return out


def _compact(verdict, extra) -> bool:
    return (verdict.allowed and not verdict.would_deny and len(verdict.decisions) == 1
            and set(extra) <= {"statement"})  # fmt: skip


@pytest.mark.parametrize("enforce", [True, False])
@pytest.mark.parametrize("grant_id", ["g-1", "", None])
def test_shaped_records_expand_to_the_reference_without_texts(enforce, grant_id):
    """What a reader makes of the records (DecisionShapes over the shape records, in order)
    is the reference payload: whole for refusals, would-denies and several statements, and
    without the statement's text (the client frame) for an allowed statement."""
    policy = _policy(enforce)
    records = DecisionRecords(grant_id, size=4)  # small: entries are evicted and re-made
    shapes = DecisionShapes()
    defined: list[int] = []
    compact = 0
    for _ in range(3):
        for sql in TEXTS:
            for message, extra in (("Query", {}), ("Parse", {"statement": "s1"}),
                                   ("Parse", {"statement": ""})):  # fmt: skip
                verdict = policy.check_query(sql) if message == "Query" else policy.check_parse(sql)
                want = decision_payload(grant_id, verdict, message, sql, **extra)
                shape, body = records.render(verdict, message, sql, **extra)
                doc = json.loads(body)
                if not _compact(verdict, extra):
                    assert shape is None and body == dump_json(want), sql
                    continue
                compact += 1
                assert set(doc) == {"denied", "shape", *extra} and doc["denied"] is False
                assert sql.encode() not in body or not sql
                if shape is not None:
                    assert shape["shape"] == doc["shape"] == len(defined)  # numbered in order
                    defined.append(shape["shape"])
                    shapes.define(json.loads(dump_json(shape)))  # as recorded
                got = shapes.expand(doc)
                assert got["shape"] == doc["shape"]
                assert _without_texts(got) == _without_texts(want), sql
    assert compact > 20
    # each (message, shape) is defined once while its entry stays cached; the small cache
    # evicts entries, whose shapes are defined again under new numbers
    assert len(defined) > len({(m, s) for m in ("Query", "Parse") for s in TEXTS[:2]})


def test_one_shape_one_record_and_a_new_grant_goes_on_numbering():
    policy = _policy(True)
    records = DecisionRecords("g-1")
    first, body = records.render(policy.check_query("SELECT id FROM orders WHERE id = 1"),
                                 "Query", "SELECT id FROM orders WHERE id = 1")
    assert first is not None and first["shape"] == 0
    assert body == b'{"denied":false,"shape":0}'
    for n in range(2, 20):  # same shape, new literals: the same constant record, no new shape
        sql = f"SELECT id FROM orders WHERE id = {n}"
        assert records.render(policy.check_query(sql), "Query", sql) == (None, body)
    # the same statement prepared is another shape (the message is part of it)
    shape, parse_body = records.render(policy.check_parse("SELECT id FROM orders WHERE id = $1"),
                                       "Parse", "SELECT id FROM orders WHERE id = $1",
                                       statement="s\"1")
    assert shape is not None and shape["shape"] == 1 and shape["message"] == "Parse"
    assert json.loads(parse_body) == {"denied": False, "shape": 1, "statement": 's"1'}
    # the session's next grant renders with its own grant_id and goes on from 2
    later = DecisionRecords("g-2", first_shape=records.next_shape)
    shape, body = later.render(policy.check_query("SELECT id FROM orders WHERE id = 5"),
                               "Query", "SELECT id FROM orders WHERE id = 5")
    assert shape is not None and (shape["shape"], shape["grant_id"]) == (2, "g-2")


def test_a_decision_whose_shape_was_never_recorded_says_so():
    shapes = DecisionShapes()
    got = shapes.expand({"denied": False, "shape": 7})
    assert got["shape_missing"] is True and got["statements"] == []
    whole = {"denied": True, "outcome": "denied", "statements": [], "error": "no"}
    assert shapes.expand(whole) is whole  # a record without a shape is its own payload
