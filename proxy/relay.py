"""One client connection's relay state, sans-IO.

``Relay.from_client(data)`` and ``Relay.from_server(data)`` take bytes as they arrive and
return ``(to_server, to_client)`` bytes; the caller owns the sockets. Only whole frames
are passed on, so the proxy can speak (a FATAL on expiry, say) at a frame boundary; the
exception is a large frame the relay never reads (row values, COPY data, Bind), streamed
as it arrives: while one is half sent, ``mid_frame_to_client``/``mid_frame_to_server``
say that nothing of ours may be written in that direction.

Denials keep Postgres's own transaction semantics by letting the *server* raise the
error (``proxy.denials``: what is injected, the marker, the cleaned error, the held
*Complete frames); which client messages the server is answering is tracked by
``common.wire.syncgroups``. The ``Relay`` keeps the splice loop: where each frame goes.
When nothing is in flight and no transaction is open, a denied simple Query is answered
locally instead, which is equivalent and saves a round trip.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from common.wire import messages as m
from common.wire.errors import INSUFFICIENT_PRIVILEGE, ProtocolViolation
from common.wire.framing import MAX_STREAMED_LENGTH, FrameReader
from common.wire.syncgroups import ANSWERS as _ANSWERS
from common.wire.syncgroups import SyncGroups
from policy.classify.catalogue import BY_PARAMETER, SET_CONFIG_PREFIX
from policy.classify.model import StatementClass
from policy.engine import CATALOG_WAIT, OFFLOAD_MIN, exact
from recorder.encodings import python_codec, session_codec

from .decision_records import DECISION_SHAPE, DecisionRecords
from .denials import ASYNC as _ASYNC
from .denials import HOLDABLE as _HOLDABLE
from .denials import Denials, local_denial
from .redaction import (
    HIDDEN_ROWS,
    SCHEMA_MOVED,
    UNREADABLE_WRITES,
    quotes_code,
    redact_error,
    strip_code,
    withhold_message,
    worth_a_look,
)
from .seams import Health, Policy, SessionSink, Verdict

F = m.Frontend
B = m.Backend
_STATEMENT_TYPES: Final = frozenset((F.QUERY, F.PARSE, F.FUNCTION_CALL))
# the messages the relay looks at (a Close: the policy follows which statements the server
# holds, ``StatementPolicy.closed``)
_CHECKED: Final = _STATEMENT_TYPES | {F.TERMINATE, F.CLOSE}
# ... and Bind too while a statement's object text is pinned by a parameter (the policy's
# ``bind_pins``): its values decide
_CHECKED_BINDS: Final = _CHECKED | {F.BIND, F.DESCRIBE, F.CLOSE}
# ... and, while the recorder cannot record, every message that makes the server act: a
# Bind or Execute of a statement or portal made before, and a COPY's rows and end
_CHECKED_UNHEALTHY: Final = _CHECKED_BINDS | {F.EXECUTE, F.COPY_DATA, F.COPY_DONE}
# ... and, while code that replaces statements may run again from a cursor or portal it
# reached (the policy's ``lazy_names``), every Execute and Sync (a commit that fills a WITH
# HOLD cursor): the policy forgets the names at each
_CHECKED_LAZY: Final = _CHECKED_BINDS | {F.EXECUTE, F.SYNC}
_CHECKED_UNHEALTHY_LAZY: Final = _CHECKED_UNHEALTHY | {F.SYNC}
# ... and, where the database holds code that may open cursors (the policy's
# ``portals_watched``), every Bind and Execute: the portals the client made are the only
# ones it may run (policy/portals.py)
_CHECKED_PORTALS: Final = _CHECKED_BINDS | {F.EXECUTE}
_SYNC: Final = F.SYNC
_EXECUTE: Final = F.EXECUTE
_COPY_DATA: Final = F.COPY_DATA
_COPY_DONE: Final = F.COPY_DONE
_NAMES: Final = {F.QUERY: "Query", F.PARSE: "Parse", F.FUNCTION_CALL: "FunctionCall",
                 F.BIND: "Bind", F.EXECUTE: "Execute", F.COPY_DATA: "CopyData",
                 F.COPY_DONE: "CopyDone"}  # fmt: skip
# The hot loops compare against module constants (a class attribute costs a lookup each).
_QUERY: Final = F.QUERY
_PARSE: Final = F.PARSE
_TERMINATE: Final = F.TERMINATE
_BIND: Final = F.BIND
_DESCRIBE: Final = F.DESCRIBE
_FLUSH: Final = F.FLUSH
_CLOSE: Final = F.CLOSE
_READY: Final = B.READY_FOR_QUERY
_ERROR: Final = B.ERROR_RESPONSE
_COPY_IN: Final = B.COPY_IN_RESPONSE
_PARAMETER_STATUS: Final = B.PARAMETER_STATUS
_NOTICE: Final = B.NOTICE_RESPONSE
_CONFORMING: Final = b"standard_conforming_strings\x00"  # a ParameterStatus body's name
# Server frames looked at even when no denial is in flight.
_PARSE_COMPLETE: Final = B.PARSE_COMPLETE
_NOTIFICATION: Final = B.NOTIFICATION
# the reported settings whose value can carry any text (ParameterStatus): withheld where
# code may set settings (``Policy.encoding_code``)
_FREE_TEXT_REPORTED: Final = (b"application_name\x00", b"TimeZone\x00")
_TIMEZONE_REPORTED: Final = b"TimeZone\x00"
_TIMEZONE: Final = "timezone"
_SESSION_SET: Final = StatementClass.SESSION_SET
_WATCHED: Final = frozenset(
    (_READY, _ERROR, _COPY_IN, _PARAMETER_STATUS, _PARSE_COMPLETE, _NOTIFICATION)
)
# the withheld notifications a session's recording itemizes (``notification.withheld``; the
# last says ``more_not_recorded``); all are counted (``Counters.notifications_withheld``)
_WITHHELD_NOTES: Final = 100
_COMMAND_COMPLETE: Final = B.COMMAND_COMPLETE
_CLOSE_COMPLETE: Final = B.CLOSE_COMPLETE
# what the refcursors a granted function returned are read from (``Policy.harvesting``)
_DATA_ROW: Final = B.DATA_ROW
# Frames whose bytes the relay never looks at: a large one is passed on as it arrives.
_STREAMED_C2S: Final = frozenset((F.BIND, F.COPY_DATA))
_STREAMED_S2C: Final = frozenset((B.DATA_ROW, B.COPY_DATA, B.FUNCTION_CALL_RESPONSE))
CANNOT_RECORD = "57P03"
# Statements after which a session's upstream is not kept for reuse: what they may change
# (a role's or database's defaults, the catalog) is what a new login would pick up.
# Compared by identity: an Enum's hash is a Python-level call, once per allowed statement.
_DDL: Final = StatementClass.DDL
_ROLE: Final = StatementClass.ROLE
_UNKNOWN: Final = StatementClass.UNKNOWN
# Statements a name check restores rather than queries (``Denials.inject_restore``): they
# return no rows whose shape a re-Parse could change, and a query before them in their
# transaction may break them (the drivers' differential, session 26: F2)
_RESTORABLE: Final = frozenset((
    StatementClass.TRANSACTION, StatementClass.DDL, StatementClass.SESSION_SET,
    StatementClass.UTILITY,
))  # fmt: skip
_MAX_RESTORABLE: Final = 256
# ... but not those PostgreSQL analyses at their Parse (a query in them): a fresh Parse
# resolves their names again, where the server's statement keeps its analysis (a temporary
# relation made since would be read instead: red-team round 55), EXPLAIN of any of them
# included (``transformExplainStmt`` analyses the explained query: round 56)
_ANALYSED_AT_PARSE: Final = frozenset(("CREATE TABLE", "CREATE TABLE AS", "SELECT INTO",
                                       "CREATE MATERIALIZED VIEW"))  # fmt: skip
# the decided statements kept for db.denied records while their groups are in flight
_DECIDED_MAX: Final = 4096
_DECIDED_CHARS: Final = 4 * 1024 * 1024
_EXPLAIN: Final = "EXPLAIN"
_LOAD: Final = "LOAD"  # a loaded library stays in the backend
# An ErrorResponse's SQLSTATE field for insufficient_privilege: a field boundary (NUL), the
# field type C, the code and its NUL; nothing else in an ErrorResponse can look like it.
_PRIVILEGE_FIELD: Final = b"\x00C42501\x00"
_NO_STATEMENT: Final = b"\x00C26000\x00"  # invalid_sql_statement_name: no such prepared statement


@dataclass(frozen=True)
class Refusal:
    """A denial that is not the policy's: shaped like a policy Verdict."""

    message: str
    sqlstate: str
    allowed: bool = False
    would_deny: bool = False
    decisions: tuple = ()


# A statement holding bytes beyond ASCII while a client_encoding change may be in flight:
# the proxy decodes it in the encoding the server last reported, the server perhaps in the
# new one (every encoding the allowlist admits reads ASCII alike).
ENCODING_IN_FLIGHT: Final = Refusal(
    "pgwitness may not check a statement holding non-ASCII bytes while the server has not "
    "answered everything sent before it in a session that changed client_encoding (the "
    "encoding it reads them in may be changing): send it after the answers",
    "55000",
)
# A query the policy allowed with its CASCADE run as RESTRICT, whose text does not come back
# to the client's bytes in the client encoding (a sequence the decoder maps that the server
# would not): the text sent in its place would not be the client's but for the keyword
NOT_ROUND_TRIP: Final = Refusal(
    "pgwitness may not run this query's CASCADE as RESTRICT: its text does not encode back "
    "to the bytes sent in the client encoding (send it without CASCADE)",
    "42501",
)
_CLIENT_ENCODING: Final = "client_encoding"
# Statements that commit (or end) a transaction, or a prepared one (another session's DDL)
_COMMIT_PREPARED: Final = "COMMIT PREPARED"
# CommandComplete tags of a block's commit (a ROLLBACK's, ROLLBACK TO's too, undoes its DDL:
# nothing to settle before the session is idle again)
_ENDED: Final = frozenset((b"COMMIT", b"PREPARE TRANSACTION"))
_ENCODING_SETTERS: Final = frozenset(("SET", "SET LOCAL"))
# calls that may set client_encoding: with a literal value, or a setting (or the encoding)
# a parameter gives (``policy.classify.catalogue.BY_PARAMETER``), decided at each Bind
_ENCODING_FUNCTIONS: Final = frozenset((SET_CONFIG_PREFIX + "client_encoding", SET_CONFIG_PREFIX + BY_PARAMETER))

UNRECORDED: Final = Refusal(
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
    refused_unrecorded: int = 0
    db_denied: int = 0  # the database refused (42501) what the policy let through
    notifications_withheld: int = 0  # on a channel no listen: scope names (``may_hear``)


def _portal_of(run: bytes, bind_start: int) -> bytes:
    """The portal name a Bind frame names, with its NUL (as Describe and Execute have it)."""
    end = run.index(b"\x00", bind_start + 5)
    return run[bind_start + 5 : end + 1]


def _next_execute(run: bytes, frames, i: int, portal: bytes) -> int:
    """After a Bind of ``portal``: 1 if ``frames[i:]`` run it next (an Execute of it, with
    nothing between but Describes of it and Flushes, which run nothing: pg-cursor sends
    Bind, Describe, Flush and its Execute once the server answered, the node drivers'
    differential of session 38), 0 if another message comes first, -1 if the
    batch ends before either. Executed next, the server runs the portal before any other
    message, so what its statement changes happens in the order the policy follows it
    (``StatementPolicy.bind_at_once``); a batch that ends first (psycopg's pipeline with
    large statements splits a Bind from its Execute) is looked at again with the next one
    (``Relay._bind_pending``)."""
    n = len(frames)
    size = len(portal)
    while i < n:
        t, start, _end = frames[i]
        if t == _DESCRIBE and run[start + 5 : start + 6] == b"P":
            if run[start + 6 : start + 6 + size] != portal:
                return 0
        elif t == _FLUSH:
            pass
        elif t == _EXECUTE:
            # (with a row limit, the rest of the portal runs at later Executes: code in it
            # that replaces statements ran at this Bind already, so the policy's
            # ``lazy_names`` has every later one looked at: red-team round 43)
            return 1 if run[start + 5 : start + 5 + size] == portal else 0
        else:
            return 0
        i += 1
    return -1


def _sets_own_timezone(verdict) -> bool:
    """A verdict of one statement, the client's own SET, SET LOCAL or RESET of TimeZone (no
    code runs in it: a function call in the value is no SET)."""
    decisions: tuple = getattr(verdict, "decisions", ())
    if len(decisions) != 1:
        return False
    classified = decisions[0][0]
    return classified.cls is _SESSION_SET and classified.detail == _TIMEZONE


def _alone_in_its_group(run: bytes, frames, i: int, statement: bytes) -> bool:
    """Are the frames from ``frames[i]`` on, after a Parse of ``statement``, its one Bind
    and the one Execute of that portal (a Describe or two beside them), then the Sync that
    ends the group, in this read? (JDBC's, or any extended client's, single statement; a
    pipeline of several is not: which statement a report is of is not known there.)"""
    portal: bytes | None = None  # (with its NUL, as ``_portal_of`` and ``_next_execute``)
    executed = False
    for j in range(i, len(frames)):
        t, start, _end = frames[j]
        if t == _SYNC:
            return executed
        if t == _BIND and portal is None:
            portal = _portal_of(run, start)
            named = start + 5 + len(portal)
            if run[named : run.index(b"\x00", named)] != statement:
                return False
        elif t == _EXECUTE and portal is not None and not executed:
            if run[start + 5 : start + 5 + len(portal)] != portal:
                return False
            executed = True
        elif t != _DESCRIBE:
            return False
    return False


class Relay:
    """Relay logic for one session: policy on statements, recording of both directions."""

    def __init__(
        self,
        *,
        policy: Policy | None = None,
        recorder: SessionSink | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        record_rows: str = "full",
        ready_status: bytes = b"I",
        on_decision: Callable[[Verdict], None] | None = None,
        health: Health | None = None,
        client_encoding: str = "UTF8",
        grant_id: str = "",
    ):
        self.policy = policy  # None: pass-through (an unrestricted static user)
        # A Parse the policy runs as RESTRICT (``_reparse``): the frame being decided, and
        # what the policy's question made of it
        self._parsing: bytes | None = None
        self._reparsed: bytes | None = None
        self._reparse_refused = False
        if policy is not None:
            policy.can_reparse = self._reparse
        self.recorder = recorder  # None: recording disabled
        # After login a PasswordMessage is a protocol violation: refused while framing,
        # before the recorder (or anything) sees its bytes.
        self.client_reader = FrameReader(max_message_bytes, F.KNOWN - {F.PASSWORD}, _STREAMED_C2S)
        self.server_reader = FrameReader(max_message_bytes, streamed=_STREAMED_S2C)
        self._rows_filter = RowFilter() if record_rows == "counts" else None
        self.tx_status = ready_status
        # Checked sessions only: a static user's statements are not classified, so its
        # upstream is never kept (proxy/upstream_pool.py).
        self.upstream_clean = policy is not None
        self.terminated = False
        self.upstream_fatal = False  # the server said FATAL: its word is the last one
        self.counters = Counters()
        self.on_decision = on_decision  # callback(verdict) for metrics
        self.health = health  # the Recorder: while not healthy, statements are refused
        self.encoding = python_encoding(client_encoding)
        # The session set client_encoding (or the server reported a change): from then on a
        # statement with non-ASCII bytes is checked only while nothing is in flight before
        # it (``ENCODING_IN_FLIGHT``): the server reports a change with the ReadyForQuery that
        # ends the group, and a SET LOCAL's end, a rolled-back SET or a prepared SET run
        # again changes it with no statement of its own (red-team round 33)
        self.encoding_changed = False
        # the server said COMMIT or ROLLBACK (a CommandComplete) while the session's DDL is
        # open: settled at the next ReadyForQuery, idle or not (COMMIT AND CHAIN, ``COMMIT;
        # BEGIN``: round 34), on the server's word, not a decision's (round 35: a COMMIT
        # prepared and never run, or skipped after an error, settled a block still open)
        self._tx_ended = False
        self.grant_id = grant_id  # every decision names its grant (or its shape does)
        self._records: DecisionRecords | None = None  # renders them (decision_records.py)
        # Large statements: ``offload(sqls)`` (set by the connection) classifies them off
        # the event loop, then the connection calls ``resume``; meanwhile frames are parked.
        self.offload: Callable[[list[str]], None] | None = None
        # A statement whose decision needs a catalog snapshot loaded after it arrived
        # (the policy's CATALOG_WAIT): it and what follows are parked, and the connection
        # calls ``resume`` once the reload the policy started is done.
        self.catalog_wait: Callable[[], None] | None = None
        self.parked: tuple[bytes, list] | None = None
        self._backlog: list[bytes] = []
        # Sync groups (proxy/wire/syncgroups.py): which client messages the server is
        # answering now; each group lists the denials injected in it (proxy/denials.py).
        self.groups = SyncGroups()
        self.denials = Denials()
        # client statement name -> the name it has upstream: statements whose object text a
        # parameter pins (the policy's bind_pins), parsed under a name of the proxy's own
        self._pinned: dict[str, str] = {}
        self._pin_count = 0
        # the Parses sent upstream not answered yet, in order (the client's statement name,
        # None for one the proxy injected): each ParseComplete confirms the oldest one to
        # the policy (``parse_answered``). After an error the server skips messages, so
        # none is matched until everything sent is answered (``_parses_lost``).
        self._parses: deque[str | None] = deque()
        self._parses_lost = False
        # a private statement was made: a Bind naming one directly (its name can be
        # learned) is refused, so Binds stay looked at for the rest of the session
        self._pinned_any = False
        # client statement name -> its last allowed Parse frame, for a statement a name
        # check restores (``_RESTORABLE``, ASCII): ``_check_name``
        self._restorable: dict[str, bytes] = {}
        # the name last restored and the Sync group built after its restore's: until the
        # client sends something that may run code there, the server holds its statement
        self._restored: tuple[str, int] | None = None
        # a restore failed: (the Sync group answered next, its ErrorResponse), the answer
        # to the client's message after it
        self._restore_error: tuple[int, bytes] | None = None
        # the portal of a followed statement's Bind that ended a read (``_next_execute``)
        self._bind_pending: bytes | None = None
        # the Sync group (``SyncGroups.sent_groups``) in which a message was refused because
        # the recorder cannot record: the server skips the rest of it, so its Binds and
        # Executes need no refusal of their own
        self._unrecorded_group = -1
        # (the server's ParameterStatus body for the upstream application_name, the frame
        # the client gets instead): set by the server when it tags upstream logins
        self.app_names: tuple[bytes, bytes] | None = None
        # For db.denied records: statements the policy decided, each with the number of the
        # Sync group it was sent in (``groups.sent_groups``, ``groups.answered``), the text
        # it came in and its message; kept until their group is answered (bounded:
        # ``_DECIDED_MAX``, ``_DECIDED_CHARS``), and the statements the server completed
        # in the group it is answering (CommandComplete): a refusal is the next one's.
        self._decided: deque[tuple[int, Verdict, str, str]] = deque()
        self._decided_chars = 0
        self._completions = 0
        self._withheld_notifications = 0  # (``_notification_withheld``)
        # The session ran (or prepared) a statement whose foreign-key actions write a
        # relation the grant may not read: from then on, what the server says in errors
        # and notices is withheld (proxy.redaction.withhold_message). For the session, not
        # the statement: a prepared statement runs in a later Sync group than its Parse.
        self.withholding = False
        # the last Sync group whose answers are withheld: a read in it was decided on a
        # stale snapshot (``Policy.stale_read``); 0: none
        self._withhold_through = 0
        # and until the transaction it ran in has ended: a portal it bound may be executed
        # in a later Sync group (red-team round 54)
        self._withhold_tx = False
        # ... because it ran code on rows the grant may not read (``Policy.hidden_read``),
        # not on a stale snapshot: which note the withheld messages carry
        self._withhold_hidden = False
        # the Sync group (a simple Query) that is the client's own SET, SET LOCAL or RESET of
        # TimeZone alone, sent with nothing else in flight: its report of TimeZone carries
        # the client's value (or the login's, already reported), not what code set, and is
        # passed where code may set settings (the drivers' differential of session 37:
        # psycopg's timestamptz values came back in the login's zone); 0: none
        self._own_timezone = 0
        # The grant may not read function bodies: the code an error's or notice's context
        # quotes from one is withheld (proxy.redaction.strip_code). A dry run: nothing.
        self.strips_code = policy is not None and policy.enforce and not policy.reads_code

    def _withhold_group(self, hidden: bool) -> None:
        """What the server says about the Sync group being sent, and until its transaction
        has ended, is withheld: a read in it was decided on a stale snapshot, or (``hidden``)
        runs code on rows the grant may not read (``Policy.hidden_read``, which this clears;
        the note says which)."""
        self._withhold_through = self.groups.sent_groups + 1
        self._withhold_tx = True
        if hidden:
            assert self.policy is not None
            self.policy.hidden_read = False
            self._withhold_hidden = True

    def _client_encoding(self, name: str) -> None:
        """The server says which encoding it now reads the client's bytes in: the truth.

        Under a policy an encoding off the allowlist ends the session (however the SQL that
        set it got through): the proxy could no longer lex statements as the server does."""
        codec = python_codec(name)
        if codec is None and self.policy is not None and self.policy.enforce:
            raise ProtocolViolation(
                f"the server switched client_encoding to {name!r}, which is not on the "
                "proxy's allowlist (statements could no longer be checked as the server "
                "reads them): ending the session"
            )
        codec = codec or "utf-8"
        if codec != self.encoding:
            self.encoding_changed = True
        self.encoding = codec

    def _conforming_strings(self, value: bytes) -> None:
        """The server says how it now reads backslashes in '...' strings. The policy's lexer
        reads them as standard_conforming_strings = on does (the login refuses an upstream
        where it is off: proxy/handshake.py); should it change mid-session (a function an
        execute scope allows may call set_config), statements would no longer be split as
        the server splits them, so an enforcing session ends here. A dry run goes on: it
        refuses nothing, so there is nothing to get around."""
        if value != b"on" and self.policy is not None and self.policy.enforce:
            raise ProtocolViolation(
                f"the server switched standard_conforming_strings to "
                f"{value.decode('ascii', 'replace')!r} (statements could no longer be checked "
                "as the server reads them): ending the session"
            )

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
        if self.offload is not None and self.policy is not None and len(run) >= OFFLOAD_MIN:
            big = self._expensive(run, frames)  # (no frame of a shorter read can be)
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
                if self.policy is not None and self.policy.needs_offload(sql):
                    big.append(sql)
        return big

    def resume(self) -> tuple[bytes, bytes]:
        """The parked frames, checked now (their statements were classified off the loop),
        then whatever arrived meanwhile, until another large statement parks the relay."""
        assert self.parked is not None, "resume() without parked frames"
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
        groups = self.groups
        n = len(frames)
        policy = self.policy
        health = self.health
        pending = self._bind_pending
        if pending is not None:
            # a followed statement's Bind ended the last read: its Execute must lead this
            # one (a Describe of its portal may come first). Anything else would run it
            # after messages the policy followed first (a client splitting them on purpose
            # to slip a Parse or DDL between: red-team round 42), and the Bind has gone
            # upstream already: the session ends, its portal with it
            next_execute = _next_execute(run, frames, 0, pending)
            if next_execute == 0:
                raise ProtocolViolation(
                    "a Bind of a statement the proxy follows at each run (DDL, or one that "
                    "prepares or removes statements) must be followed by the Execute of its "
                    "portal; another message came first: ending the session"
                )
            if next_execute > 0:
                self._bind_pending = None
        if (policy is not None and (policy.lazy_names or policy.lazy_code)
                and self.tx_status == b"I" and groups.idle):
            # idle outside a transaction: no cursor or portal is open to run code again
            # (the mark came with another session's definition: ``catalog_changed``)
            policy.at_rest()
        if policy is not None and policy.lazy_code:
            # code that may replace statements may run now: any message of this read may
            # run it (a Bind's parameter checks, COPY rows through a trigger, an Execute, a
            # Sync's commit), before a later one in it is decided (red-team rounds 47, 48)
            policy.ran_lazy = True
        # looked at once per batch of frames (one socket read): it holds for all of them
        unhealthy = health is not None and not health.healthy
        if unhealthy:
            checked = _CHECKED_UNHEALTHY_LAZY if policy is not None and policy.lazy_names else _CHECKED_UNHEALTHY
        elif policy is not None and policy.portals_watched:
            checked = _CHECKED_LAZY if policy.lazy_names else _CHECKED_PORTALS
        elif self._binds_checked():
            checked = _CHECKED_LAZY if policy is not None and policy.lazy_names else _CHECKED_BINDS
        else:
            checked = _CHECKED
        # Messages nobody checks (Bind, Describe, Execute, Sync, ...) only move the Sync
        # groups: one call per run of them; the loop below sees statements and Terminate.
        i = groups.sent_frames(frames, 0, checked)
        if i == n:
            return run, b""
        out: list[bytes] = []
        to_client: list[bytes] = []
        last = 0
        verdict: Verdict | Refusal
        while i < n:
            t, start, end = frames[i]
            i += 1
            if t == _TERMINATE:
                # Not passed on: the connection ends the upstream session itself (or keeps
                # it for the grant's next login: proxy/upstream_pool.py). Nothing after
                # Terminate counts.
                self.terminated = True
                out.append(run[last:start])
                return b"".join(out), self._answer(to_client)
            if t == _SYNC:  # (looked at only while the policy's ``lazy_names``)
                if policy is not None and policy.lazy_names:
                    policy.names_unknown()  # its commit may fill a WITH HOLD cursor's rows
                groups.sent(t)
                i = groups.sent_frames(frames, i, checked)
                continue
            if t in (_DESCRIBE, _CLOSE):
                # a statement whose pin is a parameter lives upstream under a name of the
                # proxy's own (see the Parse below): its Describe and Close follow it there
                frame = run[start:end]
                if (t == _DESCRIBE and policy is not None and policy.portals_watched
                        and frame[5:6] == b"P"):
                    policy.sending_group = groups.sent_groups
                    refused = policy.check_describe(frame[6:-1])
                    if refused is not None:
                        # its columns say what a cursor code opened reads: refused as an
                        # Execute of it is (a statement of ours that raises in its place)
                        self._record(refused, "Describe", "", portal=frame[6:-1].decode(
                            "utf-8", "replace"))  # fmt: skip
                        if not refused.allowed:
                            out.append(run[last:start])
                            last = end
                            denials = self.denials
                            out.append(denials.inject(_PARSE, denials.raise_sql(
                                refused.message,
                                getattr(refused, "sqlstate", INSUFFICIENT_PRIVILEGE),
                            ), groups))  # fmt: skip
                            self._parses.append(None)  # ours: its ParseComplete comes too
                            groups.sent(t)
                            i = groups.sent_frames(frames, i, checked)
                            continue
                name_ = m.statement_named(frame, self.encoding)
                if t == _DESCRIBE and name_ and policy is not None:
                    if self.encoding_changed and not name_.isascii() and groups.ran:
                        if policy.lazy_code or policy.binds_watched:
                            # which statement it names is not known, nor so whether the
                            # server must check it: refused, as a Bind of it is (red-team
                            # round 46: it went upstream unchecked)
                            self._record(ENCODING_IN_FLIGHT, "Describe", "", statement=name_)
                            out.append(run[last:start])
                            last = end
                            denials = self.denials
                            out.append(denials.inject(_PARSE, denials.raise_sql(
                                ENCODING_IN_FLIGHT.message, ENCODING_IN_FLIGHT.sqlstate,
                            ), groups))  # fmt: skip
                            self._parses.append(None)  # ours: its ParseComplete comes too
                            groups.sent(t)
                            i = groups.sent_frames(frames, i, checked)
                            continue
                    elif self._check_name(name_, out, run, last, start):
                        last = start
                if name_ is not None and name_ in self._pinned:
                    out.append(run[last:start])
                    out.append(m.renamed_statement(frame, self._pinned[name_]))
                    last = end
                    if t == _CLOSE and policy is not None:
                        del self._pinned[name_]
                        policy.bind_pins.pop(name_, None)
                        policy.closed(name_)  # (the server may hold an older one: red-team
                        # round 34; the policy then holds none, ``StatementPolicy.check_parse``)
                elif (t == _CLOSE and policy is not None and policy.portals_watched
                        and run[start + 5 : start + 6] == b"P"):
                    policy.portal_closed(run[start + 6 : end - 1])
                elif name_ is not None and t == _CLOSE and policy is not None:
                    self._restorable.pop(name_, None)
                    if self.encoding_changed and not name_.isascii() and groups.ran:
                        policy.closed_unknown()  # read in an encoding that may be changing
                    else:
                        policy.closed(name_)
                groups.sent(t)
                i = groups.sent_frames(frames, i, checked)
                continue
            refusing = unhealthy  # (False for a frame the server skips anyway, below)
            if refusing and i == n and self.client_reader.mid_frame:
                # a Bind or CopyData streamed in parts (256 KiB and more): only its head is
                # here, the rest follows as bytes nobody looks at, so a refusal cannot take
                # its place (red-team round 21: the tail ran as messages of its own)
                self._record(UNRECORDED, _NAMES[t], "")
                raise ProtocolViolation(
                    f"{UNRECORDED.message}; a message streamed in parts cannot be refused "
                    "alone: ending the session"
                )
            if t in (_COPY_DATA, _COPY_DONE):
                if refusing:
                    # the COPY ends failed (its rows roll back); the server drops the
                    # client's CopyData and CopyDone that follow
                    self._record(UNRECORDED, _NAMES[t], "")
                    out.append(run[last:start])
                    out.append(m.copy_fail(UNRECORDED.message))
                    last = end
                    groups.sent(F.COPY_FAIL)
                else:
                    groups.sent(t)
                i = groups.sent_frames(frames, i, checked)
                continue
            if refusing and t in (_BIND, _EXECUTE) and self._unrecorded_group == groups.sent_groups:
                refusing = False  # the server skips it: its group failed already
            if t == _EXECUTE and not refusing:
                if policy is not None and policy.lazy_names:
                    # its portal may run that code again (a cursor's by name, a suspended
                    # one): what the policy learnt before it may not be what runs after
                    policy.names_unknown()
                if policy is None or not policy.portals_watched:
                    groups.sent(t)
                    i = groups.sent_frames(frames, i, checked)
                    continue
            if t == _BIND and not refusing:
                name = m.bind_statement(run[start:end], self.encoding)
                if (policy is None or not policy.bind_checked(name)) and not (
                    self.encoding_changed and not name.isascii() and groups.ran
                ):  # (a name decoded in an encoding that may be changing: below, refused)
                    if policy is not None and policy.hidden_read:
                        self._withhold_group(hidden=True)  # (its Parse's group may be over)
                    if policy is not None and policy.portals_watched:
                        policy.sending_group = groups.sent_groups
                        policy.portal_bound(name, _portal_of(run, start)[:-1])
                    groups.sent(t)  # a Bind of any other statement: not looked at
                    i = groups.sent_frames(frames, i, checked)
                    continue
            if refusing:
                verdict = UNRECORDED
                self._record(verdict, _NAMES[t], "")
            elif policy is None:
                groups.sent(t)
                i = groups.sent_frames(frames, i, checked)
                continue
            elif t == _BIND:
                # a frame streamed in parts (256 KiB and more) is not whole here: its values
                # cannot be checked, and a refusal cannot be spliced into it (decode_bind
                # refuses it: the session ends)
                frame = run[start:end]
                part = i == n and self.client_reader.mid_frame  # a streamed Bind's head
                if part and name not in policy.bind_pins and not (
                    self.encoding_changed and groups.ran
                ):
                    # decided on its statement's text (a catalog change, code that may run
                    # DDL): its values are not read (asyncpg's suite: a 1 MiB value bound
                    # after another session's DDL ended the session)
                    formats: tuple[int, ...] = ()
                    values: tuple[bytes | None, ...] = ()
                else:
                    formats, values = m.decode_bind(frame)
                if self.encoding_changed and groups.ran and not (
                    name.isascii() and all(v is None or v.isascii() for v in values)
                ):  # (its values pin names; not the frame's lengths: binary)
                    verdict = ENCODING_IN_FLIGHT
                else:
                    policy.sending_group = groups.sent_groups
                    portal = _portal_of(run, start)
                    next_execute = _next_execute(run, frames, i, portal)
                    policy.bind_at_once = next_execute != 0
                    verdict = policy.check_bind(name, formats, values, self.encoding)
                    if next_execute < 0 and verdict.allowed and name in policy.followed:
                        self._bind_pending = portal  # its Execute comes with the next read
                if part and not verdict.allowed:
                    self._record(verdict, "Bind", "", statement=name)
                    raise ProtocolViolation(
                        f"{verdict.message}; a Bind streamed in parts cannot be refused "
                        "alone: ending the session"
                    )
                # (checked first: a restore sends a Sync group before the Bind's, and the
                # record notes the group the Bind goes in)
                checked_ = verdict.allowed and self._check_name(name, out, run, last, start)
                self._record(verdict, "Bind", "", statement=name)
                if verdict.allowed and policy.portals_watched:
                    # (after a restore's own Sync group, which ``_check_name`` may have sent:
                    # the server then surely holds the text the policy does, or fails it)
                    policy.sending_group = groups.sent_groups
                    policy.portal_bound(name, _portal_of(run, start)[:-1], checked_)
                private = self._pinned.get(name)
                if checked_:
                    last = start
                if verdict.allowed and private is not None:
                    out.append(run[last:start])
                    out.append(m.renamed_statement(frame, private))
                    last = end
            elif t == _EXECUTE:  # (the database holds code that may open cursors)
                policy.sending_group = groups.sent_groups
                portal = run[start + 5 : run.index(b"\x00", start + 5)]
                verdict = policy.check_execute(portal)
                if not verdict.allowed or verdict.would_deny:
                    self._record(verdict, "Execute", "", portal=portal.decode("utf-8", "replace"))
                if verdict.allowed:
                    groups.sent(t)
                    i = groups.sent_frames(frames, i, checked)
                    continue
            elif t == _QUERY:
                sql = m.query_text(run, start, end, self.encoding)
                # (the text decoded, not the frame: its length bytes are binary; a non-ASCII
                # byte decodes to a non-ASCII character in every encoding the allowlist has)
                rewritten = None
                if self.encoding_changed and groups.ran and not sql.isascii():
                    verdict = ENCODING_IN_FLIGHT
                else:
                    policy.sending_group = groups.sent_groups  # (the check may start the
                    verdict = policy.check_query(sql)  # portals' books: policy/portals.py)
                    if verdict is CATALOG_WAIT and self.catalog_wait is not None:
                        return self._park_at(run, frames, i - 1, last, out, to_client)
                    rewritten = policy.rewritten
                if rewritten is not None and verdict.allowed:
                    if m.query(sql, self.encoding) != run[start:end]:
                        verdict = NOT_ROUND_TRIP
                        self._record(verdict, "Query", sql)
                    else:
                        # CASCADE run as RESTRICT (``StatementPolicy.check_query``): the text
                        # sent instead of the client's, which the record keeps beside it
                        self._record(verdict, "Query", sql, run_as=rewritten)
                        out.append(run[last:start])
                        out.append(m.query(rewritten, self.encoding))
                        last = end
                else:
                    self._record(verdict, "Query", sql)
                if (policy.encoding_code and verdict.allowed and _sets_own_timezone(verdict)
                        and groups.idle):  # (this Query is not sent yet: nothing else is)
                    self._own_timezone = groups.sent_groups + 1  # (this Query's group)
            elif t == _PARSE:
                frame = run[start:end]
                name, sql = m.decode_parse(frame, self.encoding)
                again: bytes | None = None
                if self.encoding_changed and groups.ran and not (
                    sql.isascii() and name.isascii()
                ):
                    verdict = ENCODING_IN_FLIGHT
                else:
                    types = m.policy_parse_types(frame)
                    # parameters of a user's type (by OID) may run its functions when bound
                    policy.sending_group = groups.sent_groups
                    self._parsing = frame  # (what ``_reparse`` answers for)
                    verdict = policy.check_parse(sql, types, name)
                    self._parsing = None
                    again, self._reparsed = self._reparsed, None
                    unsent, self._reparse_refused = self._reparse_refused, False
                    if verdict is CATALOG_WAIT and self.catalog_wait is not None:
                        return self._park_at(run, frames, i - 1, last, out, to_client)
                    if unsent:
                        verdict = NOT_ROUND_TRIP  # (refused for its CASCADE all the same)
                if again is not None and verdict.allowed and policy.rewritten is not None:
                    # CASCADE run as RESTRICT, as a Query's (``_reparse``): the frame with
                    # the policy's text, which the record keeps beside the client's
                    self._record(verdict, "Parse", sql, statement=name, run_as=policy.rewritten)
                    out.append(run[last:start])
                    out.append(again)
                    last = end
                    frame = again
                else:
                    self._record(verdict, "Parse", sql, statement=name)
                if (policy.encoding_code and verdict.allowed and _sets_own_timezone(verdict)
                        and groups.idle and _alone_in_its_group(
                            run, frames, i, run[start + 5 : run.index(b"\x00", start + 5)])):
                    # (the Parse starts its group, which runs it alone: its report is its own)
                    self._own_timezone = groups.sent_groups + 1
                if verdict.allowed and (name in policy.bind_pins or name in self._pinned):
                    # A statement whose pin is a parameter is parsed upstream under a name
                    # of the proxy's own, its Binds (checked), Describes and Closes renamed
                    # to it: the server then never holds it under the client's name, so no
                    # later Parse of that name the server refuses or skips (an error earlier
                    # in its Sync group), no refused Parse the server never sees, no SQL
                    # EXECUTE of that name can run it without its Binds checked.
                    if name in policy.bind_pins:
                        self._pin_count += 1
                        self._pinned_any = True  # its Binds are looked at from now on
                        private = f"{self.denials.tag}_pin_{self._pin_count}"
                        self._pinned[name] = private
                        out.append(run[last:start])
                        out.append(m.renamed_statement(frame, private))
                        last = end
                    else:  # a new statement of that name, upstream under it
                        del self._pinned[name]
            else:
                verdict = policy.check_function_call()
                self._record(verdict, "FunctionCall", "")
            if verdict.allowed:
                if not unhealthy and policy is not None and policy.portals_watched:
                    checked = _CHECKED_LAZY if policy.lazy_names else _CHECKED_PORTALS
                elif not unhealthy and self._binds_checked():  # (unhealthy: its set stays)
                    # (a statement's pin is a parameter now, or DDL changed the catalog: the
                    # Binds of statements prepared before it are decided again)
                    checked = _CHECKED_LAZY if policy is not None and policy.lazy_names else _CHECKED_BINDS
                if (not self.withholding and policy is not None and policy.enforce
                        and not isinstance(verdict, Refusal) and policy.writes_unreadable(verdict)):
                    self.withholding = True  # (a dry run refuses and withholds nothing)
                if policy is not None and policy.stale_read:
                    # a read decided on a stale snapshot: withheld until its group is answered
                    policy.stale_read = False
                    self._withhold_group(hidden=False)
                if policy is not None and policy.hidden_read:
                    # code run on rows the grant may not read (a view's query, a row security
                    # policy, a REFRESH): the same, with its own note (red-team round 86)
                    self._withhold_group(hidden=True)
                if policy is not None:
                    if not self.encoding_changed and policy.encoding_code:
                        self.encoding_changed = True  # code the policy does not read may set it
                    for classified, _decision in verdict.decisions:
                        command = classified.command
                        if command == _COMMIT_PREPARED:
                            policy.commits_prepared()  # it may commit another session's DDL
                        elif not self.encoding_changed and (
                            (classified.detail == _CLIENT_ENCODING and command in _ENCODING_SETTERS)
                            or (classified.functions and not classified.functions.isdisjoint(
                                _ENCODING_FUNCTIONS))
                        ):
                            self.encoding_changed = True  # (before the server says so)
                if self.upstream_clean:
                    for classified, _decision in verdict.decisions:
                        cls = classified.cls
                        if cls is _DDL or cls is _ROLE or cls is _UNKNOWN or classified.command == _LOAD:
                            self.upstream_clean = False
                if t == _PARSE and policy is not None:
                    self._parses.append(name)
                    if name:
                        decisions = verdict.decisions
                        if (len(decisions) == 1 and decisions[0][0].cls in _RESTORABLE
                                and decisions[0][0].command not in _ANALYSED_AT_PARSE
                                and not decisions[0][0].command.startswith(_EXPLAIN)
                                and frame.isascii() and name not in self._pinned):
                            restorable = self._restorable
                            restorable.pop(name, None)
                            if len(restorable) >= _MAX_RESTORABLE:  # the oldest: checked
                                restorable.pop(next(iter(restorable)))  # with a query
                            restorable[name] = frame
                        elif self._restorable:
                            self._restorable.pop(name, None)
                groups.sent(t)
                i = groups.sent_frames(frames, i, checked)
                continue
            if not unhealthy and policy is not None and policy.portals_watched:
                # (a check may have just switched the rule on: the rest of this read too)
                checked = _CHECKED_LAZY if policy.lazy_names else _CHECKED_PORTALS
            sqlstate = getattr(verdict, "sqlstate", INSUFFICIENT_PRIVILEGE)
            out.append(run[last:start])
            last = end
            if t != _PARSE and t != _BIND and t != _EXECUTE and self._idle() and not any(out):
                to_client.extend(local_denial(sqlstate, verdict.message, self.tx_status))
            else:
                denials = self.denials
                # a Bind (or Execute) is refused as a Parse is: a statement of ours that
                # raises, in the Sync group, so the server skips the client's Describe and
                # Execute
                injected = _PARSE if t in (_BIND, _EXECUTE) else t
                raise_sql = denials.raise_sql(verdict.message, sqlstate)
                if t == _QUERY and self._ends_its_block(verdict) and not any(out):
                    out.append(denials.inject_ending(raise_sql, groups))
                    if policy is not None and policy.portals_watched:
                        policy.portals_rolled_back()  # (its ROLLBACK ends the block)
                else:
                    out.append(denials.inject(injected, raise_sql, groups))
                    if injected == _PARSE:
                        self._parses.append(None)  # ours: its ParseComplete comes too
                groups.sent(t)
                if verdict is UNRECORDED and injected == _PARSE:
                    self._unrecorded_group = groups.sent_groups
            i = groups.sent_frames(frames, i, checked)
        if last == 0 and not out:  # (a check may go before the first frame: ``_check_name``)
            return run, self._answer(to_client)
        out.append(run[last:])
        return b"".join(out), self._answer(to_client)

    def _check_name(self, name: str, out: list[bytes], run: bytes, last: int, start: int) -> bool:
        """Before the client's Bind or Describe of statement ``name`` (at ``start``), the
        server checks it still holds the client's statement, if code that may have replaced
        it ran since the policy last knew (``StatementPolicy.verify_name``). True: the
        check went into ``out`` (with what came before the frame)."""
        policy = self.policy
        assert policy is not None
        if self.tx_status == b"E" and not self.groups.ran:
            # a failed transaction, nothing sent since that could end it: the server runs
            # only what ends it (COMMIT, ROLLBACK, ROLLBACK TO SAVEPOINT: 25P02 for the rest,
            # a Describe of rows too), and the check itself would fail there and take the
            # client's ROLLBACK with it (the drivers' differential, session 26). The name
            # stays to be checked at its first Bind after the transaction
            return False
        groups = self.groups
        if self._restored == (name, groups.sent_groups) and not groups.ran:
            return False  # restored just before this group, and no code ran since
        token = policy.verify_name(name)
        if token is None:
            return False
        out.append(run[last:start])
        restore = self._restorable.get(name)
        if (restore is not None and self.tx_status != b"E" and groups.idle
                and not self.denials.pending and not self.denials.held
                and policy.holds_text(name, m.decode_parse(restore, self.encoding)[1])):
            # the server made to hold the client's statement again, in a Sync group of
            # its own, rather than asked with a query (``Denials.inject_restore``)
            out.append(self.denials.inject_restore(name, restore, token, groups))
            self._parses.append(None)  # ours: its ParseComplete comes too
            self._restored = (name, groups.sent_groups)
            return True
        out.append(self.denials.inject_check(
            name, self._pinned.get(name, name), policy.replaced_message(name), token, self.groups,
        ))  # fmt: skip
        self._parses.append(None)  # ours: its ParseComplete comes too
        return True

    def _park_at(self, run: bytes, frames, k: int, last: int, out: list[bytes],
                 to_client: list[bytes]) -> tuple[bytes, bytes]:
        """Frame ``k`` waits for a catalog reload (``catalog_wait``): what came before it
        goes on now; it and the rest are parked, as if they had not arrived yet."""
        start = frames[k][1]
        out.append(run[last:start])
        self.parked = (run[start:], [(t, s - start, e - start) for t, s, e in frames[k:]])
        assert self.catalog_wait is not None
        self.catalog_wait()
        return b"".join(out), self._answer(to_client)

    def _answer(self, to_client: list[bytes]) -> bytes:
        """Our own answers to the client (local denials): counted and recorded."""
        return self.deliver(b"".join(to_client)) if to_client else b""

    @property
    def busy(self) -> bool:
        """The server owes answers: a query may be running upstream right now."""
        return self.groups.busy

    def _ends_its_block(self, verdict) -> bool:
        """A denied Query whose one statement PostgreSQL runs to end the transaction block,
        failing or not (PREPARE TRANSACTION), sent inside a block with nothing in flight
        (so the block is the one the last ReadyForQuery showed): ``Denials.inject_ending``."""
        decisions: tuple = getattr(verdict, "decisions", ())
        return (
            len(decisions) == 1
            and decisions[0][0].command == "PREPARE TRANSACTION"
            and self.tx_status in (b"T", b"E")
            and self.groups.idle
            and not self.denials.held
            and not self.denials.pending
        )

    def _binds_checked(self) -> bool:
        """Are Binds looked at now? While a statement's pin is a parameter, prepared
        statements wait to be decided again after a catalog change, or a statement is
        followed at each Bind (DDL, or one that prepares or removes statements)."""
        policy = self.policy
        return policy is not None and (self._pinned_any or policy.binds_watched)

    def _idle(self) -> bool:
        return self.tx_status == b"I" and self.groups.idle and not self.denials.held

    @property
    def upstream_reusable(self) -> bool:
        """The session was checked and ran no DDL, role or unclassified statement, and the
        server is idle between statements, outside any transaction, owes nothing and has
        been sent nothing half-way (nor sent us a partial frame, nor FATAL): another
        session of the same grant could start on it after a reset."""
        return (
            self.upstream_clean
            and self._idle()
            and not self.upstream_fatal
            and self.parked is None
            and not self.client_reader.mid_frame
            and self.server_reader.pending == 0
            and not self.server_reader.mid_frame
        )

    def _reparse(self, text: str) -> bool:
        """The policy's question before it decides a Parse's text as ``text`` (its CASCADE
        run as RESTRICT): may the Parse being decided carry it? Only if the client's text
        encodes back to the client's bytes (as for a Query: ``NOT_ROUND_TRIP``); the frame
        to send is kept for the Parse's branch (``_reparsed``)."""
        frame = self._parsing
        again = m.reparsed(frame, text, self.encoding) if frame is not None else None
        self._reparsed = again
        self._reparse_refused = again is None
        return again is not None

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
            # which statement (and rule) went upstream in the group being built: worked
            # out from the verdict only if the database refuses something (_db_denied)
            decided = self._decided
            decided.append((self.groups.sent_groups, verdict, sql, message))
            self._decided_chars += len(sql)
            while len(decided) > _DECIDED_MAX or self._decided_chars > _DECIDED_CHARS:
                self._decided_chars -= len(decided.popleft()[2])  # (then named by group)
        records = self._records
        if records is None or records.grant_id != self.grant_id:
            # shape numbers are the session's: a new grant's renderer goes on from the last
            first = records.next_shape if records is not None else 0
            records = self._records = DecisionRecords(self.grant_id, first_shape=first)
        if extra:
            shape, body = records.render(verdict, message, sql, **extra)
        else:  # (a call without keywords is a compiled one: the common case)
            shape, body = records.render(verdict, message, sql)
        if shape is not None:  # the first statement of this shape in the session
            self.recorder.event(DECISION_SHAPE, shape)
        self.recorder.decision_json(body, not verdict.allowed)

    def _answered(self) -> None:
        """A ReadyForQuery: the statements decided in the groups it answered are no longer
        needed for a db.denied record, and the next group's completions count from 0."""
        self._completions = 0
        decided = self._decided
        answered = self.groups.answered
        while decided and decided[0][0] < answered:
            self._decided_chars -= len(decided.popleft()[2])

    def _refused_statement(self) -> tuple[str, str, bool]:
        """(statement, rule, would_deny) of what the database refused: the statement after
        the ones it completed in the Sync group it is answering (``_completions``), counted
        over the group's Queries' statements and Parses in the order they were sent (the
        common pipelines: one Query of several statements, Parse/Bind/Execute for each);
        else, as before, the group's first decided statement or its first would-deny (a
        Bind of a statement prepared earlier: its Parse is not in the group)."""
        decided = self._decided  # (its answered groups' are gone: ``_answered``)
        answering = self.groups.answered
        k = self._completions
        for group, verdict, text, message in decided:
            if group != answering:
                break
            if message != "Query" and message != "Parse":
                continue
            decisions = exact(verdict, text).decisions
            if k < len(decisions):
                classified, decision = decisions[k]
                return classified.sql, decision.rule, not decision.allowed
            k -= len(decisions)
        statement, rule, would_deny = "", "", False
        for group, verdict, text, _message in decided:  # the first, or its first would-deny
            if group != answering:
                break
            sql, why, would = self._picked(exact(verdict, text))
            if not statement or (would and not would_deny):
                statement, rule, would_deny = sql, why, would
            if would_deny:
                break
        return statement, rule, would_deny

    @staticmethod
    def _picked(verdict) -> tuple[str, str, bool]:
        """(statement, rule, would_deny) an allowed verdict stands for in a db.denied record:
        its first statement, or in dry-run the first one that would have been denied (the
        likely refusal)."""
        pick = verdict.decisions[0]
        for classified, decision in verdict.decisions:
            if not decision.allowed:
                pick = (classified, decision)
                break
        classified, decision = pick
        return classified.sql, decision.rule, not decision.allowed

    def _db_denied(self, frame: bytes) -> None:
        """The database refused a statement the policy let through (42501): record it.

        Each one is a policy gap or a probe. The statement is the first one the policy
        decided in the Sync group the server is answering now (in dry-run, the first it
        would have denied).
        """
        self.counters.db_denied += 1
        if self.recorder is None:
            return
        statement, rule, would_deny = self._refused_statement()
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

    def _replaced(self, name: str, token: tuple[int, int]) -> None:
        """A check of ours failed: code the session ran replaced or removed statement
        ``name`` (the check removed it upstream); the client got our error for its Bind or
        Describe. Recorded, as the refusal it is."""
        policy = self.policy
        if policy is not None:
            policy.replaced(name, token)
        # the server refused it (its check, for the proxy): a refusal of the database, as
        # the auditor's answer counts them (``db.denied``, recorder.audit.derive)
        self.counters.db_denied += 1
        if self.recorder is not None:
            self.recorder.event(
                "db.denied",
                {
                    "sqlstate": "26000",
                    "message": policy.replaced_message(name) if policy is not None else "",
                    "statement": name,
                    "rule": "deny.replaced",
                    "would_deny": False,
                    "grant_id": self.grant_id,
                },
            )

    # --- server → client -------------------------------------------------------

    def from_server(self, data: bytes) -> bytes:
        run, frames = self.server_reader.feed(data)
        if not frames:
            return self.deliver(run) if run else b""  # more of a large frame, or nothing yet
        c = self.counters
        c.msgs_s2c += len(frames)
        rewritten: list[bytes] | None = None
        last = 0
        denials = self.denials
        pending = denials.pending
        held = denials.held
        groups = self.groups
        counting = groups.counting()
        withholding = self.withholding
        note = UNREADABLE_WRITES  # why what the server says is withheld, when it is
        policy = self.policy
        if not withholding and policy is not None and policy.write_mark is not None:
            # a write allowed since everything was answered may run what another session's
            # DDL attached since its decision (``writes_moved``): withheld as above
            withholding = policy.enforce and policy.writes_moved()
            note = SCHEMA_MOVED
        if not withholding and (self._withhold_tx or self._withhold_through > groups.answered):
            # a read decided on a stale snapshot (``stale_read``), or run on hidden rows
            withholding = True
            note = HIDDEN_ROWS if self._withhold_hidden else SCHEMA_MOVED
        strips = self.strips_code
        notices = withholding or strips  # looked at: each is rare
        # the session's DDL is open: its transaction's end is looked for (``_tx_ended``)
        ending = self.policy is not None and self.policy.ddl_open
        # the session's portals are followed (policy/portals.py): which SAVEPOINTs the
        # server made (an error may skip one), the rows a refcursor call returned
        watched = policy is not None and policy.portals_watched
        savepoints = harvesting = False
        if watched:
            assert policy is not None
            savepoints, harvesting = policy.savepoints_pending, policy.harvesting
            watched = savepoints or harvesting
        for t, start, end in frames:
            if watched:
                assert policy is not None
                if savepoints and t == _COMMAND_COMPLETE and run[start + 5 : end - 1] == b"SAVEPOINT":
                    policy.savepoint_made()
                elif harvesting and t == _DATA_ROW:
                    # (every value: a group of nothing but calls of functions that return
                    # one refcursor each is all that counts, ``StatementPolicy.refcursors``)
                    policy.refcursors([
                        v.decode(self.encoding, "replace") for v in m.column_values(run[start:end])
                    ])  # fmt: skip
            if counting:
                if t in _ANSWERS:
                    groups.answer()
                elif t == _ERROR:
                    groups.error()
                    counting = False  # answered or skipped now: nothing more to count
            if t == _COMMAND_COMPLETE:
                self._completions += 1  # (a refusal names the statement after these)
                if ending and run[start + 5 : end - 1] in _ENDED:
                    self._tx_ended = True
            if not pending and t not in _WATCHED and not (notices and t == _NOTICE):
                continue  # DataRow, CommandComplete, ...: the common case
            if t == _PARSE_COMPLETE:
                parses = self._parses
                if parses and not self._parses_lost:
                    name_ = parses.popleft()
                    if name_ is not None and self.policy is not None:
                        self.policy.parse_answered(name_)
                if not pending:
                    continue
            if pending and pending[0].restores and t != B.NOTIFICATION and t != _PARAMETER_STATUS:
                # the head group is a restore of ours (``Denials.inject_restore``, sent while
                # nothing was in flight): every answer in it is ours, dropped, its notices
                # too (a Close and a Parse say nothing but a DEBUG line of their transaction)
                inj = pending[0]
                if t == _ERROR and run[start + 5 : start + 11] in (b"SFATAL", b"SPANIC"):
                    self.upstream_fatal = True  # passed on: the session ends
                    continue
                rewritten = self._ensure(rewritten, run, last, start)
                last = end
                if t == _ERROR:
                    inj.failed = True  # the Close ran: the server holds nothing there now
                    inj.error = run[start:end]
                    if self._parses and not self._parses_lost:
                        self._parses.popleft()  # ours (sent while all was answered): skipped
                elif t == _READY:
                    self.tx_status = run[start + 5 : end]
                    pending.popleft()
                    inj.resolved = True
                    first = groups.head_number
                    groups.ready()
                    self._answered()
                    name_ = inj.checks
                    policy = self.policy
                    if policy is not None and policy.portals_watched:
                        policy.portals_answered(
                            first, groups.head_number, self.tx_status == b"I", groups.idle
                        )
                    if inj.failed:
                        # the client's Bind or Describe, first in the next group, fails for
                        # want of the statement (26000): the restore's own error is its
                        # answer, as the server alone would have given it (a lock timeout,
                        # a dropped source). The name stays to be restored at its next Bind
                        # (round 55: forgotten, a retry was refused for good)
                        self._restore_error = (groups.answered, inj.error)
                    elif name_ is not None and policy is not None:
                        policy.verified(name_, inj.token)
                    if self._parses_lost and groups.idle:
                        self._parses.clear()
                        self._parses_lost = False
                    counting = groups.counting()
                continue
            if t == _NOTICE and notices and not (pending and denials.tag_bytes in run[start:end]):
                # withheld as an error would be (proxy.redaction): all but severity and
                # SQLSTATE while writes reach an unreadable relation, else the code its
                # context quotes from a function body
                quiet = self._quieted(run[start:end], note if withholding else None)
                if quiet is not None:
                    rewritten = self._ensure(rewritten, run, last, start)
                    rewritten.append(quiet)
                    last = end
                    continue
            if t == _NOTIFICATION and policy is not None:
                channel = m.notification_channel(run, start, end, self.encoding)
                if not policy.may_hear(channel):
                    # code the grant ran listens there (the client's own LISTEN would have
                    # been refused): another session's payload is not this client's
                    rewritten = self._ensure(rewritten, run, last, start)
                    last = end
                    self._notification_withheld(channel, end - start)
                    continue
            if t == _READY:
                self.tx_status = run[start + 5 : end]
                if (self._withhold_tx and self.tx_status == b"I"
                        and groups.answered + 1 >= self._withhold_through):  # (this one's)
                    self._withhold_tx = False  # its transaction has ended, its portals too
                    self._withhold_hidden = False
                policy = self.policy
                if (policy is not None and (policy.ddl_open or policy.ddl_unsettled)
                        and self.tx_status == b"I"):
                    policy.settle_ddl()  # the session's DDL has ended: committed or not
                    self._tx_ended = False
                if held:
                    rewritten = self._ensure(rewritten, run, last, start)
                    rewritten.extend(held)
                    held.clear()
                    last = start
                first = groups.head_number
                answered = groups.ready()
                self._answered()
                if answered:
                    denials.skipped(answered)
                if policy is not None and policy.portals_watched:
                    policy.portals_answered(
                        first, groups.head_number, self.tx_status == b"I", groups.idle
                    )
                if self._tx_ended:
                    self._tx_ended = False  # COMMIT AND CHAIN, COMMIT; BEGIN: ended, not idle
                    if policy is not None and policy.ddl_open:
                        policy.settle_ddl()
                if policy is not None and policy.names_pending:
                    policy.answered(groups.idle)  # which statements the server holds
                if policy is not None and policy.temps_pending:
                    # which temporary relations the session's own statements made
                    policy.temps_answered(groups.answered, self.tx_status == b"I")
                if policy is not None and policy.write_mark is not None and groups.idle:
                    policy.writes_done()
                if (policy is not None and (policy.lazy_names or policy.lazy_code)
                        and groups.idle and self.tx_status == b"I"):
                    # outside a transaction, with nothing in flight: no cursor or portal
                    # that code reached is left to run it (a WITH HOLD one was filled)
                    policy.at_rest()
                if self._parses_lost and groups.idle:
                    self._parses.clear()  # everything sent is answered
                    self._parses_lost = False
                counting = groups.counting()
                continue
            ours = False
            if t == _ERROR:
                if self._parses:
                    self._parses_lost = True  # skipped, some of them: none matched now
                if self.policy is not None:
                    self.policy.failed()  # (what it skipped may have made statements)
                if run[start + 5 : start + 11] in (b"SFATAL", b"SPANIC"):
                    self.upstream_fatal = True
                # Ours only while a denial is pending and only by the whole schema field: a
                # client that learnt the marker and re-ran an injected statement (its name
                # shows in pg_prepared_statements) gets the server's error as it is, and
                # it is recorded as a refusal like any other, not passed off as ours.
                ours = bool(pending) and denials.schema_field in run[start:end]
                failed = self._restore_error
                if failed is not None:
                    self._restore_error = None
                    restored = failed[1]
                    if (failed[0] == groups.answered and not ours
                            and _NO_STATEMENT in run[start:end]):
                        # the message a restore that failed came before (``inject_restore``),
                        # first in the group answered after it
                        if withholding or worth_a_look(restored, strips):
                            redacted = self._redacted(restored, note if withholding else None)
                            if redacted is not None:
                                restored = redacted
                        rewritten = self._ensure(rewritten, run, last, start)
                        if pending and held:
                            rewritten.extend(held)
                            held.clear()
                        rewritten.append(restored)
                        last = end
                        continue
                if _PRIVILEGE_FIELD in run[start:end] and not ours:
                    self._db_denied(run[start:end])
                if not ours and (withholding or worth_a_look(run[start:end], strips)):
                    redacted = self._redacted(run[start:end], note if withholding else None)
                    if redacted is not None:  # passed on as the frame below would be
                        rewritten = self._ensure(rewritten, run, last, start)
                        if pending and held:  # held frames go before an error not ours
                            rewritten.extend(held)
                            held.clear()
                        rewritten.append(redacted)
                        last = end
                        continue
            if t == _COPY_IN:
                groups.copy_in()
            elif t == _PARAMETER_STATUS and run.startswith(b"client_encoding\x00", start + 5):
                self._client_encoding(run[start + 21 : end - 1].decode("ascii", "replace"))
            elif t == _PARAMETER_STATUS and run.startswith(_CONFORMING, start + 5):
                self._conforming_strings(run[start + 5 + len(_CONFORMING) : end - 1])
            elif (t == _PARAMETER_STATUS and self.app_names is not None
                    and run[start + 5 : end] == self.app_names[0]):
                # RESET returned application_name to the proxy's tagged login value: the
                # client sees its own name, as at login (proxy/appname.py)
                rewritten = self._ensure(rewritten, run, last, start)
                rewritten.append(self.app_names[1])
                last = end
            elif (t == _PARAMETER_STATUS and policy is not None and policy.encoding_code
                    and policy.enforce and run.startswith(_FREE_TEXT_REPORTED, start + 5)
                    and not (self._own_timezone == groups.answered + 1
                             and run.startswith(_TIMEZONE_REPORTED, start + 5))):
                # code may have set it to what it read (``set_config`` in a trigger, a
                # granted function: red-team round 79), and a report of it reaches the
                # client with no statement of its own: withheld (a read of it is refused:
                # ``engine._setting_of_code``)
                rewritten = self._ensure(rewritten, run, last, start)
                last = end
            elif not pending:
                continue
            elif t == _CLOSE_COMPLETE and pending[0].passed:
                # the CloseComplete of a check of ours that passed (``inject_check``)
                rewritten = self._ensure(rewritten, run, last, start)
                inj, released = denials.passed()
                rewritten.extend(released)
                last = end
                if self.policy is not None and inj.checks is not None:
                    self.policy.verified(inj.checks, inj.token)
            elif t in _HOLDABLE or (t == _COMMAND_COMPLETE and pending[0].holds_complete):
                rewritten = self._ensure(rewritten, run, last, start)
                held.append(run[start:end])
                last = end
            elif ours:
                rewritten = self._ensure(rewritten, run, last, start)
                inj = pending[0]
                rewritten.extend(denials.answered(run[start:end]))
                last = end
                if inj.checks is not None:
                    self._replaced(inj.checks, inj.token)
            elif (t == _COMMAND_COMPLETE and pending[0].checks is not None
                    and run[start + 5 : end - 1] == b"DO"):
                # a check of ours passed (no client's DO reaches the server: ``deny.do``):
                # dropped; it is resolved at its statement's CloseComplete, next
                rewritten = self._ensure(rewritten, run, last, start)
                pending[0].passed = True
                last = end
            elif t in _ASYNC:
                if t == B.NOTICE_RESPONSE and denials.tag_bytes in run[start:end]:
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
        return self.deliver(out)

    def _notification_withheld(self, channel: str, size: int) -> None:
        """A notification on ``channel`` was withheld: recorded (its channel and size, never
        its payload) for the first ``_WITHHELD_NOTES`` of the session, counted after."""
        c = self.counters
        c.notifications_withheld += 1
        n = self._withheld_notifications = self._withheld_notifications + 1
        if self.recorder is not None and n <= _WITHHELD_NOTES:
            self.recorder.event("notification.withheld", {
                "channel": channel, "bytes": size, "rule": "deny.listen", "n": n,
                "more_not_recorded": n == _WITHHELD_NOTES,
            })  # fmt: skip

    def _quieted(self, frame: bytes, withheld: str | None) -> bytes | None:
        """A notice, withheld (``withheld``: why) or without quoted code; None: as it is."""
        if withheld is not None:
            return withhold_message(frame, self.encoding, withheld)
        return self._stripped(frame)

    def _redacted(self, frame: bytes, withheld: str | None) -> bytes | None:
        """An error that may quote a row of a relation the grant may not read, withheld
        (``proxy.redaction``): all but severity and SQLSTATE, with ``withheld`` (why), else its
        DETAIL and CONTEXT if it names such a relation. None: passed on as it is (no
        policy, a dry run, nothing to withhold)."""
        policy = self.policy
        if policy is None or not policy.enforce:
            return None
        if withheld is not None:
            return withhold_message(frame, self.encoding, withheld)
        out = redact_error(frame, policy.may_read, self.encoding)
        if self.strips_code:
            stripped = self._stripped(out if out is not None else frame)
            if stripped is not None:
                out = stripped
        return out

    def _stripped(self, frame: bytes) -> bytes | None:
        """``frame`` without the function-body code its context quotes; None: it has none."""
        return strip_code(frame, self.encoding) if quotes_code(frame) else None

    @property
    def has_held(self) -> bool:
        return bool(self.denials.held)

    def release_held(self) -> bytes:
        """Frames held for a possible injection answer that did not come (see
        ``Denials.release_held``), counted and recorded as they go to the client."""
        out = self.denials.release_held()
        return self.deliver(out) if out else b""

    def deliver(self, out: bytes) -> bytes:
        """Everything the client gets while the session is live passes here: counted
        (``bytes_s2c``) and recorded (``s2c``; rows left out under ``record_rows =
        "counts"``). The relay's own output does; the connection passes the proxy's own
        frames (the login's last frames, a FATAL) here too (``ClientWriter.local``)."""
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
    as UTF-8 (which fails closed: bytes that are not UTF-8 end the session). The recorder's
    readers read a recording's texts with the same (``recorder.encodings.session_codec``)."""
    return session_codec(pg_name)
