"""pg_terminate_backend / pg_cancel_backend of the grant's own sessions (session 29), the
server the judge.

Drivers' suites end a connection of their own this way (psycopg 28 tests, pg8000 9,
asyncpg 1: ``select pg_terminate_backend(%s)`` with another connection's
``backend_pid``, or ``pg_terminate_backend(pg_backend_pid())``). With a role the upstream
sessions share the server lets a session signal any of that role's backends (another
agent's, the proxy's own catalog sessions), so the call was refused whatever it named.
Now one backend named by an integer literal, a bare parameter (decided at each Bind on
the value bound) or ``pg_backend_pid()`` is allowed when it is a backend of the grant's
own live sessions through this proxy (``Server.grant_backends``), and refused otherwise
(another grant's session, a backend the proxy does not relay, the call over rows).

Grants (agent ``s29s-bot``): ``base`` = ``read:public.s29s`` (the two sessions that signal
each other), ``other`` = the same scopes, another grant (a victim it may not signal)."""

from __future__ import annotations

import struct
import threading
import time

import psycopg
import pytest

from policy.grants.model import make_dsn
from tests.support import planted
from tests.support.backends import alive, backend_exists, gone
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse

pytestmark = pytest.mark.timeout(120)

AGENT = "s29s-bot"
SCOPES = "read:public.s29s"
SETUP = "CREATE TABLE public.s29s (k int); GRANT SELECT ON public.s29s TO PUBLIC;"
TEARDOWN = "DROP TABLE IF EXISTS public.s29s;"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(
        pg, tmp_path_factory, "s29s", agent=AGENT, scopes=SCOPES, setup=SETUP,
        teardown=TEARDOWN, grants={"other": SCOPES},
    ) as handle:  # fmt: skip
        yield handle


def _connect(px, key: str = "base") -> psycopg.Connection:
    dsn = make_dsn(AGENT, px.tokens[key], px.host, px.port, "app")
    return psycopg.connect(dsn, autocommit=True)


def test_a_sibling_session_terminated_by_a_literal(pg, px):
    with _connect(px) as victim, _connect(px) as killer:
        pid = victim.pgconn.backend_pid
        assert killer.execute(f"select pg_terminate_backend({pid})").fetchone() == (True,)
        assert gone(pg, pid)
        assert not alive(victim)
        assert alive(killer)


def test_a_sibling_session_terminated_by_a_bound_parameter(pg, px):
    with _connect(px) as victim, _connect(px) as killer:
        pid = victim.pgconn.backend_pid
        cur = killer.execute("select pg_terminate_backend(%s)", [pid], prepare=True)
        assert cur.fetchone() == (True,)
        assert gone(pg, pid)
        assert not alive(victim)


def test_the_session_itself(pg, px):
    conn = _connect(px)
    pid = conn.pgconn.backend_pid
    with pytest.raises(psycopg.OperationalError) as err:
        conn.execute("select pg_terminate_backend(pg_backend_pid())")
    assert "terminating connection due to administrator command" in str(err.value)
    assert gone(pg, pid)
    conn.close()


def test_cancel_of_a_sibling_statement(pg, px):
    with _connect(px) as victim, _connect(px) as other:
        pid = victim.pgconn.backend_pid
        errors = []

        def sleep():
            try:
                victim.execute("SELECT pg_sleep(30)")
            except psycopg.Error as exc:
                errors.append(exc)

        t = threading.Thread(target=sleep)
        t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "pg_sleep" not in pg.psql(
            f"SELECT query FROM pg_stat_activity WHERE pid = {pid}"
        ):
            time.sleep(0.05)
        assert other.execute("select pg_cancel_backend(%s)", [pid]).fetchone() == (True,)
        t.join(15)
        assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled)
        assert alive(victim)


def test_another_grants_session_is_refused(pg, px):
    with _connect(px, "other") as victim, _connect(px) as killer:
        pid = victim.pgconn.backend_pid
        for sql, args in (
            (f"select pg_terminate_backend({pid})", None),
            ("select pg_terminate_backend(%s)", [pid]),
            (f"select pg_cancel_backend({pid})", None),
            (f"select pg_terminate_backend({pid}, 1000)", None),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
                killer.execute(sql, args)
            assert "own sessions" in str(err.value)
        assert alive(victim) and backend_exists(pg, pid)
        assert alive(killer)


def test_a_backend_the_proxy_does_not_relay_is_refused(pg, px):
    outside = int(pg.psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"))
    with _connect(px) as killer:
        theirs = [
            int(x)
            for x in pg.psql(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND application_name NOT LIKE '%s29s%'"
            ).split()
        ]
        own = killer.pgconn.backend_pid
        for pid in [outside, 0, 1, own + 100000] + [p for p in theirs if p != own][:3]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                killer.execute(f"select pg_terminate_backend({pid})")
        assert alive(killer)


@pytest.mark.parametrize(
    "sql",
    [
        "select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid()",
        "select pg_terminate_backend(-1)",
        "select pg_terminate_backend((select max(pid) from pg_stat_activity))",
        "select pg_terminate_backend(pg_backend_pid() + 1)",
        "select pg_signal_backend(pg_backend_pid(), 15)",
        "PREPARE s29s_p AS select pg_terminate_backend($1)",
        'select "pg_terminate_backend:1"()',
    ],
)
def test_other_forms_stay_refused(px, sql):
    with _connect(px) as conn:
        with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.SyntaxError)):
            conn.execute(sql)
        assert alive(conn)


def test_binary_and_text_values_at_bind(pg, px):
    """Raw protocol: one named statement bound with the sibling's pid in binary (int4),
    then with another grant's pid as text: the first runs, the second is refused."""
    with _connect(px, "other") as stranger, _connect(px) as victim:
        theirs, pid = stranger.pgconn.backend_pid, victim.pgconn.backend_pid
        with RawClient.session(px.host, px.port, AGENT, px.tokens["base"]) as c:
            c.send(parse("s29s", "select pg_cancel_backend($1)") + SYNC)
            c.until_ready()
            c.send(bind("", "s29s", [struct.pack("!i", pid)], [1]) + execute() + SYNC)
            out = b"".join(c.until_ready())
            assert b"42501" not in out, out
            c.send(bind("", "s29s", [str(theirs).encode()]) + execute() + SYNC)
            out = b"".join(c.until_ready())
            assert b"42501" in out and b"own sessions" in out, out
            c.send(bind("", "s29s", [struct.pack("!q", pid)], [1]) + execute() + SYNC)
            out = b"".join(c.until_ready())
            assert b"42501" in out, out  # an int8 value: not what the call takes
        assert alive(stranger) and alive(victim)
