"""recorder.audit.derive and savepoints (session 19): what ``ROLLBACK TO SAVEPOINT`` undid is
``rolled back`` in the audit, as a block that ends without COMMIT is (commit e2ddc15); what
ran before the savepoint was set, or after it was released, is not. Judged on hand-made
recordings, the server's answers as PostgreSQL 15 gives them (``ROLLBACK TO`` answers with
the tag ``ROLLBACK`` and leaves the block open: ReadyForQuery 'T')."""

from __future__ import annotations

import pytest

from devtools.testing import bind, command_complete, error, execute, parse, query, ready, sync
from recorder.audit import derive
from recorder.records import Kind
from tests.support.audit_recordings import BC, PC, SELECT1, Session


def ins(v: int) -> str:
    return f"INSERT INTO t VALUES ({v})"


class Block:
    """A session inside a transaction block, one simple Query at a time."""

    def __init__(self) -> None:
        self.s = Session().start()
        self.status = b"I"
        self.q("BEGIN", "BEGIN")

    def q(self, sql: str, *tags: str, fail: str | None = None) -> Block:
        answer = [command_complete(t) for t in tags]
        if fail is not None:
            answer.append(error(fail, "boom"))
            self.status = b"E"
        elif sql.upper().startswith(("BEGIN", "START")):
            self.status = b"T"
        elif sql.upper().startswith(("COMMIT", "END", "ABORT")) or (
                sql.upper().startswith("ROLLBACK") and " TO " not in f" {sql.upper()} "):
            self.status = b"I"
        elif sql.upper().startswith("ROLLBACK"):
            self.status = b"T"  # ROLLBACK TO recovers a failed block
        self.s.client(query(sql), decisions=1).server(*answer, ready(self.status))
        return self

    def outcomes(self) -> dict[str, tuple]:
        return {r["text"]: (r["outcome"], r["message"]) for r in self.s.facts().statements}

    def outcome(self, text: str) -> str:
        return self.outcomes()[text][0]


# --- the statements' text --------------------------------------------------------------------


@pytest.mark.parametrize(("sql", "op"), [
    ("SAVEPOINT a", ("set", "a")),
    ("savepoint A", ("set", "a")),
    ('SAVEPOINT "A b"', ("set", "A b")),
    ('SAVEPOINT "x""y"', ("set", 'x"y')),
    ("  /* c */ SAVEPOINT -- x\n a ;", ("set", "a")),
    ("RELEASE SAVEPOINT a", ("release", "a")),
    ("RELEASE a", ("release", "a")),
    ("rollback to savepoint a", ("rollback", "a")),
    ("ROLLBACK TO a", ("rollback", "a")),
    ("ROLLBACK WORK TO SAVEPOINT a", ("rollback", "a")),
    ("ROLLBACK TRANSACTION TO a", ("rollback", "a")),
    ("SAVEPOINT " + "n" * 70, ("set", "n" * 63)),  # NAMEDATALEN: identifiers are cut
    ("ROLLBACK", None), ("ROLLBACK AND CHAIN", None), ("ABORT", None), ("COMMIT", None),
    ("ROLLBACK PREPARED 'a'", None), ("SELECT 'SAVEPOINT a'", None), ("RELEASE", None),
])
def test_savepoint_statements_are_read_as_the_server_reads_them(sql, op):
    assert derive.savepoint_op(sql) == op


def test_statements_of_a_query_split_where_the_server_splits_them():
    assert derive.statements_of("SAVEPOINT a; INSERT INTO t VALUES (';'); ROLLBACK TO a") == [
        "SAVEPOINT a", "INSERT INTO t VALUES (';')", "ROLLBACK TO a"]
    assert derive.statements_of("select $x$;$x$; ;; /* ; */ select E'\\';'--;\n;") == [
        "select $x$;$x$", "/* ; */ select E'\\';'--;"]
    assert derive.statements_of('select ";" /* a /* b; */ c; */') == ['select ";" /* a /* b; */ c; */']


# --- simple protocol ---------------------------------------------------------------------


def test_rollback_to_savepoint_marks_what_ran_after_it_only():
    b = Block().q(ins(1), "INSERT 0 1").q("SAVEPOINT s", "SAVEPOINT")
    b.q(ins(2), "INSERT 0 1").q("UPDATE t SET v = 3", "UPDATE 2").q("SELECT 1", "SELECT 1")
    b.q("ROLLBACK TO SAVEPOINT s", "ROLLBACK").q(ins(4), "INSERT 0 1").q("COMMIT", "COMMIT")
    got = b.outcomes()
    assert got[ins(1)] == ("ok", None)
    assert got[ins(2)] == ("rolled back", "undone by ROLLBACK TO SAVEPOINT s")
    assert got["UPDATE t SET v = 3"][0] == "rolled back"
    assert got["SELECT 1"][0] == "ok"  # a read changed nothing to undo
    assert got["ROLLBACK TO SAVEPOINT s"][0] == "ok"
    assert got[ins(4)] == ("ok", None)  # after the rollback: committed
    assert got["SAVEPOINT s"][0] == "ok" and got["COMMIT"][0] == "ok"


def test_rollback_to_without_the_word_savepoint():
    b = Block().q("SAVEPOINT s", "SAVEPOINT").q(ins(1), "INSERT 0 1")
    b.q("ROLLBACK TO s", "ROLLBACK").q("COMMIT", "COMMIT")
    assert b.outcome(ins(1)) == "rolled back"


def test_a_failed_statement_then_rollback_to_savepoint():
    b = Block().q(ins(1), "INSERT 0 1").q("SAVEPOINT s", "SAVEPOINT").q(ins(2), "INSERT 0 1")
    b.q("SELECT 1/0", fail="22012").q("ROLLBACK TO SAVEPOINT s", "ROLLBACK")
    b.q(ins(3), "INSERT 0 1").q("COMMIT", "COMMIT")
    got = b.outcomes()
    assert [got[ins(i)][0] for i in (1, 2, 3)] == ["ok", "rolled back", "ok"]
    assert got["SELECT 1/0"][0] == "error"


def test_nested_savepoints_roll_back_to_the_one_named():
    b = Block().q("SAVEPOINT a", "SAVEPOINT").q(ins(1), "INSERT 0 1")
    b.q("SAVEPOINT b", "SAVEPOINT").q(ins(2), "INSERT 0 1")
    b.q("ROLLBACK TO b", "ROLLBACK").q(ins(3), "INSERT 0 1")
    # (the recording ends inside the block: what it has not undone is of unknown outcome)
    assert [b.outcome(ins(i)) for i in (1, 2, 3)] == ["unknown", "rolled back", "unknown"]
    # b is still there: a second rollback to it undoes what ran since
    b.q("ROLLBACK TO b", "ROLLBACK")
    assert [b.outcome(ins(i)) for i in (1, 2, 3)] == ["unknown", "rolled back", "rolled back"]
    # rolling back to a destroys b and undoes everything since a
    b.q(ins(4), "INSERT 0 1").q("ROLLBACK TO a", "ROLLBACK").q(ins(5), "INSERT 0 1")
    b.q("COMMIT", "COMMIT")
    assert [b.outcome(ins(i)) for i in (1, 2, 3, 4, 5)] == [
        "rolled back", "rolled back", "rolled back", "rolled back", "ok"]


def test_the_latest_savepoint_of_a_name_is_the_one_rolled_back_to():
    b = Block().q("SAVEPOINT a", "SAVEPOINT").q(ins(1), "INSERT 0 1")
    b.q("SAVEPOINT a", "SAVEPOINT").q(ins(2), "INSERT 0 1")
    b.q("ROLLBACK TO a", "ROLLBACK").q("COMMIT", "COMMIT")
    assert [b.outcome(ins(i)) for i in (1, 2)] == ["ok", "rolled back"]


def test_release_undoes_nothing_and_ends_the_savepoint():
    b = Block().q("SAVEPOINT a", "SAVEPOINT").q(ins(1), "INSERT 0 1")
    b.q("RELEASE SAVEPOINT a", "RELEASE").q(ins(2), "INSERT 0 1").q("COMMIT", "COMMIT")
    assert [b.outcome(ins(i)) for i in (1, 2)] == ["ok", "ok"]


def test_release_of_an_inner_savepoint_keeps_its_rows_in_the_outer_one():
    b = Block().q("SAVEPOINT a", "SAVEPOINT").q(ins(1), "INSERT 0 1")
    b.q("SAVEPOINT b", "SAVEPOINT").q(ins(2), "INSERT 0 1").q("RELEASE b", "RELEASE")
    b.q("ROLLBACK TO a", "ROLLBACK").q("COMMIT", "COMMIT")
    assert [b.outcome(ins(i)) for i in (1, 2)] == ["rolled back", "rolled back"]


def test_release_of_an_outer_savepoint_releases_the_inner_ones():
    """RELEASE a also destroys b, set after it: a later ROLLBACK TO b fails and undoes
    nothing."""
    b = Block().q("SAVEPOINT a", "SAVEPOINT").q("SAVEPOINT b", "SAVEPOINT")
    b.q(ins(1), "INSERT 0 1").q("RELEASE a", "RELEASE")
    b.q("ROLLBACK TO b", fail="3B001").q("ROLLBACK", "ROLLBACK")
    got = b.outcomes()
    assert got["ROLLBACK TO b"][0] == "error"
    # the block's own end undid it
    assert got[ins(1)] == ("rolled back", "its transaction block ended without COMMIT (ROLLBACK)")


def test_rows_before_the_savepoint_was_set_stay_ok():
    b = Block().q(ins(1), "INSERT 0 1").q("SAVEPOINT s", "SAVEPOINT")
    b.q("ROLLBACK TO s", "ROLLBACK").q("COMMIT", "COMMIT")
    assert b.outcome(ins(1)) == "ok"


def test_a_savepoint_does_not_outlive_its_block():
    """A new block knows nothing of the old block's savepoints (the server forgets them)."""
    b = Block().q("SAVEPOINT s", "SAVEPOINT").q("COMMIT", "COMMIT")
    b.q("BEGIN", "BEGIN").q(ins(1), "INSERT 0 1").q("ROLLBACK TO s", fail="3B001")
    b.q("ROLLBACK", "ROLLBACK")
    assert b.outcomes()["ROLLBACK TO s"][0] == "error"
    assert b.outcome(ins(1)) == "rolled back"  # by the block's end


def test_an_unknown_savepoint_in_a_failed_rollback_undoes_nothing():
    b = Block().q("SAVEPOINT s", "SAVEPOINT").q(ins(1), "INSERT 0 1")
    b.q("ROLLBACK TO nope", fail="3B001").q("ROLLBACK TO s", "ROLLBACK").q(ins(2), "INSERT 0 1")
    b.q("COMMIT", "COMMIT")
    assert [b.outcome(ins(i)) for i in (1, 2)] == ["rolled back", "ok"]


def test_quoted_and_unquoted_names_are_matched_as_the_server_folds_them():
    b = Block().q('SAVEPOINT "S"', "SAVEPOINT").q("SAVEPOINT s", "SAVEPOINT").q(ins(1), "INSERT 0 1")
    b.q("ROLLBACK TO SAVEPOINT S", "ROLLBACK")  # unquoted S is s, the inner one
    b.q(ins(2), "INSERT 0 1").q('ROLLBACK TO "S"', "ROLLBACK").q("COMMIT", "COMMIT")
    assert [b.outcome(ins(i)) for i in (1, 2)] == ["rolled back", "rolled back"]


def test_savepoints_in_one_multi_statement_query():
    """One Query, one row: the rollback undid all of its changes, so the row is rolled back;
    a row whose changes were only partly undone stays ok and says which statement."""
    b = Block().q(f"SAVEPOINT a; {ins(1)}; ROLLBACK TO a", "SAVEPOINT", "INSERT 0 1", "ROLLBACK")
    b.q(f"{ins(2)}; SAVEPOINT b; {ins(3)}", "INSERT 0 1", "SAVEPOINT", "INSERT 0 1")
    b.q("ROLLBACK TO b", "ROLLBACK").q("COMMIT", "COMMIT")
    got = b.outcomes()
    assert got[f"SAVEPOINT a; {ins(1)}; ROLLBACK TO a"] == (
        "rolled back", "undone by ROLLBACK TO SAVEPOINT a")
    assert got[f"{ins(2)}; SAVEPOINT b; {ins(3)}"] == (
        "ok", "partly rolled back: statement 3 (INSERT 0 1) undone by ROLLBACK TO SAVEPOINT b")


def test_a_savepoint_set_by_a_query_that_then_failed_still_exists():
    """The server set b before the Query's third statement failed: ROLLBACK TO b works and
    undoes what ran since b only."""
    b = Block().q(ins(1), "INSERT 0 1")
    b.q(f"SAVEPOINT b; {ins(2)}; SELECT 1/0", "SAVEPOINT", "INSERT 0 1", fail="22012")
    b.q("ROLLBACK TO b", "ROLLBACK").q("COMMIT", "COMMIT")
    got = b.outcomes()
    assert got[ins(1)][0] == "ok" and got["ROLLBACK TO b"][0] == "ok"


def test_the_whole_block_rolled_back_after_a_savepoint_rollback_keeps_its_message():
    b = Block().q("SAVEPOINT s", "SAVEPOINT").q(ins(1), "INSERT 0 1").q("ROLLBACK TO s", "ROLLBACK")
    b.q(ins(2), "INSERT 0 1").q("ROLLBACK", "ROLLBACK")
    got = b.outcomes()
    assert got[ins(1)] == ("rolled back", "undone by ROLLBACK TO SAVEPOINT s")
    assert got[ins(2)] == ("rolled back", "its transaction block ended without COMMIT (ROLLBACK)")


# --- extended protocol and pipelines -------------------------------------------------------


def ext(sql: str) -> list[bytes]:
    return [parse(sql), bind([]), execute()]


def test_savepoints_in_one_pipelined_sync_group():
    s = Session().start()
    stmts = ["BEGIN", ins(1), "SAVEPOINT s", ins(2), "ROLLBACK TO SAVEPOINT s", ins(3), "COMMIT"]
    tags = ["BEGIN", "INSERT 0 1", "SAVEPOINT", "INSERT 0 1", "ROLLBACK", "INSERT 0 1", "COMMIT"]
    s.client(*[f for sql in stmts for f in ext(sql)], sync(), decisions=len(stmts))
    s.server(*[f for t in tags for f in (PC, BC, command_complete(t))], ready(b"I"))
    got = {r["text"]: r["outcome"] for r in s.facts().statements}
    assert [got[ins(i)] for i in (1, 2, 3)] == ["ok", "rolled back", "ok"]


def test_an_error_in_a_pipeline_then_rollback_to_in_the_next_group():
    s = Session().start()
    s.client(query("BEGIN"), decisions=1).server(command_complete("BEGIN"), ready(b"T"))
    s.client(*ext(ins(1)), *ext("SAVEPOINT s"), *ext(ins(2)), *ext("SELECT 1/0"), *ext(ins(9)),
             sync(), decisions=5)
    s.server(PC, BC, command_complete("INSERT 0 1"), PC, BC, command_complete("SAVEPOINT"),
             PC, BC, command_complete("INSERT 0 1"), PC, BC, error("22012", "division by zero"),
             ready(b"E"))
    s.client(*ext("ROLLBACK TO s"), *ext(ins(3)), *ext("COMMIT"), sync(), decisions=3)
    s.server(PC, BC, command_complete("ROLLBACK"), PC, BC, command_complete("INSERT 0 1"),
             PC, BC, command_complete("COMMIT"), ready(b"I"))
    got = {r["text"]: r["outcome"] for r in s.facts().statements}
    assert [got[ins(i)] for i in (1, 2, 3)] == ["ok", "rolled back", "ok"]
    assert got["SELECT 1/0"] == "error" and ins(9) not in got  # skipped: never ran


def test_a_portal_suspended_write_is_undone_by_a_savepoint_rollback():
    s = Session().start()
    s.client(query("BEGIN"), decisions=1).server(command_complete("BEGIN"), ready(b"T"))
    s.client(query("SAVEPOINT s"), decisions=1).server(command_complete("SAVEPOINT"), ready(b"T"))
    # decided a write by the policy: it ran whole at its first Execute (red-team round 22)
    s.client(parse("DELETE FROM t RETURNING v"), bind([]), execute(), sync())
    s.meta("allow", b'{"denied": false, "outcome": "allowed", "statements": '
                    b'[{"class": "WRITE", "allowed": true}]}', kind=Kind.DECISION)
    s.server(PC, BC, b"s\x00\x00\x00\x04", ready(b"T"))
    s.client(query("ROLLBACK TO s"), decisions=1).server(command_complete("ROLLBACK"), ready(b"T"))
    s.client(query("COMMIT"), decisions=1).server(command_complete("COMMIT"), ready(b"I"))
    got = {r["text"]: r["outcome"] for r in s.facts().statements}
    assert got["DELETE FROM t RETURNING v"] == "rolled back"


def test_outside_a_block_nothing_is_a_savepoint():
    """SAVEPOINT outside a block fails (25P01 "can only be used in transaction blocks"):
    what ran around it stays as it was."""
    s = Session().start()
    s.client(query(ins(1)), decisions=1).server(command_complete("INSERT 0 1"), ready())
    s.client(query("SAVEPOINT s"), decisions=1).server(error("25P01", "no block"), ready())
    s.client(query(ins(2)), decisions=1).server(command_complete("INSERT 0 1"), ready())
    s.client(query("ROLLBACK TO s"), decisions=1).server(error("25P01", "no block"), ready())
    s.client(query("SELECT 1"), decisions=1).server(SELECT1, ready())
    got = {r["text"]: r["outcome"] for r in s.facts().statements}
    assert (got[ins(1)], got[ins(2)]) == ("ok", "ok")
