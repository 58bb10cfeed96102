"""Logged-in upstream sessions, kept for the same grant's next connection.

A connection per task or per query (agents, MCP servers, ``pgbench -C``) would otherwise
pay for a new backend every time: TCP, TLS, the server's SCRAM and a forked process, most
of what connecting through the proxy costs. When a grant's session ends cleanly (the
client's Terminate or a disconnect while the server is idle: no transaction open, nothing
owed, nothing half sent either way, and no DDL, role or unclassified statement run: see
``Relay.upstream_reusable``) its upstream session is reset with ``DISCARD ALL`` and parked
here, for at most ``upstream.reuse_idle_seconds``; the next login with the same
``ReuseKey`` takes it instead of logging in again.

The key is the grant, the database, the upstream login and every startup parameter (the
pinned search_path, the client's application_name, a grant's settings): a backend never
serves another grant, and what a reused session starts with is what a new login would
get. ``DISCARD ALL`` closes cursors and prepared statements, resets every setting and the
role to the login's, drops temporary objects, releases advisory locks and stops
listening; the answer must say so (``ResetAnswer``), or the backend is closed. What it
cannot reset (the state of an extension, such as PL/Python's ``GD``) stays with the same
grant. docs/decisions.md, "Reusing a grant's upstream session".
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

from common.wire import messages as m

from . import metrics
from .upstream import UpstreamSession

__all__ = ["DISCARD_ALL", "ResetAnswer", "ReuseKey", "UpstreamPool", "reuse_key"]

DISCARD_ALL = m.query("DISCARD ALL")
RESET_TIMEOUT = 5.0  # seconds the server has to answer DISCARD ALL
# A backend logged in longer ago than this is not kept again: what its login fixed (the
# role's and database's settings, pg_hba, a rotated password) is renewed at least this often.
MAX_AGE = 300.0
_MAX_RESET_FRAME = 1 << 20  # nothing in a DISCARD ALL answer is this long


@dataclass(frozen=True, slots=True)
class ReuseKey:
    grant_id: str
    database: str
    login: str  # the upstream user
    client_app: str  # the client's application_name (upstream it follows the tag)
    params: tuple[tuple[str, str], ...]  # every other upstream startup parameter


def reuse_key(
    grant_id: str, database: str, login: str, client_app: str, params: dict[str, str]
) -> ReuseKey:
    """The key of a login that asks for upstream ``params`` (application_name, the
    per-backend tag, left out: a reused backend keeps its own)."""
    rest = tuple(sorted((k, v) for k, v in params.items() if k != "application_name"))
    return ReuseKey(grant_id, database, login, client_app, rest)


class ResetAnswer:
    """The server's answer to ``DISCARD ALL``, fed as it arrives (sans-IO).

    ``feed`` returns None while the answer is incomplete; True once it ended in
    ReadyForQuery (idle) after ``CommandComplete("DISCARD ALL")``, with no error, nothing
    after it, and every setting the server reported back at the login's value; False at
    anything else. Notices and notifications that were already on their way are dropped:
    the session they were for has ended."""

    __slots__ = ("_buf", "_parameters", "_completed", "_settings_ok")

    def __init__(self, parameters: dict[str, str]):
        self._buf = bytearray()
        self._parameters = parameters
        self._completed = False
        self._settings_ok = True

    def feed(self, data: bytes) -> bool | None:
        buf = self._buf
        buf += data
        while len(buf) >= 5:
            t = buf[0]
            length = int.from_bytes(buf[1:5], "big", signed=True)
            if length < 4 or length > _MAX_RESET_FRAME:
                return False
            if len(buf) < 1 + length:
                return None
            body = bytes(buf[5 : 1 + length])
            del buf[: 1 + length]
            if t == m.Backend.COMMAND_COMPLETE:
                self._completed = body == b"DISCARD ALL\x00"
            elif t == m.Backend.PARAMETER_STATUS:
                name, pos = m.cstring(body, 0)
                value = m.cstring(body, pos)[0]
                if self._parameters.get(name) != value:
                    self._settings_ok = False
            elif t in (m.Backend.NOTICE_RESPONSE, m.Backend.NOTIFICATION):
                continue
            elif t == m.Backend.READY_FOR_QUERY:
                return self._completed and self._settings_ok and body == b"I" and not buf
            else:  # an ErrorResponse, or anything DISCARD ALL does not answer with
                return False
        return None


@dataclass(eq=False, slots=True)
class _Parked:
    key: ReuseKey
    upstream: UpstreamSession
    upstream_app: str
    timer: asyncio.TimerHandle | None = None
    parked: bool = False  # False while the reset is under way


class UpstreamPool:
    """One worker's parked upstream sessions (see the module's docstring)."""

    def __init__(self, idle_seconds: float, max_idle: int, *, reset_timeout: float = RESET_TIMEOUT,
                 max_age: float = MAX_AGE):  # fmt: skip
        self.idle_seconds = idle_seconds
        self.max_idle = max_idle
        self.reset_timeout = reset_timeout
        self.max_age = max_age
        self._idle: dict[ReuseKey, list[_Parked]] = {}
        self._held: set[_Parked] = set()  # resetting or parked

    @property
    def enabled(self) -> bool:
        return self.idle_seconds > 0 and self.max_idle > 0

    def __len__(self) -> int:
        return len(self._held)

    def has(self, key: ReuseKey) -> bool:
        return bool(self._idle.get(key))

    def take(self, key: ReuseKey) -> tuple[UpstreamSession, str] | None:
        """A parked session for ``key`` (and its upstream application_name), or None."""
        entries = self._idle.get(key)
        while entries:
            entry = entries.pop()  # the most recently used: its caches are warm
            if not entries:
                del self._idle[key]
            self._release(entry)
            upstream = entry.upstream
            if upstream.transport.is_closing():
                continue
            proto = upstream.protocol
            # Until the live connection takes the protocol over (in the same step of the
            # event loop), anything the server says would be said to nobody: end it.
            proto.on_data = lambda _data, t=upstream.transport: t.abort()
            proto.on_lost = None
            metrics.UPSTREAM_REUSE.labels("reused").inc()
            reused = dataclasses.replace(
                upstream, connect_seconds=0.0, leftover=b"", ready_status=b"I"
            )
            return reused, entry.upstream_app
        return None

    def give_back(self, key: ReuseKey, upstream: UpstreamSession, upstream_app: str) -> bool:
        """Reset ``upstream`` and park it; False: not taken (the caller closes it)."""
        transport = upstream.transport
        if not self.enabled or transport.is_closing():
            return False
        if len(self._held) >= self.max_idle:
            metrics.UPSTREAM_REUSE.labels("full").inc()
            return False
        if time.monotonic() - upstream.logged_in_at > self.max_age:
            metrics.UPSTREAM_REUSE.labels("aged").inc()
            return False
        entry = _Parked(key, upstream, upstream_app)
        self._held.add(entry)
        answer = ResetAnswer(upstream.parameters)
        proto = upstream.protocol
        proto.on_pause = proto.on_resume = None
        proto.on_lost = lambda _exc: self._drop(entry, "lost")
        proto.on_data = lambda data: self._reset_answer(entry, answer, data)
        if not transport.is_reading():
            transport.resume_reading()  # the client may have left while not reading
        transport.write(DISCARD_ALL)
        loop = asyncio.get_running_loop()
        entry.timer = loop.call_later(self.reset_timeout, self._drop, entry, "reset_failed")
        metrics.UPSTREAM_IDLE.inc()
        return True

    def drop_login(self, login: str) -> int:
        """Close every session parked for upstream user ``login`` (the server refused a
        new login as it for too many connections); how many."""
        entries = [e for e in self._held if e.key.login == login]
        for entry in entries:
            self._drop(entry, "make_room")
        return len(entries)

    def close(self) -> None:
        for entry in list(self._held):
            self._drop(entry, "shutdown")

    # --- internals ---------------------------------------------------------------

    def _reset_answer(self, entry: _Parked, answer: ResetAnswer, data: bytes) -> None:
        done = answer.feed(data)
        if done is None:
            return
        if not done:
            self._drop(entry, "reset_failed")
            return
        assert entry.timer is not None
        entry.timer.cancel()
        entry.parked = True
        proto = entry.upstream.protocol
        proto.on_data = lambda _data: self._drop(entry, "unexpected")
        loop = asyncio.get_running_loop()
        entry.timer = loop.call_later(self.idle_seconds, self._drop, entry, "idle")
        self._idle.setdefault(entry.key, []).append(entry)
        metrics.UPSTREAM_REUSE.labels("parked").inc()

    def _release(self, entry: _Parked) -> None:
        if entry in self._held:
            self._held.discard(entry)
            metrics.UPSTREAM_IDLE.dec()
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None

    def _drop(self, entry: _Parked, outcome: str) -> None:
        if entry not in self._held:
            return
        self._release(entry)
        if entry.parked:
            entries = self._idle.get(entry.key)
            if entries is not None and entry in entries:
                entries.remove(entry)
                if not entries:
                    del self._idle[entry.key]
        metrics.UPSTREAM_REUSE.labels(outcome).inc()
        proto = entry.upstream.protocol
        proto.on_data = proto.on_lost = None
        transport = entry.upstream.transport
        if not transport.is_closing():
            if outcome != "lost":
                transport.write(m.TERMINATE)
            transport.close()
