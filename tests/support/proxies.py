"""The proxy under test, from outside: grants issued on its store, its metrics, the FATALs
it sends, its live sessions."""

from __future__ import annotations

import asyncio
import itertools
import time

import asyncpg
from prometheus_client import REGISTRY

from tests.support.fixtures_proxy import ProxyHandle
from tests.support.rawpg import RawClient, describe, error_fields

AGENT = "e2e-bot"
SCOPES = "read:public.orders,public.customers write:public.orders"
_task_ids = itertools.count(1)


def new_task(prefix: str = "E2E") -> str:
    return f"{prefix}-{next(_task_ids)}-{time.monotonic_ns() % 100000}"


def wait_fatal(client: RawClient, timeout: float) -> tuple[dict[str, str], float]:
    """Block until the proxy sends a FATAL and closes; (its fields, wall-clock time it arrived)."""
    client.sock.settimeout(timeout)
    f = client.read_frame()
    arrived = time.time()
    assert f is not None and f[:1] == b"E", describe([f] if f else [])
    err = error_fields(f)
    assert err["S"] == "FATAL", err
    assert client.read_frame() is None, "connection stays open after the FATAL"
    return err, arrived


def metric(name: str, **labels: str) -> float:
    """Sum of the in-process samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def grant_args(**change) -> dict:
    """Arguments for ``GrantStore.issue``: a fresh task for AGENT, overridden by ``change``."""
    args = dict(
        agent=AGENT,
        task=new_task(),
        reason="end-to-end test",
        granted_by="pytest",
        database="app",
        scopes=SCOPES,
        ttl="10m",
    )
    args.update(change)
    return args


def issue(handle: ProxyHandle, **change):
    """Issue a grant on the proxy's own store; (grant, token)."""
    return handle.call(handle.runtime.store.issue(**grant_args(**change)))


def drop_grant_roles(pg) -> None:
    """Drop the per-grant roles tests left behind (their proxies stopped before the grants
    ended), so the shared cluster stays as other tests expect it."""
    leftover = pg.psql(
        "SELECT rolname FROM pg_roles WHERE rolname LIKE 'pgw\\_g\\_%' "
        "AND shobj_description(oid, 'pg_authid') LIKE 'pgwitness:%'"
    ).split()
    for role in leftover:
        pg.psql(f"DROP OWNED BY {role}; DROP ROLE {role};\n", db="app")


def sqlite_url(path) -> str:
    return f"sqlite:///{path}"  # path is absolute: sqlite:////tmp/...


def store_cluster_url(cluster) -> str:
    return f"postgresql://pgwitness:store-secret@127.0.0.1:{cluster.port}/grants_e2e"


def expect_fatal(client: RawClient, sqlstate: str) -> dict[str, str]:
    """The proxy answers one FATAL ErrorResponse with ``sqlstate`` and closes the connection."""
    frames = client.frames_until_eof()
    errors = [error_fields(f) for f in frames if f[:1] == b"E"]
    assert len(errors) == 1, describe(frames)
    assert errors[0]["S"] == "FATAL" and errors[0]["C"] == sqlstate, errors[0]
    assert frames[-1][:1] == b"E", describe(frames)
    return errors[0]


def assert_serves(handle) -> None:
    """A fresh asyncpg session through ``handle`` runs a query."""

    async def go():
        conn = await asyncpg.connect(**handle.connect_kwargs(), ssl=False, timeout=10)
        try:
            return await conn.fetchval("select count(*) from public.customers")
        finally:
            await conn.close()

    assert asyncio.run(go()) == 3


def wait_sessions(handle, n: int, timeout: float = 3.0) -> None:
    """The proxy's live-session set settles at ``n`` (no leaked half-open connections)."""
    deadline = time.monotonic() + timeout
    while len(handle.server.connections) != n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(handle.server.connections) == n
