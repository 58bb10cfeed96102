"""Hand-made recordings for the audit's unit tests: records in relay order (the client's
frames, the proxy's decisions, the server's answers), read by ``recorder.audit.derive``
as it reads a real session's (tests/unit/test_audit_*.py)."""

from __future__ import annotations

import struct

from devtools.testing import command_complete, data_row, error, frame, query, ready, row_description
from recorder.audit.derive import SessionFacts
from recorder.records import Direction, Kind, Record, dump_json

PC, BC = frame(b"1", b""), frame(b"2", b"")  # ParseComplete, BindComplete
SELECT1 = row_description("n") + data_row("1") + command_complete("SELECT 1")


class Session:
    """Records in relay order: the client's frames, the proxy's decisions, the server's."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def _add(self, direction: Direction, kind: Kind, typ: str, payload: bytes) -> None:
        seq = len(self.records)
        self.records.append(Record(seq, seq * 1000, direction, kind, typ, payload))

    def start(self, **meta) -> Session:
        p = {"format": 1, "wall_ns": 10**18, "meta": {"agent": "a", "task": "t", **meta}}
        self._add(Direction.PROXY, Kind.META, "session.start", dump_json(p))
        return self

    def client(self, *frames: bytes, decisions: int = 0) -> Session:
        self._add(Direction.C2S, Kind.WIRE, "", b"".join(frames))
        for _ in range(decisions):
            self._add(
                Direction.PROXY,
                Kind.DECISION,
                "allow",
                dump_json({"denied": False, "outcome": "allowed", "statements": []}),
            )
        return self

    def server(self, *frames: bytes) -> Session:
        self._add(Direction.S2C, Kind.WIRE, "", b"".join(frames))
        return self

    def meta(self, typ: str, payload: bytes, kind: Kind = Kind.META) -> Session:
        self._add(Direction.PROXY, kind, typ, payload)
        return self

    def facts(self, unverified: frozenset[int] = frozenset()) -> SessionFacts:
        f = SessionFacts("s")
        for r in self.records:
            f.feed(r, r.seq not in unverified)
        f.finish()
        return f

    def rows(self) -> list[tuple]:
        return [
            (r["text"], r["outcome"], r["command_tag"] or r["sqlstate"])
            for r in self.facts().statements
        ]


class Conn:
    def __init__(self) -> None:
        self.s = Session().start()

    def q(self, sql: str, *tags: str, z: bytes | None, fail: str | None = None) -> Conn:
        answer = [command_complete(t) for t in tags]
        if fail is not None:
            answer.append(error(fail, "boom"))
        self.s.client(query(sql), decisions=1).server(*answer, *([ready(z)] if z else []))
        return self

    def end(self, cause: str = "terminate", unverified: bool = False) -> Conn:
        self.s.meta("session.end", dump_json({"cause": cause, "detail": ""}))
        self._unverified = frozenset({len(self.s.records) - 1} if unverified else ())
        return self

    def rows(self) -> list[dict]:
        return self.s.facts(getattr(self, "_unverified", frozenset())).statements

    def got(self) -> dict[str, tuple]:
        return {r["text"]: (r["outcome"], r["message"]) for r in self.rows()}


def answer_of(statements: list[dict]) -> dict:
    """A one-session answer holding ``statements`` (derive's rows, as the index keeps them)."""
    rows = [{**st, "ts": "2026-12-05T10:00:00.000000Z", "duration_ms": 1.0, "verified": True}
            for st in statements]  # fmt: skip
    session = {
        "session_id": "s1", "intact": True, "status": "closed",
        "started_at": "2026-12-05T10:00:00Z", "ended_at": "2026-12-05T10:01:00Z",
        "end_cause": "terminate", "end_detail": None, "client_addr": "127.0.0.1",
        "client_tls": None, "application_name": None, "upstream": "db:5432",
        "backend_pid": 1, "upstream_application_name": None, "statement_rows": rows,
    }  # fmt: skip
    return {
        "verification": {"intact": True, "recordings": 1, "open": [], "not_intact": [],
                         "verified_at": "2026-12-05T10:02:00Z"},
        "filters": {}, "grants": [], "other_sessions": [session], "denials": [],
        "refused_logins": [],
    }  # fmt: skip


def described(*columns: tuple[str, int]) -> bytes:
    """A RowDescription of ``(name, type OID)`` columns."""
    body = struct.pack(">h", len(columns))
    for name, oid in columns:
        body += name.encode() + b"\x00" + struct.pack(">ihihih", 0, 0, oid, -1, -1, 0)
    return frame(b"T", body)


def bind(stmt: str = "", portal: str = "", params: tuple[bytes, ...] = ()) -> bytes:
    """A Bind of statement ``stmt`` to ``portal`` with text ``params``."""
    body = portal.encode() + b"\x00" + stmt.encode() + b"\x00" + struct.pack(">hh", 0, len(params))
    for p in params:
        body += struct.pack(">i", len(p)) + p
    return frame(b"B", body + struct.pack(">h", 0))


def execute(portal: str = "", limit: int = 0) -> bytes:
    return frame(b"E", portal.encode() + b"\x00" + struct.pack(">i", limit))
