"""An audit index built by hand in memory (no proxy), and times around a fixed instant:
what the grant-side audit rounds (sessions 33 and 35) write their rows with."""

from __future__ import annotations

import datetime as dt
import json

import duckdb

from recorder.audit import index
from recorder.audit.answer import Filters, audit

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def us(seconds: float) -> int:
    return int(at(seconds).timestamp() * 1e6)


def z(seconds: float) -> str:
    return at(seconds).isoformat().replace("+00:00", "Z")


class Index:
    """An index in memory, its rows written as an update would write them."""

    def __init__(self) -> None:
        self.con = duckdb.connect(":memory:")
        index._schema(self.con)
        self.con.execute("SET TimeZone = 'UTC'")
        self.seq = 0

    def stream(self, sid: str = "CTL", intact: bool = True) -> Index:
        index._insert(self.con, "recordings", [{
            "session_id": sid, "kind": "control", "status": "open" if intact else "tampered",
            "intact": intact, "problems": None if intact else '["modified: 1.chunk"]',
            "indexed_at": us(0)}])
        return self

    def event(self, kind: str, when: float, payload: dict, stream: str = "CTL",
              verified: bool = True) -> Index:
        self.seq += 1
        index._insert(self.con, "control_events", [{
            "stream_id": stream, "seq": self.seq, "ts": us(when), "kind": kind,
            "grant_id": payload.get("grant_id") or payload.get("grant"),
            "session_ref": payload.get("session"), "payload": json.dumps(payload),
            "verified": verified}])
        return self

    def grant_event(self, kind: str, gid: str, when: float, expires: float, **extra) -> Index:
        p = {"grant_id": gid, "agent": "bot", "task": "T", "reason": "why", "database": "app",
             "scopes": "read:public.t", "enforce": True, "by": "alice", "at": at(when).isoformat(),
             "not_before": at(0).isoformat(), "expires_at": at(expires).isoformat(), **extra}
        return self.event(kind, when, p, stream=extra.pop("stream", "CTL"))

    def session(self, sid: str, gid: str, start: float, end: float, host="h", pid=1,
                **extra) -> Index:
        index._insert(self.con, "sessions", [{
            "session_id": sid, "grant_id": gid, "agent": "bot", "task": "T", "database": "app",
            "started_at": us(start), "ended_at": us(end), "end_cause": "terminate",
            "client_addr": "10.0.0.1:5000", "host": host, "pid": pid, "status": "closed",
            "intact": True, "statements": 0, "denials": 0, "errors": 0, **extra}])
        index._insert(self.con, "recordings", [{"session_id": sid, "kind": "session",
                                                "status": "closed", "intact": True,
                                                "indexed_at": us(0)}])
        return self

    def opened(self, sid: str, when: float, stream: str = "CTL") -> Index:
        return self.event("session.opened", when, {"session": sid}, stream=stream)

    def refused(self, when: float, agent: str = "bot", grant: str | None = None,
                verified: bool = True, stream: str = "CTL") -> Index:
        self.seq += 1
        p = {"agent": agent, "database": "app", "grant": grant, "client": "10.0.0.9:4000",
             "reason": "password" if grant is None else "revoked", "sqlstate": "28P01",
             "message": "password authentication failed"}
        index._insert(self.con, "control_events", [{
            "stream_id": stream, "seq": self.seq, "ts": us(when), "kind": "login.refused",
            "grant_id": grant, "payload": json.dumps(p), "verified": verified}])
        return self

    def fold(self) -> Index:
        index.Indexer(self.con, None, [])._cross_check()
        index.rebuild_grants(self.con)
        return self

    def grant(self, gid: str) -> dict:
        (g,) = [g for g in audit(self.con, Filters(grant=gid))["grants"]]
        return g


# --- who was granted what, for how long ------------------------------------------------
