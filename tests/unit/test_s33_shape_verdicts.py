"""A number shape's one verdict (session 33, issue 14): a simple Query decided by its number
shape (``StatementPolicy._from_shape``) gets the shape's own ``ShapeVerdict``, made once when
the shape was remembered, whose statement's text is the first text of that shape. Nothing
that records a statement may then write that first text for another one: what the database
refuses (``db.denied``), a decision recorded whole, a CASCADE decided again as RESTRICT all
carry the text the client sent (``policy.engine.exact``)."""

from __future__ import annotations

from devtools import testing as t
from policy import StatementPolicy, parse_scopes
from policy.engine import ShapeVerdict, SharedClassifications, exact
from proxy.decision_records import DecisionRecords
from proxy.denials import Denials
from proxy.relay import Relay

SCOPES = parse_scopes("read:public.orders write:public.orders")
SHAPE = "SELECT id FROM orders WHERE id = {n}"


class Sink:
    def __init__(self) -> None:
        self.events: list = []
        self.decisions: list = []

    def wire(self, direction: str, data: bytes) -> None:
        pass

    def decision_json(self, body: bytes, denied: bool) -> None:
        self.decisions.append(body)

    def event(self, kind: str, payload: dict) -> None:
        self.events.append((kind, payload))


def _policy() -> StatementPolicy:
    return StatementPolicy(SCOPES, task="T-33", shared=SharedClassifications())


def _shape_hit(policy: StatementPolicy, warm: tuple[int, ...], n: int) -> tuple[str, object]:
    """``SHAPE`` with ``n``, checked after the texts of ``warm`` made its shape known."""
    for w in warm:
        policy.check_query(SHAPE.format(n=w))
    sql = SHAPE.format(n=n)
    verdict = policy.check_query(sql)
    assert type(verdict) is ShapeVerdict, "not a shape hit: the test proves nothing"
    return sql, verdict


def _relay() -> tuple[Relay, Sink]:
    sink = Sink()
    relay = Relay(policy=_policy(), recorder=sink, grant_id="g-33")
    relay.denials = Denials("0123456789abcdef")
    return relay, sink


def _statement(relay: Relay, sink: Sink, sql: str, answer: bytes) -> None:
    to_server, to_client = relay.from_client(t.query(sql))
    assert to_server and not to_client, sql  # allowed, sent on
    relay.from_server(answer)


def test_a_shape_hit_is_the_shapes_one_verdict_and_exact_gives_each_text_its_own():
    policy = _policy()
    texts = [SHAPE.format(n=n) for n in (1, 2, 3, 9, 4)]  # (one number shape: one digit)
    verdicts = [policy.check_query(sql) for sql in texts]
    shaped = [v for v in verdicts if type(v) is ShapeVerdict]
    assert len(shaped) >= 2, "the shape tier was not reached: the test proves nothing"
    assert all(v is shaped[0] for v in shaped)  # one object per shape: nothing made per hit
    for sql, verdict in zip(texts, verdicts, strict=True):
        own = exact(verdict, sql)
        assert type(own) is not ShapeVerdict
        assert own.decisions[0][0].sql == sql
        assert own == _policy().check_query(sql)  # what a fresh session decides


def test_db_denied_after_shape_hits_records_the_text_the_server_refused():
    """The statement the server refused, not the first text of its shape (the shape's
    verdict holds that one)."""
    relay, sink = _relay()
    ok = t.row_description("id") + t.data_row("1") + t.command_complete("SELECT 1") + t.ready()
    for n in (1000, 2000, 3000):
        _statement(relay, sink, SHAPE.format(n=n), ok)
    refused = SHAPE.format(n=4242)
    assert relay.policy._from_shape(refused) is not None, "no shape hit: the test proves nothing"
    denied = t.error("42501", "permission denied for table orders") + t.ready()
    _statement(relay, sink, refused, denied)
    [payload] = [p for kind, p in sink.events if kind == "db.denied"]
    assert payload["statement"] == refused
    assert payload["rule"] == "scope.read"
    # spaces and a semicolon around it: the statement is cut out of the text
    for n in (1000, 2000):
        _statement(relay, sink, "  " + SHAPE.format(n=n) + " ;", ok)
    around = "  " + SHAPE.format(n=7777) + " ;"
    assert relay.policy._from_shape(around) is not None, "no shape hit: the test proves nothing"
    _statement(relay, sink, around, denied)
    payload = [p for kind, p in sink.events if kind == "db.denied"][-1]
    assert payload["statement"] == SHAPE.format(n=7777)


def test_a_shape_verdict_rendered_whole_carries_its_own_text():
    """The compact record (``{"denied":false,"shape":N}``) holds no text; a rendering of
    the whole decision does, and must hold the text's own."""
    sql, verdict = _shape_hit(_policy(), (11111, 22222), 31337)
    body = DecisionRecords("g-33").render_whole(verdict, "Query", sql)
    assert b"31337" in body and b"22222" not in body, body
    body = DecisionRecords("g-33").render(verdict, "Query", sql, run_as=sql)[1]
    assert b"31337" in body, body


def test_exact_leaves_every_other_verdict_as_it_is():
    policy = _policy()
    for sql in ("SELECT id FROM orders WHERE id = 1; SELECT 2", "DELETE FROM customers"):
        verdict = policy.check_query(sql)
        assert exact(verdict, sql) is verdict


def test_where_portals_are_followed_a_shape_hit_carries_its_own_text():
    """The portals' books read cursor and savepoint names out of a statement's text
    (policy/portals.py): while they are kept, a shape hit is the text's own verdict."""
    policy = _policy()
    for n in (1, 2, 3):
        policy.check_query(SHAPE.format(n=n))
    assert type(policy._from_shape(SHAPE.format(n=4))) is ShapeVerdict
    policy._watch_portals(True)
    sql = SHAPE.format(n=5)
    hit = policy._from_shape(sql)
    assert hit is not None, "no shape hit: the test proves nothing"
    assert type(hit) is not ShapeVerdict and hit.decisions[0][0].sql == sql


def test_a_shape_verdict_is_recorded_as_the_reference_renders_its_texts():
    """``DecisionRecords.render`` finds a ShapeVerdict's entry by identity: the records
    (shape numbers, ``decision.shape`` payloads, bodies) are those of rendering each text's
    own verdict, also when its bounded memos evict (size 2, five shapes)."""
    policy = _policy()
    shapes = [SHAPE, "SELECT total FROM orders WHERE id = {n}", "SELECT 1 + {n}",
              "SELECT id FROM orders WHERE id > {n}", "DELETE FROM orders WHERE id = {n}"]  # fmt: skip
    texts = [s.format(n=n) for n in range(1, 9) for s in shapes]
    verdicts = [policy.check_query(sql) for sql in texts]
    assert sum(type(v) is ShapeVerdict for v in verdicts) >= 20, "few shape hits: proves little"
    for size in (2, 512):
        fast, reference = DecisionRecords("g-33", size=size), DecisionRecords("g-33", size=size)
        for sql, verdict in zip(texts, verdicts, strict=True):
            for message in ("Query", "Parse"):
                assert fast.render(verdict, message, sql) == reference.render(
                    exact(verdict, sql), message, sql
                ), (size, sql, message)


def test_a_shape_verdict_found_by_identity_is_forgotten_when_the_renderer_forgets():
    """The memos are bounded: once the renderer has forgotten a statement's entry (other
    statements evicted it), the shape's next statement gets a new shape number, as the
    reference path gives it; the identity lookup must not bring back the old one."""
    policy = _policy()
    a, shaped = _shape_hit(policy, (1, 2), 3)
    others = ["DELETE FROM orders WHERE id = 5", "UPDATE orders SET id = 1 WHERE false", "SELECT 7"]
    fast, reference = DecisionRecords("g-33", size=2), DecisionRecords("g-33", size=2)
    for records, verdict in ((fast, shaped), (reference, exact(shaped, a))):
        first = records.render(verdict, "Query", a)
        assert first[0] is not None  # the shape's first statement: its decision.shape
        for sql in others:
            records.render(exact(policy.check_query(sql), sql), "Query", sql)
    again = fast.render(shaped, "Query", a)
    assert again == reference.render(exact(shaped, a), "Query", a)
    assert again[0] is not None and again[0]["shape"] != first[0]["shape"]  # (forgotten)
