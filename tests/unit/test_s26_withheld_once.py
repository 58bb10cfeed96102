"""A read decided on a stale snapshot where it could not wait (a Bind) has what the server
says withheld until its own Sync group is answered, not for the rest of the session
(``Policy.stale_read``, ``Relay._withhold_through``); and the server's fixed texts that
quote nothing go on whole (``proxy.redaction._FIXED_TEXTS``). The drivers' differential of
session 26 found both: asyncpg never saw "cached plan must not change result type" after
another session's ALTER TABLE, and every later error of the session was withheld."""

from __future__ import annotations

from common.wire import messages as m
from common.wire.errors import frame
from policy.engine import Verdict
from proxy.redaction import withhold_message
from proxy.relay import Relay
from tests.support.fakes import PolicySeam

CACHED_PLAN = m.encode_error_fields(b"E", {
    "S": "ERROR", "V": "ERROR", "C": "0A000", "M": "cached plan must not change result type",
})  # fmt: skip
QUOTING = m.encode_error_fields(b"E", {
    "S": "ERROR", "V": "ERROR", "C": "22P02",
    "M": 'invalid input syntax for type integer: "SECRET-7"',
})  # fmt: skip


def test_a_fixed_text_goes_on_whole_and_a_quoting_one_is_withheld():
    assert withhold_message(CACHED_PLAN, "utf-8") == CACHED_PLAN
    assert b"SECRET-7" not in withhold_message(QUOTING, "utf-8")
    with_detail = m.encode_error_fields(b"E", {
        "S": "ERROR", "V": "ERROR", "C": "0A000",
        "M": "cached plan must not change result type", "D": "SECRET-7",
    })  # fmt: skip
    assert b"SECRET-7" not in withhold_message(with_detail, "utf-8")


class StaleOnce(PolicySeam):
    """Allows everything; the statement ``stale`` is decided on a stale snapshot."""

    stale_read = False

    def check_query(self, sql):
        if "stale" in sql:
            self.stale_read = True
        return Verdict(True, (), "")


def _answer(relay: Relay, error: bytes) -> bytes:
    return relay.from_server(error + m.ready_for_query(b"I"))


def test_only_the_stale_statements_answers_are_withheld():
    relay = Relay(policy=StaleOnce())
    relay.from_client(m.query("SELECT 1 -- fresh"))
    assert _answer(relay, QUOTING).startswith(QUOTING)  # nothing stale: as the server said
    relay.from_client(m.query("SELECT 1 -- stale"))
    out = _answer(relay, QUOTING)
    assert b"SECRET-7" not in out and b"withheld" in out
    relay.from_client(m.query("SELECT 1 -- fresh again"))
    assert _answer(relay, QUOTING).startswith(QUOTING), "the session's later answers go on"


def test_a_pipelined_group_after_the_stale_one_is_not_withheld_once_answered():
    relay = Relay(policy=StaleOnce())
    relay.from_client(m.query("SELECT 1 -- stale") + m.query("SELECT 2 -- fresh"))
    out = relay.from_server(QUOTING + m.ready_for_query(b"I"))
    assert b"SECRET-7" not in out
    assert _answer(relay, QUOTING).startswith(QUOTING)
    assert frame(b"Z", b"I") == m.ready_for_query(b"I")
