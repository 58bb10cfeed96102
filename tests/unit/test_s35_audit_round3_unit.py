"""Session 35, round 3: the audit answer's lies, on hand-made recordings (no proxy).

* the client's ``application_name``: PostgreSQL names a session after the startup
  packet's ``application_name`` with its name case folded (``Application_Name``), else a
  ``-c application_name=...`` (or ``--application-name=...``) in ``options`` (libpq's
  ``PGOPTIONS``); the answer read the packet's ``application_name`` key alone and said the
  client gave no name (``derive.client_application_name``);
* the text report gave a statement's time of day only: in a session over more than a day,
  a line read as any of its days (a line of another date than the line before now says it);
* notifications: the answer said nothing of those the client received (another session's
  NOTIFY on a channel it listens on) nor of those the proxy withheld from it
  (``notification.withheld``, rule deny.listen): derive records each received one (its
  channel, the notifying backend, the frame's size; never its payload), and each session of
  the answer lists both (JSON ``notifications``, a text line each, CSV rows), OCSF has a
  Blocked event for each one withheld.

Each test fails without its fix. The same cases through the proxy, judged by the server
(``SHOW application_name``): tests/integration/test_s35_audit_round3.py.
"""

from __future__ import annotations

import csv
import io
import json
import struct

import pytest

from devtools.testing import frame, query, ready
from recorder.audit import index, ocsf
from recorder.audit.answer import Filters, audit, write_csv, write_text
from tests.support.audit_index import Index, at, us
from tests.support.audit_recordings import SELECT1, Session, answer_of


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


# --- 3. notifications: received, and withheld by the proxy ---------------------------------


def notification(pid: int, channel: str, payload: str) -> bytes:
    return frame(b"A", struct.pack(">i", pid) + channel.encode() + b"\x00" + payload.encode() + b"\x00")


def test_derive_records_each_notification_the_client_received():
    """Its channel, the notifying backend, the frame's size (never its payload), at the
    time its record was written; a ``notification.withheld`` stays the proxy's event."""
    s = Session().start()
    s.client(query("SELECT 1"), decisions=1)
    s.meta("notification.withheld", b'{"bytes":30,"channel":"vault","n":1,"rule":"deny.listen"}')
    s.server(notification(77, "ok", "yours"), SELECT1, ready())
    evs = [(e["kind"], e["payload"]) for e in s.facts().events]
    assert evs == [("notification.withheld", {"bytes": 30, "channel": "vault", "n": 1,
                                              "rule": "deny.listen"}),
                   ("notification", {"channel": "ok", "pid": 77, "bytes": 18})], evs
    assert [r["text"] for r in s.facts().statements] == ["SELECT 1"]


def with_notifications() -> Index:
    ix = Index().session("s1", "g1", 0, 60)
    index._insert(ix.con, "session_events", [
        {"session_id": "s1", "seq": 3, "ts": us(10), "kind": "notification.withheld",
         "payload": json.dumps({"channel": "vault", "bytes": 30, "rule": "deny.listen", "n": 1,
                                "more_not_recorded": False}), "verified": True},
        {"session_id": "s1", "seq": 4, "ts": us(10), "kind": "notification",
         "payload": json.dumps({"channel": "ok", "pid": 77, "bytes": 18}), "verified": True},
        {"session_id": "s1", "seq": 5, "ts": us(20), "kind": "grant_extended",
         "payload": "{}", "verified": True},
    ])  # fmt: skip
    return ix


def test_the_answer_lists_the_notifications_received_and_withheld():
    """The JSON (each session's ``notifications``), the text and the CSV: the answer said
    nothing of either (s35 round 3)."""
    a = audit(with_notifications().con, Filters())
    (s,) = a["other_sessions"]
    assert [(x["channel"], x["delivered"], x["rule"], x["bytes"], x["pid"])
            for x in s["notifications"]] == [("vault", False, "deny.listen", 30, None),
                                             ("ok", True, None, 18, 77)], s["notifications"]
    out = io.StringIO()
    write_text(a, out)
    assert "NOTIFICATION 'vault' (30 bytes) WITHHELD deny.listen" in out.getvalue()
    assert "NOTIFICATION 'ok' (18 bytes) received (from backend pid 77)" in out.getvalue()
    out = io.StringIO()
    write_csv(a, out)
    rows = [(r["kind"], r["text"], r["decision"], r["rule"], r["outcome"], r["rows"])
            for r in csv.DictReader(io.StringIO(out.getvalue()))
            if r["kind"].startswith("notification")]  # fmt: skip
    assert rows == [("notification.withheld", "vault", "denied", "deny.listen", "withheld", "30"),
                    ("notification", "ok", "", "", "received", "18")], rows


def test_the_window_holds_the_notifications_in_it():
    a = audit(with_notifications().con, Filters(since=at(15)))
    assert a["other_sessions"][0]["notifications"] == []


def test_ocsf_has_a_blocked_event_for_a_withheld_notification():
    """OCSF had no event of it (the answer and the CSV list it now): Datastore Activity,
    Blocked by deny.listen, its channel and size, never a payload. A received one is no
    event (as a statement's rows are none)."""
    evs = [e for e in ocsf.events(with_notifications().con)
           if e.get("unmapped", {}).get("event") == "notification.withheld"]  # fmt: skip
    assert len(evs) == 1, evs
    (e,) = evs
    assert (e["class_uid"], e["disposition"], e["actor"]["authorizations"][0]["policy"]["name"],
            e["unmapped"]["channel"], e["unmapped"]["bytes"], e["actor"]["session"]["uid"]) == (
        6005, "Blocked", "deny.listen", "vault", 30, "s1"), e  # fmt: skip
    assert e["time"] == int(at(10).timestamp() * 1000)
