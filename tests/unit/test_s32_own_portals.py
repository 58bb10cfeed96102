"""The portals a session may read where the database holds code that may open cursors
(``Snapshot.portal_code``; policy/portals.py, session 32): only cursors and protocol
portals its client made in this transaction, and refcursors a granted function returned.
Red-team rounds 73-74: a trigger's, a view function's or a granted function's write's
``OPEN c`` over a hidden table, then ``FETCH ALL FROM c`` or a protocol ``Execute`` of ``c``.
The relay's part (group numbers, ReadyForQuery, errors, result rows) is played here by
hand: ``sending_group`` is the Sync group a message goes in, ``portals_answered`` a
ReadyForQuery, ``failed`` an ErrorResponse."""

from __future__ import annotations

import pytest

from policy import StatementPolicy
from policy.catalog import CatalogCache
from policy.scopes import parse_scopes

CODE = "FETCH ALL FROM code_cursor"


class Session:
    """A policy and the Sync groups the relay would number."""

    def __init__(self, portal_code: bool = True) -> None:
        c = CatalogCache()
        c.put("db", [], {"public.t": frozenset({"a"})}, triggered=["public.t"],
              portal_code=portal_code,
              refcursor_functions=["public.report", "s.report"])  # fmt: skip
        self.p = StatementPolicy(
            parse_scopes("write:public.t read:public.t execute:public.report execute:s.report "
                         "execute:public.echo execute:s.pair"),
            task="x", shared=None,
        )  # fmt: skip
        self.p.catalog = lambda: c.get("db")
        self.group = 0  # the group being built
        self.answered = 0

    def query(self, sql: str) -> bool:
        """A simple Query (its own group): allowed?"""
        self.p.sending_group = self.group
        v = self.p.check_query(sql)
        self.group += 1
        return v.allowed

    def ready(self, status: str = "T") -> None:
        """The server answers the oldest group in flight."""
        self.answered += 1
        settled = self.answered >= self.group  # (nothing more in flight)
        self.p.portals_answered(self.answered - 1, self.answered, status == "I", settled)

    def ask(self, sql: str, status: str = "T") -> bool:
        """A simple Query, answered at once (each SAVEPOINT in it made)."""
        allowed = self.query(sql)
        if allowed:
            for statement in sql.split(";"):
                if statement.strip().upper().startswith("SAVEPOINT"):
                    self.p.savepoint_made()  # (its CommandComplete)
            self.ready(status)
        else:
            self.group -= 1  # (answered by the proxy: nothing went upstream)
        return allowed


def test_a_cursor_the_client_did_not_make_is_refused_and_says_why():
    s = Session()
    s.p.sending_group = 0
    v = s.p.check_query(CODE)
    assert not v.allowed and "rule deny.cursor" in v.message and "did not make" in v.message
    for sql in ("MOVE ALL FROM code_cursor", 'FETCH 1 FROM "code_cursor"'):
        assert not s.ask(sql), sql
    assert s.ask("CLOSE code_cursor")  # (closing shows nothing)


def test_a_database_without_such_code_is_decided_as_before():
    s = Session(portal_code=False)
    assert s.ask(CODE) and not s.p.portals_watched


def test_own_cursors_live_as_long_as_their_transaction():
    s = Session()
    assert s.ask("BEGIN") and s.ask("DECLARE mine CURSOR FOR SELECT 1")
    for _ in range(2):
        assert s.ask("FETCH FORWARD 10 FROM mine") and s.ask("MOVE BACKWARD ALL IN mine")
    assert s.ask("COMMIT", "I")
    assert not s.ask("FETCH ALL FROM mine")  # (another's, if any, now)
    assert s.ask("BEGIN") and s.ask("DECLARE mine CURSOR FOR SELECT 2") and s.ask("CLOSE mine")
    assert not s.ask("FETCH ALL FROM mine")
    assert s.ask("DECLARE mine CURSOR FOR SELECT 3") and s.ask("CLOSE ALL")
    assert not s.ask("FETCH ALL FROM mine")


def test_with_hold_survives_its_commit_not_its_rollback():
    s = Session()
    assert s.ask("BEGIN") and s.ask("DECLARE h CURSOR WITH HOLD FOR SELECT 1")
    assert s.ask("COMMIT", "I") and s.ask("FETCH ALL FROM h")
    assert s.ask("BEGIN") and s.ask("ROLLBACK", "I") and s.ask("FETCH ALL FROM h")  # (held)
    assert s.ask("BEGIN") and s.ask("DECLARE g CURSOR WITH HOLD FOR SELECT 1")
    assert s.ask("ROLLBACK", "I") and not s.ask("FETCH ALL FROM g")
    assert s.ask("DISCARD ALL", "I") and not s.ask("FETCH ALL FROM h")


@pytest.mark.parametrize("end", ["ROLLBACK", "ROLLBACK TO SAVEPOINT sp", "COMMIT AND CHAIN", "END"])
def test_a_transaction_end_decided_forgets_before_the_server_answers(end):
    s = Session()
    assert s.ask("BEGIN") and s.ask("SAVEPOINT sp") and s.ask("DECLARE mine CURSOR FOR SELECT 1")
    # pipelined: decided before the end is answered
    s.query(end)
    assert not s.query("FETCH ALL FROM mine")


def test_an_error_and_its_rollback_forget_what_the_session_made():
    s = Session()
    assert s.ask("BEGIN") and s.ask("DECLARE mine CURSOR FOR SELECT 1")
    s.query("DECLARE other CURSOR FOR SELECT 1/0")  # (decided, then failed)
    s.p.failed()
    s.ready("E")
    assert not s.ask("FETCH ALL FROM other")
    assert s.ask("ROLLBACK", "I") and not s.ask("FETCH ALL FROM mine")


def test_a_rollback_to_a_savepoint_forgets_only_what_was_made_after_it():
    s = Session()
    assert s.ask("BEGIN") and s.ask("DECLARE before CURSOR FOR SELECT 1")
    assert s.ask("SAVEPOINT a") and s.ask("DECLARE inside CURSOR FOR SELECT 1")
    assert s.ask("SAVEPOINT b") and s.ask("DECLARE deeper CURSOR FOR SELECT 1")
    s.query("SELECT 1/0")
    s.p.failed()
    s.ready("E")
    assert s.ask("ROLLBACK TO SAVEPOINT b")  # (pgjdbc's autosave: the same name again)
    assert s.ask("FETCH ALL FROM deeper") is False
    assert s.ask("FETCH ALL FROM inside") and s.ask("FETCH ALL FROM before")
    assert s.ask("ROLLBACK TO a") and not s.ask("FETCH ALL FROM inside")
    assert s.ask("FETCH ALL FROM before")
    assert s.ask("RELEASE a") and s.ask("ROLLBACK TO a") is True  # (the server refuses it)
    assert not s.ask("FETCH ALL FROM before")  # (a savepoint not known: all forgotten)


def test_a_commit_of_a_failed_transaction_keeps_no_with_hold_cursor():
    s = Session()
    assert s.ask("BEGIN") and s.ask("DECLARE h CURSOR WITH HOLD FOR SELECT 1")
    s.query("SELECT 1/0")
    s.p.failed()
    s.ready("E")
    assert s.ask("COMMIT", "I") and not s.ask("FETCH ALL FROM h")  # (a ROLLBACK, in fact)


def test_a_declare_counts_in_its_message_and_once_answered_not_before():
    s = Session()
    # outside a block the server refuses it (25P01) and skips the rest of the message: a
    # FETCH in the same message never runs without it
    assert s.query("DECLARE mine CURSOR FOR SELECT 1; FETCH ALL FROM mine")
    # a later message decided before the server answered: its fate is not known
    assert not s.query("FETCH ALL FROM mine")
    s.p.failed()  # (25P01)
    s.ready("I")
    assert not s.ask("FETCH ALL FROM mine")


def test_a_refused_message_makes_nothing():
    s = Session()
    assert s.ask("BEGIN")
    assert not s.query("DECLARE code_cursor CURSOR FOR SELECT 1; FETCH ALL FROM elsewhere")
    s.group -= 1  # (refused by the proxy: the same group goes on)
    assert not s.query(f"INSERT INTO public.t VALUES (1); {CODE}")


def _refcursors(s: Session, sql: str, names: list[str], status: str = "T") -> bool:
    allowed = s.query(sql)
    if allowed and s.p.harvesting:
        s.p.refcursors(names)
    s.ready(status)
    return allowed


@pytest.mark.parametrize("call", ["SELECT report()", "SELECT * FROM s.report() AS result",
                                  "SELECT public.report(), s.report()"])  # fmt: skip
def test_a_granted_function_s_refcursor_is_fetched(call):
    s = Session()
    assert s.ask("BEGIN") and _refcursors(s, call, ["<unnamed portal 1>"])
    assert s.ask('FETCH ALL IN "<unnamed portal 1>"')
    assert s.ask("COMMIT", "I") and not s.ask('FETCH ALL IN "<unnamed portal 1>"')


@pytest.mark.parametrize("call", [
    "SELECT report(), 'code_cursor'::refcursor",  # another column: the client's value
    "SELECT echo('code_cursor')",  # not a refcursor function (a polymorphic one is not)
    "SELECT report(); SELECT 'code_cursor'::refcursor",  # another statement in its group
])  # fmt: skip
def test_a_refcursor_the_client_chose_is_not_learnt(call):
    s = Session()
    assert s.ask("BEGIN")
    _refcursors(s, call, ["code_cursor"])
    assert not s.ask(CODE)


def test_rows_of_another_group_answered_with_it_are_not_learnt():
    s = Session()
    assert s.ask("BEGIN")
    s.query("SELECT 'code_cursor'::refcursor")  # in flight, then a refcursor call pipelined
    s.query("SELECT report()")
    s.p.refcursors(["code_cursor"])  # the first group's rows arrive: harvesting is on
    s.ready()
    s.ready()
    assert not s.ask(CODE)


def _bind(s: Session, statement: str, portal: bytes) -> None:
    s.p.sending_group = s.group
    s.p.portal_bound(statement, portal)


def _execute(s: Session, portal: bytes) -> bool:
    s.p.sending_group = s.group
    return s.p.check_execute(portal).allowed


def test_a_protocol_execute_runs_only_portals_the_client_bound():
    s = Session()
    s.p.sending_group = s.group
    assert s.p.check_parse("SELECT a FROM public.t", name="st").allowed
    assert not _execute(s, b"code_cursor") and not _execute(s, b"")
    _bind(s, "st", b"p1")
    assert _execute(s, b"p1")  # (its own group)
    s.group += 1  # Sync
    assert not _execute(s, b"p1")  # decided before the server answered the Bind's group
    s.ready("T")
    assert _execute(s, b"p1")  # in the block still
    s.group += 1
    s.ready("I")
    assert not _execute(s, b"p1")  # its transaction ended


def test_a_named_portal_bound_again_before_an_answer_is_refused():
    s = Session()
    s.p.sending_group = s.group
    assert s.p.check_parse("SELECT a FROM public.t", name="st").allowed
    _bind(s, "st", b"p1")
    s.group += 1
    _bind(s, "st", b"p1")  # (the server refuses it while it holds p1)
    assert not _execute(s, b"p1")


def test_a_simple_query_replaces_the_unnamed_portal():
    s = Session()
    s.p.sending_group = s.group
    assert s.p.check_parse("SELECT a FROM public.t").allowed
    _bind(s, "", b"")
    assert _execute(s, b"")
    assert s.query("SELECT 1")
    assert not _execute(s, b"")


def test_an_extended_declare_counts_at_its_execute():
    s = Session()
    assert s.ask("BEGIN")
    s.p.sending_group = s.group
    assert s.p.check_parse("DECLARE mine CURSOR FOR SELECT 1", name="d").allowed
    assert "d" in s.p.followed  # (each Bind decided again, its Execute at once)
    assert not s.query("FETCH ALL FROM mine")  # parsed only: no cursor
    s.p.sending_group = s.group
    assert s.p.check_parse("DECLARE mine CURSOR FOR SELECT 1", name="d2").allowed
    _bind(s, "d2", b"")
    assert _execute(s, b"")
    assert s.query("FETCH ALL FROM mine")


def test_the_first_group_of_a_session_may_return_a_refcursor():
    s = Session()
    assert _refcursors(s, "BEGIN; SELECT report()", ["r1"])  # (pgjdbc: BEGIN in its group)
    assert s.ask('FETCH ALL IN "r1"')


def test_only_calls_of_functions_returning_one_refcursor_teach_names():
    s = Session()
    assert s.ask("BEGIN")
    s.query("SELECT * FROM s.pair()")  # (OUT parameters: not in the list, any column)
    assert not s.p.harvesting
    s.ready()
    s.query("SELECT * FROM s.report() WITH ORDINALITY")  # (an ordinality column beside)
    assert not s.p.harvesting
    s.ready()
    s.query("SELECT * FROM s.report(ROW('code_cursor'))")  # (f(row) may be row.f)
    assert not s.p.harvesting
    s.ready()
    assert not s.ask(CODE)


def test_sql_cursors_and_protocol_portals_are_one_namespace():
    s = Session()
    assert s.ask("BEGIN") and s.ask("DECLARE code_cursor CURSOR FOR SELECT 1")
    s.p.portal_closed(b"code_cursor")  # a protocol Close of the DECLAREd cursor
    assert not s.ask(CODE)
    s.p.sending_group = s.group
    assert s.p.check_parse("SELECT a FROM public.t", name="st").allowed
    _bind(s, "st", b"code_cursor")
    s.group += 1
    s.ready()
    assert s.ask("CLOSE code_cursor")  # a SQL CLOSE of the Bound portal
    assert not _execute(s, b"code_cursor")
    _bind(s, "st", b"code_cursor")
    s.group += 1
    s.ready()
    assert s.ask("CLOSE ALL") and not _execute(s, b"code_cursor")


def test_an_execute_of_a_statement_whose_text_is_not_sure_is_refused():
    s = Session()
    s.p.sending_group = s.group
    assert s.p.check_parse("SELECT a FROM public.t", name="st").allowed
    s.p.parse_answered("st")
    s.group += 1
    s.ready()
    s.p.closed("st")  # closed and parsed again (round 75: a Parse the server may refuse)
    s.p.sending_group = s.group
    assert s.p.check_parse("SELECT 1", name="st").allowed
    s.group += 1  # that group is not answered yet
    _bind(s, "st", b"")
    v = s.p.check_execute(b"")
    assert not v.allowed and "not known yet" in v.message


def test_a_describe_of_a_portal_the_client_did_not_make_is_refused():
    s = Session()
    s.p.sending_group = s.group
    v = s.p.check_describe(b"code_cursor")
    assert v is not None and not v.allowed and "rule deny.cursor" in v.message
    assert s.p.check_parse("SELECT a FROM public.t", name="st").allowed
    _bind(s, "st", b"mine")
    assert s.p.check_describe(b"mine") is None


def test_a_savepoint_the_server_may_have_refused_is_not_rolled_back_to():
    s = Session()
    assert (
        s.ask("BEGIN") and s.ask("SAVEPOINT s") and s.ask("DECLARE code_cursor CURSOR FOR SELECT 1")
    )
    s.query("SELECT 1/0")
    s.query("SAVEPOINT s")  # pipelined: the server refuses it (25P02)
    s.query("ROLLBACK TO s")  # to the first one: the cursor is gone
    s.p.failed()  # (the 1/0)
    assert not s.query(CODE)


def test_what_a_group_makes_after_its_error_came_back_is_not_made():
    s = Session()
    assert s.ask("BEGIN")
    s.p.failed()  # an error of the group being built (Flush), back before its Sync
    s.p.sending_group = s.group
    assert s.p.check_parse("DECLARE code_cursor CURSOR WITH HOLD FOR SELECT 1").allowed
    _bind(s, "", b"")
    assert _execute(s, b"")  # (the server skips it)
    s.group += 1
    s.ready("E")
    assert not s.ask(CODE)


def test_with_hold_survives_an_error_its_savepoint_undid():
    s = Session()
    assert s.ask("BEGIN") and s.ask("DECLARE h CURSOR WITH HOLD FOR SELECT 1")
    assert s.ask("SAVEPOINT s")
    s.query("SELECT 1/0")
    s.p.failed()
    s.ready("E")
    assert s.ask("ROLLBACK TO SAVEPOINT s") and s.ask("COMMIT", "I")
    assert s.ask("FETCH ALL FROM h")


def test_names_are_the_servers_first_63_bytes_and_other_encodings_are_not_the_clients():
    s = Session()
    long = "c" * 63
    assert s.ask("BEGIN") and s.ask(f"DECLARE {long} CURSOR FOR SELECT 1")
    s.p.portal_closed((long + "zz").encode())  # the server closes the 63-byte name
    assert not s.ask(f"FETCH ALL FROM {long}")
    assert s.ask('DECLARE "r32_é" CURSOR FOR SELECT 1')
    assert not s.ask('FETCH ALL FROM "r32_é"')  # (refused: never the client's)
    assert s.ask("DECLARE mine CURSOR FOR SELECT 1")
    s.p.portal_closed("r32_\xe9".encode("latin-1"))  # a non-ASCII Close: forgets them all
    assert not s.ask("FETCH ALL FROM mine")


def test_a_savepoint_made_before_its_groups_error_is_rolled_back_to():
    """pgjdbc's autosave: SAVEPOINT and a failing statement in one Sync group; the server
    made the savepoint (its CommandComplete came before the error), and ROLLBACK TO it
    keeps what was made before it."""
    s = Session()
    assert s.ask("BEGIN") and s.ask("SAVEPOINT auto") and s.ask("DECLARE mine CURSOR FOR SELECT 1")
    s.query("SAVEPOINT auto; SELECT 1/0")
    s.p.savepoint_made()
    s.p.failed()
    s.ready("E")
    assert s.ask("ROLLBACK TO SAVEPOINT auto") and s.ask("FETCH ALL FROM mine")


def test_each_savepoint_completion_is_the_oldest_sent_ones():
    """Round 77: ``SAVEPOINT a; RELEASE a; SELECT 1/0; SAVEPOINT b``: the completion of
    ``a`` (released before its answer came) confirmed the second ``b``, which the error
    skipped; ROLLBACK TO b then kept what the server's first ``b`` rolled back."""
    s = Session()
    assert (
        s.ask("BEGIN") and s.ask("SAVEPOINT b") and s.ask("DECLARE code_cursor CURSOR FOR SELECT 1")
    )
    s.query("SAVEPOINT a; RELEASE a; SELECT 1/0; SAVEPOINT b")
    s.p.savepoint_made()  # (a's)
    s.p.failed()
    s.ready("E")
    assert s.ask("ROLLBACK TO SAVEPOINT b") and not s.ask(CODE)


def test_with_hold_is_kept_by_a_commit_and_chain():
    s = Session()
    assert s.ask("BEGIN") and s.ask("DECLARE h CURSOR WITH HOLD FOR SELECT 1")
    assert s.ask("COMMIT AND CHAIN")  # (answered 'T': the chained block)
    assert s.ask("ROLLBACK", "I") and s.ask("FETCH ALL FROM h")


def test_a_rollback_of_the_proxys_own_ends_with_hold_cursors_of_the_block():
    """Round 77: a refused PREPARE TRANSACTION is sent as ``ROLLBACK; <our error>``
    (``Denials.inject_ending``): the block's WITH HOLD cursor is gone, and a ReadyForQuery
    'I' without a COMMIT the client sent holds none."""
    s = Session()
    assert s.ask("BEGIN") and s.ask("DECLARE h CURSOR WITH HOLD FOR SELECT 1")
    s.p.portals_rolled_back()
    s.ready("I")
    assert not s.ask("FETCH ALL FROM h")
    assert s.ask("BEGIN") and s.ask("DECLARE g CURSOR WITH HOLD FOR SELECT 1")
    s.ready("I")  # (the answer to a message the relay answered for the client)
    assert not s.ask("FETCH ALL FROM g")


def test_the_rule_stays_on_until_the_server_is_at_rest_after_the_code_is_gone():
    """Round 78: another session redefined the trigger so no code opens cursors any more;
    the cursor it opened before was open still, and the rule, switched off at the next
    statement, let its FETCH through."""
    cache = CatalogCache()
    cache.put("db", [], {"public.t": frozenset({"a"})}, portal_code=True)
    p = StatementPolicy(parse_scopes("write:public.t"), task="x", shared=None)
    p.catalog = lambda: cache.get("db")
    p.sending_group = 0
    assert p.check_query("BEGIN").allowed and p.portals_watched
    p.portals_answered(0, 1, False, True)
    cache.put("db", [], {"public.t": frozenset({"a"})}, portal_code=False)
    p.sending_group = 1
    assert p.check_query("INSERT INTO public.t VALUES (1)").allowed
    p.portals_answered(1, 2, False, True)
    p.sending_group = 2
    assert not p.check_query(CODE).allowed and p.portals_watched  # (in the block still)
    p.portals_answered(2, 3, True, True)  # (a ROLLBACK's answer: at rest)
    assert not p.portals_watched
    p.sending_group = 3
    assert p.check_query(CODE).allowed


def test_savepoint_completions_count_only_once_everything_before_the_books_is_answered():
    """Round 78: the rule switched on while a SAVEPOINT sent before was in flight (``BEGIN;
    SAVEPOINT b``, then ``SAVEPOINT x`` running): its completion confirmed a later ``b``
    the server skipped after an error, and ROLLBACK TO b kept a cursor the server's first
    ``b`` rolled back."""
    s = Session()
    s.p.sending_group = s.group
    assert s.p.check_query("DECLARE code_cursor CURSOR FOR SELECT 1").allowed  # books begin
    s.group += 1
    s.query("SELECT 1/0; SAVEPOINT b")  # pipelined
    s.ready()  # the DECLARE's answer ('T': x is still in flight, nothing settled)
    s.p.savepoint_made()  # (x's, sent before the books)
    s.p.failed()
    assert not s.query("ROLLBACK TO SAVEPOINT b; " + CODE)
