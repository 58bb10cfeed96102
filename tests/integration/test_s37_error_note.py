"""Session 37, second round: an error's note is the answer's own, through a recording proxy and
PostgreSQL (on hand-made recordings: tests/unit/test_s37_error_note_unit.py).

derive appended what an error's transaction undid to the server's message, the one field a
``RAISE`` writes: a granted function raising ``division by zero (statement 1 (INSERT 0 1)
undone by the error that ended the transaction)`` after a COMMIT read, in every output, as a
real division by zero whose transaction undid an INSERT. The note is ``note`` now (index
schema 4): the text report writes the server's message as a literal and the note after it,
JSON carries both, the CSV's ``message`` is the server's.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from recorder.literal import sql_literal
from tests.support.recording import one_live_session
from tests.support.server_log import logging_role, open_case, run_cli

pytestmark = pytest.mark.timeout(120)

NOTE = "statement 1 (INSERT 0 1) undone by the error that ended the transaction"
FORGED = f"division by zero ({NOTE})"

SETUP = """
DROP SCHEMA IF EXISTS s37n CASCADE;
CREATE SCHEMA s37n;
GRANT USAGE ON SCHEMA s37n TO pgwitness;
CREATE TABLE s37n.t (id int);
GRANT ALL ON s37n.t TO pgwitness;
CREATE FUNCTION s37n.say(msg text) RETURNS int LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION '%', msg; END $$;
GRANT EXECUTE ON FUNCTION s37n.say(text) TO pgwitness;
"""
SCOPES = "read:s37n.t write:s37n.t execute:s37n.say"


@pytest.fixture(scope="module")
def server_log(pg):
    with logging_role(pg, SETUP, "s37n") as logged:
        yield logged


@pytest.fixture
def case(server_log, make_proxy, tmp_path, request):
    return open_case(server_log, make_proxy, tmp_path, request, "S37N-", SCOPES)


def cli(case, *argv: str) -> tuple[int, str]:
    return run_cli("audit", "--store", str(case.tmp / "rec"), "--index",
                   str(case.tmp / "audit.duckdb"), "--public-key",
                   str(case.tmp / "signing.key.pub"), *argv)  # fmt: skip


def test_a_raise_of_the_note_reads_apart_from_a_real_error_and_its_note(case):
    real = "INSERT INTO s37n.t VALUES (1); SELECT 1/0"
    forged = f"INSERT INTO s37n.t VALUES (2); COMMIT; SELECT s37n.say({sql_literal(FORGED)})"
    c = case.client()
    sid = one_live_session(case.h)
    for sql in (real, forged):
        got = c.query(sql)
        assert any(f[:1] == b"E" for f in got), got
    c.close()
    rows = {r["text"]: r for r in case.answer(sid)["statement_rows"]}
    assert (rows[real]["outcome"], rows[real]["message"], rows[real]["note"]) == (
        "error",
        "division by zero",
        NOTE,
    ), rows[real]
    assert (rows[forged]["outcome"], rows[forged]["sqlstate"]) == ("error", "P0001")
    assert (rows[forged]["message"], rows[forged]["note"]) == (FORGED, None), rows[forged]
    # the text report: the server's words a literal, the note the report's, after it
    rc, out = cli(case, "--task", case.task, "--format", "text")
    results = [x.strip() for x in out.splitlines() if x.strip().startswith("-> ERROR ")]
    assert len(results) == 2, out
    assert results[0].startswith(f"-> ERROR 22012 'division by zero'; {NOTE} ("), results
    assert results[1].startswith(f"-> ERROR P0001 {sql_literal(FORGED)} ("), results
    assert results[1].endswith(" ms)") and "; statement" not in results[1], results
    # JSON carries both as they are; the CSV's message is the server's, its columns as before
    rc, out = cli(case, "--task", case.task, "--format", "json")
    (s,) = [s for g in json.loads(out)["grants"] for s in g["sessions"]]
    assert {r["text"]: (r["message"], r["note"]) for r in s["statement_rows"]} == {
        real: ("division by zero", NOTE),
        forged: (FORGED, None),
    }
    rc, out = cli(case, "--task", case.task, "--format", "csv")
    got = {r["text"]: r["message"] for r in csv.DictReader(io.StringIO(out))
           if r["kind"] == "statement"}  # fmt: skip
    assert got == {real: "division by zero", forged: FORGED}, got
