"""What a connection costs the proxy: the upstream SCRAM key is derived once, grant
lookups reuse their SQLite connection, and none of it weakens revocation.

Timing is for ``bench/``; these tests check behaviour: the cache's answers equal a fresh
derivation, a changed password or salt is a different key, and a revoked grant never
logs in however warm the caches are (the server as the judge: the session never runs a
statement).
"""

from __future__ import annotations

import psycopg
import pytest

from common.wire import messages as m
from common.wire.scram import MECHANISM, ScramClient, salted_password
from proxy import upstream
from tests.support.fixtures_proxy import ProxyHandle, proxy_config
from tests.support.proxies import issue
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(120)


def test_cached_salted_password_equals_a_fresh_derivation_and_is_derived_once(monkeypatch):
    calls = []

    def counting(password, salt, iterations):
        calls.append((password, salt, iterations))
        return salted_password(password, salt, iterations)

    monkeypatch.setattr(upstream, "salted_password", counting)
    monkeypatch.setattr(upstream, "_SALTED", {})
    a = upstream.cached_salted_password("pw", b"salt-1", 4096)
    assert a == salted_password("pw", b"salt-1", 4096)
    assert upstream.cached_salted_password("pw", b"salt-1", 4096) == a
    assert len(calls) == 1
    # a rotated password, another salt or iteration count: another key
    assert upstream.cached_salted_password("pw2", b"salt-1", 4096) != a
    assert upstream.cached_salted_password("pw", b"salt-2", 4096) != a
    assert upstream.cached_salted_password("pw", b"salt-1", 4097) != a
    assert len(calls) == 4
    for i in range(upstream._SALTED_MAX * 2):  # bounded
        upstream.cached_salted_password(f"p{i}", b"s", 1)
    assert len(upstream._SALTED) <= upstream._SALTED_MAX


def test_scram_client_uses_the_derivation_it_is_given():
    used = []

    def derive(password, salt, iterations):
        used.append(iterations)
        return salted_password(password, salt, iterations)

    client = ScramClient("pw", derive)
    client.first()
    nonce = client._nonce + "server"
    client.final(f"r={nonce},s=c2FsdA==,i=4096".encode())
    assert used == [4096]


@pytest.fixture
def gproxy(pg, tmp_path):
    handle = ProxyHandle(
        proxy_config(
            pg,
            **{
                "grants.store": f"sqlite:///{tmp_path}/grants.db",
                "grants.poll_interval": 0.2,
                "proxy.auth_fail_delay": 0.001,
            },
        )
    ).start()
    yield handle
    handle.stop()


def _connect(handle, agent, token):
    return psycopg.connect(
        host=handle.host, port=handle.port, user=agent, password=token, dbname="app",
        sslmode="disable", connect_timeout=10, autocommit=True,
    )  # fmt: skip


def test_revoked_grant_never_logs_in_with_warm_caches(gproxy):
    grant, token = issue(gproxy)
    for _ in range(20):  # warm every cache on the login path
        with _connect(gproxy, grant.agent, token) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    live = _connect(gproxy, grant.agent, token)
    gproxy.call(gproxy.runtime.store.revoke(grant.id, by="pytest"))
    # at once, with no wait for any poll: a revoked grant gets no session
    with pytest.raises(psycopg.OperationalError) as info:
        _connect(gproxy, grant.agent, token)
    assert "revoked" in str(info.value)
    # and the live one is ended by the watcher
    with pytest.raises(psycopg.OperationalError):
        for _ in range(100):
            live.execute("SELECT pg_sleep(0.05)")
    live.close()


def test_new_grant_logs_in_at_once_after_the_agents_other_grant_warmed_the_caches(gproxy):
    first, token1 = issue(gproxy)
    with _connect(gproxy, first.agent, token1) as conn:
        conn.execute("SELECT 1")
    second, token2 = issue(gproxy)
    with _connect(gproxy, second.agent, token2) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --- the upstream login started before the client's proof ---------------------------------


def _upstream_backends(pg) -> int:
    return int(
        pg.psql(
            # the catalog loader's own short logins (proxy/catalog_loader.py) are not sessions
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'pgwitness' AND datname = 'app' "
            "AND application_name IS DISTINCT FROM 'pgwitness-catalog'",
            db="postgres",
        ).strip()
    )


def _wait_backends(pg, want, timeout=10.0) -> int:
    import time

    deadline = time.monotonic() + timeout
    while (n := _upstream_backends(pg)) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


def _stall_after_client_first(handle, agent) -> RawClient:
    """Startup and SASLInitialResponse, then nothing: the proof never comes."""
    c = RawClient(handle.host, handle.port)
    c.startup(agent, "app")
    f = c.read_frame()
    assert f[:1] == b"R" and m.decode_auth(f)[0] == m.AUTH_SASL
    c.send(m.sasl_initial_response(MECHANISM, ScramClient("not-the-token").first()))
    f = c.read_frame()
    assert f[:1] == b"R" and m.decode_auth(f)[0] == m.AUTH_SASL_CONTINUE
    return c


def test_stalled_logins_hold_at_most_the_speculation_budget_upstream(gproxy, pg):
    from proxy.handshake import SPECULATIVE_UPSTREAM_MAX

    grant, token = issue(gproxy)
    base = _wait_backends(pg, _upstream_backends(pg))
    stalled = [
        _stall_after_client_first(gproxy, grant.agent) for _ in range(SPECULATIVE_UPSTREAM_MAX + 4)
    ]
    try:
        held = _wait_backends(pg, base + SPECULATIVE_UPSTREAM_MAX)
        assert held == base + SPECULATIVE_UPSTREAM_MAX, (held, base)
        # a real login still works (without speculation: the budget is spent)
        with _connect(gproxy, grant.agent, token) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        for c in stalled:
            c.close()
    # what is left upstream is the real login's session, kept for the grant's next login
    kept = gproxy.call(_kept(gproxy))
    assert kept == 1
    assert _wait_backends(pg, base + kept) == base + kept
    assert gproxy.call(_speculating(gproxy)) == 0


async def _speculating(handle):
    return handle.server.speculating


async def _kept(handle):
    """Upstream sessions the proxy keeps for reuse (proxy/upstream_pool.py)."""
    return len(handle.server.upstream_pool)


def test_wrong_proof_leaves_no_upstream_backend(gproxy, pg):
    grant, token = issue(gproxy)
    base = _wait_backends(pg, _upstream_backends(pg))
    for _ in range(5):
        with pytest.raises(psycopg.OperationalError) as info:
            _connect(gproxy, grant.agent, "pgw_wrong_" + token[10:])
        assert "password authentication failed" in str(info.value)
    assert _wait_backends(pg, base) == base
    assert gproxy.call(_speculating(gproxy)) == 0
    # the grant itself still logs in, and its session is the one upstream backend
    with _connect(gproxy, grant.agent, token) as conn:
        assert _upstream_backends(pg) == base + 1
        assert conn.execute("SELECT current_user").fetchone() == ("pgwitness",)


def test_candidates_that_would_get_different_settings_log_in_the_ordinary_way(gproxy, pg):
    """Two live grants of one agent, one with set:work_mem: whichever token logs in gets
    exactly its own grant's answer (no speculative login made for the other)."""
    agent = "spec-two-grants"
    with_set, token_set = issue(gproxy, agent=agent, scopes="read:public.orders set:work_mem")
    plain, token_plain = issue(gproxy, agent=agent, scopes="read:public.orders")
    base = _wait_backends(pg, _upstream_backends(pg))
    conninfo = dict(
        host=gproxy.host, port=gproxy.port, user=agent, dbname="app", sslmode="disable",
        connect_timeout=10, autocommit=True, options="-c work_mem=8MB",
    )  # fmt: skip
    with psycopg.connect(password=token_set, **conninfo) as conn:
        assert conn.execute("SHOW work_mem").fetchone() == ("8MB",)
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(password=token_plain, **conninfo)
    assert 'setting "work_mem" in options refused' in str(info.value)
    with _connect(gproxy, agent, token_plain) as conn:
        assert conn.execute("SHOW work_mem").fetchone() != ("8MB",)
    # each grant's session is kept for that grant (its own key: never the other's)
    kept = gproxy.call(_kept(gproxy))
    assert kept == 2
    assert _wait_backends(pg, base + kept) == base + kept
    assert gproxy.call(_speculating(gproxy)) == 0
