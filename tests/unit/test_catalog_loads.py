"""When the proxy loads a database's catalog (proxy.catalog_loader.CatalogLoader.refresh):
one load at a time, a waiting statement never decided on a load that started before it
arrived, loads paced apart, waiters sharing the next load. The load itself is replaced by
one that only notes when it ran (the queries are tested against a real server in
tests/integration)."""

from __future__ import annotations

import asyncio
import time

from policy.catalog import CatalogCache
from proxy.catalog_loader import CatalogLoader

DB = "app"


class Loads(CatalogLoader):
    """Each load takes ``duration`` seconds and notes its start and end."""

    def __init__(self, min_interval: float, duration: float = 0.05):
        super().__init__(cfg=None, credentials=None, min_interval=min_interval)
        self.duration = duration
        self.runs: list[tuple[float, float]] = []

    async def load(self, database: str) -> None:
        start = time.monotonic()
        await asyncio.sleep(self.duration)
        self.runs.append((start, time.monotonic()))


def test_a_waiter_never_joins_a_load_that_started_before_it_arrived():
    async def go():
        loads = Loads(min_interval=0.0, duration=0.1)
        first = loads.refresh(DB)
        await asyncio.sleep(0.03)  # the first load is running
        since = time.monotonic()
        second = loads.refresh(DB, since)
        assert second is not first
        await second
        assert first.done()
        return loads.runs, since

    runs, since = asyncio.run(go())
    assert len(runs) == 2
    assert runs[0][0] < since <= runs[1][0]  # the one it waited for started after it arrived
    assert runs[1][0] >= runs[0][1]  # one load at a time


def test_waiters_share_a_load_that_has_not_started():
    async def go():
        # (the first load outlasts the twenty waiters' arrival even on a loaded machine: at
        # 0.1 s it did not, once, with a full suite and two helpers' runs beside it)
        loads = Loads(min_interval=0.0, duration=0.6)
        loads.refresh(DB)
        await asyncio.sleep(0.02)
        tasks = []
        for _ in range(20):  # twenty statements waiting while the first load runs
            tasks.append(loads.refresh(DB, time.monotonic()))
            await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)
        return loads.runs, tasks

    runs, tasks = asyncio.run(go())
    assert len({id(t) for t in tasks}) == 1
    assert len(runs) == 2


def test_loads_are_paced_and_a_loop_of_waiting_statements_cannot_run_them_back_to_back():
    async def go():
        loads = Loads(min_interval=0.3, duration=0.01)
        await loads.refresh(DB)
        for _ in range(3):  # one statement after another, each waiting for a fresh load
            since = time.monotonic()
            await loads.refresh(DB, since)
            assert loads.runs[-1][0] >= since
        return loads.runs

    runs = asyncio.run(go())
    assert len(runs) == 4
    starts = [s for s, _ in runs]
    assert all(b - a >= 0.3 for a, b in zip(starts, starts[1:], strict=False)), starts


def test_a_load_after_ddl_is_not_paced():
    """DDL went through: until the reload is done, names it may have changed count as
    calls (a stale snapshot refuses them), so that reload starts at once."""

    async def go():
        loads = Loads(min_interval=30.0)
        await loads.refresh(DB)
        t0 = time.monotonic()
        await asyncio.wait_for(loads.refresh(DB), 5)  # on_ddl: no waiter's ``since``
        return loads.runs[-1][0] - t0

    assert asyncio.run(go()) < 1.0


def test_the_first_load_is_not_delayed():
    async def go():
        loads = Loads(min_interval=30.0)
        t0 = time.monotonic()
        await asyncio.wait_for(loads.refresh(DB), 5)
        return loads.runs[0][0] - t0

    assert asyncio.run(go()) < 1.0


def test_a_refresh_without_a_waiter_joins_the_running_load():
    async def go():
        loads = Loads(min_interval=0.0, duration=0.1)
        first = loads.refresh(DB)
        await asyncio.sleep(0.03)
        again = loads.refresh(DB)  # DDL went through: any load from now on will do
        await first
        return first, again, loads.runs

    first, again, runs = asyncio.run(go())
    assert again is first
    assert len(runs) == 1


def test_a_load_after_ddl_never_joins_one_that_started_before_it():
    """DDL went through while a load ran: that load may have read the catalog before the
    DDL, so the reload after it is another load, started after the DDL (round 26: a load in
    flight put a snapshot that was no longer stale, and a function made meanwhile was
    unknown to it: column syntax calling it was allowed)."""

    async def go():
        loads = Loads(min_interval=30.0, duration=0.1)
        first = loads.refresh(DB)
        await asyncio.sleep(0.03)  # the first load is running
        loads.cache.invalidate(DB)  # on_ddl
        ddl = loads.cache.entry(DB).invalidated_at
        again = loads.refresh(DB)
        assert again is not first
        await asyncio.wait_for(again, 5)  # not paced: DDL's reload starts at once
        return loads.runs, ddl

    runs, ddl = asyncio.run(go())
    assert len(runs) == 2
    assert runs[0][0] < ddl <= runs[1][0]


def test_a_snapshot_loaded_before_ddl_went_through_is_stale():
    cache = CatalogCache()
    before = time.monotonic()
    cache.put(DB, [], {}, loaded_at=before)
    assert not cache.get(DB).stale
    cache.invalidate(DB)  # DDL went through: unknown names count as calls
    assert cache.get(DB).stale
    cache.put(DB, [], {}, loaded_at=before)  # a load that started before it ends now
    assert cache.get(DB).stale
    cache.put(DB, [], {}, loaded_at=time.monotonic())
    assert not cache.get(DB).stale


def test_a_failed_load_is_logged_and_the_next_one_runs():
    class Failing(Loads):
        async def load(self, database: str) -> None:
            await super().load(database)
            if len(self.runs) == 1:
                raise OSError("upstream went away")

    async def go():
        loads = Failing(min_interval=0.0, duration=0.01)
        await loads.refresh(DB)  # never raises
        await loads.refresh(DB, time.monotonic())
        return loads.runs

    assert len(asyncio.run(go())) == 2


def test_a_load_that_gave_way_to_a_lock_is_tried_again(monkeypatch):
    """A catalog query that waited LOCK_TIMEOUT for a session's lock fails with 55P03 and
    releases what it holds (so the session's statement never deadlocks with it); the load
    is tried again after a pause, and a waiter gets a snapshot loaded after it arrived."""
    import proxy.catalog_loader as cl
    from proxy.upstream import UpstreamError

    monkeypatch.setattr(cl, "LOCK_RETRIES", (0.01, 0.01, 0.01))

    class GivesWay(Loads):
        async def load(self, database: str) -> None:
            await super().load(database)
            if len(self.runs) <= 2:
                raise UpstreamError("catalog query failed: lock timeout", "55P03")

    async def go():
        loads = GivesWay(min_interval=0.0, duration=0.01)
        since = time.monotonic()
        await loads.refresh(DB, since)
        return loads.runs, since

    runs, since = asyncio.run(go())
    assert len(runs) == 3
    assert all(start >= since for start, _ in runs)


def test_a_load_that_keeps_giving_way_ends_after_its_retries(monkeypatch):
    import proxy.catalog_loader as cl
    from proxy.upstream import UpstreamError

    monkeypatch.setattr(cl, "LOCK_RETRIES", (0.01, 0.01))

    class Blocked(Loads):
        async def load(self, database: str) -> None:
            await super().load(database)
            raise UpstreamError("catalog query failed: lock timeout", "55P03")

    async def go():
        loads = Blocked(min_interval=0.0, duration=0.01)
        await loads.refresh(DB)  # never raises: logged, the old snapshot stays
        return loads.runs

    assert len(asyncio.run(go())) == 3


def test_the_catalog_session_gives_way_before_the_servers_deadlock_check():
    """Its lock_timeout is under deadlock_timeout's default (1 s): the load, not the
    client's DROP, is the one that fails when each waits for the other."""
    import proxy.catalog_loader as cl

    assert cl.LOCK_TIMEOUT.endswith("ms") and int(cl.LOCK_TIMEOUT[:-2]) < 1000


def test_the_interval_is_the_upstream_catalog_min_interval_setting():
    """The server's loader is paced by ``upstream.catalog_min_interval`` (default 0.2 s,
    ``proxy.catalog_loader.MIN_INTERVAL``); 0 turns the pacing off."""
    from common.config import load_config
    from proxy.catalog_loader import MIN_INTERVAL
    from proxy.server import ProxyServer

    users = {"auth.users": {"a": "b"}}
    assert MIN_INTERVAL == 0.2
    default = ProxyServer(load_config(None, env={}, overrides=users), authenticator=None)
    assert default.catalogs.min_interval == MIN_INTERVAL
    for value in (0, 1.5):
        cfg = load_config(None, env={}, overrides={**users, "upstream.catalog_min_interval": value})
        assert ProxyServer(cfg, authenticator=None).catalogs.min_interval == value
