"""One client connection's relay state, sans-IO.

``Relay.from_client(data)`` and ``Relay.from_server(data)`` take bytes as they arrive and
return ``(to_server, to_client)`` bytes; the caller owns the sockets. Only whole frames
are passed on, so the proxy can speak (a FATAL on expiry, say) at a frame boundary; the
exception is a large frame the relay never reads (row values, COPY data, Bind), streamed
as it arrives: while one is half sent, ``mid_frame_to_client``/``mid_frame_to_server``
say that nothing of ours may be written in that direction.

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

from policy.encodings import python_codec
from policy.engine import OFFLOAD_MIN

from .decision_records import DecisionRecords
from .wire import messages as m
from .wire.errors import INSUFFICIENT_PRIVILEGE, ProtocolViolation, error_response
from .wire.framing import MAX_STREAMED_LENGTH, FrameReader

F = m.Frontend
B = m.Backend
_Z_PRODUCERS = frozenset((F.QUERY, F.SYNC, F.FUNCTION_CALL))
_HOLDABLE = frozenset((B.PARSE_COMPLETE, B.BIND_COMPLETE, B.CLOSE_COMPLETE))
# May arrive at any time; never part of an injection's answer, so they pass held frames.
_ASYNC = frozenset((B.NOTICE_RESPONSE, B.NOTIFICATION, B.PARAMETER_STATUS))
_STRIP_FIELDS = frozenset("sWFLR")  # marker (schema field) and PL/pgSQL traces
_STATEMENT_TYPES = frozenset((F.QUERY, F.PARSE, F.FUNCTION_CALL))
_NAMES = {F.QUERY: "Query", F.PARSE: "Parse", F.FUNCTION_CALL: "FunctionCall"}
# The hot loops compare against module constants (a class attribute costs a lookup each).
_QUERY, _PARSE, _SYNC, _EXECUTE, _TERMINATE = F.QUERY, F.PARSE, F.SYNC, F.EXECUTE, F.TERMINATE
_COPY_DONE, _COPY_FAIL = F.COPY_DONE, F.COPY_FAIL
_READY, _ERROR, _COPY_IN = B.READY_FOR_QUERY, B.ERROR_RESPONSE, B.COPY_IN_RESPONSE
_PARAMETER_STATUS = B.PARAMETER_STATUS
# Server frames looked at even when no denial is in flight.
_WATCHED = frozenset((_READY, _ERROR, _COPY_IN, _PARAMETER_STATUS))
# Extended-protocol messages that the server answers with exactly one of _ANSWERS (or an
# error, after which it skips everything, Query and FunctionCall included, up to Sync).
_EXTENDED = frozenset((F.PARSE, F.BIND, F.DESCRIBE, F.EXECUTE, F.CLOSE))
_ANSWERS = frozenset(b"123nTCIs")
# Frames whose bytes the relay never looks at: a large one is passed on as it arrives.
_STREAMED_C2S = frozenset((F.BIND, F.COPY_DATA))
_STREAMED_S2C = frozenset((B.DATA_ROW, B.COPY_DATA, B.FUNCTION_CALL_RESPONSE))
CANNOT_RECORD = "57P03"
# An ErrorResponse's SQLSTATE field for insufficient_privilege: a field boundary (NUL), the
# field type C, the code and its NUL; nothing else in an ErrorResponse can look like it.
_PRIVILEGE_FIELD = b"\x00C42501\x00"


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


@dataclass(eq=False)
class Injection:
    """A denial the server is asked to raise; ``drop`` = how many *Complete frames precede
    its error (Close, Parse, Bind for the extended protocol; none for a simple Query)."""

    drop: int
    statement: str = ""
    resolved: bool = False


class QueryEnded(list):
    """A Sync group ended by a Query or FunctionCall rather than a Sync; ``extended`` counts
    the extended-protocol messages before it. If one of those fails, the server skips the
    Query too, and every group up to the next Sync gets a single ReadyForQuery."""

    __slots__ = ("extended",)

    def __init__(self, injections: list, extended: int):
        super().__init__(injections)
        self.extended = extended


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
    refused_unrecorded: int = 0
    db_denied: int = 0  # the database refused (42501) what the policy let through


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
        client_encoding: str = "UTF8",
        grant_id: str = "",
    ):
        self.policy = policy  # policy.StatementPolicy, or None for pass-through
        self.recorder = recorder  # recorder.SessionRecorder, or None
        # After login a PasswordMessage is a protocol violation: refused while framing,
        # before the recorder (or anything) sees its bytes.
        self.client_reader = FrameReader(max_message_bytes, F.KNOWN - {F.PASSWORD}, _STREAMED_C2S)
        self.server_reader = FrameReader(max_message_bytes, streamed=_STREAMED_S2C)
        self._rows_filter = RowFilter() if record_rows == "counts" else None
        self.tx_status = ready_status
        self.terminated = False
        self.upstream_fatal = False  # the server said FATAL: its word is the last one
        self.counters = Counters()
        self.on_decision = on_decision  # callback(verdict) for metrics
        self.health = health  # anything with .healthy (the Recorder): False refuses statements
        self.encoding = python_encoding(client_encoding)
        self.grant_id = grant_id  # every decision record names its grant
        self._records: DecisionRecords | None = None  # renders them (decision_records.py)
        # Large statements: ``offload(sqls)`` (set by the connection) classifies them off
        # the event loop, then the connection calls ``resume``; meanwhile frames are parked.
        self.offload = None
        self.parked: tuple[bytes, list] | None = None
        self._backlog: list[bytes] = []
        # Sync groups: groups[0] is the one the server answers now, groups[-1] the one the
        # client is still adding to; each lists the injections sent in it. ``_pending`` is
        # every unresolved injection in send order: a marked error resolves the oldest, and
        # the ReadyForQuery that ends its group drops one the server skipped.
        self._groups: deque[list[Injection]] = deque([[]])
        self._pending: deque[Injection] = deque()
        self._current_has_msgs = False
        # The skip-until-Sync rule (only tracked once a group mixes extended messages with a
        # Query or FunctionCall; plain pipelines end every group with Sync):
        self._current_extended = 0  # extended messages in the group being built
        self._query_ended = 0  # QueryEnded groups in _groups
        self._watch_head = False  # count the head group's answers: it is a mixed group
        self._head_answered = 0  # answers to the head group's extended messages so far
        self._skipping = False  # the server ignores the client's messages up to its next Sync
        self._held: list[bytes] = []
        self._injected = 0  # names injected statements and portals uniquely
        self._last_deny_statement = ""  # the newest injected statement, closed by the next one
        self._syncs_since_execute = 0
        self._copy_in = False
        nonce = secrets.token_hex(8)
        self._marker = f"pgwitness-deny-{nonce}"
        self._marker_bytes = self._marker.encode()
        # (the server's ParameterStatus body for the upstream application_name, the frame
        # the client gets instead): set by the server when it tags upstream logins
        self.app_names: tuple[bytes, bytes] | None = None
        self._tag = f"pgw_{nonce}"
        self._tag_bytes = self._tag.encode()
        # For db.denied records: statements the policy decided, each with the number of the
        # Sync group it was sent in, and how many groups the server has answered.
        self._decided: deque[tuple[int, str, str, bool]] = deque(maxlen=64)
        self._groups_sent = 0
        self._groups_answered = 0

    def _client_encoding(self, name: str) -> None:
        """The server says which encoding it now reads the client's bytes in: the truth.

        Under a policy an encoding off the allowlist ends the session (however the SQL that
        set it got through): the proxy could no longer lex statements as the server does."""
        codec = python_codec(name)
        if codec is None and self.policy is not None:
            raise ProtocolViolation(
                f"the server switched client_encoding to {name!r}, which is not on the "
                "proxy's allowlist (statements could no longer be checked as the server "
                "reads them): ending the session"
            )
        self.encoding = codec or "utf-8"

    # --- client → server -------------------------------------------------------

    def from_client(self, data: bytes) -> tuple[bytes, bytes]:
        if self.parked is not None:  # arrived while a large statement is classified
            self._backlog.append(data)
            return b"", b""
        run, frames = self.client_reader.feed(data)
        if not run:
            return b"", b""
        c = self.counters
        c.bytes_c2s += len(run)
        if self.recorder is not None:
            self.recorder.wire("c2s", run)
        if not frames:  # more of a large frame being streamed
            return run, b""
        c.msgs_c2s += len(frames)
        if self.offload is not None and self.policy is not None:
            big = self._expensive(run, frames)
            if big:
                # Classified off the event loop first; these frames wait (as if they had
                # not arrived yet) and go through ``resume`` when that is done.
                self.parked = (run, frames)
                self.offload(big)
                return b"", b""
        return self._client_frames(run, frames)

    def _expensive(self, run: bytes, frames) -> list[str]:
        big = []
        for t, start, end in frames:
            if end - start >= OFFLOAD_MIN and t in (_QUERY, _PARSE):
                if t == _QUERY:
                    sql = m.decode_query(run[start:end], self.encoding)
                else:
                    sql = m.decode_parse(run[start:end], self.encoding)[1]
                if self.policy.needs_offload(sql):
                    big.append(sql)
        return big

    def resume(self) -> tuple[bytes, bytes]:
        """The parked frames, checked now (their statements were classified off the loop),
        then whatever arrived meanwhile, until another large statement parks the relay."""
        run, frames = self.parked
        self.parked = None
        to_server, to_client = self._client_frames(run, frames)
        outs, answers = [to_server], [to_client]
        while self._backlog and self.parked is None and not self.terminated:
            a, b = self.from_client(self._backlog.pop(0))
            outs.append(a)
            answers.append(b)
        return b"".join(outs), b"".join(answers)

    def _client_frames(self, run: bytes, frames) -> tuple[bytes, bytes]:
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
                elif t == _QUERY:
                    sql = m.decode_query(run[start:end], self.encoding)
                    verdict = policy.check_query(sql)
                    self._record(verdict, "Query", sql)
                elif t == _PARSE:
                    name, sql = m.decode_parse(run[start:end], self.encoding)
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
                out.append(self._inject(t, self._raise_sql(verdict.message, sqlstate)))
                self._note(t)
            elif t == _TERMINATE:
                self.terminated = True
                out.append(run[last:end])
                return b"".join(out), b"".join(to_client)  # nothing after Terminate counts
            else:
                self._note(t)
        if last == 0:
            return run, b"".join(to_client) if to_client else b""
        out.append(run[last:])
        return b"".join(out), b"".join(to_client)

    def _inject(self, t: int, raise_sql: str) -> bytes:
        """The messages that make the server raise our denial in place of the client's.

        Extended protocol: a uniquely named statement and portal (the client's unnamed ones
        survive, as they would a failed Parse), closing the previous injected statement.
        """
        if t == F.PARSE:
            self._injected += 1
            name = f"{self._tag}_{self._injected}"
            data = b""
            drop = 2
            if self._last_deny_statement:
                data = m.close_statement(self._last_deny_statement)
                drop = 3
            self._last_deny_statement = name
            data += m.parse(name, raise_sql) + m.bind_no_params(name, name) + m.execute(name)
            inj = Injection(drop, name)
            self._current_extended += drop  # _note counts the Parse; these are the rest
        else:
            data = m.query(raise_sql)
            inj = Injection(0)
        self._groups[-1].append(inj)
        self._pending.append(inj)
        return data

    def _note(self, t: int) -> None:
        if t == _SYNC:
            if self._copy_in:  # the server ignores Sync in copy-in mode
                return
            self._syncs_since_execute += 1
        elif t in (_EXECUTE, _QUERY):
            self._syncs_since_execute = 0
        elif t in (_COPY_DONE, _COPY_FAIL):
            self._copy_in = False
        if t in _Z_PRODUCERS:
            if t == _SYNC:
                self._skipping = False
            elif self._skipping:
                return  # ignored by the server: the group goes on until the client's Sync
            elif self._current_extended or self._query_ended:
                groups = self._groups
                groups[-1] = QueryEnded(groups[-1], self._current_extended)
                self._query_ended += 1
                if len(groups) == 1 and self._current_extended:
                    self._watch_head = True  # the server is answering this group already
            self._groups.append([])
            self._groups_sent += 1
            self._current_has_msgs = False
            self._current_extended = 0
        else:
            self._current_has_msgs = True
            if t in _EXTENDED:
                self._current_extended += 1

    def _copy_in_started(self) -> None:
        """CopyInResponse: Syncs sent after the Execute that began COPY were swallowed."""
        self._copy_in = True
        for _ in range(min(self._syncs_since_execute, len(self._groups) - 1)):
            merged = self._groups.pop()
            self._groups[-1].extend(merged)
        self._syncs_since_execute = 0

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
        if verdict is UNRECORDED:
            c.refused_unrecorded += 1
        elif not verdict.allowed:
            c.denied += 1
        elif verdict.would_deny:
            c.would_deny += 1
        else:
            c.allowed += 1
        if self.on_decision is not None:
            self.on_decision(verdict)
        if self.recorder is None:
            return
        if verdict.allowed and verdict.decisions:
            self._remember(verdict)
        records = self._records
        if records is None or records.grant_id != self.grant_id:
            records = self._records = DecisionRecords(self.grant_id)
        self.recorder.decision_json(
            records.render(verdict, message, sql, **extra), not verdict.allowed
        )

    def _remember(self, verdict) -> None:
        """Keep which statement (and rule) went upstream in the group being built."""
        pick = verdict.decisions[0]
        for classified, decision in verdict.decisions:
            if not decision.allowed:  # dry-run: the would-deny is the likely refusal
                pick = (classified, decision)
                break
        classified, decision = pick
        self._decided.append(
            (self._groups_sent, classified.sql, decision.rule, not decision.allowed)
        )

    def _db_denied(self, frame: bytes) -> None:
        """The database refused a statement the policy let through (42501): record it.

        Each one is a policy gap or a probe. The statement is the first one the policy
        decided in the Sync group the server is answering now (in dry-run, the first it
        would have denied).
        """
        self.counters.db_denied += 1
        if self.recorder is None:
            return
        decided = self._decided
        answering = self._groups_answered
        while decided and decided[0][0] < answering:
            decided.popleft()
        statement, rule, would_deny = "", "", False
        for group, sql, why, would in decided:  # the group's first, or its first would-deny
            if group != answering:
                break
            if not statement or (would and not would_deny):
                statement, rule, would_deny = sql, why, would
            if would_deny:
                break
        fields = m.decode_error_fields(frame)
        self.recorder.event(
            "db.denied",
            {
                "sqlstate": fields.get("C", ""),
                "message": fields.get("M", ""),
                "statement": statement,
                "rule": rule if self.policy is not None else "",
                "would_deny": would_deny,
                "grant_id": self.grant_id,
            },
        )

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
            return self._deliver(run) if run else b""  # more of a large frame, or nothing yet
        c = self.counters
        c.msgs_s2c += len(frames)
        rewritten: list[bytes] | None = None
        last = 0
        pending = self._pending
        held = self._held
        counting = self._counting_answers()
        for t, start, end in frames:
            if counting:
                if t in _ANSWERS:
                    self._head_answered += 1
                elif t == _ERROR:
                    self._head_failed()
                    counting = False  # answered or skipped now: nothing more to count
            if not pending and t not in _WATCHED:
                continue  # DataRow, CommandComplete, ...: the common case
            if t == _READY:
                self._groups_answered += 1
                self.tx_status = run[start + 5 : end]
                if held:
                    rewritten = self._ensure(rewritten, run, last, start)
                    rewritten.extend(held)
                    held.clear()
                    last = start
                self._ready_for_query()
                counting = self._counting_answers()
                continue
            if t == _ERROR:
                if run[start + 5 : start + 11] in (b"SFATAL", b"SPANIC"):
                    self.upstream_fatal = True
                if _PRIVILEGE_FIELD in run[start:end] and self._marker_bytes not in run[start:end]:
                    self._db_denied(run[start:end])
            if t == _COPY_IN:
                self._copy_in_started()
            elif t == _PARAMETER_STATUS and run.startswith(b"client_encoding\x00", start + 5):
                self._client_encoding(run[start + 21 : end - 1].decode("ascii", "replace"))
            elif (t == _PARAMETER_STATUS and self.app_names is not None
                    and run[start + 5 : end] == self.app_names[0]):
                # RESET returned application_name to the proxy's tagged login value: the
                # client sees its own name, as at login (proxy/appname.py)
                rewritten = self._ensure(rewritten, run, last, start)
                rewritten.append(self.app_names[1])
                last = end
            elif not pending:
                continue
            elif t in _HOLDABLE:
                rewritten = self._ensure(rewritten, run, last, start)
                held.append(run[start:end])
                last = end
            elif t == _ERROR and self._marker_bytes in run[start:end]:
                rewritten = self._ensure(rewritten, run, last, start)
                inj = pending.popleft()
                inj.resolved = True
                if inj.drop:
                    del held[-inj.drop :]
                rewritten.extend(held)
                held.clear()
                fields = m.decode_error_fields(run[start:end])
                clean = {k: v for k, v in fields.items() if k not in _STRIP_FIELDS}
                rewritten.append(m.encode_error_fields(b"E", clean))
                last = end
            elif t in _ASYNC:
                if t == B.NOTICE_RESPONSE and self._tag_bytes in run[start:end]:
                    # A DEBUG notice about our injected statement: not the client's business.
                    rewritten = self._ensure(rewritten, run, last, start)
                    last = end
            elif held:
                rewritten = self._ensure(rewritten, run, last, start)
                rewritten.extend(held)
                held.clear()
                last = start
        if rewritten is None:
            out = run
        else:
            rewritten.append(run[last:])
            out = b"".join(rewritten)
        return self._deliver(out)

    def _ready_for_query(self) -> None:
        groups = self._groups
        if self._query_ended or self._head_answered:
            self._next_head()
        if len(groups) > 1 and not groups[0]:  # the common case: no injection in this group
            groups.popleft()
            return
        answered = groups.popleft() if len(groups) > 1 else groups[0]
        for inj in answered:
            if not inj.resolved:  # skipped by a server already failing this group
                inj.resolved = True
                self._pending.remove(inj)
        if len(groups) == 1 and answered is groups[0]:
            answered.clear()

    def _counting_answers(self) -> bool:
        """Whether the head group's answers are counted: it mixes extended messages with a
        Query, or it is still open with extended messages in it."""
        return self._watch_head or (self._current_extended > 0 and len(self._groups) == 1)

    def _next_head(self) -> None:
        """Bookkeeping for mixed groups, as the head group is answered (before it is popped)."""
        groups = self._groups
        if len(groups) > 1 and type(groups[0]) is QueryEnded:
            self._query_ended -= 1
        self._head_answered = 0
        self._watch_head = len(groups) > 1 and type(groups[1]) is QueryEnded and groups[1].extended > 0

    def _head_failed(self) -> None:
        """An ErrorResponse while the head group may mix extended messages and a Query: if
        one of the extended messages failed, the server skips to the client's next Sync, so
        every group up to it gets one ReadyForQuery."""
        groups = self._groups
        self._watch_head = False
        if len(groups) == 1:  # the open group: no Query in it yet, so it is an extended one
            self._skipping = True
            return
        head = groups[0]
        if type(head) is not QueryEnded or self._head_answered >= head.extended:
            return  # the Query's own error (or a group that Sync ends): nothing skipped
        merged = groups.popleft()
        self._query_ended -= 1
        while len(groups) > 1 and type(groups[0]) is QueryEnded:
            merged.extend(groups.popleft())
            self._query_ended -= 1
        groups[0][:0] = merged  # a Sync-ended group, or the open one: its Sync answers all
        if len(groups) == 1:
            self._skipping = True

    @property
    def has_held(self) -> bool:
        return bool(self._held)

    def release_held(self) -> bytes:
        """Frames held for a possible injection answer that did not come: pass them on.

        Our own answer arrives in the same server write as the frames it follows, so a
        short timer calling this can only release the client's own frames.
        """
        if not self._held:
            return b""
        out = b"".join(self._held)
        self._held.clear()
        return self._deliver(out)

    def _deliver(self, out: bytes) -> bytes:
        self.counters.bytes_s2c += len(out)
        if self.recorder is not None and out:
            if self._rows_filter is not None:
                kept = self._rows_filter.feed(out)
                if kept:
                    self.recorder.wire("s2c", kept)
            else:
                self.recorder.wire("s2c", out)
        return out

    @property
    def mid_frame_to_client(self) -> bool:
        """A large frame is half passed to the client: nothing of ours may be written now."""
        return self.server_reader.mid_frame

    @property
    def mid_frame_to_server(self) -> bool:
        """A large frame is half passed to the server: nothing of ours may be written now."""
        return self.client_reader.mid_frame

    @staticmethod
    def _ensure(rewritten, run, last, start):
        if rewritten is None:
            rewritten = []
        rewritten.append(run[last:start])
        return rewritten


class RowFilter:
    """The server's bytes minus DataRow and CopyData frames (``record_rows = "counts"``):
    shapes and counts, not contents. Stateful, because a large row arrives in pieces."""

    __slots__ = ("_reader", "_dropping")

    def __init__(self) -> None:
        self._reader = FrameReader(MAX_STREAMED_LENGTH, streamed=_STREAMED_S2C, stream_min=0)
        self._dropping = False  # the run starts inside a row being dropped

    def feed(self, data: bytes) -> bytes:
        reader = self._reader
        run, frames = reader.feed(data)
        kept: list[bytes] = []
        pos = frames[0][1] if frames else len(run)
        if not self._dropping:
            kept.append(run[:pos])  # the rest of a kept frame
        for t, start, end in frames:
            if t != B.DATA_ROW and t != B.COPY_DATA:
                kept.append(run[start:end])
        last = frames[-1][0] if frames else None
        if reader.mid_frame and last is not None:
            self._dropping = last == B.DATA_ROW or last == B.COPY_DATA
        return b"".join(kept)


def python_encoding(pg_name: str) -> str:
    """The codec for a Postgres client encoding (policy.encodings' allowlist); others decode
    as UTF-8 (which fails closed: bytes that are not UTF-8 end the session)."""
    return python_codec(pg_name) or "utf-8"
