"""asyncpg's ``test_prepare_14_explain`` on fresh connections, back to back (session 31).

Each connection drops and makes a table (its own DDL, committed), then in a transaction
``EXPLAIN (FORMAT JSON, ANALYZE) INSERT`` into it, which asyncpg prepares (Parse, Describe,
Sync) and then binds: the reload the DDL started arrives between the two, so the Bind
decides the statement again, on a snapshot stale only by the session's own DDL. The
previous connection's DROP, counted while the snapshot was stale, made every later
connection's DDL count as another's until a snapshot that was not stale at all (which back
to back DDL never gives): the Bind, which cannot wait, refused the EXPLAIN in 24 of 25
runs (the drivers' differential). The server judges the statement; the grant covers it.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support.fixtures_proxy import ProxyHandle, proxy_config
from tests.support.proxies import issue, sqlite_url

pytestmark = pytest.mark.timeout(120)

AGENT = "s31-asyncpg"
EXPLAIN = "EXPLAIN (FORMAT JSON, ANALYZE) INSERT INTO s31.mytab (a) VALUES (1), (2)"


@pytest.fixture(scope="module")
def aproxy(pg, tmp_path_factory):
    pg.psql("CREATE SCHEMA s31 AUTHORIZATION pgwitness", db="app")
    url = sqlite_url(tmp_path_factory.mktemp("s31") / "grants.db")
    handle = ProxyHandle(proxy_config(pg, **{"grants.store": url})).start()
    handle.grant, handle.token = issue(
        handle, agent=AGENT, task="S31", scopes="read:s31.* write:s31.* ddl:s31.*"
    )
    yield handle
    handle.stop()
    pg.psql("DROP SCHEMA s31 CASCADE", db="app")


def test_explain_after_own_ddl_on_fresh_connections(aproxy):
    async def go() -> list[tuple[int, str, str]]:
        errors: list[tuple[int, str, str]] = []
        for i in range(10):
            con = await asyncpg.connect(
                host=aproxy.host, port=aproxy.port, user=AGENT, password=aproxy.token,
                database="app", ssl=False,
            )  # fmt: skip
            try:
                await con.execute("DROP TABLE IF EXISTS s31.mytab")
                for own_block in (True, False):
                    if not own_block:  # the DDL committed on its own, then a transaction
                        await con.execute("CREATE TABLE s31.mytab (a int)")
                    tr = con.transaction()
                    await tr.start()
                    try:
                        if own_block:  # the DDL in the EXPLAIN's transaction (plain DDL)
                            await con.execute("CREATE TABLE s31.mytab (a int)")
                        plan = await con.fetchval(EXPLAIN)
                        assert "ModifyTable" in plan, plan
                    except asyncpg.PostgresError as exc:
                        errors.append((i, exc.sqlstate, str(exc)[:160]))
                    finally:
                        await tr.rollback()
                assert await con.fetchval("SELECT count(*) FROM s31.mytab") == 0
                await con.execute("DROP TABLE s31.mytab")
            finally:
                await con.close()
        return errors

    assert asyncio.run(go()) == []
