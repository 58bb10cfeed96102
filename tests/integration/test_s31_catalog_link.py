"""A database's catalog login kept between loads (session 31, ``CatalogLoader._queries``).

Loads that follow each other closely reuse one upstream login: no new login, the backend's
caches warm, each query planned once (a prepared statement); a load took 2-3 times less
(``bench``-style measure in docs/decisions.md, session 31). The login is closed
``LINK_IDLE_SECONDS`` after the last load (so an idle database's does not stand in the way
of a DBA's DROP DATABASE for long) and when the proxy stops; one the server ended meanwhile
is replaced within the load; a load that ends in an error does not keep it."""

from __future__ import annotations

import asyncio

import pytest

import proxy.catalog_loader as cl
from proxy.upstream import Credentials
from tests.support.fixtures_proxy import proxy_config
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(60)

PIDS = (
    "SELECT pid FROM pg_stat_activity"
    " WHERE application_name = 'pgwitness-catalog' AND datname = 'app'"
)


def _pids(pg) -> set[str]:
    return {p for p in pg.psql(PIDS).split() if p}


def test_loads_close_together_share_one_login_which_idles_out(pg, monkeypatch):
    monkeypatch.setattr(cl, "LINK_IDLE_SECONDS", 1.0)
    cfg = proxy_config(pg)
    loader = cl.CatalogLoader(cfg, Credentials(cfg), min_interval=0.0)

    async def go():
        seen = []
        for _ in range(3):
            await loader.load("app")
            seen.append(await asyncio.to_thread(_pids, pg))
        await asyncio.sleep(1.5)  # idle past LINK_IDLE_SECONDS
        return seen, await asyncio.to_thread(_pids, pg)

    seen, after = asyncio.run(go())
    assert len(seen[0]) == 1 and seen[0] == seen[1] == seen[2], seen  # one login, kept
    assert wait_until(lambda: not (_pids(pg) & seen[0]), 5.0, 0.05), after  # closed when idle
    assert loader.cache.get("app") is not None


def test_a_login_the_server_ended_is_replaced_within_the_load(pg):
    cfg = proxy_config(pg)
    loader = cl.CatalogLoader(cfg, Credentials(cfg), min_interval=0.0)

    async def go():
        await loader.load("app")
        (pid,) = await asyncio.to_thread(_pids, pg)
        await asyncio.to_thread(pg.psql, f"SELECT pg_terminate_backend({pid})")
        await asyncio.to_thread(wait_until, lambda: pid not in _pids(pg), 5.0, 0.02)
        first = loader.cache.get("app")
        await loader.load("app")  # over a new login: nothing fails
        second = loader.cache.get("app")
        now = await asyncio.to_thread(_pids, pg)
        loader.close()
        return pid, first, second, now

    pid, first, second, now = asyncio.run(go())
    assert second is not first and second.columns == first.columns
    assert len(now) == 1 and pid not in now
    assert wait_until(lambda: not (_pids(pg) & now), 5.0, 0.05)  # close() ended it


def test_a_load_whose_query_failed_does_not_keep_its_login(pg, monkeypatch):
    cfg = proxy_config(pg)
    loader = cl.CatalogLoader(cfg, Credentials(cfg), min_interval=0.0)

    async def go():
        ok = await loader._queries("app", "SELECT 1", "SELECT pg_catalog.1/0", "SELECT 2")
        kept = dict(loader._links)
        fine = await loader._queries("app", "SELECT 3")
        kept_after = dict(loader._links)
        loader.close()
        return ok, kept, fine, kept_after

    ok, kept, fine, kept_after = asyncio.run(go())
    assert ok[0] == [["1"]] and isinstance(ok[1], cl.UpstreamError) and ok[2] == [["2"]]
    assert kept == {}  # (an error: which statements it holds is not known)
    assert fine == [[["3"]]] and set(kept_after) == {"app"}


def test_a_kept_login_gives_way_to_a_connection_limit(pg):
    """A login the server refuses for a connection limit (53300) makes room by closing the
    kept catalog logins (``drop_links``; through the proxy:
    test_upstream_reuse.py::test_kept_backends_give_way_when_the_server_counts_them_...)."""
    cfg = proxy_config(pg)
    loader = cl.CatalogLoader(cfg, Credentials(cfg), min_interval=0.0)

    async def go():
        await loader.load("app")
        (pid,) = await asyncio.to_thread(_pids, pg)
        return pid, loader.drop_links(), loader.drop_links()

    pid, first, second = asyncio.run(go())
    assert first is True and second is False
    assert wait_until(lambda: pid not in _pids(pg), 5.0, 0.05)


def test_every_catalog_query_is_prepared_once_on_the_kept_login(pg):
    """Each query of a load is a statement the kept login prepares once (session 37: three
    single statements with a ``;`` in a comment or pattern went as simple Queries and were
    planned again at every load, ~30 ms of a warm one). A query that sets its own
    search_path is sent as SET, the prepared query, RESET; its rows are the query's."""
    cfg = proxy_config(pg)
    loader = cl.CatalogLoader(cfg, Credentials(cfg), min_interval=0.0)

    async def go():
        await loader.load("app")
        first = dict(loader._links["app"].prepared)
        await loader.load("app")
        link = loader._links["app"]
        second = dict(link.prepared)
        policy_rows = await loader._queries("app", cl.POLICY_EXPRS_SQL, "SHOW search_path")
        loader.close()
        return first, second, policy_rows

    first, second, (policy_rows, path) = asyncio.run(go())
    assert first == second  # nothing prepared again
    for name in ("DDL_CODE_SQL", "CODE_FLAGS_SQL", "TYPE_DEPENDENTS_SQL", "FUNCTIONS_SQL"):
        assert getattr(cl, name) in first, name  # (a one-statement query, whole)
    for name in ("POLICY_EXPRS_SQL", "RELATION_PLAN_CODE_SQL"):
        sql = getattr(cl, name)
        assert sql not in first and cl._statements(sql)[1] in first, name
    assert not any(s.lstrip().upper().startswith(("SET ", "RESET ")) for s in first)
    assert isinstance(policy_rows, list) and path == [['"$user", public']]  # reset after


def test_a_query_of_several_statements_answers_its_query_or_its_first_error(pg):
    cfg = proxy_config(pg)
    loader = cl.CatalogLoader(cfg, Credentials(cfg), min_interval=0.0)
    sets = "SET search_path = pg_catalog;\nSELECT pg_catalog.current_setting('search_path');\nRESET search_path\n"
    bad = "SET search_path = pg_catalog;\nSELECT 1/0;\nRESET search_path\n"

    async def go():
        got = await loader._queries("app", sets, bad, "SELECT 2", sets)
        loader.close()
        return got

    got = asyncio.run(go())
    assert got[0] == [["pg_catalog"]] and got[3] == [["pg_catalog"]]
    assert isinstance(got[1], cl.UpstreamError) and got[1].sqlstate == "22012"
    assert got[2] == [["2"]]
    with pytest.raises(ValueError, match="SET, query, RESET"):
        cl._statements("SET search_path = pg_catalog;\nSELECT 1")


def test_loads_are_counted_and_timed(pg):
    """``pgwitness_catalog_loads_total`` and ``pgwitness_catalog_load_seconds`` (an SRE's
    view of what a statement after DDL waits for): a load counts as ok, one that cannot
    log in as failed."""
    from prometheus_client import REGISTRY

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    cfg = proxy_config(pg)
    bad = proxy_config(pg, **{"upstream.password": "wrong"})
    loader = cl.CatalogLoader(cfg, Credentials(cfg), min_interval=0.0)
    failing = cl.CatalogLoader(bad, Credentials(bad), min_interval=0.0)
    before = (sample("pgwitness_catalog_loads_total", outcome="ok"),
              sample("pgwitness_catalog_loads_total", outcome="failed"),
              sample("pgwitness_catalog_load_seconds_count"),
              sample("pgwitness_catalog_load_seconds_sum"))  # fmt: skip

    async def go():
        await loader.refresh("app")
        await failing.refresh("app")
        loader.close()
        failing.close()

    asyncio.run(go())
    assert sample("pgwitness_catalog_loads_total", outcome="ok") == before[0] + 1
    assert sample("pgwitness_catalog_loads_total", outcome="failed") == before[1] + 1
    assert sample("pgwitness_catalog_load_seconds_count") == before[2] + 1
    assert sample("pgwitness_catalog_load_seconds_sum") > before[3]
    assert failing.cache.get("app") is None and loader.cache.get("app") is not None
