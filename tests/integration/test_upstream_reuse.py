"""Upstream sessions kept for the same principal's next login (proxy/upstream_pool.py).

The server is the judge of what a kept backend carries into the next session: after the
reset it must hold nothing of the last one (temporary tables, prepared statements,
settings, cursors, advisory locks, LISTEN, the role), and it is only ever handed to the
same grant (or static user) asking for exactly the same startup parameters."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.pg import stat_activity, wait_backend_gone
from tests.support.rawpg import RawClient
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(60)

APP = "pgw-reuse-test"
AGENT = "reuse-agent"


def _grant_proxy(make_proxy, tmp_path, **overrides):
    return make_proxy(**{"grants.store": f"sqlite:///{tmp_path}/grants.db", "auth.users": {},
                         **overrides})  # fmt: skip


def _issue(p, task="REUSE-1", scopes="read:public.orders", **change):
    _grant, token = p.call(p.runtime.store.issue(**{
        "agent": AGENT, "task": task, "reason": "reuse", "granted_by": "pytest",
        "database": "app", "scopes": scopes, "ttl": "10m", **change,
    }))  # fmt: skip
    return _grant, token


def _connect(p, token, autocommit=True, application_name=APP, **params):
    return psycopg.connect(
        p.dsn(user=AGENT, password=token, application_name=application_name, **params),
        autocommit=autocommit,
    )


def _raw(p, token, application_name=APP):
    """A simple-protocol session (tests/support/rawpg.py)."""
    return RawClient.session(p.host, p.port, AGENT, token,
                             params={"application_name": application_name})  # fmt: skip


def _pid(conn) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


async def _pool_state(handle):
    pool = handle.server.upstream_pool
    return len(pool), sum(len(v) for v in pool._idle.values())


def _wait_parked(handle, n: int) -> None:
    assert wait_until(lambda: handle.call(_pool_state(handle)) == (n, n), 10, 0.02), (
        handle.call(_pool_state(handle))
    )


def _one(conn, sql):
    return conn.execute(sql).fetchone()[0]


def test_a_clean_end_leaves_the_backend_to_the_next_login_and_nothing_of_the_session(
    make_proxy, pg, tmp_path
):
    """A dry-run grant, so that every statement runs: what it leaves in the backend must
    be gone for the next session."""
    p = _grant_proxy(make_proxy, tmp_path)
    _grant, token = _issue(p, enforce=False)
    pg.psql(
        "DO $$ BEGIN CREATE ROLE pgw_reuse_other; EXCEPTION WHEN duplicate_object THEN NULL; "
        "END $$; GRANT pgw_reuse_other TO pgwitness",
        db="app",
    )
    with _connect(p, token) as conn:
        pid = _pid(conn)
        app = _one(conn, "SHOW application_name")
        path = _one(conn, "SHOW search_path")
        login = _one(conn, "SELECT current_user")
        conn.execute("PREPARE pgw_q AS SELECT 1")
        conn.execute("SET work_mem = '7MB'")
        conn.execute("SET application_name = 'changed-by-the-session'")
        conn.execute("SET search_path = pg_temp, public")
        conn.execute("LISTEN pgw_chan")
        conn.execute("SELECT pg_advisory_lock(4242)")
        conn.execute("BEGIN")
        conn.execute("DECLARE pgw_c CURSOR WITH HOLD FOR SELECT 1")
        conn.execute("COMMIT")
        conn.execute("SELECT nextval('orders_id_seq')")
        conn.execute("SET standard_conforming_strings = off")
        conn.execute("SET client_encoding = 'LATIN1'")
        conn.execute("SET ROLE pgw_reuse_other")
        assert _one(conn, "SELECT current_user") == "pgw_reuse_other"
    _wait_parked(p, 1)
    with _connect(p, token) as conn:
        assert _pid(conn) == pid  # the same backend
        assert _one(conn, "SELECT current_user") == login
        # what the policy's reading of statements rests on is back to the login's
        assert _one(conn, "SHOW standard_conforming_strings") == "on"
        assert _one(conn, "SHOW client_encoding") == "UTF8"
        assert _one(conn, "SELECT count(*) FROM pg_prepared_statements") == 0
        assert _one(conn, "SHOW work_mem") != "7MB"
        assert _one(conn, "SHOW application_name") == app  # the backend's tag, as at login
        assert _one(conn, "SHOW search_path") == path
        assert _one(conn, "SELECT count(*) FROM pg_listening_channels()") == 0
        assert _one(conn, "SELECT count(*) FROM pg_cursors") == 0
        locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        assert _one(conn, locks) == 0
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("SELECT currval('orders_id_seq')")
    pg.psql("DROP ROLE IF EXISTS pgw_reuse_other", db="app")


def test_over_the_simple_protocol_a_clean_end_leaves_the_backend_and_nothing_of_the_session(
    make_proxy, pg, tmp_path
):
    p = _grant_proxy(make_proxy, tmp_path)
    _grant, token = _issue(p, enforce=False)
    with _raw(p, token) as raw:
        pid = raw.pid
        work_mem = raw.scalar("SHOW work_mem")
        for sql in ("SET work_mem = '7MB'", "PREPARE pgw_q AS SELECT 1", "LISTEN pgw_chan",
                    "SELECT pg_advisory_lock(4242)"):  # fmt: skip
            assert raw.query(sql)[-1][:1] == b"Z"
    _wait_parked(p, 1)
    with _raw(p, token) as raw:
        assert raw.pid == pid
        assert raw.scalar("SHOW work_mem") == work_mem
        assert raw.scalar("SELECT count(*) FROM pg_prepared_statements") == "0"
        assert raw.scalar("SELECT count(*) FROM pg_listening_channels()") == "0"
        assert raw.scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ) == "0"


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TEMP TABLE pgw_kept (secret text)",  # DDL, even a temporary table
        "ALTER ROLE pgw_no_such_role SET work_mem = '3MB'",  # ROLE (fails, yet ran)
        "ALTER DATABASE app SET work_mem = '3MB'",  # UNKNOWN to the classifier
        "LOAD 'pgw_no_such_library'",  # a loaded library would stay in the backend
    ],
)
@pytest.mark.parametrize("protocol", ["extended", "simple"])
def test_a_session_that_ran_ddl_role_or_unknown_statements_leaves_its_backend_to_no_one(
    make_proxy, pg, tmp_path, sql, protocol
):
    """What such statements may change (a role's or database's defaults, the catalog) is
    what a new login picks up: the backend goes with the session."""
    p = _grant_proxy(make_proxy, tmp_path)
    _grant, token = _issue(p, enforce=False)
    if protocol == "simple":
        with _raw(p, token) as raw:
            pid = raw.pid
            raw.query(sql)  # run (and maybe refused by the server: it ran all the same)
    else:
        with _connect(p, token) as conn:
            pid = _pid(conn)
            try:
                conn.execute(sql)
            except psycopg.Error:
                pass  # run and refused by the server: it ran all the same
    assert wait_backend_gone(pg, pid, 10), stat_activity(pg, pid)
    assert p.call(_pool_state(p)) == (0, 0)
    pg.psql("ALTER DATABASE app RESET work_mem", db="app")


def test_a_static_users_backend_is_never_kept(make_proxy, pg):
    """Its statements are not classified: nothing says what they changed."""
    p = make_proxy()
    with psycopg.connect(p.dsn(), autocommit=True) as conn:
        pid = _pid(conn)
    assert wait_backend_gone(pg, pid, 10)
    assert p.call(_pool_state(p)) == (0, 0)


def test_a_session_that_ends_inside_a_transaction_takes_its_backend_with_it(make_proxy, pg, tmp_path):
    p = _grant_proxy(make_proxy, tmp_path)
    _grant, token = _issue(p)
    conn = _connect(p, token, autocommit=False)
    pid = _pid(conn)  # psycopg opened a transaction
    conn.close()
    assert wait_backend_gone(pg, pid, 10), stat_activity(pg, pid)
    assert p.call(_pool_state(p)) == (0, 0)
    with _connect(p, token) as again:
        assert _pid(again) != pid


def test_a_backend_serves_only_the_same_parameters(make_proxy, pg, tmp_path):
    p = _grant_proxy(make_proxy, tmp_path)
    _grant, token = _issue(p, scopes="read:public.orders set:work_mem")
    with _connect(p, token) as conn:
        first = _pid(conn)
    _wait_parked(p, 1)
    with _connect(p, token, options="'-c work_mem=5MB'") as conn:
        other = _pid(conn)
        assert other != first and _one(conn, "SHOW work_mem") == "5MB"
    with _connect(p, token, application_name="another-app") as conn:
        assert _pid(conn) not in (first, other)
    _wait_parked(p, 3)
    with _connect(p, token) as conn:
        assert _pid(conn) == first
    with _connect(p, token, options="'-c work_mem=5MB'") as conn:
        assert _pid(conn) == other and _one(conn, "SHOW work_mem") == "5MB"


def test_a_grants_backend_never_serves_another_grant(make_proxy, tmp_path):
    p = _grant_proxy(make_proxy, tmp_path)
    (one, token_one), (_two, token_two) = _issue(p, "REUSE-1"), _issue(p, "REUSE-2")

    def session(token):
        with _connect(p, token) as conn:
            return _pid(conn)

    first = session(token_one)
    _wait_parked(p, 1)
    second = session(token_two)  # the same agent, scopes and parameters: another grant
    assert second != first
    _wait_parked(p, 2)
    assert session(token_one) == first
    assert session(token_two) == second
    # a revoked grant's kept backend serves nobody: its login is refused
    p.call(p.runtime.store.revoke(one.id, by="pytest"))
    with pytest.raises(psycopg.OperationalError, match="revoked"):
        session(token_one)


async def _parked_pids(handle):
    return sorted(e.upstream.backend_pid for v in handle.server.upstream_pool._idle.values() for e in v)


def test_kept_backends_are_bounded_in_time_and_number(make_proxy, pg, tmp_path):
    p = _grant_proxy(make_proxy, tmp_path, **{"upstream.reuse_idle_seconds": 4.0,
                                              "upstream.reuse_max_idle": 1})  # fmt: skip
    _grant, token = _issue(p)
    a, b = _connect(p, token), _connect(p, token)
    pa, pb = _pid(a), _pid(b)
    a.close()
    _wait_parked(p, 1)
    b.close()  # no room: closed at once
    assert wait_backend_gone(pg, pb, 10)
    assert p.call(_parked_pids(p)) == [pa]
    assert wait_backend_gone(pg, pa, 15)  # unused for reuse_idle_seconds: closed
    assert p.call(_pool_state(p)) == (0, 0)
    # and a backend logged in longer ago than the pool's max age is not kept again

    async def age(seconds):
        p.server.upstream_pool.max_age = seconds

    p.call(age(0.0))
    with _connect(p, token) as conn:
        old = _pid(conn)
    assert wait_backend_gone(pg, old, 10)
    assert p.call(_pool_state(p)) == (0, 0)


def test_a_kept_backend_the_server_ends_is_dropped_and_the_next_login_gets_a_new_one(
    make_proxy, pg, tmp_path
):
    p = _grant_proxy(make_proxy, tmp_path)
    _grant, token = _issue(p)
    with _connect(p, token) as conn:
        pid = _pid(conn)
    _wait_parked(p, 1)
    pg.psql(f"SELECT pg_terminate_backend({pid})")
    assert wait_until(lambda: p.call(_pool_state(p)) == (0, 0), 10, 0.05)
    with _connect(p, token) as conn:
        assert _pid(conn) != pid and _one(conn, "SELECT 1 FROM orders LIMIT 1") == 1


def test_kept_backends_give_way_when_the_server_counts_them_against_a_limit(make_proxy, pg, tmp_path):
    """A role's CONNECTION LIMIT (or max_connections) counts kept backends: a login the
    server refuses for it (53300) closes the kept ones of that login and tries again."""
    pg.psql(
        "DO $$ BEGIN CREATE ROLE pgw_reuse_lim LOGIN PASSWORD 'lim-pw' CONNECTION LIMIT 2; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$; "
        "GRANT CONNECT ON DATABASE app TO pgw_reuse_lim; GRANT SELECT ON orders TO pgw_reuse_lim",
        db="app",
    )
    try:
        p = _grant_proxy(make_proxy, tmp_path, **{"upstream.user": "pgw_reuse_lim",
                                                  "upstream.password": "lim-pw"})  # fmt: skip
        _grant, token = _issue(p)
        with _connect(p, token) as conn:  # (the first login also loads the catalog)
            pid = _pid(conn)
        _wait_parked(p, 1)  # it holds one of the role's two connections
        with _connect(p, token, application_name="other-app") as busy:  # the other one
            with _connect(p, token, application_name="third-app") as conn:  # 53300, then room
                assert _pid(conn) not in (pid, _pid(busy))
            assert wait_backend_gone(pg, pid, 10)
    finally:
        pg.psql("DROP OWNED BY pgw_reuse_lim; DROP ROLE IF EXISTS pgw_reuse_lim", db="app")


def test_off_means_every_login_gets_its_own_backend(make_proxy, pg, tmp_path):
    p = _grant_proxy(make_proxy, tmp_path, **{"upstream.reuse_idle_seconds": 0})
    _grant, token = _issue(p)
    with _connect(p, token) as conn:
        pid = _pid(conn)
    assert wait_backend_gone(pg, pid, 10)
    with _connect(p, token) as conn:
        assert _pid(conn) != pid
    assert p.call(_pool_state(p)) == (0, 0)


def test_the_audit_answer_says_which_sessions_ran_on_a_kept_backend(make_proxy, tmp_path):
    """Correlation with the database's log by tag or pid needs the session's times once a
    backend serves several sessions: the answer says which ones were reused."""
    import io
    import json
    from contextlib import redirect_stdout

    from proxy.cli import main as cli_main
    from tests.support.recording import recording

    p = _grant_proxy(make_proxy, tmp_path, **recording(tmp_path))
    _grant, token = _issue(p)
    pids = []
    for _ in range(2):
        with _connect(p, token) as conn:
            pids.append(_pid(conn))
            conn.execute("SELECT 1 FROM orders LIMIT 1")
        _wait_parked(p, 1)
    p.stop()  # every session's end sealed and stored
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli_main([
            "audit", "--store", str(tmp_path / "rec"), "--index", str(tmp_path / "a.duckdb"),
            "--public-key", str(tmp_path / "signing.key.pub"), "--format", "json",
        ])  # fmt: skip
    assert rc == 0
    sessions = sorted(
        (s for g in json.loads(out.getvalue())["grants"] for s in g["sessions"]),
        key=lambda s: s["started_at"],
    )
    assert pids[0] == pids[1]
    assert [(s["backend_pid"], s["upstream_reused"]) for s in sessions] == [
        (pids[0], False), (pids[0], True)
    ]
    assert sessions[0]["upstream_application_name"] == sessions[1]["upstream_application_name"]
    assert sessions[0]["ended_at"] <= sessions[1]["started_at"]  # one at a time
