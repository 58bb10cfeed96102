"""A recording proxy whose store fails on demand, and the raw-wire checks the red-team
rounds on the recorder's health gate (20b, 21) judge its refusals by: rows that landed in
a probe table, frames received."""

from __future__ import annotations

import socket

from devtools.testing import FlakyStore
from tests.support.rawpg import RawClient, describe, error_fields
from tests.support.recording import grants, issue_grant, recording
from tests.support.wait import wait_for

# The store's failure is noticed fast: the recorder is unhealthy 0.2 s after it.
UNHEALTHY = {"recorder.upload_process": False, "recorder.fail_after_seconds": 0.2,
             "recorder.retry_max_seconds": 0.1}  # fmt: skip


def grant_proxy(make_proxy, tmp_path, scopes: str, **extra):
    """A recording proxy with a grant store and one grant of ``scopes`` (``h.token``)."""
    h = make_proxy(**recording(tmp_path, **extra), **grants(tmp_path))
    _, h.token = issue_grant(h, scopes=scopes)
    h.tmp = tmp_path
    return h


def client(h, agent: str, **kw) -> RawClient:
    """A raw session of the grant's ``agent``, writes sent at once (no Nagle delay)."""
    c = RawClient.session(h.host, h.port, agent, h.token, **kw)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def outage(h, nudge: RawClient, sql: str) -> FlakyStore:
    """Make the recorder's store fail until the recorder reports itself unhealthy;
    ``nudge`` runs ``sql`` so that there is something to upload and the failure is
    noticed. The caller sets ``.down = False`` to end it."""
    rec = h.runtime.recorder
    flaky = FlakyStore(rec.store)
    rec.store = flaky
    flaky.down = True
    nudge.query(sql)
    wait_for(lambda: not rec.healthy, 10.0, "the recorder to give up on its store")
    return flaky


def rows_with(pg, table: str, v: int) -> int:
    return int(pg.psql(f"SELECT count(*) FROM {table} WHERE v = {v}", db="app").strip())


def fresh(pg, table: str, *values: int) -> None:
    """No row of ``table`` holds any of ``values`` (each probe judges by its own)."""
    pg.psql(f"DELETE FROM {table} WHERE v IN ({', '.join(map(str, values))})", db="app")


def until(c: RawClient, stop: bytes, count: int = 1) -> list[bytes]:
    """Frames up to and including the ``count``-th of type ``stop``."""
    got: list[bytes] = []
    while count:
        f = c.read_frame()
        assert f is not None, describe(got)
        got.append(f)
        if f[:1] == stop:
            count -= 1
    return got


def errors(frames: list[bytes]) -> list[dict[str, str]]:
    return [error_fields(f) for f in frames if f[:1] == b"E"]


class ProbeTable:
    """A table ``(v int)`` the probes write to, a recording proxy with a grant on it, and
    raw sessions of the grant's agent (rounds 20b, 21, 22: each probe judges by its own
    values). Its methods stand in for the module-level helpers those files call."""

    def __init__(self, table: str, agent: str, scopes: str):
        self.table, self.agent, self.scopes = table, agent, scopes

    def create(self, pg) -> None:
        self.drop(pg)
        pg.psql(f"SET ROLE pgwitness; CREATE TABLE {self.table} (v int)", db="app")

    def drop(self, pg) -> None:
        pg.psql(f"DROP TABLE IF EXISTS {self.table}", db="app")

    def rows_with(self, pg, v: int) -> int:
        return rows_with(pg, self.table, v)

    def fresh(self, pg, *values: int) -> None:
        fresh(pg, self.table, *values)

    def proxy(self, make_proxy, tmp_path, *, scopes: str | None = None, **extra):
        return grant_proxy(make_proxy, tmp_path, scopes or self.scopes, **extra)

    def client(self, h, **kw) -> RawClient:
        return client(h, self.agent, **kw)
