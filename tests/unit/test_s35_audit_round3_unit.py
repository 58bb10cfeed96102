"""Session 35, round 3: the audit answer's lies, on hand-made recordings (no proxy).

* the client's ``application_name``: PostgreSQL names a session after the startup
  packet's ``application_name`` with its name case folded (``Application_Name``), else a
  ``-c application_name=...`` (or ``--application-name=...``) in ``options`` (libpq's
  ``PGOPTIONS``); the answer read the packet's ``application_name`` key alone and said the
  client gave no name (``derive.client_application_name``);
* the text report gave a statement's time of day only: in a session over more than a day,
  a line read as any of its days (a line of another date than the line before now says it).

Each test fails without its fix. The same cases through the proxy, judged by the server
(``SHOW application_name``): tests/integration/test_s35_audit_round3.py.
"""

from __future__ import annotations

import io

import pytest

from recorder.audit.answer import write_text
from tests.support.audit_recordings import Session, answer_of


def client_name(params: dict) -> str | None:
    return Session().start(startup_params=params).facts().session["application_name"]


@pytest.mark.parametrize(("params", "want"), [
    ({"application_name": "psql"}, "psql"),
    ({}, None),
    ({"options": "-c application_name=viaopts"}, "viaopts"),
    ({"options": "-capplication_name=viaopts"}, "viaopts"),
    ({"options": "--application-name=viaopts"}, "viaopts"),
    ({"options": "-c statement_timeout=5 -c Application_Name=a\\ b"}, "a b"),
    ({"options": "-c application_name=first -c application_name=second"}, "second"),
    ({"options": "-c application_name=opts", "application_name": "explicit"}, "explicit"),
    ({"application_name": "explicit", "options": "-c application_name=opts"}, "explicit"),
    ({"Application_Name": "mixedcase"}, "mixedcase"),
    ({"fallback_application_name": "fb"}, "fb"),
    ({"fallback_application_name": "fb", "options": "-c application_name=o"}, "o"),
    ({"options": "-c --application_name=x"}, None),  # -c takes the next word: no such setting
    ({"options": "-c"}, None),
])  # fmt: skip
def test_the_clients_application_name_is_read_as_postgresql_reads_the_packet(params, want):
    assert client_name(params) == want


# --- 2. the text report dates a statement of another day than its session's start ----------


def text_of_a_session_across_midnight() -> str:
    a = answer_of([{"n": 1, "text": "SELECT 1", "decision": "allowed", "rule": "scope.read",
                    "params": None, "command_tag": "SELECT 1", "message": None, "outcome": "ok",
                    "sqlstate": None}])  # fmt: skip
    s = a["other_sessions"][0]
    s.update(started_at="2026-12-05T23:59:00Z", ended_at="2026-12-07T00:01:00Z")
    first = s["statement_rows"][0]
    s["statement_rows"] = [
        {**first, "ts": "2026-12-05T23:59:30.000000Z"},
        {**first, "n": 2, "text": "DELETE FROM t", "ts": "2026-12-06T10:00:00.000000Z"},
        {**first, "n": 3, "text": "SELECT 3", "ts": "2026-12-06T23:59:59.000000Z"},
        {**first, "n": 4, "text": "SELECT 4", "ts": "2026-12-07T00:00:01.000000Z"},
    ]
    out = io.StringIO()
    write_text(a, out)
    return out.getvalue()


def test_a_statement_of_another_day_than_its_sessions_start_is_dated():
    """A statement's line gave its time of day only: in a session from 23:59 one day to
    00:01 two days later, a ``DELETE`` at 10:00 of the second day read as one at 10:00 of
    any day the session spanned (the header's), the first's by default. A line of another
    date than the line before it (the session's start, for the first) says its date."""
    lines = [x.strip() for x in text_of_a_session_across_midnight().splitlines() if "[allowed" in x]
    assert [x.split(" [")[0] for x in lines] == [
        "23:59:30.000", "2026-12-06 10:00:00.000", "23:59:59.000", "2026-12-07 00:00:01.000"], lines
