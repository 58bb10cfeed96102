"""The grant census gauges (``pgwitness_grants_valid``, ``pgwitness_grants_expiring_soon``)
counted from a real grant store, by a real proxy, and served on its ``/metrics``."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.request

import pytest

from policy.grants.store import open_store
from proxy.grant_census import GrantCensus
from proxy.metrics import start_metrics_server
from tests.support.proxies import metric

pytestmark = pytest.mark.timeout(60)


async def _issue(store, agent: str, ttl: str, **kw):
    grant, _token = await store.issue(
        agent=agent, task=f"CENSUS-{agent}-{ttl}", reason="census test", granted_by="test",
        database="app", scopes="read:public.orders", ttl=ttl, **kw,
    )
    return grant


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return answer.read().decode()


def test_census_counts_usable_and_expiring_grants_by_agent(tmp_path, make_proxy):
    url = f"sqlite:///{tmp_path}/grants.db"

    async def issue_all():
        store = await open_store(url)
        try:
            await _issue(store, "census-a", "2h")
            await _issue(store, "census-a", "10m")  # expires within 15 minutes
            later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
            await _issue(store, "census-b", "2h", not_before=later)  # not usable yet
            gone = await _issue(store, "census-b", "2h")
            await store.revoke(gone.id, by="test")  # revoked: not usable
        finally:
            await store.close()

    asyncio.run(issue_all())
    server = start_metrics_server("127.0.0.1", 0)  # a port of its own: none to race for
    port = server.server_port
    try:
        make_proxy(**{"grants.store": url})  # counts at start, before any session
        deadline = time.monotonic() + 30
        while metric("pgwitness_grants_valid", agent="census-a") != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        text = _scrape(port)
    finally:
        server.shutdown()
    assert 'pgwitness_grants_valid{agent="census-a"} 2.0' in text
    assert 'pgwitness_grants_expiring_soon{agent="census-a"} 1.0' in text
    assert 'pgwitness_grants_valid{agent="census-b"}' not in text  # never usable: no series


def test_an_agent_whose_grants_end_drops_to_zero(tmp_path):
    async def run():
        store = await open_store(f"sqlite:///{tmp_path}/grants.db")
        try:
            census = GrantCensus()
            grant = await _issue(store, "census-c", "1h")
            await census.refresh(store)
            assert metric("pgwitness_grants_valid", agent="census-c") == 1
            assert metric("pgwitness_grants_expiring_soon", agent="census-c") == 0
            await store.revoke(grant.id, by="test")
            await census.refresh(store)
            assert metric("pgwitness_grants_valid", agent="census-c") == 0
        finally:
            await store.close()

    asyncio.run(run())
