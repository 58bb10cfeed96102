"""One client connection's relay state, sans-IO.

``Relay.from_client(data)`` and ``Relay.from_server(data)`` take bytes as they arrive and
return ``(to_server, to_client)`` bytes; the caller owns the sockets. Only whole frames
are ever passed on, so the proxy can always speak (a FATAL on expiry, say) at a frame
boundary.

Denials keep Postgres's own transaction semantics by letting the *server* raise the
error: the denied statement is replaced by a ``DO`` block that raises 42501 with our
message. Inside ``BEGIN`` the transaction is then aborted (25P02 until ROLLBACK); in a
pipeline the implicit transaction rolls back; everything up to the next Sync is skipped
by the server, exactly as if the client's own statement had failed. The ErrorResponse
is recognised by a per-session marker and cleaned of the PL/pgSQL traces, and the
ParseComplete/BindComplete of the injected messages are dropped. When nothing is in
flight and no transaction is open, a denied simple Query is answered locally instead,
which is equivalent and saves a round trip.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass

from .wire import messages as m
from .wire.errors import INSUFFICIENT_PRIVILEGE, ProtocolViolation, error_response
from .wire.framing import FrameReader

F = m.Frontend
B = m.Backend
_Z_PRODUCERS = frozenset((F.QUERY, F.SYNC, F.FUNCTION_CALL))
_HOLDABLE = frozenset((B.PARSE_COMPLETE, B.BIND_COMPLETE))
_STRIP_FIELDS = frozenset("sWFLR")  # marker (schema field) and PL/pgSQL traces
_STATEMENT_TYPES = frozenset((F.QUERY, F.PARSE, F.FUNCTION_CALL))
_NAMES = {F.QUERY: "Query", F.PARSE: "Parse", F.FUNCTION_CALL: "FunctionCall"}
CANNOT_RECORD = "57P03"


@dataclass(frozen=True)
class Refusal:
    """A denial that is not the policy's: shaped like a policy Verdict."""

    message: str
    sqlstate: str
    allowed: bool = False
    would_deny: bool = False
    decisions: tuple = ()


UNRECORDED = Refusal(
    "pgwitness cannot record this session right now (recording store unavailable): "
    "statement refused rather than run unrecorded",
    CANNOT_RECORD,
)


@dataclass
class Counters:
    """Traffic counts, read and reset by the metrics flusher (plain ints: cheap on the hot path)."""

    bytes_c2s: int = 0
    bytes_s2c: int = 0
    msgs_c2s: int = 0
    msgs_s2c: int = 0
    allowed: int = 0
    denied: int = 0
    would_deny: int = 0


class Relay:
    """Relay logic for one session: policy on statements, recording of both directions."""

    def __init__(
        self,
        *,
        policy=None,
        recorder=None,
        max_message_bytes: int = 64 * 1024 * 1024,
        record_rows: str = "full",
        ready_status: bytes = b"I",
        on_decision=None,
        health=None,
    ):
        self.policy = policy  # policy.StatementPolicy, or None for pass-through
        self.recorder = recorder  # recorder.SessionRecorder, or None
        self.client_reader = FrameReader(max_message_bytes)
        self.server_reader = FrameReader(max_message_bytes)
        self.record_counts_only = record_rows == "counts"
        self.tx_status = ready_status
        self.terminated = False
        self.upstream_fatal = False  # the server said FATAL: its word is the last one
        self.counters = Counters()
        self.on_decision = on_decision  # callback(verdict) for metrics
        self.health = health  # anything with .healthy (the Recorder): False refuses statements
        # Injected denials per Sync group; groups[0] is the one the server answers now,
        # groups[-1] the one the client is still adding to.
        self._groups: deque[list[int]] = deque([[]])
        self._current_has_msgs = False
        self._held: list[bytes] = []
        nonce = secrets.token_hex(8)
        self._marker = f"pgwitness-deny-{nonce}"
        self._marker_bytes = self._marker.encode()
        self._tag = f"pgw_{nonce}"

    # --- client → server -------------------------------------------------------

    def from_client(self, data: bytes) -> tuple[bytes, bytes]:
        run, frames = self.client_reader.feed(data)
        if not frames:
            return b"", b""
        c = self.counters
        c.bytes_c2s += len(run)
        c.msgs_c2s += len(frames)
        if self.recorder is not None:
            self.recorder.wire("c2s", run)
        out: list[bytes] = []
        to_client: list[bytes] = []
        last = 0
        policy = self.policy
        health = self.health
        for t, start, end in frames:
            if t in _STATEMENT_TYPES:
                if health is not None and not health.healthy:
                    verdict = UNRECORDED
                    self._record(verdict, _NAMES[t], "")
                elif policy is None:
                    self._note(t)
                    continue
                elif t == F.QUERY:
                    sql = m.decode_query(run[start:end])
                    verdict = policy.check_query(sql)
                    self._record(verdict, "Query", sql)
                elif t == F.PARSE:
                    name, sql = m.decode_parse(run[start:end])
                    verdict = policy.check_parse(sql)
                    self._record(verdict, "Parse", sql, statement=name)
                else:
                    verdict = policy.check_function_call()
                    self._record(verdict, "FunctionCall", "")
                if verdict.allowed:
                    self._note(t)
                    continue
                sqlstate = getattr(verdict, "sqlstate", INSUFFICIENT_PRIVILEGE)
                out.append(run[last:start])
                last = end
                if t != F.PARSE and self._idle() and not any(out):
                    to_client.append(error_response("ERROR", sqlstate, verdict.message))
                    to_client.append(m.ready_for_query(self.tx_status))
                    continue
                raise_sql = self._raise_sql(verdict.message, sqlstate)
                if t == F.PARSE:
                    out.append(m.parse("", raise_sql) + m.bind_no_params() + m.execute())
                else:
                    out.append(m.query(raise_sql))
                self._groups[-1].append(t)
                self._note(t)
            elif t == F.TERMINATE:
                self.terminated = True
                out.append(run[last:end])
                last = end
                break
            elif t not in F.KNOWN or t == F.PASSWORD:
                raise ProtocolViolation(f"invalid frontend message type {t}")
            else:
                self._note(t)
        if last == 0:
            return run, b"".join(to_client)
        out.append(run[last:])
        return b"".join(out), b"".join(to_client)

    def _note(self, t: int) -> None:
        if t in _Z_PRODUCERS:
            self._groups.append([])
            self._current_has_msgs = False
        else:
            self._current_has_msgs = True

    @property
    def busy(self) -> bool:
        """The server owes answers: a query may be running upstream right now."""
        return len(self._groups) > 1 or self._current_has_msgs

    def _idle(self) -> bool:
        return (
            self.tx_status == b"I"
            and len(self._groups) == 1
            and not self._current_has_msgs
            and not self._held
        )

    def _record(self, verdict, message: str, sql: str, **extra) -> None:
        c = self.counters
        if not verdict.allowed:
            c.denied += 1
        elif verdict.would_deny:
            c.would_deny += 1
        else:
            c.allowed += 1
        if self.on_decision is not None:
            self.on_decision(verdict)
        if self.recorder is None:
            return
        denied = not verdict.allowed
        statements = []
        for classified, decision in verdict.decisions:
            statements.append(
                {
                    "sql": classified.sql,
                    "class": classified.cls.name,
                    "command": classified.command,
                    "reads": sorted(classified.reads),
                    "writes": sorted(classified.writes),
                    "functions": sorted(classified.functions),
                    "allowed": decision.allowed,
                    "rule": decision.rule,
                    "reason": decision.reason,
                }
            )
        payload = {
            "message": message,
            "sql": sql,
            "outcome": "denied" if denied else ("would_deny" if verdict.would_deny else "allowed"),
            "statements": statements,
            **extra,
        }
        if denied:
            payload["error"] = verdict.message
        self.recorder.decision(payload, denied or verdict.would_deny)

    def _raise_sql(self, message: str, sqlstate: str) -> str:
        tag = self._tag
        while f"${tag}m$" in message or f"${tag}$" in message:  # pragma: no cover - 64-bit nonce
            tag += "x"
        return (
            f"DO ${tag}$ BEGIN RAISE EXCEPTION USING ERRCODE = '{sqlstate}', "
            f"MESSAGE = ${tag}m${message}${tag}m$, SCHEMA = '{self._marker}'; END ${tag}$"
        )

    # --- server → client -------------------------------------------------------

    def from_server(self, data: bytes) -> bytes:
        run, frames = self.server_reader.feed(data)
        if not frames:
            return b""
        c = self.counters
        c.msgs_s2c += len(frames)
        groups = self._groups
        rewritten: list[bytes] | None = None
        last = 0
        for t, start, end in frames:
            if t == B.ERROR_RESPONSE and run[start + 5 : start + 11] in (b"SFATAL", b"SPANIC"):
                self.upstream_fatal = True
            if t == B.READY_FOR_QUERY:
                self.tx_status = run[start + 5 : end]
                if self._held:  # injections skipped by an already-failed pipeline
                    rewritten = self._ensure(rewritten, run, last, start)
                    rewritten.extend(self._held)
                    self._held.clear()
                    last = start
                if len(groups) > 1:
                    groups.popleft()
                else:
                    groups[0].clear()
            elif groups[0]:
                if t in _HOLDABLE:
                    rewritten = self._ensure(rewritten, run, last, start)
                    self._held.append(run[start:end])
                    last = end
                elif t == B.ERROR_RESPONSE and self._marker_bytes in run[start:end]:
                    rewritten = self._ensure(rewritten, run, last, start)
                    # An injected Parse/Bind/Execute answers ParseComplete, BindComplete,
                    # then the error: drop exactly those two; earlier held frames are the
                    # client's own.
                    if groups[0].pop(0) == F.PARSE:
                        del self._held[-2:]
                    rewritten.extend(self._held)
                    self._held.clear()
                    fields = m.decode_error_fields(run[start:end])
                    clean = {k: v for k, v in fields.items() if k not in _STRIP_FIELDS}
                    rewritten.append(m.encode_error_fields(b"E", clean))
                    last = end
                elif self._held:
                    rewritten = self._ensure(rewritten, run, last, start)
                    rewritten.extend(self._held)
                    self._held.clear()
                    last = start
        if rewritten is None:
            out = run
        else:
            rewritten.append(run[last:])
            out = b"".join(rewritten)
        c.bytes_s2c += len(out)
        if self.recorder is not None and out:
            if self.record_counts_only:
                self.recorder.wire("s2c", _without_data_rows(out))
            else:
                self.recorder.wire("s2c", out)
        return out

    @staticmethod
    def _ensure(rewritten, run, last, start):
        if rewritten is None:
            rewritten = []
        rewritten.append(run[last:start])
        return rewritten


def _without_data_rows(run: bytes) -> bytes:
    """The frames of ``run`` minus DataRow and CopyData: shapes and counts, not contents."""
    reader = FrameReader(1 << 62)
    data, frames = reader.feed(run)
    return b"".join(data[s:e] for t, s, e in frames if t not in (B.DATA_ROW, F.COPY_DATA))
