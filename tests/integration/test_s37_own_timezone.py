"""The client's own ``SET TimeZone`` is reported back where code may set settings (session
37; the drivers' differential: psycopg loaded every ``timestamptz`` in the login's zone).

Where code the policy does not read may set settings (``Policy.encoding_code``), the relay
withholds every ``TimeZone`` report (``_FREE_TEXT_REPORTED``): a granted function may set it
to what it read (red-team round 79). A report is now passed when its Sync group is a simple
Query of one statement, the client's own SET, SET LOCAL or RESET of TimeZone, sent with
nothing in flight (``Relay._own_timezone``): no code runs in it, and RESET returns to the
login's value, reported at login. Attacked here: a granted function sets TimeZone to a
vault row (directly the server reports it; through the proxy never), before the client's
SET, in the same Query as the SET, and pipelined in front of it.
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
