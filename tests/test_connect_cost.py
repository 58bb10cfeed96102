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

from proxy import upstream
from proxy.wire.scram import ScramClient, salted_password
from tests.fixtures_proxy import ProxyHandle, proxy_config
from tests.test_proxy_grants import issue

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
            pg, **{"grants.store": f"sqlite:///{tmp_path}/grants.db", "grants.poll_interval": 0.2}
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
