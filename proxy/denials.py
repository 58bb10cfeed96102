"""Denials the server raises for us, and their errors cleaned on the way back. Sans-IO.

A denied statement is replaced by a ``DO`` block that raises 42501 (or the refusal's own
SQLSTATE) with our message, so Postgres's own transaction semantics apply: inside
``BEGIN`` the transaction is aborted, in a pipeline the implicit transaction rolls back,
and the server skips everything up to the next Sync exactly as if the client's statement
had failed. The ErrorResponse is recognised by a per-connection marker (the error's
``schema`` field) and cleaned of it and of the PL/pgSQL traces (``_STRIP_FIELDS``); the
ParseComplete/BindComplete/CloseComplete the injected messages produce are held back and
dropped when the marked error arrives. The relay's splice loop (``proxy.relay``) decides
where frames go; this module owns what is injected, what is pending and what is held.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass

from common.wire import messages as m
from common.wire.errors import error_response
from common.wire.syncgroups import SyncGroups
from policy.decide import RESERVED_PREFIX

F = m.Frontend
B = m.Backend
# Answers to injected extended messages: held until we know whether they are ours.
HOLDABLE = frozenset((B.PARSE_COMPLETE, B.BIND_COMPLETE, B.CLOSE_COMPLETE))
# May arrive at any time; never part of an injection's answer, so they pass held frames.
ASYNC = frozenset((B.NOTICE_RESPONSE, B.NOTIFICATION, B.PARAMETER_STATUS))
_STRIP_FIELDS = frozenset("sWFLR")  # marker (schema field) and PL/pgSQL traces
_MAX_CLOSES = 4  # injected statements closed before the next one, at most


@dataclass(eq=False)
class Injection:
    """A denial the server is asked to raise; ``drop`` = how many *Complete frames precede
    its error (Close, Parse, Bind for the extended protocol; none for a simple Query)."""

    drop: int
    statement: str = ""
    resolved: bool = False
    # the CommandComplete before its error is ours too (``inject_ending``'s ROLLBACK)
    holds_complete: bool = False
    # a check that may pass (``inject_check``): the client's statement name it checks and
    # the policy's token (``StatementPolicy.verify_name``); None for a denial
    checks: str | None = None
    token: tuple[int, int] = (0, 0)
    passed: bool = False  # a check's CommandComplete "DO" came: its CloseComplete follows
    closes: tuple[str, ...] = ()  # earlier injected statements it closes first
    # a restore (``inject_restore``): a Sync group of its own, every answer in it ours
    restores: bool = False
    failed: bool = False  # its Parse failed: the server holds no statement under the name
    error: bytes = b""  # then: the server's ErrorResponse for it


class Denials:
    """One connection's injected denials: the marker, the pending ones, the held frames."""

    def __init__(self, nonce: str = "") -> None:
        """``nonce``: fixed only by tests that compare bytes across runs."""
        nonce = nonce or secrets.token_hex(8)
        self.marker = f"pgwitness-deny-{nonce}"
        self.marker_bytes = self.marker.encode()
        # The marker as the error's whole schema field: field values are C strings, so these
        # bytes can only be that field, never text a client got into a message or detail.
        # (The client can still learn the marker, e.g. from pg_prepared_statements, and
        # make the server raise it by binding an injected statement: see ``Relay``.)
        self.schema_field = b"\x00s" + self.marker_bytes + b"\x00"
        # names injected statements, portals and dollar quotes: a prefix no client may use
        self.tag = f"{RESERVED_PREFIX}{nonce}"
        self.tag_bytes = self.tag.encode()
        # Every unresolved injection in send order: a marked error resolves the oldest, and
        # the ReadyForQuery that ends its group drops one the server skipped.
        self.pending: deque[Injection] = deque()
        self.held: list[bytes] = []
        self._injected = 0  # names injected statements and portals uniquely
        # injected statements the server may still hold (a denial's stays after its error;
        # one whose injection was skipped was never made): closed by the next injection,
        # forgotten once one that closed them was answered (red-team round 56: a denial's
        # statement stayed for the session when the check after it was skipped)
        self._unclosed: list[str] = []

    def raise_sql(self, message: str, sqlstate: str) -> str:
        tag = self.tag
        while f"${tag}m$" in message or f"${tag}$" in message:  # pragma: no cover - 64-bit nonce
            tag += "x"
        return (
            f"DO ${tag}$ BEGIN RAISE EXCEPTION USING ERRCODE = '{sqlstate}', "
            f"MESSAGE = ${tag}m${message}${tag}m$, SCHEMA = '{self.marker}'; END ${tag}$"
        )

    def inject(self, t: int, raise_sql: str, groups: SyncGroups) -> bytes:
        """The messages that make the server raise our denial in place of the client's.

        Extended protocol: a uniquely named statement and portal (the client's unnamed ones
        survive, as they would a failed Parse), closing the previous injected statement.
        The caller still tells ``groups`` about the client's message (``sent(t)``).
        """
        if t == F.PARSE:
            data, inj = self._statement(raise_sql)
            groups.attach(inj, extended=inj.drop)  # ``sent`` counts the Parse; these the rest
        else:
            data = m.query(raise_sql)
            inj = Injection(0)
            groups.attach(inj)
        self.pending.append(inj)
        return data

    def _statement(self, sql: str) -> tuple[bytes, Injection]:
        """A uniquely named statement and portal running ``sql`` (the client's unnamed ones
        survive), closing the previous one of ours."""
        self._injected += 1
        name = f"{self.tag}_{self._injected}"
        closes = tuple(self._unclosed[-_MAX_CLOSES:])
        data = b"".join(m.close_statement(n) for n in closes)
        self._unclosed.append(name)
        data += m.parse(name, sql) + m.bind_no_params(name, name) + m.execute(name)
        return data, Injection(2 + len(closes), name, closes=closes)

    def inject_check(
        self, name: str, upstream: str, message: str, token: tuple[int, int], groups: SyncGroups
    ) -> bytes:
        """Messages that have the server check, right before the client's Bind or Describe
        of statement ``name`` (``upstream`` there), that it holds a statement the client
        prepared under that name (not ``from_sql``: code run since may have made one from
        pieces, which no check of its source tells, and only a client's Parse makes one
        that is not). If it does not, the check removes whatever it holds there and raises
        our error (26000, ``message``): the server skips the client's messages up to its
        Sync, and the error is the answer the client sees. If it does, its answers (the
        *Completes, a CommandComplete "DO" and the CloseComplete of its statement) are ours
        and dropped (``passed``). The caller still tells ``groups`` about the client's
        message."""
        tag = self.tag
        while f"${tag}m$" in message:  # pragma: no cover - 64-bit nonce
            tag += "x"
        # the name as bytes of its own, in no quoting a name could break out of
        held = f"pg_catalog.convert_from(pg_catalog.decode('{upstream.encode().hex()}', 'hex'), 'UTF8')"
        named = (
            f"SELECT FROM pg_catalog.pg_prepared_statements s WHERE s.name "
            f"OPERATOR(pg_catalog.=) {held}"
        )
        sql = (
            f"DO ${tag}$ BEGIN IF NOT EXISTS ({named} AND NOT s.from_sql) THEN "
            f"IF EXISTS ({named}) THEN EXECUTE pg_catalog.format('DEALLOCATE %I', {held}); "
            f"END IF; RAISE EXCEPTION USING ERRCODE = '26000', MESSAGE = ${tag}m${message}"
            f"${tag}m$, SCHEMA = '{self.marker}'; END IF; END ${tag}$"
        )
        data, inj = self._statement(sql)
        inj.checks = name
        inj.token = token
        # closed once it ran (so pg_prepared_statements lists nothing of ours after a check
        # that passed: psycopg's suite looks; the drivers' differential, session 27); if it
        # raised, the server skips the Close and the next injection closes it
        data += m.close_statement(inj.statement)
        groups.attach(inj, extended=inj.drop + 2)  # all ours: the client's Bind is sent too
        self.pending.append(inj)
        return data

    def inject_restore(
        self, name: str, parse_frame: bytes, token: tuple[int, int], groups: SyncGroups
    ) -> bytes:
        """Messages that make the server hold the client's statement ``name`` again, right
        before the client's Bind or Describe of it, where a check (``inject_check``) would
        break the client's statement: a query before it in its transaction takes the
        snapshot (``SET TRANSACTION ISOLATION``: 25001) or makes it a pipeline's
        (``CREATE INDEX CONCURRENTLY``: 25001). Close and Parse (``parse_frame``: the
        client's own Parse, the text the policy holds) take no snapshot and run nothing,
        whatever code left under the name. They go as a Sync group of their own, sent only
        while nothing is in flight (so the group splits none of the client's), and every
        answer in it (CloseComplete, ParseComplete or an error, ReadyForQuery) is ours: the
        relay drops them (``Relay.from_server``). The caller has made sure the server is
        idle (``SyncGroups.idle``) and the session is not in a failed transaction."""
        inj = Injection(0, checks=name, token=token, restores=True)
        groups.sent(F.CLOSE)
        groups.sent(F.PARSE)
        groups.attach(inj)
        groups.sent(F.SYNC)
        self.pending.append(inj)
        return m.close_statement(name) + parse_frame + m.SYNC

    def passed(self) -> tuple[Injection, list[bytes]]:
        """The CommandComplete "DO" of the oldest pending injection, a check that passed:
        it and its held answers are dropped. Returns it and the held frames that were the
        client's, to pass on."""
        return self._resolve_oldest()

    def _resolve_oldest(self) -> tuple[Injection, list[bytes]]:
        """The oldest pending injection is answered: its held answers are dropped; the held
        frames before them were the client's, returned to pass on."""
        held = self.held
        inj = self.pending.popleft()
        inj.resolved = True
        if inj.closes or inj.passed:  # its Closes ran (a check that passed: its own too)
            gone = set(inj.closes)
            if inj.passed:
                gone.add(inj.statement)
            self._unclosed = [n for n in self._unclosed if n not in gone]
        if inj.drop:
            del held[-inj.drop :]
        out = held[:]
        held.clear()
        return inj, out

    def inject_ending(self, raise_sql: str, groups: SyncGroups) -> bytes:
        """A denied simple Query that PostgreSQL runs to end the client's transaction block
        whether it succeeds or fails (PREPARE TRANSACTION: a failure rolls the block back,
        in a failed block it is a ROLLBACK). Our error alone would leave the block open and
        failed; a ROLLBACK goes first in the same Query, its CommandComplete held and
        dropped with our error, so the client sees the error and ReadyForQuery 'I', as
        PostgreSQL's own failure would give it. Only for a Query sent with nothing else in
        flight, inside a block (``Relay``): the ROLLBACK then ends that block and no other.
        """
        inj = Injection(1, holds_complete=True)
        groups.attach(inj)
        self.pending.append(inj)
        return m.query(f"ROLLBACK; {raise_sql}")

    def answered(self, frame: bytes) -> list[bytes]:
        """Our marked ErrorResponse: resolves the oldest pending denial. Returns what the
        client gets: the held frames that were not its answers, then the cleaned error."""
        _inj, out = self._resolve_oldest()
        out.append(clean_error(frame))
        return out

    def skipped(self, items) -> None:
        """A ReadyForQuery ended the group these injections were sent in: any not answered
        were skipped by a server already failing that group."""
        for inj in items:
            if not inj.resolved:
                inj.resolved = True
                self.pending.remove(inj)
                if inj.statement in self._unclosed:  # never made
                    self._unclosed.remove(inj.statement)

    def release_held(self) -> bytes:
        """Frames held for a possible injection answer that did not come: pass them on.

        Our own answer arrives in the same server write as the frames it follows, so a
        short timer calling this can only release the client's own frames.
        """
        if not self.held:
            return b""
        out = b"".join(self.held)
        self.held.clear()
        return out


def clean_error(frame: bytes) -> bytes:
    """The server's ErrorResponse for an injected denial, without our marker and traces."""
    fields = m.decode_error_fields(frame)
    clean = {k: v for k, v in fields.items() if k not in _STRIP_FIELDS}
    return m.encode_error_fields(b"E", clean)


def local_denial(sqlstate: str, message: str, tx_status: bytes) -> list[bytes]:
    """The answer to a denied simple Query when nothing is in flight and no transaction is
    open: what the server would have said, without the round trip."""
    return [error_response("ERROR", sqlstate, message), m.ready_for_query(tx_status)]
