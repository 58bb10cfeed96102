"""GrantStore: one suite, run against SQLite and a real PostgreSQL 15 (the ``pg`` fixture)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.wire.scram import ScramClient, ScramError, ScramServer
from policy.grants.model import Grant, GrantError, GrantNotFound, GrantStateError
from policy.grants.store import (
    PostgresGrantStore,
    SQLiteGrantStore,
    StoreConfigError,
    check_store_not_upstream,
    open_store,
    redact_url,
    sqlite_path,
)

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SCOPE = "read:public.orders"
_db_counter = itertools.count()


class FakeClock:
    def __init__(self, now: dt.datetime = T0):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += dt.timedelta(**kwargs)


@pytest.fixture(scope="session")
def pg_grants_db(pg):
    """A database for grant stores on the test cluster, separate from the agents' ``app``."""
    pg.create_database("grants", owner="pgwitness")
    return pg


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A fresh, empty store URL of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/grants.db"
    pg = request.getfixturevalue("pg_grants_db")
    name = f"grants_{next(_db_counter)}"
    pg.create_database(name, owner="pgwitness")
    return pg.dsn("pgwitness", "upstream-secret", name)


def run(coro):
    return asyncio.run(coro)


async def issue(store, agent="billing-bot", task="INC-4821", ttl="30m", **kwargs):
    fields = {"reason": "refund audit", "granted_by": "alice", "database": "app", "scopes": SCOPE}
    fields.update(kwargs)
    return await store.issue(agent=agent, task=task, ttl=ttl, **fields)


def scram_login(grants: list[Grant], token: str) -> int:
    """Run a full SCRAM exchange against the candidates; returns the matching index."""
    verifiers = [g.scram_verifier() for g in grants]
    salt, iterations = verifiers[0].salt, verifiers[0].iterations
    server = ScramServer(iterations, salt, [(v.stored_key, v.server_key) for v in verifiers])
    client = ScramClient(token)
    server_first = server.first(client.first())
    index, server_final = server.final(client.final(server_first))
    client.verify(server_final)
    return index


# ---- the shared suite ------------------------------------------------------------------


def test_issue_get_roundtrip(store_url):
    async def body():
        async with await open_store(store_url, clock=FakeClock()) as store:
            grant, token = await issue(store, not_before=None, enforce=False, record_rows="counts")
            assert token.startswith("pgw_")
            assert grant.expires_at == T0 + dt.timedelta(minutes=30)
            assert grant.not_before == grant.created_at == T0
            assert grant.revoked_at is None and grant.status(T0) == "active"
            assert (grant.enforce, grant.record_rows) == (False, "counts")
            assert token not in grant.verifier
            assert await store.get(grant.id) == grant
            assert await store.get("gr_missing") is None
            return grant, token

    grant, token = run(body())
    assert scram_login([grant], token) == 0


def test_one_salt_per_agent_and_login_salt(store_url):
    async def body():
        store = await open_store(store_url)
        other = await open_store(store_url)
        try:
            unknown_salt = await store.login_salt("ghost")
            assert unknown_salt == await store.login_salt("ghost")
            assert unknown_salt == await other.login_salt("ghost")  # stable across processes
            assert unknown_salt != await store.login_salt("ghost2")

            a1, t1 = await issue(store, task="T-1")
            a2, t2 = await issue(other, task="T-2")
            b1, _ = await issue(store, agent="other-bot")
            va1, va2, vb1 = (g.scram_verifier() for g in (a1, a2, b1))
            assert (va1.salt, va1.iterations) == (va2.salt, va2.iterations)
            assert va1.salt != vb1.salt
            assert va1.stored_key != va2.stored_key
            assert await store.login_salt("billing-bot") == (va1.salt, va1.iterations)

            candidates = await store.for_agent("billing-bot")
            assert [g.id for g in candidates] == [a1.id, a2.id]
            return candidates, t1, t2
        finally:
            await store.close()
            await other.close()

    candidates, t1, t2 = run(body())
    assert scram_login(candidates, t1) == 0
    assert scram_login(candidates, t2) == 1
    with pytest.raises(ScramError):
        scram_login(candidates, "pgw_" + "x" * 32)


def test_concurrent_first_grants_of_an_agent_share_a_salt(store_url):
    async def body():
        # Concurrent first opens of an empty store: the schema is created exactly once.
        stores = list(await asyncio.gather(*(open_store(store_url) for _ in range(3))))
        try:
            results = await asyncio.gather(
                *(issue(s, agent="racer", task=f"T-{i}") for i, s in enumerate(stores * 3))
            )
        finally:
            for s in stores:
                await s.close()
        return {g.scram_verifier().salt for g, _ in results}

    assert len(run(body())) == 1


def test_racing_first_opens_of_a_new_sqlite_file_all_succeed(tmp_path):
    # SQLite refuses at once ("database is locked", busy_timeout not honoured) when several
    # connections switch a new file to WAL together; before the retry this failed in about
    # one round in ten.
    async def body(path):
        stores = [SQLiteGrantStore(path) for _ in range(4)]
        await asyncio.gather(*(s.open() for s in stores))
        secrets = {s._login_secret for s in stores}
        for s in stores:
            await s.close()
        return secrets

    for i in range(40):
        assert len(run(body(tmp_path / f"race-{i}.db"))) == 1


def test_list_filters(store_url):
    clock = FakeClock()

    async def body():
        async with await open_store(store_url, clock=clock) as store:
            a, _ = await issue(store, task="INC-1", ttl="1h")
            clock.advance(seconds=1)  # list() is oldest first
            b, _ = await issue(store, task="INC-2", ttl="2h")
            clock.advance(seconds=1)
            c, _ = await issue(store, agent="etl-bot", task="INC-1", ttl="1h")
            clock.advance(seconds=1)
            start = T0 + dt.timedelta(hours=1)
            later, _ = await issue(store, agent="etl-bot", task="INC-3", not_before=start)
            await store.revoke(c.id, by="bob")

            ids = lambda grants: [g.id for g in grants]  # noqa: E731
            assert ids(await store.list()) == [a.id, b.id, c.id, later.id]
            assert ids(await store.list(agent="billing-bot")) == [a.id, b.id]
            assert ids(await store.list(task="INC-1")) == [a.id, c.id]
            assert ids(await store.list(agent="etl-bot", task="INC-1")) == [c.id]
            assert ids(await store.list(active=True)) == [a.id, b.id]
            assert ids(await store.list(active=False)) == [c.id, later.id]
            clock.advance(minutes=80)
            assert ids(await store.list(active=True)) == [b.id, later.id]
            assert ids(await store.list(agent="nobody")) == []

    run(body())


def test_revoke_is_idempotent_and_emits_once(store_url):
    clock = FakeClock()
    events: list[tuple[str, dict]] = []

    async def body():
        async with await open_store(
            store_url, clock=clock, on_event=lambda k, p: events.append((k, p))
        ) as store:
            grant, token = await issue(store)
            clock.advance(minutes=1)
            first = await store.revoke(grant.id, by="bob")
            clock.advance(minutes=1)
            again = await store.revoke(grant.id, by="carol")
            assert first.revoked_at == again.revoked_at == T0 + dt.timedelta(minutes=1)
            assert again.revoked_by == "bob"
            assert again.status(clock.now) == "revoked"
            with pytest.raises(GrantNotFound):
                await store.revoke("gr_missing", by="bob")
            return grant, token

    grant, token = run(body())
    assert [k for k, _ in events] == ["grant.issued", "grant.revoked"]
    issued, revoked = (p for _, p in events)
    assert issued["grant_id"] == revoked["grant_id"] == grant.id
    assert issued["by"] == "alice" and revoked["by"] == "bob"
    assert (revoked["agent"], revoked["task"], revoked["scopes"]) == (
        "billing-bot",
        "INC-4821",
        grant.scopes,
    )
    assert revoked["revoked_at"] == (T0 + dt.timedelta(minutes=1)).isoformat()
    for _, payload in events:
        text = repr(payload)
        assert token not in text and grant.verifier not in text and "SCRAM" not in text


def test_extend(store_url):
    clock = FakeClock()
    events: list[tuple[str, dict]] = []

    async def body():
        async with await open_store(
            store_url, clock=clock, on_event=lambda k, p: events.append((k, p))
        ) as store:
            grant, _ = await issue(store, ttl="30m")
            longer = await store.extend(grant.id, "1h", by="bob")
            assert longer.expires_at == T0 + dt.timedelta(minutes=90)
            assert (await store.get(grant.id)).expires_at == longer.expires_at

            clock.advance(hours=2)  # expired 30 minutes ago: extension counts from now
            assert longer.status(clock.now) == "expired"
            revived = await store.extend(grant.id, 600, by="bob")
            assert revived.expires_at == clock.now + dt.timedelta(minutes=10)
            assert revived.status(clock.now) == "active"

            with pytest.raises(GrantError, match="ttl"):
                await store.extend(grant.id, "8d", by="bob")
            with pytest.raises(GrantError, match="ttl"):
                await store.extend(grant.id, "0s", by="bob")
            await store.extend(grant.id, "6d", by="bob")
            with pytest.raises(GrantError, match="maximum"):  # the total, not just one step
                await store.extend(grant.id, "1d", by="bob")

            await store.revoke(grant.id, by="bob")
            with pytest.raises(GrantStateError, match="revoked"):
                await store.extend(grant.id, "1h", by="bob")
            with pytest.raises(GrantNotFound):
                await store.extend("gr_missing", "1h", by="bob")

    run(body())
    assert [k for k, _ in events] == [
        "grant.issued",
        "grant.extended",
        "grant.extended",
        "grant.extended",
        "grant.revoked",
    ]
    first_ext = events[1][1]
    assert first_ext["previous_expires_at"] == (T0 + dt.timedelta(minutes=30)).isoformat()
    assert first_ext["expires_at"] == (T0 + dt.timedelta(minutes=90)).isoformat()


def test_for_agent_leaves_out_long_ended_grants(store_url):
    clock = FakeClock()

    async def body():
        async with await open_store(store_url, clock=clock) as store:
            expired, _ = await issue(store, task="old", ttl="1h")
            clock.advance(seconds=1)  # distinct created_at: results are oldest first
            revoked, _ = await issue(store, task="revoked", ttl="3d")
            await store.revoke(revoked.id, by="bob")
            clock.advance(hours=2)
            live, _ = await issue(store, task="live", ttl="3d")
            clock.advance(seconds=1)
            future, _ = await issue(store, task="future", not_before=T0 + dt.timedelta(days=2))
            ids = lambda grants: [g.id for g in grants]  # noqa: E731
            # Recently ended grants are still candidates (a precise refusal for stale tokens).
            assert ids(await store.for_agent("billing-bot")) == [
                expired.id,
                revoked.id,
                live.id,
                future.id,
            ]
            clock.advance(days=1)
            assert ids(await store.for_agent("billing-bot")) == [live.id, future.id]
            assert len(await store.for_agent("billing-bot", ended_within=None)) == 4
            assert ids(await store.for_agent("billing-bot", ended_within=dt.timedelta(days=2))) == [
                expired.id,
                revoked.id,
                live.id,
                future.id,
            ]

    run(body())


def test_changed_since(store_url):
    clock = FakeClock()

    async def body():
        async with await open_store(store_url, clock=clock) as store:
            a, _ = await issue(store, task="A")
            b, _ = await issue(store, task="B")
            c, _ = await issue(store, task="C")
            clock.advance(seconds=10)
            cursor = clock.now
            assert await store.changed_since(cursor) == []
            clock.advance(seconds=1)
            await store.revoke(b.id, by="bob")
            clock.advance(seconds=1)
            await store.extend(c.id, "1h", by="bob")
            changed = await store.changed_since(cursor)
            assert [g.id for g in changed] == [b.id, c.id]
            assert changed[0].revoked_at is not None
            assert changed[1].expires_at == c.expires_at + dt.timedelta(hours=1)
            assert changed[1].updated_at == clock.now
            assert [g.id for g in await store.changed_since(changed[0].updated_at)] == [c.id]
            with pytest.raises(ValueError, match="timezone-aware"):
                await store.changed_since(dt.datetime(2026, 1, 1))
            assert {g.id for g in await store.changed_since(T0 - dt.timedelta(1))} == {
                a.id,
                b.id,
                c.id,
            }

    run(body())


def test_invalid_issue_stores_nothing(store_url):
    async def body():
        async with await open_store(store_url) as store:
            with pytest.raises(GrantError) as err:
                await issue(store, agent="Billing@Bot")
            assert err.value.field == "agent"
            with pytest.raises(GrantError) as err:
                await issue(store, ttl="30 minutes")
            assert err.value.field == "ttl"
            with pytest.raises(GrantError) as err:
                await issue(store, ttl="8d")
            assert err.value.field == "ttl"
            with pytest.raises(GrantError) as err:
                await issue(store, scopes="")
            assert err.value.field == "scopes"
            with pytest.raises(GrantError) as err:
                await store.revoke("gr_x", by="")
            assert err.value.field == "by"
            assert await store.list() == []

    run(body())


def test_max_ttl_is_configurable(store_url):
    async def body():
        async with await open_store(store_url, max_ttl=dt.timedelta(hours=1)) as store:
            with pytest.raises(GrantError, match="maximum 1h"):
                await issue(store, ttl="2h")
            grant, _ = await issue(store, ttl="1h")
            assert grant.expires_at - grant.created_at == dt.timedelta(hours=1)

    run(body())


def test_schema_is_idempotent_and_data_persists(store_url):
    async def body():
        async with await open_store(store_url) as store:
            grant, _ = await issue(store)
            salt = await store.login_salt("ghost")
        async with await open_store(store_url) as store:
            async with await open_store(store_url) as again:
                assert await again.get(grant.id) == grant
                assert await again.login_salt("ghost") == salt
            assert await store.get(grant.id) == grant

    run(body())


def test_two_stores_see_each_others_changes(store_url):
    """Two proxies sharing one store: issue on one, revoke/extend on the other."""

    async def body():
        proxy_a = await open_store(store_url)
        proxy_b = await open_store(store_url)
        try:
            cursor = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
            grant, _ = await issue(proxy_a)
            assert [g.id for g in await proxy_b.for_agent("billing-bot")] == [grant.id]
            await proxy_b.revoke(grant.id, by="bob")
            seen = await proxy_a.get(grant.id)
            assert seen.revoked_by == "bob"
            assert [g.id for g in await proxy_a.changed_since(cursor)] == [grant.id]
            other, _ = await issue(proxy_b, task="INC-2")
            await proxy_a.extend(other.id, "1h", by="alice")
            assert (await proxy_b.get(other.id)).expires_at == other.expires_at + dt.timedelta(
                hours=1
            )
        finally:
            await proxy_a.close()
            await proxy_b.close()

    run(body())


def test_event_listener_failure_does_not_undo_the_change(store_url):
    def explode(kind, payload):
        raise RuntimeError("recorder down")

    async def body():
        async with await open_store(store_url, on_event=explode) as store:
            grant, _ = await issue(store)
            await store.revoke(grant.id, by="bob")
            assert (await store.get(grant.id)).revoked_at is not None

    run(body())


def test_each_change_keeps_the_control_stream_of_its_event(store_url):
    """Session 34: the store keeps, with each change, the control stream its event is
    recorded in (``event_stream``), so a session can name where its grant's events are
    (tests/unit/test_s34_grant_streams.py)."""
    streams = iter(["S-ISSUE", "S-EXTEND", "S-REVOKE", "S-AGAIN"])

    async def body():
        async with await open_store(store_url, event_stream=lambda: next(streams)) as store:
            grant, _ = await issue(store)
            assert grant.event_streams() == {"grant.issued": "S-ISSUE"}
            await store.extend(grant.id, "1h", by="alice")
            await store.revoke(grant.id, by="bob")
            await store.revoke(grant.id, by="carol")  # a no-op: the first stays
        async with await open_store(store_url) as store:
            got = await store.get(grant.id)
            assert (got.issued_stream, got.extended_stream, got.revoked_stream) == (
                "S-ISSUE",
                "S-EXTEND",
                "S-REVOKE",
            )
            plain, _ = await issue(store, task="INC-2")  # no recorder: no stream
            assert (await store.get(plain.id)).event_streams() == {}

    run(body())


# ---- SQLite specifics ----------------------------------------------------------------


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path):
    path = tmp_path / "g.db"

    async def body():
        store = await open_store(str(path))  # a plain path is a SQLite file
        assert isinstance(store, SQLiteGrantStore)
        await store.close()

    run(body())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    import sqlite3

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_several_processes(tmp_path):
    path = tmp_path / "shared.db"
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from policy.grants.store import open_store
        async def main(n):
            async with await open_store({str(path)!r}) as store:
                for i in range(15):
                    g, _ = await store.issue("multi", f"T-{{n}}-{{i}}", "r", "me", "app",
                                             {SCOPE!r}, "1h")
                    if i % 3 == 0:
                        await store.revoke(g.id, "me")
        asyncio.run(main(int(sys.argv[1])))
        """
    )

    async def create():
        await (await open_store(str(path))).close()

    run(create())  # the schema exists before the writers race
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(n)], env=env, stderr=subprocess.PIPE)
        for n in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()

    async def body():
        async with await open_store(str(path)) as store:
            grants = await store.list(agent="multi")
            assert len(grants) == 60
            assert sum(g.revoked_at is not None for g in grants) == 20
            assert len({g.scram_verifier().salt for g in grants}) == 1

    run(body())


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///./grants.db", "./grants.db"),
        ("sqlite:///grants.db", "grants.db"),
        ("sqlite:////var/lib/pgwitness/grants.db", "/var/lib/pgwitness/grants.db"),
        ("/var/lib/pgwitness/grants.db", "/var/lib/pgwitness/grants.db"),
        ("grants.db", "grants.db"),
    ],
)
def test_sqlite_paths(url, path):
    assert sqlite_path(url) == path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("mysql://db/grants", "not supported"),
        ("sqlite://grants.db", "sqlite:///"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:////nonexistent-dir/x/grants.db", "does not exist"),
    ],
)
def test_bad_store_urls(url, message):
    with pytest.raises(StoreConfigError, match=message):
        run(open_store(url))


def test_unreachable_postgres_store_is_a_clear_error():
    from devtools.localpg import free_port

    url = f"postgresql://u:secret@127.0.0.1:{free_port()}/grants"
    with pytest.raises(StoreConfigError, match="cannot open grant store") as err:
        run(open_store(url))
    assert "secret" not in str(err.value)


def test_a_schema_2_postgres_store_gains_the_stream_columns(pg_grants_db):
    """A store created before session 34 (no stream columns): opening it adds them; its
    grants read with no stream, and their next change keeps its own."""
    name = f"grants_{next(_db_counter)}"
    pg_grants_db.create_database(name, owner="pgwitness")
    url = pg_grants_db.dsn("pgwitness", "upstream-secret", name)

    async def body():
        import asyncpg

        async with await open_store(url) as store:
            grant, _ = await issue(store)
        conn = await asyncpg.connect(url)
        try:
            for column in ("issued_stream", "extended_stream", "revoked_stream"):
                await conn.execute(f"ALTER TABLE grants DROP COLUMN {column}")
        finally:
            await conn.close()
        async with await open_store(url, event_stream=lambda: "S-REVOKE") as store:
            assert (await store.get(grant.id)).event_streams() == {}
            await store.revoke(grant.id, by="bob")
            assert (await store.get(grant.id)).event_streams() == {"grant.revoked": "S-REVOKE"}

    run(body())


def test_open_store_picks_postgres(pg_grants_db):
    async def body():
        async with await open_store(
            pg_grants_db.dsn("pgwitness", "upstream-secret", "grants").replace(
                "postgresql://", "postgres://"
            )
        ) as store:
            assert isinstance(store, PostgresGrantStore)

    run(body())


# ---- the store must not be the upstream ------------------------------------------------


@pytest.mark.parametrize(
    ("store_url", "host", "port", "refused"),
    [
        ("postgresql://u:p@127.0.0.1:5432/grants", "127.0.0.1", 5432, True),
        ("postgresql://u:p@localhost:5432/grants", "127.0.0.1", 5432, True),
        ("postgresql://u:p@127.0.0.1/grants", "localhost", 5432, True),  # default port
        ("postgres://u:p@LOCALHOST:6000/grants", "127.0.0.1", 6000, True),
        ("postgresql://u:p@[::1]:5432/grants", "localhost", 5432, True),
        ("postgresql://u:p@127.0.0.2:5432/grants", "127.0.0.1", 5432, True),  # all loopback
        ("postgresql:///grants?host=/var/run/postgresql", "localhost", 5432, True),
        ("postgresql://u:p@127.0.0.1:5433/grants", "127.0.0.1", 5432, False),
        ("postgresql://u:p@10.0.0.5:5432/grants", "10.0.0.6", 5432, False),
        ("postgresql://u:p@10.0.0.5:5432/grants", "127.0.0.1", 5432, False),
        ("sqlite:///./grants.db", "127.0.0.1", 5432, False),
        ("/var/lib/grants.db", "127.0.0.1", 5432, False),
    ],
)
def test_check_store_not_upstream(store_url, host, port, refused):
    if refused:
        with pytest.raises(StoreConfigError, match="upstream") as err:
            check_store_not_upstream(store_url, host, port, ["app"])
        assert ":p@" not in str(err.value)  # password redacted
    else:
        check_store_not_upstream(store_url, host, port, ["app"])


def test_check_store_not_upstream_against_the_real_cluster(pg_grants_db):
    pg = pg_grants_db
    url = pg.dsn("pgwitness", "upstream-secret", "grants", host="localhost")
    with pytest.raises(StoreConfigError, match="app"):
        check_store_not_upstream(url, pg.host, pg.port, ["app"])


def test_redact_url():
    assert redact_url("postgresql://u:s3cret@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_sqlite_close_waits_for_work_in_flight(tmp_path):
    """close() while worker threads still read: every call either finishes or gets a clear
    GrantStoreClosed, and no connection is closed under a thread that uses it (which
    sqlite3 answers with "Cannot operate on a closed database" or a segfault). Run in a
    subprocess so a crash is a failure, not the end of the test run."""
    path = tmp_path / "race.db"
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from policy.grants.store import open_store
        from policy.grants.store.sqlite import GrantStoreClosed, SQLiteGrantStore
        async def main():
            async with await open_store({str(path)!r}) as store:
                for i in range(40):
                    await store.issue("racer", f"T-{{i}}", "r", "me", "app", {SCOPE!r}, "1h")
            done = refused = 0
            for round_ in range(60):
                store = await SQLiteGrantStore({str(path)!r}).open()
                # warm: the worker threads hold their kept connections
                await asyncio.gather(*(store.list() for _ in range(12)))
                calls = [store.list, lambda: store.changed_since(store._now()), store.unended]
                tasks = [asyncio.create_task(calls[i % 3]()) for i in range(30)]
                for _ in range(round_ % 4):
                    await asyncio.sleep(0)
                if round_ % 10 == 9:  # and some rounds let a few calls finish first
                    await asyncio.sleep(0.005)
                await store.close()
                for result in await asyncio.gather(*tasks, return_exceptions=True):
                    if isinstance(result, GrantStoreClosed):
                        refused += 1
                    elif isinstance(result, BaseException):
                        raise result
                    else:
                        done += 1
            try:
                await store.list()
            except GrantStoreClosed:
                pass
            else:
                sys.exit("a closed store still answered")
            print(done, refused)
        asyncio.run(main())
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr.decode()[-3000:])
    done, refused = map(int, proc.stdout.split())
    assert done + refused == 60 * 30
    assert done > 0  # the close really met work in flight, not only refused it
