"""Statement names checked with the server after code that may run DDL (session 25): the
policy's part (``verify_name``, ``verified``, ``replaced``, ``at_rest``) and the relay's
(the check injected before a Bind or Describe, its answers dropped when it passes, its
error passed on when it fails). Sans-IO; through the proxy, the server the judge:
tests/integration/test_s25_checked_names.py."""

from __future__ import annotations

import time

from common.wire import messages as m
from common.wire.errors import frame
from proxy.denials import Denials
from proxy.relay import Relay
from tests.support.ddl_code import ddl_code_session

CALL = "SELECT public.attach()"  # code that may run DDL (and so build a PREPARE)
READ = "SELECT id FROM public.t"


def _held(p, name: str = "s"):
    assert p.check_parse(READ, (), name).allowed
    p.answered(True)


def test_no_check_before_code_that_may_run_ddl():
    p, _c, _calls = ddl_code_session()
    _held(p)
    assert p.verify_name("s") is None
    assert not p.bind_checked("s")


def test_after_such_code_each_held_name_is_checked_until_the_server_says_it_holds_it():
    p, _c, _calls = ddl_code_session()
    _held(p)
    _held(p, "")
    assert p.check_query(CALL).allowed
    token = p.verify_name("s")
    assert token is not None and p.lazy_code
    assert p.verify_name("") is None, "the unnamed statement: no SQL names it"
    assert p.verify_name("never-parsed") is None
    p.verified("s", token)
    assert p.verify_name("s") is not None, "in the transaction: checked at every Bind"
    p.at_rest()  # idle outside a transaction: the code may have run until now
    token2 = p.verify_name("s")
    assert token2 is not None and token2 != token
    p.verified("s", token)  # an older check's answer settles nothing
    assert p.verify_name("s") is not None
    p.verified("s", token2)
    assert p.verify_name("s") is None


def test_a_name_parsed_after_the_code_ran_is_checked_while_the_transaction_is_open():
    p, _c, _calls = ddl_code_session()
    assert p.check_query("BEGIN").allowed
    assert p.check_query("DECLARE c CURSOR FOR SELECT public.attach() FROM public.t").allowed
    _held(p, "late")  # a FETCH may run the code after this Parse
    assert p.verify_name("late") is not None
    v = p.check_bind("late", (), (), "utf-8")
    assert v.allowed, v.message  # decided on its text: the server's check follows


def test_a_failed_check_forgets_the_name_unless_it_was_parsed_again_since():
    p, _c, _calls = ddl_code_session()
    _held(p)
    _held(p, "u")
    assert p.check_query(CALL).allowed
    token = p.verify_name("s")
    p.replaced("s", token)
    assert "s" not in p._statements
    v = p.check_bind("s", (), (), "utf-8")
    assert not v.allowed and "prepare it again" in v.message, v.message
    token_u = p.verify_name("u")
    _held(p, "u")  # the client's Parse after the check went: its new statement
    p.replaced("u", token_u)
    assert "u" in p._statements


def test_sql_level_names_are_forgotten_when_such_code_runs():
    p, _c, _calls = ddl_code_session()
    assert p.check_query(f"PREPARE q AS {READ}").allowed
    p.answered(True)
    assert p.check_query("EXECUTE q").allowed
    assert p.check_query(CALL).allowed
    assert "q" not in p._prepared_statements
    v = p.check_query("EXECUTE q")
    assert not v.allowed and "may have replaced it" in v.message and "PREPARE it again" in v.message
    assert not p.check_bind("q", (), (), "utf-8").allowed
    assert p.check_query("DEALLOCATE q").allowed
    p.answered(True)
    v = p.check_query(f"PREPARE q AS {READ}; EXECUTE q")
    assert not v.allowed and "in this transaction" in v.message, v.message  # (code may run)
    p.at_rest()  # (the relay: idle outside a transaction)
    assert p.check_query(f"PREPARE q AS {READ}").allowed
    p.answered(True)
    assert p.check_query("EXECUTE q").allowed
    assert not p.check_query("EXECUTE never").message.count("may have replaced")


def test_a_dry_run_checks_nothing():
    p, _c, _calls = ddl_code_session()
    p.enforce = False
    _held(p)
    assert p.check_query(CALL).allowed
    assert p.verify_name("s") is None


def test_the_check_names_the_statement_as_bytes_and_raises_with_our_marker():
    d = Denials(nonce="00ff")
    from common.wire.syncgroups import SyncGroups

    groups = SyncGroups()
    data = d.inject_check("x'; DROP", "x'; DROP", "pgwitness: no", (1, 2), groups)
    assert data[:1] == b"P"
    sql = m.decode_parse(data, "utf-8")[1]
    assert b"x'; DROP".hex() in sql and "x'; DROP" not in sql
    assert "NOT s.from_sql" in sql and "DEALLOCATE %I" in sql and d.marker in sql
    assert "OPERATOR(pg_catalog.=)" in sql
    inj = d.pending[-1]
    assert inj.checks == "x'; DROP" and inj.token == (1, 2) and inj.drop == 2
    # the next one closes the one before: three answers of ours before its own
    d.inject_check("y", "y", "no", (1, 3), groups)
    assert d.pending[-1].drop == 3


# --- the relay ------------------------------------------------------------------------


def _relay():
    p, _c, _calls = ddl_code_session()
    relay = Relay(policy=p)
    relay.from_client(m.parse("s", READ) + m.SYNC)
    relay.from_server(frame(b"1") + m.ready_for_query(b"I"))
    relay.from_client(m.query(CALL))
    relay.from_server(frame(b"C", b"SELECT 1\x00") + m.ready_for_query(b"I"))
    return relay, p


def _bind_execute_sync() -> bytes:
    return m.bind_no_params("", "s") + m.execute() + m.SYNC


def test_a_bind_first_in_its_read_gets_the_check_before_it():
    relay, _p = _relay()
    to_server, to_client = relay.from_client(_bind_execute_sync())
    assert to_client == b""
    assert to_server.endswith(_bind_execute_sync())
    check = to_server[: -len(_bind_execute_sync())]
    assert check[:1] == b"P" and b"DO $" in check and b"pg_prepared_statements" in check
    name = m.decode_parse(check, "utf-8")[0]
    assert check.endswith(m.close_statement(name)), "closed once it ran: nothing of ours left"


def test_a_check_that_passes_leaves_the_client_the_servers_own_answers():
    relay, p = _relay()
    relay.from_client(_bind_execute_sync())
    ours = frame(b"1") + frame(b"2") + frame(b"C", b"DO\x00") + frame(b"3")
    theirs = frame(b"2") + frame(b"D", b"\x00\x01\x00\x00\x00\x011") + frame(b"C", b"SELECT 1\x00")
    out = relay.from_server(ours + theirs + m.ready_for_query(b"I"))
    assert out == theirs + m.ready_for_query(b"I")
    assert p.verify_name("s") is None, "checked once: held until such code runs again"
    assert not relay.denials.pending and not relay.denials.held


def test_a_check_that_passes_in_pieces_still_drops_only_its_own_answers():
    relay, _p = _relay()
    relay.from_client(_bind_execute_sync())
    got = relay.from_server(frame(b"1"))
    got += relay.from_server(frame(b"2"))
    got += relay.from_server(frame(b"C", b"DO\x00"))
    got += relay.from_server(frame(b"3") + frame(b"2"))
    got += relay.from_server(frame(b"C", b"SELECT 0\x00") + m.ready_for_query(b"I"))
    assert got == frame(b"2") + frame(b"C", b"SELECT 0\x00") + m.ready_for_query(b"I")


def test_a_check_that_fails_passes_the_error_on_and_the_name_is_forgotten():
    relay, p = _relay()
    relay.from_client(_bind_execute_sync())
    error = frame(
        b"E", b"SERROR\x00VERROR\x00C26000\x00Mpgwitness: replaced\x00s"
        + relay.denials.marker_bytes + b"\x00Wcontext\x00\x00",
    )  # fmt: skip
    out = relay.from_server(frame(b"1") + frame(b"2") + error + m.ready_for_query(b"I"))
    assert out == frame(b"E", b"SERROR\x00VERROR\x00C26000\x00Mpgwitness: replaced\x00\x00") + (
        m.ready_for_query(b"I")
    )
    assert "s" not in p._statements
    assert not relay.denials.pending


def test_a_describe_of_a_held_name_gets_the_check_too():
    relay, _p = _relay()
    describe = frame(b"D", b"Ss\x00") + m.SYNC
    to_server, _ = relay.from_client(describe)
    assert to_server.endswith(describe) and to_server[:1] == b"P"
    assert b"pg_prepared_statements" in to_server


def test_a_skipped_check_is_resolved_by_the_ready_for_query_and_done_again():
    relay, p = _relay()
    relay.from_client(
        m.parse("", "SELECT 1/0") + m.bind_no_params() + m.execute() + _bind_execute_sync()
    )
    error = frame(b"E", b"SERROR\x00C22012\x00Mdivision by zero\x00\x00")
    out = relay.from_server(frame(b"1") + frame(b"2") + error + m.ready_for_query(b"I"))
    assert out == frame(b"1") + frame(b"2") + error + m.ready_for_query(b"I")
    assert not relay.denials.pending
    assert p.verify_name("s") is not None, "the server never ran it: checked at the next Bind"


# --- SQL-level names while such code may run (red-team round 46) ------------------------


def test_an_execute_after_such_code_in_the_same_text_is_refused():
    p, _c, _calls = ddl_code_session()
    assert p.check_query(f"PREPARE q AS {READ}").allowed
    p.answered(True)
    v = p.check_query(f"{CALL}; EXECUTE q")
    assert not v.allowed and "before it in this text" in v.message, v.message
    # a PREPARE of such code runs nothing: an EXECUTE after it in the text is decided so
    assert p.check_query(f"PREPARE r AS {READ}; PREPARE c AS {CALL}; EXECUTE r").allowed


def test_sql_level_names_prepared_while_a_cursor_may_run_such_code_are_forgotten_after():
    p, _c, _calls = ddl_code_session()
    assert p.check_query("BEGIN").allowed
    assert p.check_query(f"DECLARE c CURSOR WITH HOLD FOR {CALL}").allowed
    assert p.check_query(f"PREPARE q AS {READ}").allowed
    p.answered(True)
    assert not p.check_query("EXECUTE q").allowed  # (FETCH c may run the code first)
    assert p.check_query("COMMIT").allowed  # fills the cursor: the code runs now
    p.answered(True)
    p.at_rest()
    v = p.check_query("EXECUTE q")
    assert not v.allowed and "may have replaced it" in v.message, v.message


def _sessions():
    """One database's catalog cache and two sessions of it, wired as the proxy wires them
    (catalog_loader.attach): DDL blocks counted on the shared entry."""
    from policy.catalog import CatalogCache

    c = CatalogCache()
    c.put(
        "db", ["attach", "plain"], {"public.t": frozenset({"id"})},
        user_functions={"attach": frozenset({"public.attach"}),
                        "plain": frozenset({"public.plain"})},
        ddl_functions=("public.attach", "attach"),
    )  # fmt: skip
    entry = c.entry("db")
    return c, entry, _sessions_peer(c, entry), _sessions_peer(c, entry)


def test_another_sessions_such_code_has_every_session_check_its_names_until_a_load():
    """It may have redefined a function this session calls (``EXECUTE`` of a CREATE OR
    REPLACE FUNCTION), which no snapshot shows until a load after its block ended."""
    c, entry, a, b = _sessions()
    _held(a)
    a.at_rest()
    assert a.verify_name("s") is None
    assert b.check_query("BEGIN").allowed
    assert b.check_query(CALL).allowed  # B's block is open
    assert entry.code_window() and a.lazy_code and a.verify_name("s") is not None
    a.at_rest()  # idle, yet a call may run the new code: every Bind stays checked
    assert a.lazy_code
    token = a.verify_name("s")
    a.verified("s", token)
    assert a.verify_name("s") is not None
    entry.count_blocks(-1)  # B's block ended (its settle)
    assert entry.code_window(), "until a load that started after the end"
    time.sleep(0.001)
    c.put("db", ["attach", "plain"], {"public.t": frozenset({"id"})},
          user_functions=c.get("db").user_functions,
          ddl_functions=("public.attach", "attach"))  # fmt: skip
    assert not entry.code_window()
    a.at_rest()
    assert not a.lazy_code
    a.verified("s", a.verify_name("s"))
    assert a.verify_name("s") is None


def test_another_sessions_code_costs_sql_level_names_only_where_statements_ran():
    """In the window another session's code opened, an EXECUTE is refused once a statement
    ran (it may have called a function that code redefined); a session that ran nothing
    keeps its SQL-level names."""
    c, entry, a, b = _sessions()
    idle = _sessions_peer(c, entry)
    for p in (a, idle):
        assert p.check_query(f"PREPARE q AS {READ}").allowed
        p.answered(True)
        p.at_rest()
    assert b.check_query("BEGIN").allowed
    assert b.check_query(CALL).allowed
    assert a.lazy_code and idle.lazy_code
    assert a.check_query("EXECUTE q").allowed  # nothing ran in A since the window opened
    v = a.check_query("EXECUTE q")
    assert not v.allowed and "in this transaction" in v.message, v.message
    assert not a.check_query("SELECT public.plain(); EXECUTE q").allowed
    for p in (a, b):
        p.settle_ddl()  # (the relay, at ReadyForQuery 'I': their blocks ended)
    assert entry.blocks_open == 0
    time.sleep(0.001)
    c.put("db", ["attach", "plain"], {"public.t": frozenset({"id"})},
          user_functions=c.get("db").user_functions,
          ddl_functions=("public.attach", "attach"))  # fmt: skip
    for p in (a, idle):
        p.at_rest()
        assert not p.lazy_code
    assert "q" not in a._prepared_statements  # statements ran in the window: forgotten
    assert idle.check_query("EXECUTE q").allowed  # it ran nothing: kept


def _sessions_peer(c, entry, scopes: str = ""):
    """Another session of ``_sessions``' database (its grant: ``scopes``, else theirs)."""
    from policy.engine import StatementPolicy
    from policy.scopes import parse_scopes
    from tests.support.ddl_code import SCOPES

    p = StatementPolicy(parse_scopes(scopes or SCOPES), task="T", shared=None)
    p.catalog = lambda: c.get("db")
    p.on_ddl = lambda defined, removed: c.invalidate("db", defined, removed)
    p.catalog_entry = entry
    p.on_block = entry.count_blocks
    p.catalog_listener = c.listen("db", p)
    return p


# --- red-team round 47 -----------------------------------------------------------------


def test_a_prepare_before_such_code_in_the_same_text_is_forgotten():
    p, _c, _calls = ddl_code_session()
    assert p.check_query(f"PREPARE q AS {READ}; {CALL}").allowed
    p.answered(True)
    assert "q" not in p._prepared_statements
    assert not p.check_bind("q", (), (), "utf-8").allowed


def test_a_bind_of_a_sql_level_name_after_a_statement_ran_under_such_code_is_refused():
    c, entry, a, b = _sessions()
    assert a.check_query(f"PREPARE q AS {READ}").allowed
    a.answered(True)
    a.at_rest()
    assert b.check_query("BEGIN").allowed and b.check_query(CALL).allowed  # the window
    assert a.bind_checked("q")
    assert a.check_bind("q", (), (), "utf-8").allowed  # nothing ran in A since
    v = a.check_bind("q", (), (), "utf-8")  # the Bind before it may have run the code
    assert not v.allowed and "prepared by SQL" in v.message, v.message


def test_the_relay_counts_an_execute_while_such_code_may_run():
    c, entry, a, b = _sessions()
    assert a.check_query(f"PREPARE q AS {READ}").allowed
    a.answered(True)
    a.at_rest()
    relay = Relay(policy=a)
    assert b.check_query("BEGIN").allowed and b.check_query(CALL).allowed  # the window
    assert a.lazy_code and not a.ran_lazy
    relay.from_client(m.bind_no_params("", "") + m.execute() + m.SYNC)  # (unnamed: unlooked at)
    assert a.ran_lazy
    v = a.check_query("EXECUTE q")
    assert not v.allowed and "in this transaction" in v.message, v.message


def test_a_function_defined_through_the_proxy_opens_the_window():
    """Red-team round 49: a caller of a function just redefined counts as code that may run
    DDL only once a load read the new body; until then every session checks its names."""
    c, entry, a, _b = _sessions()
    _held(a)
    a.at_rest()
    assert not entry.code_window() and a.verify_name("s") is None
    b = _sessions_peer(c, entry, "ddl:public.* read:public.t execute:public.plain")
    v = b.check_query(
        "CREATE OR REPLACE FUNCTION public.plain() RETURNS int LANGUAGE sql AS 'SELECT 1'"
    )
    assert v.allowed, v.message
    assert entry.code_window() and a.lazy_code and a.verify_name("s") is not None
