"""End to end: task grants through the real proxy (login, refusals, expiry, revocation, shared store).

Every test talks to a real pgwitness server (``tests.support.fixtures_proxy``) in front of the
session's real PostgreSQL (``pg``). Grants are issued with the store API, either on the
proxy's own store (``handle.call(store.issue(...))``) or through a second store object in
the test's own event loop, the way another proxy or the CLI would.

``RawClient`` (``tests.support.rawpg``) is the blocking v3 client (SCRAM included) for the
checks a driver hides: when exactly a FATAL arrives, which salt the server-first message
carries, frames.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import socket
import threading
import time

import asyncpg
import psycopg
import pytest

from common.config import ConfigError
from common.wire import messages as m
from common.wire.scram import MECHANISM, ScramClient
from policy.grants import make_dsn
from policy.grants.store import open_store
from tests.support.fixtures_proxy import ProxyHandle, proxy_config
from tests.support.proxies import (
    AGENT,
    grant_args,
    issue,
    metric,
    new_task,
    sqlite_url,
    store_cluster_url,
    wait_fatal,
)
from tests.support.rawpg import RawClient, describe, error_fields

pytestmark = pytest.mark.timeout(60)

OTHER_AGENT = "e2e-other"


fields = error_fields


# --- helpers ----------------------------------------------------------------------------


def issue_via(url: str, *, clock=None, **change):
    """Issue a grant through a separate store object (another writer); (grant, token)."""
    store_kwargs = {} if clock is None else {"clock": clock}
    return with_store(url, lambda s: s.issue(**grant_args(**change)), **store_kwargs)


def with_store(url: str, fn, **store_kwargs):
    """Run ``await fn(store)`` on a separate store object in this thread's own loop."""

    async def go():
        store = await open_store(url, **store_kwargs)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


async def a_connect(handle: ProxyHandle, user: str, token: str, database: str = "app"):
    return await asyncpg.connect(
        host=handle.host,
        port=handle.port,
        user=user,
        password=token,
        database=database,
        ssl=False,
        timeout=10,
    )


def login_error(handle: ProxyHandle, user: str, token: str, database: str = "app"):
    """The asyncpg exception a refused login raises."""

    async def go():
        conn = await a_connect(handle, user, token, database)
        await conn.close()

    with pytest.raises(asyncpg.PostgresError) as info:
        asyncio.run(go())
    return info.value


def backend_alive(pg, pid: int) -> bool:
    return pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {int(pid)}").strip() == "1"


def wait_backend_gone(pg, pid: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while backend_alive(pg, pid):
        assert time.monotonic() < deadline, f"upstream backend {pid} still in pg_stat_activity"
        time.sleep(0.05)


def session_identities(handle: ProxyHandle) -> dict[int, tuple[str, str, str]]:
    """backend pid -> (agent, task, grant id) of each live session, read on the proxy's loop."""

    async def read():
        return {
            c.backend_key[0]: (c.identity.agent, c.identity.task, c.identity.grant_id)
            for c in handle.server.connections
            if c.identity is not None and c.backend_key is not None
        }

    return handle.call(read())


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gproxy(pg, tmp_path_factory):
    """One proxy with a SQLite grant store for the module (fast failure throttle)."""
    path = tmp_path_factory.mktemp("grants") / "grants.db"
    cfg = proxy_config(
        pg,
        **{
            "grants.store": sqlite_url(path),
            "grants.poll_interval": 0.5,
            "proxy.auth_fail_delay": 0.001,
            "proxy.auth_fail_window": 5.0,
        },
    )
    handle = ProxyHandle(cfg).start()
    handle.store_url = sqlite_url(path)
    yield handle
    handle.stop()


# --- login ------------------------------------------------------------------------------


def test_valid_grant_logs_in_with_asyncpg_and_psycopg(gproxy):
    grant, token = issue(gproxy)
    dsn = make_dsn(AGENT, token, gproxy.host, gproxy.port, "app")  # what `pgwitness grant` prints

    async def with_asyncpg():
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await conn.fetchrow("SELECT current_user AS u, current_database() AS d")
        finally:
            await conn.close()

    row = asyncio.run(with_asyncpg())
    assert (row["u"], row["d"]) == ("pgwitness", "app")

    with psycopg.connect(dsn, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("pgwitness",)
        assert conn.execute("SELECT count(*) FROM public.orders").fetchone()[0] >= 4
        assert conn.info.parameter_status("session_authorization") == "pgwitness"


# --- refusals ---------------------------------------------------------------------------


def _password_failed(user: str) -> str:
    return f'password authentication failed for user "{user}"'


def test_wrong_token_unknown_agent_and_someone_elses_token_look_the_same(gproxy):
    grant, token = issue(gproxy)
    issue(gproxy, agent=OTHER_AGENT)  # the other agent exists and has a live grant
    before = metric("pgwitness_auth_failures_total", reason="password")

    wrong = login_error(gproxy, AGENT, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert (wrong.sqlstate, str(wrong)) == ("28P01", _password_failed(AGENT))

    # AGENT's valid token presented as OTHER_AGENT (who has grants) ...
    borrowed = login_error(gproxy, OTHER_AGENT, token)
    # ... looks exactly like a wrong password for OTHER_AGENT ...
    other_wrong = login_error(gproxy, OTHER_AGENT, "pgw_not-the-token")
    # ... and like an agent that has no grant at all.
    ghost = login_error(gproxy, "e2e-ghost", token)
    assert (borrowed.sqlstate, str(borrowed)) == ("28P01", _password_failed(OTHER_AGENT))
    assert (other_wrong.sqlstate, str(other_wrong)) == ("28P01", _password_failed(OTHER_AGENT))
    assert (ghost.sqlstate, str(ghost)) == ("28P01", _password_failed("e2e-ghost"))
    for err in (wrong, borrowed, other_wrong, ghost):
        assert err.severity == "FATAL" and not err.detail and not err.hint
        assert grant.id not in str(err) and grant.task not in str(err)
    assert metric("pgwitness_auth_failures_total", reason="password") == before + 4


def test_wrong_database_names_the_database(gproxy):
    grant, token = issue(gproxy)
    before = metric("pgwitness_auth_failures_total", reason="wrong_database")
    err = login_error(gproxy, AGENT, token, database="postgres")
    assert err.sqlstate == "28000"
    assert '"postgres"' in str(err) and grant.id in str(err) and grant.task in str(err)
    assert "does not cover database" in str(err)
    assert metric("pgwitness_auth_failures_total", reason="wrong_database") == before + 1


def test_not_yet_valid_grant_is_refused(gproxy):
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    grant, token = issue(gproxy, not_before=start)
    before = metric("pgwitness_auth_failures_total", reason="not_yet_valid")
    err = login_error(gproxy, AGENT, token)
    assert err.sqlstate == "28000"
    assert "not valid before" in str(err) and grant.task in str(err)
    assert start.isoformat()[:16] in str(err)
    assert metric("pgwitness_auth_failures_total", reason="not_yet_valid") == before + 1


def test_expired_grant_is_refused(gproxy):
    # Issued an hour ago (the writer's clock) for 30 minutes: expired half an hour ago.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    task = new_task()
    grant, token = issue_via(
        gproxy.store_url, clock=lambda: past, task=task, reason="r", ttl="30m"
    )
    before = metric("pgwitness_auth_failures_total", reason="expired")
    err = login_error(gproxy, AGENT, token)
    assert err.sqlstate == "28000"
    assert "expired" in str(err) and task in str(err) and grant.id in str(err)
    assert metric("pgwitness_auth_failures_total", reason="expired") == before + 1


def test_revoked_grant_is_refused_and_other_grants_still_work(gproxy):
    grant, token = issue(gproxy)
    keep, keep_token = issue(gproxy)
    with_store(gproxy.store_url, lambda s: s.revoke(grant.id, by="pytest"))
    before = metric("pgwitness_auth_failures_total", reason="revoked")
    err = login_error(gproxy, AGENT, token)
    assert err.sqlstate == "28000"
    assert "revoked" in str(err) and grant.task in str(err)
    assert metric("pgwitness_auth_failures_total", reason="revoked") == before + 1

    async def ok():
        conn = await a_connect(gproxy, AGENT, keep_token)
        try:
            return await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    assert asyncio.run(ok()) == 1


# --- grant lifecycle of live sessions ---------------------------------------------------


def test_grant_expiring_mid_session_ends_it(gproxy, pg):
    grant, token = issue(gproxy, ttl=2)
    with RawClient(gproxy.host, gproxy.port) as c:
        c.login(AGENT, token)
        pid = int(c.scalar("SELECT pg_backend_pid()"))
        assert backend_alive(pg, pid)
        err, arrived = wait_fatal(c, timeout=6)
    assert err["C"] == "57P01", err
    assert grant.task in err["M"] and "expired" in err["M"], err
    late = arrived - grant.expires_at.timestamp()
    assert -0.2 < late < 1.0, f"session ended {late:.2f}s after the grant expired"
    wait_backend_gone(pg, pid, timeout=2)


def test_revoking_a_live_session_ends_it(gproxy, pg):
    grant, token = issue(gproxy)
    with RawClient(gproxy.host, gproxy.port) as c:
        c.login(AGENT, token)
        pid = int(c.scalar("SELECT pg_backend_pid()"))
        time.sleep(0.3)
        with_store(gproxy.store_url, lambda s: s.revoke(grant.id, by="pytest"))
        revoked_at = time.time()  # committed by now
        err, arrived = wait_fatal(c, timeout=5)
    assert err["C"] == "57P01", err
    assert grant.task in err["M"] and "revoked" in err["M"], err
    assert arrived - revoked_at < 1.0, (
        f"revocation took {arrived - revoked_at:.2f}s to end the session"
    )
    wait_backend_gone(pg, pid, timeout=2)


def test_extending_before_expiry_keeps_the_session(gproxy):
    grant, token = issue(gproxy, ttl=2)
    with RawClient(gproxy.host, gproxy.port) as c:
        c.login(AGENT, token)
        time.sleep(0.3)
        extended = with_store(gproxy.store_url, lambda s: s.extend(grant.id, "2s", by="pytest"))
        assert extended.expires_at > grant.expires_at
        # Sleep past the original expiry (plus the watcher's poll), then use the session.
        time.sleep(max(0.0, grant.expires_at.timestamp() - time.time()) + 0.8)
        assert c.scalar("SELECT count(*) FROM public.customers") == "3"
        # ... and it still ends, at the new expiry.
        err, arrived = wait_fatal(c, timeout=5)
    assert err["C"] == "57P01" and "expired" in err["M"], err
    late = arrived - extended.expires_at.timestamp()
    assert -0.2 < late < 1.0, f"session ended {late:.2f}s after the extended expiry"


def test_revoking_a_busy_session_stops_its_query_and_rolls_back(gproxy, pg):
    """Ending a session must not leave its statement running (and holding locks) upstream."""
    grant, token = issue(gproxy)
    with RawClient(gproxy.host, gproxy.port) as c:
        c.login(AGENT, token)
        pid = int(c.scalar("SELECT pg_backend_pid()"))
        c.query("BEGIN")
        c.query("UPDATE public.orders SET note = 'e2e-revoked-tx' WHERE id = 2")
        c.send(m.query("SELECT pg_sleep(30)"))
        time.sleep(0.2)
        with_store(gproxy.store_url, lambda s: s.revoke(grant.id, by="pytest"))
        revoked_at = time.time()
        err, arrived = wait_fatal(c, timeout=5)
    assert "revoked" in err["M"] and arrived - revoked_at < 1.0, err
    wait_backend_gone(pg, pid, timeout=2)
    # The row lock is gone and the update never committed.
    out = pg.psql(
        "SET lock_timeout = '2s'; "
        "SELECT coalesce(note, '<null>') FROM public.orders WHERE id = 2 FOR UPDATE;",
        db="app",
    )
    assert out.strip() == "<null>", out


def test_revocation_from_a_lagging_writer_still_ends_the_session(gproxy):
    """The store doc: ``updated_at`` is the writer's clock and it commits a moment later,
    so pollers must re-read with a margin. A writer 1.5 s behind (clock skew between
    hosts, or a slow commit) must still end the session."""
    grant, token = issue(gproxy)
    with RawClient(gproxy.host, gproxy.port) as c:
        c.login(AGENT, token)
        time.sleep(0.6)  # let the watcher poll with the live session at least once
        lag = dt.timedelta(seconds=1.5)
        with_store(
            gproxy.store_url,
            lambda s: s.revoke(grant.id, by="pytest"),
            clock=lambda: dt.datetime.now(dt.UTC) - lag,
        )
        try:
            err, _ = wait_fatal(c, timeout=2.5)
        except TimeoutError:
            pytest.fail("revoked grant's session still open 2.5 s after the revocation")
    assert "revoked" in err["M"]


# --- revocation racing the session's start ----------------------------------------------


class SlowForwarder:
    """A TCP forwarder to ``pg`` that waits ``delay`` before connecting each client through."""

    def __init__(self, target_port: int, delay: float):
        self.target_port = target_port
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))  # no port to race for
        self.port = self.listener.getsockname()[1]
        self.closing = False
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.set()
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        time.sleep(self.delay)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return

        def pump(a: socket.socket, b: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := a.recv(1 << 16):
                    b.sendall(data)
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        pump(upstream, client)

    def close(self) -> None:
        self.closing = True
        self.listener.close()


def test_revocation_while_the_session_is_being_set_up_still_ends_it(pg, tmp_path):
    """Revoked after the token was checked but before the upstream login finished: the
    watcher must not lose that revocation when the session goes live a moment later."""
    fwd = SlowForwarder(pg.port, delay=1.0)
    url = sqlite_url(tmp_path / "grants.db")
    handle = ProxyHandle(
        proxy_config(
            pg, **{"grants.store": url, "upstream.port": fwd.port, "upstream.connect_timeout": 10.0}
        )
    ).start()
    try:
        grant, token = issue(handle)
        with RawClient(handle.host, handle.port) as c:
            c.startup(AGENT)
            scram = ScramClient(token)
            while True:  # up to AuthenticationOk: the proxy now logs in upstream (slowly)
                f = c.read_frame()
                assert f is not None and f[:1] == b"R", describe([f] if f else [])
                code, data = m.decode_auth(f)
                if code == m.AUTH_SASL:
                    c.send(m.sasl_initial_response(MECHANISM, scram.first()))
                elif code == m.AUTH_SASL_CONTINUE:
                    c.send(m.password_message(scram.final(data)))
                elif code == m.AUTH_OK:
                    break
            with_store(url, lambda s: s.revoke(grant.id, by="pytest"))
            rest = c.until_ready()
            if rest and rest[-1][:1] == b"E":
                return  # refused at session start: fine
            assert rest and rest[-1][:1] == b"Z", describe(rest)
            try:
                err, _ = wait_fatal(c, timeout=2.5)
            except TimeoutError:
                pytest.fail("a session whose grant was revoked during its setup stayed open")
            assert "revoked" in err["M"]
    finally:
        handle.stop()
        fwd.close()


# --- several grants per agent -----------------------------------------------------------


def test_agent_with_two_live_grants_logs_in_with_either_token(gproxy):
    g1, t1 = issue(gproxy, agent="e2e-twotask", task=new_task("INC-A"))
    g2, t2 = issue(gproxy, agent="e2e-twotask", task=new_task("INC-B"))

    async def go():
        c1 = await a_connect(gproxy, "e2e-twotask", t1)
        c2 = await a_connect(gproxy, "e2e-twotask", t2)
        try:
            p1 = await c1.fetchval("SELECT pg_backend_pid()")
            p2 = await c2.fetchval("SELECT pg_backend_pid()")
            return p1, p2, session_identities(gproxy)
        finally:
            await c1.close()
            await c2.close()

    p1, p2, ids = asyncio.run(go())
    assert ids[p1] == ("e2e-twotask", g1.task, g1.id)
    assert ids[p2] == ("e2e-twotask", g2.task, g2.id)


def test_revoking_one_of_an_agents_grants_ends_only_its_sessions(gproxy):
    g1, t1 = issue(gproxy, agent="e2e-twotask", task=new_task("INC-C"))
    g2, t2 = issue(gproxy, agent="e2e-twotask", task=new_task("INC-D"))
    with RawClient(gproxy.host, gproxy.port) as c1, RawClient(gproxy.host, gproxy.port) as c2:
        c1.login("e2e-twotask", t1)
        c2.login("e2e-twotask", t2)
        with_store(gproxy.store_url, lambda s: s.revoke(g1.id, by="pytest"))
        err, _ = wait_fatal(c1, timeout=5)
        assert g1.task in err["M"] and "revoked" in err["M"], err
        time.sleep(0.6)  # another poll: the other task's session is left alone
        assert c2.scalar("SELECT count(*) FROM public.customers") == "3"


# --- brute force ------------------------------------------------------------------------


def test_repeated_wrong_tokens_get_slower(make_proxy, tmp_path):
    handle = make_proxy(
        **{
            "grants.store": sqlite_url(tmp_path / "grants.db"),
            "proxy.auth_fail_delay": 0.05,
            "proxy.auth_fail_window": 30.0,
        }
    )
    grant, token = issue(handle)

    def attempt(password: str, source: str | None = None) -> tuple[float, str]:
        t0 = time.monotonic()
        with RawClient(handle.host, handle.port, source=source) as c:
            c.startup(AGENT)
            scram = ScramClient(password)
            while True:
                f = c.read_frame()
                assert f is not None
                if f[:1] == b"E":
                    return time.monotonic() - t0, fields(f)["C"]
                code, data = m.decode_auth(f)
                if code == m.AUTH_SASL:
                    c.send(m.sasl_initial_response(MECHANISM, scram.first()))
                elif code == m.AUTH_SASL_CONTINUE:
                    c.send(m.password_message(scram.final(data)))
                elif code == m.AUTH_OK:
                    c.until_ready()
                    return time.monotonic() - t0, "ok"

    times = []
    for _ in range(6):
        took, code = attempt("pgw_wrong")
        assert code == "28P01"
        times.append(took)
    # Delays before each attempt: 0, .05, .1, .2, .4, .8 s.
    assert times[-1] - times[0] >= 0.6, times
    assert times[-1] > times[-2] > times[-3], times
    # Another address is not slowed down by this one's failures.
    other, code = attempt("pgw_wrong", source="127.0.0.2")
    assert code == "28P01" and other < times[-1] - 0.5, (other, times)
    # A successful login (itself delayed) resets the count for its address.
    took, code = attempt(token)
    assert code == "ok" and took >= 1.0, took
    again, code = attempt("pgw_wrong")
    assert code == "28P01" and again < 0.5, again


# --- the grant store is not the upstream ------------------------------------------------


def test_store_on_the_upstream_server_is_refused(pg, make_proxy):
    pg.psql("DROP DATABASE IF EXISTS grants_e2e;")
    pg.create_database("grants_e2e", owner="pgwitness")
    try:
        for host in ("127.0.0.1", "localhost"):
            url = f"postgresql://pgwitness:upstream-secret@{host}:{pg.port}/grants_e2e"
            with pytest.raises(ConfigError) as info:
                make_proxy(**{"grants.store": url})
            text = str(info.value)
            assert text.startswith("grants.store:"), text
            assert "upstream" in text and "upstream-secret" not in text, text
        # Refused before anything was written there.
        tables = pg.psql(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'grants'", db="grants_e2e"
        )
        assert tables.strip() == "0"
    finally:
        pg.psql("DROP DATABASE IF EXISTS grants_e2e;")


def test_two_proxies_share_a_postgresql_store(pg, store_cluster):
    url = store_cluster_url(store_cluster)
    a = ProxyHandle(proxy_config(pg, **{"grants.store": url, "grants.poll_interval": 0.5})).start()
    b = ProxyHandle(proxy_config(pg, **{"grants.store": url, "grants.poll_interval": 0.5})).start()
    try:
        task = new_task("SHARED")
        grant, token = issue_via(url, task=task, reason="shared store")
        with RawClient(a.host, a.port) as ca, RawClient(b.host, b.port) as cb:
            ca.login(AGENT, token)
            cb.login(AGENT, token)
            assert ca.scalar("SELECT current_user") == "pgwitness"
            assert cb.scalar("SELECT count(*) FROM public.customers") == "3"
            assert [i[1] for i in session_identities(a).values()] == [task]
            assert [i[1] for i in session_identities(b).values()] == [task]
            with_store(url, lambda s: s.revoke(grant.id, by="pytest"))
            revoked_at = time.time()  # committed by now
            for c in (ca, cb):
                err, arrived = wait_fatal(c, timeout=5)
                assert err["C"] == "57P01" and "revoked" in err["M"] and task in err["M"], err
                assert arrived - revoked_at < 1.0
        for handle in (a, b):
            assert login_error(handle, AGENT, token).sqlstate == "28000"
    finally:
        a.stop()
        b.stop()


def _salt(handle: ProxyHandle, user: str) -> str:
    with RawClient(handle.host, handle.port) as c:
        return c.server_first(user)["s"]


def test_proxies_sharing_a_store_answer_unknown_agents_alike(pg, store_cluster):
    """docs/grants.md: an unknown agent's fake salt comes from the store's secret, "so every
    proxy sharing the store gives the same answer and probing cannot tell which agents
    exist". Known agents get the same (real) salt from every proxy; unknown ones must too."""
    url = store_cluster_url(store_cluster)
    issue_via(url, agent="e2e-salted", reason="r")
    a = ProxyHandle(proxy_config(pg, **{"grants.store": url})).start()
    b = ProxyHandle(proxy_config(pg, **{"grants.store": url})).start()
    try:
        assert _salt(a, "e2e-salted") == _salt(b, "e2e-salted")
        assert _salt(a, "e2e-nobody") == _salt(a, "e2e-nobody")
        assert _salt(a, "e2e-nobody") == _salt(b, "e2e-nobody")
        expected = with_store(url, lambda s: s.login_salt("e2e-nobody"))[0]
        assert base64.b64decode(_salt(a, "e2e-nobody")) == expected
    finally:
        a.stop()
        b.stop()
