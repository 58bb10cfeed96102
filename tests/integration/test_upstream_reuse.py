"""Upstream sessions kept for the same principal's next login (proxy/upstream_pool.py).

The server is the judge of what a kept backend carries into the next session: after the
reset it must hold nothing of the last one (temporary tables, prepared statements,
settings, cursors, advisory locks, LISTEN, the role), and it is only ever handed to the
same grant (or static user) asking for exactly the same startup parameters."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.pg import stat_activity, wait_backend_gone
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(60)

APP = "pgw-reuse-test"


def _connect(handle, autocommit=True, **params):
    return psycopg.connect(handle.dsn(application_name=APP, **params), autocommit=autocommit)


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


def test_a_clean_end_leaves_the_backend_to_the_next_login_and_nothing_of_the_session(make_proxy, pg):
    p = make_proxy()
    pg.psql(
        "DO $$ BEGIN CREATE ROLE pgw_reuse_other; EXCEPTION WHEN duplicate_object THEN NULL; "
        "END $$; GRANT pgw_reuse_other TO pgwitness",
        db="app",
    )
    with _connect(p) as conn:
        pid = _pid(conn)
        app = _one(conn, "SHOW application_name")
        login = _one(conn, "SELECT current_user")
        conn.execute("CREATE TEMP TABLE pgw_kept (secret text)")
        conn.execute("INSERT INTO pgw_kept VALUES ('pgw-secret-kept')")
        conn.execute("CREATE FUNCTION pg_temp.pgw_kept_fn() RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$")
        conn.execute("PREPARE pgw_q AS SELECT 1")
        conn.execute("SET work_mem = '7MB'")
        conn.execute("SET application_name = 'changed-by-the-session'")
        conn.execute("SET search_path = pg_temp, public")
        conn.execute("LISTEN pgw_chan")
        conn.execute("SELECT pg_advisory_lock(4242)")
        conn.execute("BEGIN")
        conn.execute("DECLARE pgw_c CURSOR WITH HOLD FOR SELECT 1")
        conn.execute("COMMIT")
        conn.execute("SELECT nextval(pg_get_serial_sequence('orders', 'id'))")
        conn.execute("SET ROLE pgw_reuse_other")
        assert _one(conn, "SELECT current_user") == "pgw_reuse_other"
    _wait_parked(p, 1)
    with _connect(p) as conn:
        assert _pid(conn) == pid  # the same backend
        assert _one(conn, "SELECT current_user") == login
        assert _one(conn, "SELECT to_regclass('pg_temp.pgw_kept')") is None
        assert _one(conn, "SELECT count(*) FROM pg_proc WHERE proname = 'pgw_kept_fn'") == 0
        assert _one(conn, "SELECT count(*) FROM pg_prepared_statements") == 0
        assert _one(conn, "SHOW work_mem") != "7MB"
        assert _one(conn, "SHOW application_name") == app  # the backend's tag, as at login
        assert _one(conn, "SHOW search_path") == '"$user", public'
        assert _one(conn, "SELECT count(*) FROM pg_listening_channels()") == 0
        assert _one(conn, "SELECT count(*) FROM pg_cursors") == 0
        locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        assert _one(conn, locks) == 0
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("SELECT currval(pg_get_serial_sequence('orders', 'id'))")
    pg.psql("DROP ROLE IF EXISTS pgw_reuse_other", db="app")


def test_a_session_that_ends_inside_a_transaction_takes_its_backend_with_it(make_proxy, pg):
    p = make_proxy()
    conn = _connect(p, autocommit=False)
    pid = _pid(conn)  # psycopg opened a transaction
    conn.close()
    assert wait_backend_gone(pg, pid, 10), stat_activity(pg, pid)
    assert p.call(_pool_state(p)) == (0, 0)
    with _connect(p) as again:
        assert _pid(again) != pid


def test_a_backend_serves_only_the_same_parameters(make_proxy, pg):
    p = make_proxy()
    with _connect(p) as conn:
        first = _pid(conn)
    _wait_parked(p, 1)
    with _connect(p, options="'-c work_mem=5MB'") as conn:
        other = _pid(conn)
        assert other != first and _one(conn, "SHOW work_mem") == "5MB"
    with psycopg.connect(p.dsn(application_name="another-app"), autocommit=True) as conn:
        assert _pid(conn) not in (first, other)
    _wait_parked(p, 3)
    with _connect(p) as conn:
        assert _pid(conn) == first
    with _connect(p, options="'-c work_mem=5MB'") as conn:
        assert _pid(conn) == other and _one(conn, "SHOW work_mem") == "5MB"


def test_a_grants_backend_never_serves_another_grant(make_proxy, tmp_path):
    p = make_proxy(**{"grants.store": f"sqlite:///{tmp_path}/grants.db", "auth.users": {}})

    def issue(task):
        return p.call(p.runtime.store.issue(
            agent="reuse-agent", task=task, reason="reuse", granted_by="pytest", database="app",
            scopes="read:public.orders", ttl="10m",
        ))  # fmt: skip

    (one, token_one), (_two, token_two) = issue("REUSE-1"), issue("REUSE-2")

    def session(token):
        with psycopg.connect(p.dsn(user="reuse-agent", password=token, application_name=APP),
                             autocommit=True) as conn:  # fmt: skip
            return _one(conn, "SELECT pg_backend_pid()")

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


def test_kept_backends_are_bounded_in_time_and_number(make_proxy, pg):
    p = make_proxy(**{"upstream.reuse_idle_seconds": 0.5, "upstream.reuse_max_idle": 1})
    a, b = _connect(p), _connect(p)
    pa, pb = _pid(a), _pid(b)
    a.close()
    _wait_parked(p, 1)
    b.close()  # no room: closed
    assert wait_backend_gone(pg, pb, 10)
    assert stat_activity(pg, pa) != ""
    assert wait_backend_gone(pg, pa, 10)  # unused for reuse_idle_seconds: closed
    assert p.call(_pool_state(p)) == (0, 0)
    # and a backend logged in longer ago than the pool's max age is not kept again

    async def age(seconds):
        p.server.upstream_pool.max_age = seconds

    p.call(age(0.0))
    with _connect(p) as conn:
        old = _pid(conn)
    assert wait_backend_gone(pg, old, 10)
    assert p.call(_pool_state(p)) == (0, 0)


def test_a_kept_backend_the_server_ends_is_dropped_and_the_next_login_gets_a_new_one(make_proxy, pg):
    p = make_proxy()
    with _connect(p) as conn:
        pid = _pid(conn)
    _wait_parked(p, 1)
    pg.psql(f"SELECT pg_terminate_backend({pid})")
    assert wait_until(lambda: p.call(_pool_state(p)) == (0, 0), 10, 0.05)
    with _connect(p) as conn:
        assert _pid(conn) != pid and _one(conn, "SELECT 1") == 1


def test_kept_backends_give_way_when_the_server_counts_them_against_a_limit(make_proxy, pg):
    """A role's CONNECTION LIMIT (or max_connections) counts kept backends: a login the
    server refuses for it (53300) closes the kept ones of that login and tries again."""
    pg.psql(
        "DO $$ BEGIN CREATE ROLE pgw_reuse_lim LOGIN PASSWORD 'lim-pw' CONNECTION LIMIT 1; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$; "
        "GRANT CONNECT ON DATABASE app TO pgw_reuse_lim",
        db="app",
    )
    try:
        p = make_proxy(**{"upstream.user": "pgw_reuse_lim", "upstream.password": "lim-pw"})
        with _connect(p) as conn:
            pid = _pid(conn)
        _wait_parked(p, 1)  # it holds the role's one connection
        with psycopg.connect(p.dsn(application_name="another-app"), autocommit=True) as conn:
            assert _pid(conn) != pid
        assert wait_backend_gone(pg, pid, 10)
    finally:
        pg.psql("DROP OWNED BY pgw_reuse_lim; DROP ROLE IF EXISTS pgw_reuse_lim", db="app")


def test_off_means_every_login_gets_its_own_backend(make_proxy, pg):
    p = make_proxy(**{"upstream.reuse_idle_seconds": 0})
    with _connect(p) as conn:
        pid = _pid(conn)
    assert wait_backend_gone(pg, pid, 10)
    with _connect(p) as conn:
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

    p = make_proxy(**recording(tmp_path))
    pids = []
    for _ in range(2):
        with _connect(p) as conn:
            pids.append(_pid(conn))
            conn.execute("SELECT 1")
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
