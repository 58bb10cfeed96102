"""End to end: side channels the statement policy used to leave open, the server as the judge.

1. LISTEN. A trigger doing ``pg_notify('chan', NEW.secret)`` (a common production pattern)
   streams row data to every session LISTENing on the channel, whatever the session may
   read. LISTEN needs a ``listen:`` scope naming the channel (``deny.listen`` otherwise);
   UNLISTEN stays allowed. The channel the policy decides on must be the one PostgreSQL
   listens on: checked against ``pg_listening_channels()`` on the server itself.
2. Catalog names. An unqualified ``pg_*`` name is read as pg_catalog's, but PostgreSQL
   looks a name pg_catalog lacks up in the search_path: an allow-listed name that is not a
   relation of pg_catalog (``pg_partition_tree`` is a function) read a user's table of that
   name. Every allow-listed name must be a relation on the real server.

Each attack goes over the simple protocol (a raw client: every frame the proxy sends is
seen) and the extended protocol; the secret must never reach the client.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from policy.classify import StatementClass, classify
from policy.decide import ALLOWED_CATALOGS, DENIED_CATALOGS, DENIED_INFORMATION_SCHEMA
from policy.scopes import parse_scopes
from tests.support.fixtures_proxy import ProxyHandle, proxy_config
from tests.support.proxies import issue as grant_issue
from tests.support.proxies import sqlite_url
from tests.support.rawpg import RawClient, describe, policy_denial

pytestmark = pytest.mark.timeout(120)

AGENT = "e2e-sidechan"
# pg_listening_channels(): what the session listens on, asked through the proxy
SCOPES = "read:public.orders write:public.orders execute:pg_catalog.pg_listening_channels"
SECRET = "sidechan-vault-secret-4d1e"
CHANNEL = "sc_chan"  # the trigger's channel

SETUP = f"""
DROP TABLE IF EXISTS secret.sc_vault CASCADE;
DROP FUNCTION IF EXISTS secret.sc_notify();
DROP TABLE IF EXISTS public.pg_partition_tree;
CREATE TABLE secret.sc_vault (secret text);
CREATE FUNCTION secret.sc_notify() RETURNS trigger LANGUAGE plpgsql
    AS $$BEGIN PERFORM pg_notify('{CHANNEL}', NEW.secret); RETURN NEW; END$$;
CREATE TRIGGER sc_notify AFTER INSERT ON secret.sc_vault
    FOR EACH ROW EXECUTE FUNCTION secret.sc_notify();
"""
TEARDOWN = """
DROP TABLE IF EXISTS secret.sc_vault CASCADE;
DROP FUNCTION IF EXISTS secret.sc_notify();
DROP TABLE IF EXISTS public.pg_partition_tree;
"""


@pytest.fixture(scope="module")
def sproxy(pg, tmp_path_factory):
    pg.psql("SET ROLE pgwitness;\n" + SETUP, db="app")
    url = sqlite_url(tmp_path_factory.mktemp("sidechan") / "grants.db")
    handle = ProxyHandle(
        proxy_config(pg, **{"grants.store": url, "proxy.auth_fail_delay": 0.001})
    ).start()

    def issue(task: str, scopes: str) -> str:
        return grant_issue(handle, agent=AGENT, task=task, scopes=scopes)[1]

    handle.token = issue("SC", SCOPES)
    handle.other_channel_token = issue("SC-OTHER", SCOPES + " listen:sc_other,Sc_Chan_x")
    handle.unknown_token = issue("SC-UNK", SCOPES + " unknown:*")
    handle.channel_token = issue("SC-CHAN", SCOPES + f" listen:{CHANNEL}")
    yield handle
    handle.stop()
    pg.psql(TEARDOWN, db="app")


def on_pg(pg, sql: str) -> str:
    return pg.psql(sql, db="app").strip()


def notify_secret(pg, payload: str) -> None:
    """What production does: a row lands in a table the agent may not read."""
    on_pg(pg, f"INSERT INTO secret.sc_vault VALUES ('{payload}')")


def raw(handle, token) -> RawClient:
    return RawClient.session(handle.host, handle.port, AGENT, token)


def simple(client: RawClient, sql: str) -> list[bytes]:
    return client.query(sql)


def extended(client: RawClient, sql: str) -> list[bytes]:
    return client.extended(sql)


def later_frames(client: RawClient, settle: float = 0.3) -> list[bytes]:
    """Everything the proxy sends from now until a round trip after ``settle`` seconds:
    notifications arrive on their own, between queries."""
    time.sleep(settle)
    frames = simple(client, "SELECT 1")
    time.sleep(settle)
    return frames + simple(client, "SELECT 1")


def notifications(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if f[:1] == b"A"]


# --- 1. LISTEN ----------------------------------------------------------------------------

# Spellings of the trigger's channel: each is LISTEN on sc_chan as PostgreSQL reads it.
LISTEN_ATTACKS = [
    f"LISTEN {CHANNEL}",
    f'LISTEN "{CHANNEL}"',
    f"LISTEN {CHANNEL.upper()}",
    f"listen /* hi */ {CHANNEL}",
    f"LISTEN {CHANNEL}\n-- trailing comment",
]


@pytest.mark.parametrize("send", [simple, extended], ids=["simple", "extended"])
@pytest.mark.parametrize("sql", LISTEN_ATTACKS)
@pytest.mark.parametrize("grant", ["token", "other_channel_token", "unknown_token"])
def test_listen_without_a_scope_naming_the_channel_is_denied_and_nothing_arrives(
    sproxy, pg, send, sql, grant
):
    payload = f"{SECRET}-{abs(hash((send.__name__, sql, grant))) % 10**6}"
    with raw(sproxy, getattr(sproxy, grant)) as client:
        frames = send(client, sql)
        denial = policy_denial(frames)
        assert denial is not None and "LISTEN" in denial["M"], describe(frames)
        assert frames[-1][:1] == b"Z", describe(frames)
        notify_secret(pg, payload)
        seen = frames + later_frames(client)
        assert not notifications(seen), describe(seen)
        assert not any(payload.encode() in f for f in seen)
        # the session goes on, and PostgreSQL listens on nothing
        assert client.scalar("SELECT count(*) FROM pg_listening_channels()") == "0"


def test_listen_hidden_in_a_multi_statement_query_denies_the_whole_query(sproxy, pg):
    payload = SECRET + "-multi"
    with raw(sproxy, sproxy.token) as client:
        frames = simple(client, f"UNLISTEN *; LISTEN {CHANNEL}; SELECT 1")
        assert policy_denial(frames) is not None, describe(frames)
        notify_secret(pg, payload)
        seen = frames + later_frames(client)
        assert not notifications(seen) and not any(payload.encode() in f for f in seen)
        assert client.scalar("SELECT count(*) FROM pg_listening_channels()") == "0"


def test_asyncpg_add_listener_is_refused_without_the_scope(sproxy, pg):
    """The red team's reproducer: asyncpg's add_listener sends LISTEN."""

    async def go():
        conn = await asyncpg.connect(
            host=sproxy.host, port=sproxy.port, user=AGENT, password=sproxy.token,
            database="app", ssl=False, timeout=10,
        )  # fmt: skip
        got: list[str] = []
        try:
            with pytest.raises(asyncpg.PostgresError) as err:
                await conn.add_listener(CHANNEL, lambda *a: got.append(a[3]))
            assert err.value.sqlstate == "42501"
            await asyncio.to_thread(notify_secret, pg, SECRET + "-asyncpg")
            await asyncio.sleep(0.5)
            assert await conn.fetchval("SELECT 1") == 1
            return got
        finally:
            await conn.close()

    assert asyncio.run(go()) == []


def test_a_listen_scope_naming_the_channel_receives_it(sproxy, pg):
    """The positive control (the detection above works): granted, the payload arrives."""
    payload = SECRET + "-granted"
    with raw(sproxy, sproxy.channel_token) as client:
        frames = simple(client, f"LISTEN {CHANNEL.upper()}")
        assert policy_denial(frames) is None and frames[-1][:1] == b"Z", describe(frames)
        notify_secret(pg, payload)
        seen = later_frames(client, settle=0.1)  # no longer than the denied cases wait
        assert any(payload.encode() in f for f in notifications(seen)), describe(seen)
        # the scope names one channel: another stays denied
        assert policy_denial(simple(client, "LISTEN sc_other")) is not None
        # UNLISTEN, in every form, needs no scope
        for sql in ("UNLISTEN sc_other", f"UNLISTEN {CHANNEL}", "UNLISTEN *"):
            assert policy_denial(simple(client, sql)) is None, sql


@pytest.mark.parametrize("send", [simple, extended], ids=["simple", "extended"])
def test_unlisten_needs_no_scope(sproxy, send):
    with raw(sproxy, sproxy.token) as client:
        for sql in ("UNLISTEN *", f"UNLISTEN {CHANNEL}", 'UNLISTEN "Other"'):
            frames = send(client, sql)
            assert policy_denial(frames) is None and frames[-1][:1] == b"Z", describe(frames)


# Spellings whose channel depends on PostgreSQL's folding, quoting and truncation.
CHANNEL_SPELLINGS = [
    "sc_chan",
    "Sc_Chan",
    '"Sc_Chan"',
    '"sc chan, with; punctuation"',
    '"a""b"',
    "ÉcoleChan",
    '"ÉcoleChan"',
    "x" * 70,
    "Y" * 64,
    '"' + "é" * 40 + '"',
    '"' + "z" * 62 + 'é"',
    "chan$1",
]


def test_the_channel_the_policy_decides_on_is_the_one_postgres_listens_on(pg):
    """For each spelling: the classifier's channel, the scope parser's reading of the same
    spelling, and ``pg_listening_channels()`` on the server are one name."""
    for spelling in CHANNEL_SPELLINGS:
        (c,) = classify(f"LISTEN {spelling}")
        assert c.cls is StatementClass.UTILITY and c.command == "LISTEN", (spelling, c)
        out = pg.psql(
            f"LISTEN {spelling};\nSELECT encode(convert_to(c, 'UTF8'), 'hex') "
            "FROM pg_listening_channels() AS c",
            db="app",
        ).split()
        assert len(out) == 1, (spelling, out)
        server = bytes.fromhex(out[0]).decode("utf-8")
        assert c.detail == server, (spelling, c.detail, server)
        assert parse_scopes(f"listen:{spelling}").listen == {server}, spelling


# --- 2. catalog names -----------------------------------------------------------------------


def _pg_catalog_relations(pg, schema: str = "pg_catalog") -> dict[str, str]:
    out = on_pg(
        pg,
        "SELECT relname || ' ' || relkind::text FROM pg_class "
        f"WHERE relnamespace = '{schema}'::regnamespace",
    )
    return dict(line.split() for line in out.splitlines() if line.strip())


def test_every_allowed_catalog_is_a_relation_of_pg_catalog(pg):
    """An allow-listed name pg_catalog lacks would be looked up in the search_path."""
    relations = _pg_catalog_relations(pg)
    not_relations = sorted(
        n for n in ALLOWED_CATALOGS if relations.get(n) not in ("r", "v", "m", "p", "f")
    )
    assert not not_relations, f"not relations of pg_catalog on this server: {not_relations}"


# Denied names that are not pg_catalog's: extensions install their views where
# CREATE EXTENSION puts them (denying the unqualified name is still right).
EXTENSION_VIEWS = frozenset({"pg_stat_statements"})


def test_every_denied_catalog_exists(pg):
    """A misspelt name would deny nothing."""
    relations = _pg_catalog_relations(pg)
    missing = sorted(n for n in DENIED_CATALOGS - EXTENSION_VIEWS if n not in relations)
    assert not missing, f"not relations of pg_catalog on this server: {missing}"
    assert not ALLOWED_CATALOGS & DENIED_CATALOGS
    info = _pg_catalog_relations(pg, "information_schema")
    assert not sorted(DENIED_INFORMATION_SCHEMA - set(info))


CATALOG_ATTACKS = [
    "SELECT * FROM pg_partition_tree",
    "SELECT secret FROM pg_partition_tree",
    "TABLE pg_partition_tree",
    "SELECT * FROM pg_class WHERE relname IN (SELECT secret FROM pg_partition_tree)",
]


@pytest.mark.parametrize("sql", CATALOG_ATTACKS)
def test_a_user_table_named_like_a_catalog_postgres_lacks_is_not_read(sproxy, pg, sql):
    on_pg(
        pg,
        "SET ROLE pgwitness; DROP TABLE IF EXISTS public.pg_partition_tree; "
        "CREATE TABLE public.pg_partition_tree (secret text); "
        f"INSERT INTO public.pg_partition_tree VALUES ('{SECRET}')",
    )
    try:
        # the server reads the user's table for this name
        assert on_pg(pg, "SELECT secret FROM pg_partition_tree") == SECRET
        with raw(sproxy, sproxy.token) as client:
            for send in (simple, extended):
                frames = send(client, sql)
                assert policy_denial(frames) is not None, (send.__name__, describe(frames))
                assert not any(SECRET.encode() in f for f in frames), send.__name__

        async def prepared():
            conn = await asyncpg.connect(
                host=sproxy.host, port=sproxy.port, user=AGENT, password=sproxy.token,
                database="app", ssl=False, timeout=10,
            )  # fmt: skip
            try:
                with pytest.raises(asyncpg.PostgresError) as err:
                    stmt = await conn.prepare(sql)
                    await stmt.fetch()
                return err.value.sqlstate, str(err.value)
            finally:
                await conn.close()

        state, text = asyncio.run(prepared())
        assert state == "42501" and SECRET not in text, text
    finally:
        on_pg(pg, "DROP TABLE IF EXISTS public.pg_partition_tree")
