"""The client's own ``SET TimeZone`` is reported back where code may set settings (session
37; the drivers' differential: psycopg loaded every ``timestamptz`` in the login's zone).

Where code the policy does not read may set settings (``Policy.encoding_code``), the relay
withholds every ``TimeZone`` report (``_FREE_TEXT_REPORTED``): a granted function may set it
to what it read (red-team round 79). A report is now passed when its Sync group is a simple
Query of one statement, the client's own SET, SET LOCAL or RESET of TimeZone, sent with
nothing in flight (``Relay._own_timezone``): no code runs in it, and RESET returns to the
login's value, reported at login. Attacked here: a granted function sets TimeZone to a
vault row (directly the server reports it; through the proxy never), before the client's
SET, in the same Query as the SET, and pipelined in front of it. Session 38: the same over
the extended protocol, for a Sync group of one Parse, its Bind and Execute (a Describe beside
them) sent with nothing in flight (``relay._alone_in_its_group``: JDBC's single statement),
attacked with code before and after the SET in its group, a group split over two writes,
a Bind of code's statement, and pipelining in either order.
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(300)

AGENT = "s37-tz"
SECRET_ZONE = "Asia/Kathmandu"  # the vault's row: a zone no test sets itself
SETUP = f"""
SET ROLE pgwitness;
CREATE SCHEMA s37z;
CREATE TABLE s37z.vault (zone text);
INSERT INTO s37z.vault VALUES ('{SECRET_ZONE}');
CREATE FUNCTION s37z.leak() RETURNS int LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  PERFORM set_config('TimeZone', (SELECT zone FROM s37z.vault), false);
  RETURN 1;
END $$;
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS s37z CASCADE;\n"
SCOPES = "read:public.* execute:s37z.leak"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s37tz", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


_proxied = planted.psycopg_proxied
_direct = planted.psycopg_direct


def _reports(frames: list[bytes]) -> list[str]:
    return [f[5:].split(b"\x00")[1].decode() for f in frames
            if f[:1] == b"S" and f[5:].startswith(b"TimeZone\x00")]  # fmt: skip


def test_the_secret_is_reported_directly(pg, px):
    """The probe can leak: directly, the server reports the vault's zone."""
    with _direct(pg) as conn:
        conn.execute("SELECT s37z.leak()")
        assert conn.info.parameter_status("TimeZone") == SECRET_ZONE


def test_the_clients_own_set_is_reported_and_code_s_never(pg, px):
    with _proxied(px) as conn:
        login = conn.info.parameter_status("TimeZone")
        conn.execute("SELECT s37z.leak()")  # code sets it: withheld
        assert conn.info.parameter_status("TimeZone") == login != SECRET_ZONE
        conn.execute("SET TimeZone TO 'Europe/Rome'")
        assert conn.info.parameter_status("TimeZone") == "Europe/Rome"
        value = conn.execute("SELECT '2000-07-01 00:00+00'::timestamptz").fetchone()[0]
        assert value.utcoffset().total_seconds() == 7200
        conn.execute("SELECT s37z.leak()")  # again: withheld, Rome stays what it knows
        assert conn.info.parameter_status("TimeZone") == "Europe/Rome"
        conn.execute("RESET TimeZone")  # back to the login's: reported
        assert conn.info.parameter_status("TimeZone") == login


@pytest.mark.parametrize("query", [
    "SELECT s37z.leak(); SET TimeZone TO 'Europe/Rome'",
    "SET TimeZone TO 'Europe/Rome'; SELECT s37z.leak()",
])  # fmt: skip
def test_a_set_beside_code_in_one_query_is_not_passed(px, query):
    with RawClient.session(px.host, px.port, px.agent, px.token) as c:
        frames = c.query(query)
    assert SECRET_ZONE not in b"".join(frames).decode("utf-8", "replace")
    assert _reports(frames) == [], frames


def test_a_set_pipelined_behind_code_is_not_passed(px):
    """Both Queries in one write: the SET is sent while the code's is in flight, so its
    group is not known to be alone (``idle``): both reports withheld."""
    with RawClient.session(px.host, px.port, px.agent, px.token) as c:
        c.send(m.query("SELECT s37z.leak()"), m.query("SET TimeZone TO 'Europe/Rome'"))
        frames = c.frames_until_ready() + c.frames_until_ready()
    assert SECRET_ZONE not in b"".join(frames).decode("utf-8", "replace")
    assert _reports(frames) == [], frames


# --- the extended protocol (session 38): a Sync group of one Parse, its Bind and Execute --

SET_ROME = "SET TimeZone TO 'Europe/Rome'"
DESCRIBE_PORTAL = m.frame(b"D", b"P\x00")  # (Describe of the unnamed portal)


def _extended(px, *writes: bytes) -> list[bytes]:
    """Each write sent as it is (a socket write each), every answer until the last write's
    groups are answered."""
    with RawClient.session(px.host, px.port, px.agent, px.token) as c:
        frames: list[bytes] = []
        for write in writes:
            c.send(write)
            for _ in range(write.count(m.SYNC)):
                frames += c.frames_until_ready()
    return frames


@pytest.mark.parametrize("describe", [b"", DESCRIBE_PORTAL], ids=["plain", "described"])
def test_the_clients_own_set_over_the_extended_protocol_is_reported(px, describe):
    """JDBC's single statement: Parse, Bind, (Describe,) Execute, Sync in one write."""
    frames = _extended(
        px, m.parse("", SET_ROME) + m.bind_no_params() + describe + m.execute() + m.SYNC,
        m.parse("", "RESET TimeZone") + m.bind_no_params() + m.execute() + m.SYNC,
    )  # fmt: skip
    reports = _reports(frames)
    assert reports[0] == "Europe/Rome" and len(reports) == 2, frames
    assert reports[1] not in ("Europe/Rome", SECRET_ZONE), frames  # (the login's, again)


LEAK = m.parse("", "SELECT s37z.leak()") + m.bind_no_params() + m.execute()
SET = m.parse("", SET_ROME) + m.bind_no_params() + m.execute()


@pytest.mark.parametrize("writes", [
    (LEAK + SET + m.SYNC,),  # code first in the group, the SET after it
    (SET + LEAK + m.SYNC,),  # the SET first, code after it in the same group
    (SET, LEAK + m.SYNC),  # the group split over two writes: the Sync comes with code
    (m.parse("lk", "SELECT s37z.leak()") + m.SYNC,  # a Bind of code's statement in the group
     m.parse("", SET_ROME) + m.bind_no_params(statement="lk") + m.execute() + m.SYNC),
    (LEAK + m.SYNC + SET + m.SYNC,),  # pipelined: the SET's group sent while code's is in flight
], ids=["code-then-set", "set-then-code", "split", "bind-of-code", "pipelined"])  # fmt: skip
def test_an_extended_set_beside_code_is_not_passed(px, writes):
    frames = _extended(px, *writes)
    assert SECRET_ZONE not in b"".join(frames).decode("utf-8", "replace")
    assert SECRET_ZONE not in _reports(frames), frames
    if writes[0].startswith(LEAK):
        assert _reports(frames) == [], frames


def test_an_extended_set_pipelined_before_code_passes_only_its_own_report(px):
    """The SET's group sent while idle, code's group right behind it in the same write:
    the SET's report (at its own ReadyForQuery) is passed, code's is not."""
    frames = _extended(px, SET + m.SYNC + LEAK + m.SYNC)
    assert SECRET_ZONE not in b"".join(frames).decode("utf-8", "replace")
    assert _reports(frames) == ["Europe/Rome"], frames
