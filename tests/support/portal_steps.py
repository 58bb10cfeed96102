"""The message steps the portal red-team rounds (75-78) send: each step a list of frames
ending in the Query or Sync messages the server answers with one ReadyForQuery each, in
the three ways a statement is sent (simple Query, extended unnamed, a named prepared
statement), and the runs of them directly (as ``pgwitness``) or through the proxy."""

from __future__ import annotations

from itertools import count

from tests.support import planted
from tests.support import rawpg as r

_names = count()


def Q(sql: str) -> list[list[bytes]]:
    """``sql`` as a simple Query."""
    return [[r.query(sql)]]


def X(sql: str) -> list[list[bytes]]:
    """``sql`` in the extended protocol, unnamed statement and portal, Describe portal."""
    return [[r.parse("", sql), r.bind(), describe_portal(""), r.execute(), r.SYNC]]


def P(sql: str) -> list[list[bytes]]:
    """``sql`` as a named prepared statement: Parse + Sync, then Bind + Describe portal +
    Execute + Sync."""
    name = f"pstep_{next(_names)}"
    return [
        [r.parse(name, sql), r.SYNC],
        [r.bind(statement=name), describe_portal(""), r.execute(), r.SYNC],
    ]


def in_mode(mode: str, sql: str) -> list[list[bytes]]:
    return {"simple": Q, "extended": X, "prepared": P}[mode](sql)


def describe_portal(name: str) -> bytes:
    return r.frame(b"D", b"P" + name.encode() + b"\x00")


def describe_statement(name: str) -> bytes:
    return r.frame(b"D", b"S" + name.encode() + b"\x00")


def close_portal(name: str) -> bytes:
    return r.frame(b"C", b"P" + name.encode() + b"\x00")


def close_statement(name: str) -> bytes:
    return r.frame(b"C", b"S" + name.encode() + b"\x00")


def answers(c, frames) -> list[bytes]:
    """What ``frames`` received: up to the ReadyForQuery of each Query and Sync among them,
    or (none: a Flush) up to PortalSuspended, CommandComplete or an error. ``(frames, n)``:
    ``n`` ReadyForQuery (groups the server merges)."""
    frames, expected = frames if isinstance(frames, tuple) else (frames, None)
    c.send(*frames)
    if expected is None:
        expected = sum(1 for f in frames if f[:1] in (b"Q", b"S"))
    got: list[bytes] = []
    if not expected:
        while (f := c.read_frame()) is not None:
            got.append(f)
            if f[:1] in (b"s", b"C", b"E"):
                break
        return got
    for _ in range(expected):
        got += c.frames_until_ready()
    return got


def run(c, steps) -> list[str]:
    """Each step's answers, as text."""
    return [planted.text(answers(c, frames)) for frames in steps]


def direct(pg, steps) -> list[str]:
    """``steps`` directly as ``pgwitness`` (any block rolled back, cursors closed)."""
    with r.RawClient.direct(pg) as c:
        c.query("SET ROLE pgwitness")
        got = run(c, steps)
        c.query("ROLLBACK")
        c.query("CLOSE ALL")
    return got


def proxied(px, key: str, steps) -> list[str]:
    """``steps`` through the proxy in a session of grant ``key`` (any block rolled back;
    the session must answer a query after)."""
    with planted.session(px, px.tokens[key]) as c:
        got = run(c, steps)
        c.query("ROLLBACK")
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    return got


def flat(*parts) -> list[list[bytes]]:
    return [s for p in parts for s in p]
