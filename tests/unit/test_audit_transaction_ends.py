"""recorder.audit.derive and the ends of transactions the server undoes without a block
ending at ReadyForQuery: ``ROLLBACK AND CHAIN`` (ReadyForQuery stays 'T'), a ``ROLLBACK``
among a Query's statements (explicit or implicit block, ReadyForQuery 'I' before and
after), an error in an implicit block (a Query's, a Sync group's); and ``COMMIT AND CHAIN``,
which commits what ran before it. Judged on hand-made recordings, the server's answers as
PostgreSQL 15 gives them (checked against the server; tests/integration/
test_audit_transaction_ends.py runs the same through the proxy)."""

from __future__ import annotations

from devtools.testing import bind, command_complete, error, execute, parse, query, ready, sync
from tests.support.audit_recordings import BC, PC, SELECT1, Session

ROLLBACK = "its transaction block ended without COMMIT (ROLLBACK)"
ERROR = "its transaction block ended without COMMIT (an error)"


def ins(v: int) -> str:
    return f"INSERT INTO t VALUES ({v})"


class Conn:
    """One simple Query at a time, answered with the tags and ReadyForQuery status given."""

    def __init__(self) -> None:
        self.s = Session().start()

    def q(self, sql: str, *tags: str, z: bytes, fail: str | None = None) -> Conn:
        answer = [command_complete(t) for t in tags]
        if fail is not None:
            answer.append(error(fail, "boom"))
        self.s.client(query(sql), decisions=1).server(*answer, ready(z))
        return self

    def got(self) -> dict[str, tuple]:
        return {r["text"]: (r["outcome"], r["message"]) for r in self.s.facts().statements}


# --- AND CHAIN -------------------------------------------------------------------------


def test_rollback_and_chain_undoes_the_transaction_and_the_next_one_commits():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    c.q("ROLLBACK AND CHAIN", "ROLLBACK", z=b"T").q(ins(2), "INSERT 0 1", z=b"T")
    c.q("COMMIT", "COMMIT", z=b"I")
    got = c.got()
    assert got[ins(1)] == ("rolled back", ROLLBACK)
    assert got[ins(2)] == ("ok", None)
    assert got["ROLLBACK AND CHAIN"][0] == "ok"


def test_abort_and_chain_then_rollback_undoes_both():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    c.q("ABORT AND CHAIN", "ROLLBACK", z=b"T").q(ins(2), "INSERT 0 1", z=b"T")
    c.q("ROLLBACK", "ROLLBACK", z=b"I")
    got = c.got()
    assert (got[ins(1)][0], got[ins(2)][0]) == ("rolled back", "rolled back")


def test_commit_and_chain_commits_what_ran_before_it():
    """The chained transaction rolled back undoes its own statements only (derive used to
    mark the whole 'T' stretch, the committed one included)."""
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    c.q("COMMIT AND CHAIN", "COMMIT", z=b"T").q(ins(2), "INSERT 0 1", z=b"T")
    c.q("ROLLBACK", "ROLLBACK", z=b"I")
    got = c.got()
    assert got[ins(1)] == ("ok", None)
    assert got[ins(2)] == ("rolled back", ROLLBACK)


def test_commit_and_chain_of_a_failed_block_is_a_rollback():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    c.q("SELECT 1/0", z=b"E", fail="22012")
    c.q("COMMIT AND CHAIN", "ROLLBACK", z=b"T").q(ins(2), "INSERT 0 1", z=b"T")
    c.q("COMMIT", "COMMIT", z=b"I")
    got = c.got()
    assert got[ins(1)] == ("rolled back", ROLLBACK) and got[ins(2)] == ("ok", None)
    assert got["SELECT 1/0"][0] == "error"


def test_rollback_and_chain_in_one_query():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    c.q(f"ROLLBACK AND CHAIN; {ins(2)}", "ROLLBACK", "INSERT 0 1", z=b"T")
    c.q("COMMIT", "COMMIT", z=b"I")
    got = c.got()
    assert got[ins(1)] == ("rolled back", ROLLBACK)
    assert got[f"ROLLBACK AND CHAIN; {ins(2)}"] == ("ok", None)


# --- a ROLLBACK among a Query's statements ----------------------------------------------


def test_begin_insert_rollback_select_in_one_query():
    sql = f"BEGIN; {ins(1)}; ROLLBACK; SELECT 1"
    c = Conn().q(sql, "BEGIN", "INSERT 0 1", "ROLLBACK", "SELECT 1", z=b"I")
    assert c.got()[sql] == ("rolled back", ROLLBACK)


def test_a_rollback_in_an_implicit_block_undoes_it():
    """PostgreSQL warns 'there is no transaction in progress' and rolls the implicit block
    back all the same."""
    sql = f"{ins(1)}; ROLLBACK"
    c = Conn().q(ins(0), "INSERT 0 1", z=b"I").q(sql, "INSERT 0 1", "ROLLBACK", z=b"I")
    got = c.got()
    assert got[sql] == ("rolled back", ROLLBACK)
    assert got[ins(0)] == ("ok", None)  # its own Query, committed before


def test_what_runs_after_the_rollback_in_the_same_query_commits():
    sql = f"{ins(1)}; ROLLBACK; {ins(2)}"
    c = Conn().q(sql, "INSERT 0 1", "ROLLBACK", "INSERT 0 1", z=b"I")
    assert c.got()[sql] == (
        "ok",
        "partly rolled back: statement 1 (INSERT 0 1) undone by the transaction's ROLLBACK",
    )


def test_what_a_commit_in_the_same_query_committed_stays():
    sql = f"{ins(1)}; COMMIT; {ins(2)}; ROLLBACK"
    c = Conn().q(sql, "INSERT 0 1", "COMMIT", "INSERT 0 1", "ROLLBACK", z=b"I")
    assert c.got()[sql] == (
        "ok",
        "partly rolled back: statement 3 (INSERT 0 1) undone by the transaction's ROLLBACK",
    )


def test_a_rollback_query_in_an_explicit_block_undoes_earlier_queries_too():
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    c.q(f"{ins(2)}; ROLLBACK; {ins(3)}", "INSERT 0 1", "ROLLBACK", "INSERT 0 1", z=b"I")
    got = c.got()
    assert got[ins(1)] == ("rolled back", ROLLBACK)
    assert got[f"{ins(2)}; ROLLBACK; {ins(3)}"][1].startswith("partly rolled back: statement 1")


def noted(c, sql: str) -> tuple:
    """A row's outcome, the server's message and the answer's note (its own field since
    session 37's second round: it was appended to an error's message, where a RAISE could
    write it)."""
    (r,) = [r for r in c.s.facts().statements if r["text"] == sql]
    return r["outcome"], r["message"], r["note"]


# --- errors in an implicit block --------------------------------------------------------


def test_an_error_in_an_implicit_block_undoes_the_statements_before_it():
    sql = f"{ins(1)}; SELECT 1/0"
    c = Conn().q(sql, "INSERT 0 1", z=b"I", fail="22012")
    assert noted(c, sql) == (
        "error",
        "boom",
        "statement 1 (INSERT 0 1) undone by the error that ended the transaction",
    )


def test_an_error_after_a_commit_in_the_same_query_undoes_what_followed_the_commit():
    sql = f"{ins(1)}; COMMIT; {ins(2)}; SELECT 1/0"
    c = Conn().q(sql, "INSERT 0 1", "COMMIT", "INSERT 0 1", z=b"I", fail="22012")
    got = noted(c, sql)
    assert got[:2] == ("error", "boom") and "statement 3 (INSERT 0 1) undone" in got[2], got
    assert "statement 1" not in got[2]


def test_rollback_and_chain_outside_a_block_is_an_error_that_undoes_the_implicit_block():
    sql = f"{ins(1)}; ROLLBACK AND CHAIN; {ins(2)}"
    c = Conn().q(sql, "INSERT 0 1", z=b"I", fail="25P01")
    got = noted(c, sql)
    assert got[:2] == ("error", "boom") and "statement 1 (INSERT 0 1) undone" in got[2], got


def test_an_error_row_in_an_explicit_block_names_what_the_block_end_undid():
    sql = f"BEGIN; {ins(1)}; SELECT 1/0"
    c = Conn().q(sql, "BEGIN", "INSERT 0 1", z=b"E", fail="22012").q("ROLLBACK", "ROLLBACK", z=b"I")
    assert noted(c, sql) == (
        "error",
        "boom",
        "statement 2 (INSERT 0 1) undone by the transaction's ROLLBACK",
    )


def test_a_failed_autocommit_statement_leaves_earlier_queries_alone():
    c = Conn().q(ins(1), "INSERT 0 1", z=b"I").q("SELECT 1/0", z=b"I", fail="22012")
    assert c.got()[ins(1)] == ("ok", None)


def ext(sql: str) -> list[bytes]:
    return [parse(sql), bind([]), execute()]


def test_an_error_in_a_sync_group_undoes_what_the_group_ran_before_it():
    s = Session().start()
    s.client(*ext(ins(1)), *ext("SELECT 1/0"), *ext(ins(3)), sync(), decisions=3)
    s.server(
        PC, BC, command_complete("INSERT 0 1"), PC, error("22012", "division by zero"), ready(b"I")
    )
    got = {r["text"]: (r["outcome"], r["message"]) for r in s.facts().statements}
    assert got[ins(1)] == ("rolled back", ERROR)
    assert ins(3) not in got  # skipped: never ran


def test_a_rollback_in_a_sync_group_without_begin_undoes_what_ran_before_it():
    s = Session().start()
    s.client(*ext(ins(1)), *ext("ROLLBACK"), *ext(ins(2)), sync(), decisions=3)
    s.server(
        PC,
        BC,
        command_complete("INSERT 0 1"),
        PC,
        BC,
        command_complete("ROLLBACK"),
        PC,
        BC,
        command_complete("INSERT 0 1"),
        ready(b"I"),
    )
    s.client(query("SELECT 1"), decisions=1).server(SELECT1, ready(b"I"))
    got = {r["text"]: r["outcome"] for r in s.facts().statements}
    assert (got[ins(1)], got[ins(2)]) == ("rolled back", "ok")


def test_rollback_and_chain_in_a_sync_group():
    s = Session().start()
    stmts = ["BEGIN", ins(1), "ROLLBACK AND CHAIN", ins(2), "COMMIT"]
    tags = ["BEGIN", "INSERT 0 1", "ROLLBACK", "INSERT 0 1", "COMMIT"]
    s.client(*[f for sql in stmts for f in ext(sql)], sync(), decisions=len(stmts))
    s.server(*[f for t in tags for f in (PC, BC, command_complete(t))], ready(b"I"))
    got = {r["text"]: r["outcome"] for r in s.facts().statements}
    assert (got[ins(1)], got[ins(2)]) == ("rolled back", "ok")


# --- two-phase commit: what derive claims -------------------------------------------------


def test_a_prepared_transaction_is_not_rolled_back():
    """PREPARE TRANSACTION ends the block without undoing it (COMMIT PREPARED or ROLLBACK
    PREPARED decides, maybe in another session: pending, tests/unit/test_audit_two_phase.py);
    one of a failed block is a rollback (tag ROLLBACK)."""
    c = Conn().q("BEGIN", "BEGIN", z=b"T").q(ins(1), "INSERT 0 1", z=b"T")
    c.q("PREPARE TRANSACTION 'g'", "PREPARE TRANSACTION", z=b"I")
    c.q("BEGIN", "BEGIN", z=b"T").q(ins(2), "INSERT 0 1", z=b"T").q(
        "SELECT 1/0", z=b"E", fail="22012"
    )
    c.q("PREPARE TRANSACTION 'h'", "ROLLBACK", z=b"I")
    got = c.got()
    assert got[ins(1)][0] == "prepared" and got[ins(2)] == ("rolled back", ROLLBACK)


def test_a_query_that_ends_two_transactions_by_rollback_names_both_undone_statements():
    sql = f"{ins(1)}; ROLLBACK; {ins(2)}; ROLLBACK; {ins(3)}"
    c = Conn().q(sql, "INSERT 0 1", "ROLLBACK", "INSERT 0 1", "ROLLBACK", "INSERT 0 1", z=b"I")
    assert c.got()[sql] == (
        "ok",
        "partly rolled back: statement 1 (INSERT 0 1), statement 3 (INSERT 0 1) undone by the "
        "transaction's ROLLBACK",
    )
    sql = f"{ins(4)}; ROLLBACK; {ins(5)}; ROLLBACK"
    assert Conn().q(sql, "INSERT 0 1", "ROLLBACK", "INSERT 0 1", "ROLLBACK", z=b"I").got()[sql] == (
        "rolled back",
        ROLLBACK,
    )
