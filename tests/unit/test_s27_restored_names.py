"""A name check that restores rather than queries (session 27; the drivers' differential's
F2): a statement of a class that returns no rows (transaction control, DDL, settings,
utility), bound while nothing is in flight after code that may run DDL, is parsed again
under its name in a Sync group of the proxy's own (``Denials.inject_restore``), whose
answers the client never sees. A query before it in its transaction would break it
(``SET TRANSACTION ISOLATION``, ``CREATE INDEX CONCURRENTLY``: 25001). Sans-IO; through
the proxy, the server the judge: tests/integration/test_s27_restored_names.py."""

from __future__ import annotations

from common.wire import messages as m
from common.wire.errors import frame
from common.wire.syncgroups import SyncGroups
from proxy.denials import Denials
from proxy.relay import Relay
from tests.support.ddl_code import ddl_code_session

CALL = "SELECT public.attach()"  # code that may run DDL (and so build a PREPARE)
SET_TX = "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"
READ = "SELECT id FROM public.t"
RFQ_I, RFQ_T = m.ready_for_query(b"I"), m.ready_for_query(b"T")
OURS = frame(b"3") + frame(b"1")  # CloseComplete, ParseComplete


def _relay(sql: str = SET_TX, name: str = "s"):
    p, _c, _calls = ddl_code_session()
    relay = Relay(policy=p)
    relay.from_client(m.parse(name, sql) + m.SYNC)
    relay.from_server(frame(b"1") + RFQ_I)
    relay.from_client(m.query(CALL))
    relay.from_server(frame(b"C", b"SELECT 1\x00") + RFQ_I)
    return relay, p


def _bind(name: str = "s") -> bytes:
    return m.bind_no_params("", name) + m.execute() + m.SYNC


def test_the_restore_is_a_close_and_the_clients_own_parse_in_a_group_of_its_own():
    d = Denials(nonce="00ff")
    groups = SyncGroups()
    parse = m.parse("s", SET_TX)
    data = d.inject_restore("s", parse, (1, 2), groups)
    assert data == m.close_statement("s") + parse + m.SYNC
    inj = d.pending[-1]
    assert inj.restores and inj.checks == "s" and inj.token == (1, 2) and not inj.failed
    assert groups.in_flight == 1, "a Sync group of its own"


def test_a_bind_of_a_restorable_statement_gets_the_restore_not_the_query():
    relay, _p = _relay()
    to_server, to_client = relay.from_client(_bind())
    assert to_client == b""
    assert to_server == m.close_statement("s") + m.parse("s", SET_TX) + m.SYNC + _bind()
    assert b"DO $" not in to_server


def test_its_answers_are_dropped_and_the_name_counts_as_verified():
    relay, p = _relay()
    relay.from_client(_bind())
    theirs = frame(b"2") + frame(b"C", b"SET\x00") + RFQ_T
    assert relay.from_server(OURS + RFQ_T + theirs) == theirs
    assert relay.tx_status == b"T"
    assert p.verify_name("s") is None, "restored: the server holds the client's statement"
    assert not relay.denials.pending and not relay.denials.held


def test_its_answers_in_pieces_are_dropped_too():
    relay, _p = _relay()
    relay.from_client(_bind())
    got = relay.from_server(frame(b"3"))
    got += relay.from_server(frame(b"1") + RFQ_I[:3])
    got += relay.from_server(RFQ_I[3:] + frame(b"2"))
    got += relay.from_server(frame(b"C", b"SET\x00") + RFQ_I)
    assert got == frame(b"2") + frame(b"C", b"SET\x00") + RFQ_I


def test_its_notices_are_dropped_notifications_and_settings_reach_the_client():
    """With ``client_min_messages = debug5`` its transaction's DEBUG lines are its own."""
    relay, _p = _relay()
    relay.from_client(_bind())
    notice = frame(b"N", b"SDEBUG\x00C00000\x00MStartTransaction(1)\x00\x00")
    notification = frame(b"A", b"\x00\x00\x00\x07chan\x00hi\x00")
    status = frame(b"S", b"TimeZone\x00UTC\x00")
    got = relay.from_server(frame(b"3") + notice + notification + frame(b"1") + status + RFQ_I)
    assert got == notification + status


def test_a_failed_restore_answers_the_clients_message_and_the_name_is_kept():
    """Its error (a lock timeout, a dropped source) is the answer to the client's Bind,
    which fails for want of the statement; the name is restored again at its next Bind."""
    relay, p = _relay()
    relay.from_client(_bind())
    error = frame(b"E", b"SERROR\x00VERROR\x00C55P03\x00Mcould not obtain lock\x00\x00")
    assert relay.from_server(frame(b"3") + error + RFQ_I) == b""
    assert not relay._parses and not relay._parses_lost, "its Parse's place dropped alone"
    missing = frame(b"E", b"SERROR\x00VERROR\x00C26000\x00Mno such statement\x00\x00")
    assert relay.from_server(missing + RFQ_I) == error + RFQ_I
    assert p.holds_text("s", SET_TX) and "s" in relay._restorable
    to_server, _ = relay.from_client(_bind())
    assert to_server.startswith(m.close_statement("s")), "restored again"
    theirs = frame(b"2") + frame(b"C", b"SET\x00") + RFQ_I
    assert relay.from_server(OURS + RFQ_I + theirs) == theirs


def test_a_failed_restores_error_answers_only_the_next_groups_missing_statement():
    relay, _p = _relay()
    relay.from_client(_bind())
    error = frame(b"E", b"SERROR\x00VERROR\x00C42P01\x00Mno relation\x00\x00")
    relay.from_server(frame(b"3") + error + RFQ_I)
    other = frame(b"E", b"SERROR\x00VERROR\x00C22012\x00Mdivision by zero\x00\x00")
    assert relay.from_server(other + RFQ_I) == other + RFQ_I, "another error: as it is"
    missing = frame(b"E", b"SERROR\x00VERROR\x00C26000\x00Mno such statement\x00\x00")
    assert relay.from_server(missing + RFQ_I) == missing + RFQ_I, "only the next group's"


def test_a_describe_gets_the_restore_too():
    relay, _p = _relay()
    describe = frame(b"D", b"Ss\x00") + m.SYNC
    to_server, _ = relay.from_client(describe)
    assert to_server == m.close_statement("s") + m.parse("s", SET_TX) + m.SYNC + describe


def test_rows_statements_are_checked_with_the_query_as_before():
    relay, _p = _relay(READ)
    to_server, _ = relay.from_client(_bind())
    assert b"DO $" in to_server and not to_server.startswith(m.close_statement("s"))


def test_with_something_in_flight_the_query_check_goes_instead():
    """A group of its own would split the client's: pipelined, the check goes in-line."""
    relay, _p = _relay()
    to_server, _ = relay.from_client(m.query("SELECT 1") + _bind())
    assert b"DO $" in to_server and m.close_statement("s") not in to_server
    relay, _p = _relay()
    to_server, _ = relay.from_client(m.parse("", "SELECT 1") + _bind())
    assert b"DO $" in to_server and m.close_statement("s") not in to_server


def test_a_close_or_a_new_parse_of_another_class_ends_the_restore():
    relay, p = _relay()
    relay.from_client(frame(b"C", b"Ss\x00") + m.parse("s", READ) + m.SYNC)
    relay.from_server(frame(b"3") + frame(b"1") + RFQ_I)
    assert "s" not in relay._restorable
    relay, p = _relay()
    relay.from_client(frame(b"C", b"Ss\x00") + m.SYNC)
    relay.from_server(frame(b"3") + RFQ_I)
    assert "s" not in relay._restorable


def test_the_restore_parses_only_the_text_the_policy_holds():
    relay, p = _relay()
    p._statements["s"] = (READ, ())  # (as if the policy held another text for the name)
    to_server, _ = relay.from_client(_bind())
    assert m.close_statement("s") not in to_server


def test_a_non_ascii_statement_is_checked_with_the_query():
    relay, _p = _relay("SET application_name = 'é'")
    to_server, _ = relay.from_client(_bind())
    assert b"DO $" in to_server


def test_statements_of_the_proxys_are_closed_until_an_answered_injection_closed_them():
    """Red-team round 56: a denial's statement stays after its error; the check sent after
    it in the same group is skipped (never made). The next injection closes the denial's
    (and the skipped one's name is forgotten); a check that passed closed its own."""
    d = Denials(nonce="00ff")
    groups = SyncGroups()
    d.inject(m.Frontend.PARSE, d.raise_sql("no", "42501"), groups)
    denial = d.pending[-1]
    d.inject_check("s", "s", "no", (1, 1), groups)
    check = d.pending[-1]
    assert check.closes == (denial.statement,)
    d.answered(frame(b"E", b"SERROR\x00C42501\x00s" + d.marker_bytes + b"\x00\x00"))
    d.skipped([check])  # the server skipped the check: its Close of the denial's too
    data = d.inject_check("s", "s", "no", (1, 2), groups)
    again = d.pending[-1]
    assert again.closes == (denial.statement,), "the denial's, not the never-made check's"
    assert data.startswith(m.close_statement(denial.statement))
    again.passed = True
    d.passed()
    assert d._unclosed == [], "its Closes ran, its own statement too"
