"""Which statement a ``db.denied`` record names (session 33): the one the database refused,
found by position (the statements it completed in the Sync group before the error), not
the group's first; and however many groups are in flight (red-team findings of
tests/integration/test_s33_shape_records.py, where the same runs against a real server)."""

from __future__ import annotations

from devtools import testing as t
from policy import StatementPolicy, parse_scopes
from policy.engine import SharedClassifications
from proxy import relay as relay_module
from proxy.denials import Denials
from proxy.relay import Relay

SCOPES = parse_scopes("read:public.acct")
OK_ROW = t.row_description("a") + t.data_row("1") + t.command_complete("SELECT 1")
REFUSED = t.error("42501", "permission denied for table acct")


class Sink:
    def __init__(self) -> None:
        self.events: list = []

    def wire(self, direction: str, data: bytes) -> None:
        pass

    def decision_json(self, body: bytes, denied: bool) -> None:
        pass

    def event(self, kind: str, payload: dict) -> None:
        self.events.append((kind, payload))

    def denied(self) -> list[tuple[str, str]]:
        return [(p["statement"], p["rule"]) for k, p in self.events if k == "db.denied"]


def _relay(enforce: bool = True) -> tuple[Relay, Sink]:
    sink = Sink()
    policy = StatementPolicy(SCOPES, task="T-33", enforce=enforce, shared=SharedClassifications())
    relay = Relay(policy=policy, recorder=sink, grant_id="g-33")
    relay.denials = Denials("0123456789abcdef")
    return relay, sink


def _sent(relay: Relay, data: bytes) -> None:
    to_server, to_client = relay.from_client(data)
    assert to_server and not to_client  # allowed, passed on


def test_a_query_of_several_statements_names_the_one_refused():
    relay, sink = _relay()
    _sent(relay, t.query("SELECT a FROM acct WHERE id = 1; SELECT b FROM acct WHERE id = 1"))
    relay.from_server(OK_ROW + REFUSED + t.ready())
    _sent(relay, t.query("SELECT b FROM acct WHERE id = 2; SELECT a FROM acct WHERE id = 2"))
    relay.from_server(REFUSED + t.ready())
    assert sink.denied() == [
        ("SELECT b FROM acct WHERE id = 1", "scope.read"),
        ("SELECT b FROM acct WHERE id = 2", "scope.read"),
    ]


def test_a_sync_group_of_parse_bind_execute_pairs_names_the_one_refused():
    relay, sink = _relay()
    group = b"".join(
        t.parse(sql) + t.bind([]) + t.execute()
        for sql in ("SELECT a FROM acct WHERE id = 8", "SELECT b FROM acct WHERE id = 8")
    ) + t.sync()
    _sent(relay, group)
    # ParseComplete, BindComplete, rows, CommandComplete; then ParseComplete and the Bind's
    # error (a column privilege is checked when the portal starts)
    answer = t.frame(b"1", b"") + t.frame(b"2", b"") + OK_ROW + t.frame(b"1", b"") + REFUSED
    relay.from_server(answer + t.ready())
    assert sink.denied() == [("SELECT b FROM acct WHERE id = 8", "scope.read")]


def test_every_refusal_of_a_long_pipeline_names_its_own_statement():
    """Seventy refused Queries in one write (the relay once kept 64 groups' statements)."""
    relay, sink = _relay()
    texts = [f"SELECT b FROM acct WHERE id = {i}" for i in range(1, 71)]
    _sent(relay, b"".join(t.query(sql) for sql in texts))
    relay.from_server(b"".join(REFUSED + t.ready() for _ in texts))
    assert [s for s, _rule in sink.denied()] == texts
    assert not relay._decided and relay._decided_chars == 0  # all answered: none kept


def test_answered_groups_are_forgotten_and_what_is_kept_is_bounded(monkeypatch):
    relay, sink = _relay()
    for i in range(5):
        _sent(relay, t.query(f"SELECT a FROM acct WHERE id = {i}"))
        relay.from_server(OK_ROW + t.ready())
    assert not relay._decided  # (each forgotten at its ReadyForQuery)
    big = "SELECT a FROM acct WHERE id = 1 -- " + "x" * 3_000_000
    _sent(relay, t.query(big) + t.query(big))
    assert relay._decided_chars <= relay_module._DECIDED_CHARS
    assert len(relay._decided) == 1  # the older one dropped: it is named by group if refused
    relay.from_server(REFUSED + t.ready() + REFUSED + t.ready())
    assert [s for s, _rule in sink.denied()][1] == big.split(" --")[0] + " -- " + "x" * 3_000_000


def test_a_refusal_past_what_the_group_decided_falls_back_to_its_first():
    """A Bind of a statement prepared in an earlier group: nothing in this group says which
    it ran beyond the group itself (the record names the group's first decided statement,
    or nothing)."""
    relay, sink = _relay()
    _sent(relay, t.parse("SELECT b FROM acct WHERE id = $1", "s1") + t.sync())
    relay.from_server(t.frame(b"1", b"") + t.ready())
    relay.from_client(t.bind([b"3"], "s1") + t.execute() + t.sync())
    relay.from_server(REFUSED + t.ready())
    assert sink.denied() == [("", "")]


def test_in_a_dry_run_the_refused_statement_says_whether_it_would_have_been_denied():
    relay, sink = _relay(enforce=False)
    _sent(relay, t.query("SELECT a FROM acct WHERE id = 1; SELECT s FROM secret WHERE id = 1"))
    relay.from_server(OK_ROW + REFUSED + t.ready())
    [(kind, payload)] = [(k, p) for k, p in sink.events if k == "db.denied"]
    assert payload["statement"] == "SELECT s FROM secret WHERE id = 1"
    assert payload["would_deny"] is True
