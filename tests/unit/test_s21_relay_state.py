"""The relay's part in following the server's session state (session 21, red-team round
33): the client encoding a statement is decoded in, and what the policy is told of the
server's answers (Close, ErrorResponse, ReadyForQuery). Sans-IO: frames in, frames out."""

from __future__ import annotations

from common.wire import messages as m
from common.wire.errors import frame
from policy.engine import Verdict, classify_text
from proxy.relay import Relay
from tests.support.fakes import PolicySeam

SET_LATIN1 = "SET client_encoding = 'LATIN1'"
NON_ASCII = 'SELECT val FROM "r33\u00e9".t'


class Following(PolicySeam):
    """Allows everything (decisions classified for real); records what it is told."""

    def __init__(self):
        self.checked: list[str] = []
        self.told: list[tuple] = []
        self.names_pending = False

    def check_query(self, sql):
        self.checked.append(sql)
        return Verdict(True, tuple((c, None) for c in classify_text(sql, ("public",))), "")

    def check_parse(self, sql, param_types=(), name=""):
        self.names_pending = True
        return self.check_query(sql)

    def closed(self, name):
        self.told.append(("closed", name))

    def failed(self):
        self.told.append(("failed",))

    def answered(self, idle):
        self.told.append(("answered", idle))
        self.names_pending = False


def ready(status: bytes = b"I") -> bytes:
    return m.ready_for_query(status)


def test_a_non_ascii_statement_behind_an_encoding_change_is_refused_until_answered():
    policy = Following()
    relay = Relay(policy=policy)
    to_server, to_client = relay.from_client(m.query(SET_LATIN1) + m.query(NON_ASCII))
    assert policy.checked == [SET_LATIN1]  # the read was never decoded for a decision
    assert NON_ASCII.encode() not in to_server and b"r33" not in to_server
    assert relay.encoding_changed
    # the server answers the SET (its encoding reported) and the refusal in its place
    relay.from_server(frame(b"S", b"client_encoding\x00LATIN1\x00") + frame(b"C", b"SET\x00")
                      + ready())  # fmt: skip
    assert not relay.groups.idle  # the refusal's group is still owed
    relay.from_client(m.query(NON_ASCII))
    assert policy.checked == [SET_LATIN1]  # still refused
    relay.from_server(frame(b"E", b"SERROR\x00C55000\x00Mrefused\x00\x00") + ready()
                      + frame(b"E", b"SERROR\x00C55000\x00Mrefused\x00\x00") + ready())  # fmt: skip
    assert relay.groups.idle
    # nothing in flight now: decoded in the encoding the server reported, and checked
    latin1 = NON_ASCII.encode("latin-1")
    relay.from_client(frame(b"Q", latin1 + b"\x00"))
    assert policy.checked[-1] == NON_ASCII


def test_ascii_statements_and_sessions_that_never_set_an_encoding_go_on():
    policy = Following()
    relay = Relay(policy=policy)
    relay.from_client(m.query("SELECT 1") + m.query(NON_ASCII))  # never set: as before
    assert policy.checked == ["SELECT 1", NON_ASCII]
    relay.from_client(m.query(SET_LATIN1) + m.query("SELECT 2"))
    assert policy.checked[-1] == "SELECT 2"  # ASCII reads alike in every encoding
    # the text, not the frame, is looked at: a length byte of 0x80 and more is no character
    long = "SELECT " + ", ".join(["1"] * 100)
    jsonb_param = frame(b"P", b"\x00" + long.encode() + b"\x00\x00\x01" + (3802).to_bytes(4, "big"))
    relay.from_client(m.query(long) + jsonb_param)  # (an OID byte 0xda)
    assert policy.checked[-2:] == [long, long]


def test_the_policy_hears_of_closes_errors_and_answers():
    policy = Following()
    relay = Relay(policy=policy)
    relay.from_client(m.parse("s1", "SELECT 1") + m.SYNC)
    relay.from_client(frame(b"C", b"Ss1\x00") + frame(b"C", b"Pportal\x00") + m.SYNC)
    assert policy.told == [("closed", "s1")]  # a portal's Close names no statement
    relay.from_server(frame(b"E", b"SERROR\x00C42P05\x00Mexists\x00\x00") + ready())
    assert policy.told[1:] == [("failed",), ("answered", False)]  # the Close still owed


class Migrating(Following):
    """A session that ran DDL in its block (``ddl_open``); counts its settles."""

    def __init__(self):
        super().__init__()
        self.ddl_open = True
        self.settled = 0

    def settle_ddl(self):
        self.settled += 1
        self.ddl_open = False


def test_a_commit_that_leaves_the_session_in_a_block_settles_its_ddl():
    """COMMIT AND CHAIN, or ``COMMIT; BEGIN``: ReadyForQuery says 'T', but the block that
    ran DDL ended with that group (round 34): settled at its answer, not at the next idle."""
    for sql in ("COMMIT AND CHAIN", "COMMIT; BEGIN"):
        policy = Migrating()
        relay = Relay(policy=policy)
        relay.from_client(m.query("SELECT 1") + m.query(sql))
        relay.from_server(frame(b"C", b"SELECT 1\x00") + ready(b"T"))
        assert policy.settled == 0  # the SELECT's answer: the COMMIT still to come
        relay.from_server(frame(b"C", b"COMMIT\x00") + ready(b"T"))
        assert policy.settled == 1, sql


def test_commit_prepared_may_commit_another_sessions_ddl():
    policy = Migrating()
    policy.ddl_open = False
    relay = Relay(policy=policy)
    relay.from_client(m.query("COMMIT PREPARED 'g'"))
    assert policy.ddl_open
    relay.from_server(frame(b"C", b"COMMIT PREPARED\x00") + ready())
    assert policy.settled == 1


def test_a_commit_the_server_never_ran_settles_nothing():
    """Round 35: a COMMIT skipped after an error, or prepared and never bound, ends no
    block: the settle waits for the server's own COMMIT (its CommandComplete)."""
    policy = Migrating()
    relay = Relay(policy=policy)
    relay.from_client(m.query("SELECT 1/0; COMMIT"))
    relay.from_server(frame(b"E", b"SERROR\x00C22012\x00Mdivision by zero\x00\x00") + ready(b"E"))
    assert policy.settled == 0
    relay.from_client(m.parse("c", "COMMIT") + m.SYNC)
    relay.from_server(frame(b"1", b"") + ready(b"T"))
    assert policy.settled == 0 and policy.ddl_open


def test_rollback_to_a_savepoint_settles_nothing():
    """Its tag is ROLLBACK too (round 35's held probe, broken on the way): the block goes
    on holding its DDL, settled by the COMMIT that ends it."""
    policy = Migrating()
    relay = Relay(policy=policy)
    relay.from_client(m.query("ROLLBACK TO s"))
    relay.from_server(frame(b"C", b"ROLLBACK\x00") + ready(b"T"))
    assert policy.settled == 0
    relay.from_client(m.query("COMMIT"))
    relay.from_server(frame(b"C", b"COMMIT\x00") + ready())
    assert policy.settled == 1


def test_only_messages_that_may_run_code_make_the_encoding_uncertain():
    """asyncpg's prepare (Parse, Describe, Flush, then Bind in the same group) runs no code
    before its Bind: its non-ASCII statements are checked (round 13's unusual names);
    behind a Bind or an Execute they wait for the answer."""
    policy = Following()
    relay = Relay(policy=policy)
    relay.from_client(m.query(SET_LATIN1))
    relay.from_server(
        frame(b"S", b"client_encoding\x00LATIN1\x00") + frame(b"C", b"SET\x00") + ready()
    )
    assert relay.encoding_changed and not relay.groups.ran
    latin1 = NON_ASCII.encode("latin-1")
    parse = frame(b"P", b"s\x00" + latin1 + b"\x00\x00\x00")
    relay.from_client(parse + frame(b"D", b"Ss\x00") + frame(b"H", b""))
    assert policy.checked[-1] == NON_ASCII  # nothing that runs code before it
    relay.from_client(m.bind_no_params(statement="s") + m.execute() + parse)
    assert policy.checked.count(NON_ASCII) == 1  # behind an Execute: refused, not checked
