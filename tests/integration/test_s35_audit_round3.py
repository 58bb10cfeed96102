"""Session 35, round 3: an auditor's red-team round on the audit answer, with PostgreSQL as
the judge (the method of tests/integration/test_s35_audit_round.py: a session through a
recording proxy, ``pgwitness audit`` read back, held to what the server says).

Findings (fixed in recorder/audit/; the unit tests in
tests/unit/test_s35_audit_round3_unit.py fail without the fix, as these do):

* the client's ``application_name`` set in ``options`` (``-c application_name=...``,
  ``--application-name=...``: libpq's ``PGOPTIONS``) or under another case
  (``Application_Name``): the server named the session so (``SHOW application_name``), the
  answer said the client gave no name (``null``, none in the text report) beside the
  database's name for it, as if the proxy had named it;
* notifications: a granted function LISTENs on a channel no ``listen:`` scope names, the
  client LISTENs on one its scope names, another session notifies both. The client got one,
  the proxy withheld the other (recorded: ``notification.withheld``, rule deny.listen); the
  answer said nothing of either, in any format. Each session now lists both (JSON, text,
  CSV), and OCSF has a Blocked event for the withheld one (the Parquet export: neither yet).

And one on hand-made rows only (no real session spans midnight in a test): the text report
gave a statement's time of day alone, so in a session over more than a day a line read as
any of its days.

Fixed after the round by the coordinator (outside recorder/audit/): a client's
``Application_Name`` (another case) was lost through the proxy, which sent its own
``application_name`` after it (``proxy.handshake._one_application_name``).

What held (probes not kept): the newest refusals (``scope.execute``, "leaving an argument
out") over a simple Query, Parse/Bind/Execute with a value and with every argument given:
each a denial with its rule, reason and text in the JSON, text, CSV and OCSF (Blocked),
nothing in the server's log; two grants issued for one task, a session each, each denying
what the other allows: ``--task`` lists both grants, each session under its own, the
denials under theirs, ``sessions --task`` both; seven Sync groups and a two-statement Query
pipelined in one write behind ``pg_sleep``s: each timed from the ReadyForQuery before it,
in order, their durations the sleeps'.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from common.wire import messages as m
from tests.support.rawpg import RawClient, error_fields
from tests.support.recording import issue_grant, one_live_session
from tests.support.server_log import AGENT, logging_role, open_case, run_cli

pytestmark = pytest.mark.timeout(90)

SETUP = """
DROP SCHEMA IF EXISTS r3 CASCADE; DROP SCHEMA IF EXISTS r3x CASCADE;
CREATE SCHEMA r3; CREATE SCHEMA r3x;
GRANT USAGE ON SCHEMA r3, r3x TO pgwitness;
CREATE TABLE r3.t (id int, v text);
CREATE FUNCTION r3.subscribe() RETURNS int LANGUAGE plpgsql AS $$ BEGIN LISTEN r3_chan; RETURN 1; END $$;
INSERT INTO r3.t SELECT g, 'v' || g FROM generate_series(1, 5) g;
GRANT ALL ON r3.t TO pgwitness;
CREATE FUNCTION r3x.cutoff() RETURNS int IMMUTABLE LANGUAGE sql AS $$ SELECT 42 $$;
CREATE FUNCTION r3.g(a int DEFAULT r3x.cutoff(), b text DEFAULT 'x') RETURNS int LANGUAGE sql
  AS $$ SELECT $1 $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA r3, r3x TO pgwitness;
"""
SCOPES = "read:r3.t write:r3.t execute:r3.g"
SYNC = m.frame(b"S", b"")


@pytest.fixture(scope="module")
def server_log(pg):
    with logging_role(pg, SETUP, "r3") as logged:
        yield logged
    pg.psql("DROP SCHEMA IF EXISTS r3x CASCADE;", db="app")


@pytest.fixture
def case(server_log, make_proxy, tmp_path, request):
    return open_case(server_log, make_proxy, tmp_path, request, "S35R3-", SCOPES)


def audit_cli(case, *argv: str) -> tuple[int, str]:
    return run_cli("audit", "--store", str(case.tmp / "rec"), "--index",
                   str(case.tmp / "audit.duckdb"), "--public-key",
                   str(case.tmp / "signing.key.pub"), "--task", case.task, *argv)  # fmt: skip


def answered(c) -> list[tuple[str, str | None]]:
    out = []
    for f in c.frames_until_ready():
        t = chr(f[0])
        out.append((t, f[5:-1].decode() if t == "C" else error_fields(f).get("C") if t == "E"
                    else None))  # fmt: skip
    return out


# --- 1. the client's application_name, set through ``options`` ------------------------


@pytest.mark.parametrize("options", ["-c application_name=viaopts", "--application-name=viaopts",
                                     "-c application_name=first -capplication_name=viaopts"])
def test_the_clients_application_name_set_in_options_is_the_clients(case, options):
    """A client that sets its ``application_name`` in ``options`` (``-c name=value`` or
    ``--name=value``, as libpq's ``PGOPTIONS`` does): the server's session is named so
    (``SHOW application_name``, the proxy passes the client's name upstream untagged, as a
    direct connection would). The answer said the client gave no name (``null``; the text
    report printed none) beside the database's ``viaopts``, as if the proxy had named it."""
    c = RawClient.session(case.h.host, case.h.port, AGENT, case.token,
                          params={"options": options})  # fmt: skip
    sid = one_live_session(case.h)
    assert c.scalar("SHOW application_name") == "viaopts"  # the server's word
    c.close()
    s = case.answer(sid)
    assert (s["application_name"], s["upstream_application_name"]) == ("viaopts", "viaopts"), s
    rc, out = audit_cli(case, "--format", "text")
    assert "application_name 'viaopts'" in out, out


def test_the_clients_application_name_under_another_case_is_the_clients(case):
    """PostgreSQL reads a startup parameter's name as any setting's, case folded: a packet's
    ``Application_Name`` names a direct connection's session. The answer said the client
    gave none."""
    c = RawClient.session(case.h.host, case.h.port, AGENT, case.token,
                          params={"Application_Name": "mixedcase"})  # fmt: skip
    sid = one_live_session(case.h)
    c.close()
    assert case.answer(sid)["application_name"] == "mixedcase"


@pytest.mark.parametrize("params", [{"Application_Name": "mixedcase"},
                                    {"options": "-c application_name=mixedcase"}])  # fmt: skip
def test_a_session_named_under_another_case_is_so_named_through_the_proxy(case, params):
    """Fixed by the coordinator (``proxy.handshake._one_application_name``); was: a direct connection with ``Application_Name`` is
    named ``mixedcase`` (PostgreSQL folds the name); through the proxy ``SHOW
    application_name`` says ``''``: the handshake reads ``params.get("application_name")``
    (none), then adds its own ``application_name`` (the client's name, or ``pgw:<tag>/``)
    after the client's ``Application_Name``, and the packet's last wins. Both the answer's
    ``upstream_application_name`` and the database say ``''`` (true of the database); the
    client did not get the name it asked for. The fix: the handshake takes the client's
    name as ``recorder.audit.derive.client_application_name`` does and drops the client's
    other spellings of it from what it sends upstream."""
    c = RawClient.session(case.h.host, case.h.port, AGENT, case.token, params=params)
    sid = one_live_session(case.h)
    shown = c.scalar("SHOW application_name")
    c.close()
    assert case.answer(sid)["upstream_application_name"] == shown  # the answer: the database's
    assert shown == "mixedcase"


# --- 2. notifications: what the client received, and what the proxy withheld ---------------


def test_the_answer_says_which_notifications_the_client_got_and_which_were_withheld(case):
    """A granted function LISTENs on ``r3_chan`` (code the grant runs; the client's own
    LISTEN of it would need a ``listen:`` scope), the client LISTENs on ``r3_ok`` (its
    scope). Another session notifies both: the server sends both to the session's backend
    (``pg_notify`` in one transaction, delivered together), the proxy passes ``r3_ok``'s on
    and withholds ``r3_chan``'s (recorded: ``notification.withheld``, rule deny.listen). The
    answer said nothing of either: what the agent received from other sessions, and what
    the proxy kept from it, were in no format."""
    _, token = issue_grant(case.h, scopes="read:r3.t execute:r3.subscribe listen:r3_ok",
                           task=case.task)  # fmt: skip
    c = RawClient.session(case.h.host, case.h.port, AGENT, token)
    sid = one_live_session(case.h)
    c.query("SELECT r3.subscribe()")
    c.query("LISTEN r3_ok")
    case.pg.psql("NOTIFY r3_chan, 'not yours'; NOTIFY r3_ok, 'yours';", db="app")
    got = c.query("SELECT 1")
    c.close()
    assert [f[:1] for f in got][:1] == [b"A"] and b"r3_ok" in got[0] and b"r3_chan" not in b"".join(got)
    s = case.answer(sid)
    notes = [(x["channel"], x["delivered"], x.get("rule")) for x in s["notifications"]]
    assert notes == [("r3_chan", False, "deny.listen"), ("r3_ok", True, None)], s["notifications"]
    rc, out = audit_cli(case, "--format", "text")
    assert "NOTIFICATION 'r3_ok' (21 bytes) received" in out and (
        "NOTIFICATION 'r3_chan' (" in out and "WITHHELD deny.listen" in out), out
    rc, out = audit_cli(case, "--format", "csv")
    rows = [(r["kind"], r["text"], r["decision"], r["rule"], r["outcome"])
            for r in csv.DictReader(io.StringIO(out)) if r["kind"].startswith("notification")]
    assert rows == [("notification.withheld", "r3_chan", "denied", "deny.listen", "withheld"),
                    ("notification", "r3_ok", "", "", "received")], rows
    rc, _ = run_cli("export", "--store", str(case.tmp / "rec"), "--index",
                    str(case.tmp / "audit.duckdb"), "--public-key",
                    str(case.tmp / "signing.key.pub"), "--out", str(case.tmp / "lake"),
                    "--as", "ocsf")  # fmt: skip
    assert rc == 0
    events = [json.loads(x) for f in (case.tmp / "lake").rglob("*.jsonl")
              for x in f.read_text().splitlines()]  # fmt: skip
    (e,) = [e for e in events if e["unmapped"].get("event") == "notification.withheld"]
    assert (e["disposition"], e["unmapped"]["channel"], e["actor"]["session"]["uid"]) == (
        "Blocked", "r3_chan", sid), e
