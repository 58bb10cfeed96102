"""replay: a psql-like transcript of one session, decoded from the recording alone.

Frame decoding here is deliberately minimal (type byte, int32 length, the few fields a
reader needs) and independent of the proxy's codec, so a replay cannot inherit its bugs.

Texts are decoded in the session's client encoding, as the server reads the client's and
writes its own: the one the server last reported (ParameterStatus ``client_encoding``, s2c)
before the frame was recorded, UTF-8 until it reports one (``recorder.encodings``).
That is the encoding the proxy's relay decoded the frame in to decide it. A frame sent while
a change is in flight (after ``SET client_encoding``, before the server's ParameterStatus
came back) is read in the encoding last reported, as the relay read it: the relay refuses
such a frame if it holds bytes beyond ASCII (``ENCODING_IN_FLIGHT``), and every encoding on
the allowlist reads ASCII alike, so for every frame the server ran this is how it read it (a
static user's session is not checked: there a text sent in flight may read otherwise).
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TextIO

from . import chunks
from .encodings import DEFAULT_CODEC, session_codec
from .literal import escaped, plain_char, sql_ident, sql_literal
from .pgbinary import binary_text
from .records import DECISION_SHAPE, DecisionShapes, Direction, Kind, Record
from .store import Store

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")


def iter_records(store: Store, session_id: str,
                 bad: Callable[[str, str], None] | None = None) -> Iterator[Record]:
    """Records of a session in order (chunks 0..n as listed; no verification). Where an
    object planted at a chunk's key is not that chunk, the writer's conflict copy is read.
    A chunk that does not decode (a bomb past the format's bound included: never loaded
    whole) raises ChunkError, or with ``bad`` is passed to it (its name, why) and skipped,
    the other chunks read as usual."""
    prefix = chunks.session_prefix(session_id)
    keys = store.list(prefix)
    ns = sorted(p[0] for k in keys if (p := chunks.parse_name(k[len(prefix):])) and p[1] == "chunk")
    copies: dict[int, list[str]] = {}
    for k in keys:
        if (p := chunks.parse_conflict_name(k[len(prefix):])) and p[1] == "chunk":
            copies.setdefault(p[0], []).append(k)
    for n in ns:
        records: list[Record] = []
        for key in (chunks.chunk_key(session_id, n), *copies.get(n, ())):
            try:
                head, records = chunks.decode_chunk(store.get(key))
            except chunks.ChunkError as e:
                if n not in copies:
                    if bad is None:
                        raise
                    bad(key[len(prefix):], str(e))
                continue
            if (head.session_id, head.n) == (session_id, n) or n not in copies:
                break
        yield from records


def split_frames(buf: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """Whole frames (type, body) and the incomplete rest."""
    out, off = [], 0
    while len(buf) - off >= 5:
        if buf[off] == 0:  # untyped startup-phase packet: int32 length, then body
            (length,) = _I32.unpack_from(buf, off)
            if length < 8 or len(buf) - off < length:
                break
            out.append(("", buf[off + 4 : off + length]))
            off += length
            continue
        (length,) = _I32.unpack_from(buf, off + 1)
        if length < 4 or len(buf) - off < 1 + length:
            break
        out.append((chr(buf[off]), buf[off + 5 : off + 1 + length]))
        off += 1 + length
    return out, buf[off:]


def _frame_size(head: bytes | bytearray) -> int:
    """Bytes the frame starting ``head`` needs in all (0 if its header is incomplete)."""
    if len(head) < 5:
        return 0
    if head[0] == 0:
        return _I32.unpack_from(head, 0)[0]
    return 1 + _I32.unpack_from(head, 1)[0]


def _cstr(body: bytes, off: int, codec: str = DEFAULT_CODEC) -> tuple[str, int]:
    """The NUL-terminated string at ``off`` in the session's encoding ``codec``, and the
    offset after it."""
    end = body.index(b"\x00", off)
    return body[off:end].decode(codec, "replace"), end + 1


_CLIENT_ENCODING = b"client_encoding\x00"


def reported_codec(body: bytes) -> str | None:
    """The codec the session's texts are in from a ParameterStatus frame's ``body`` on, if
    it reports ``client_encoding`` (None for another parameter): read as the relay reads it
    (``proxy.relay.Relay._client_encoding``: the value to the frame's last byte)."""
    if not body.startswith(_CLIENT_ENCODING):
        return None
    return session_codec(body[len(_CLIENT_ENCODING) : -1].decode("ascii", "replace"))


def _fields(body: bytes, codec: str = DEFAULT_CODEC) -> dict[str, str]:
    """ErrorResponse / NoticeResponse fields by code letter."""
    out, off = {}, 0
    while off < len(body) and body[off] != 0:
        code = chr(body[off])
        val, off = _cstr(body, off + 1, codec)
        out[code] = val
    return out


def _value(raw: bytes | None, binary: bool = False, type_oid: int = 0,
           codec: str = DEFAULT_CODEC) -> str | None:
    """A parameter's or a column's value as text: a text-format one in the session's
    encoding, a binary one as ``pgbinary`` reads its type; else (not decodable) as hex.
    A NULL (length -1) is None, never a text: the four letters ``'NULL'`` are a value the
    server tells apart from it (``$1 IS NULL``), and so must every reader (JSON null)."""
    if raw is None:
        return None
    if not binary:
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            pass
    elif (text := binary_text(raw, type_oid, codec)) is not None:
        return text
    return "\\x" + raw.hex()


# Every value an agent's bytes reach is written as the audit answer writes it
# (``recorder.literal``): a statement's text, a parameter, the server's message, detail and
# hint (a RAISE says anything), a name it chose (a prepared statement's, a portal's, a
# column's), a value of a row, a setting's value (``application_name``), the policy's
# reason (it quotes the statement). Was (until session 37's second round): printed as they
# were, so that a newline wrote a transcript line of its own (``[   0.1s] ok allowed``), and
# a terminal's escape reached the auditor's terminal (its title set, its screen cleared).
_literal = sql_literal


def _cell(v: str | None) -> str:
    """A column's value (or name) in the transcript's table: as psql prints it (the text as
    is) where it is plain (printable, no quote nor look-alike, no ``|``, not blank at an
    end), else a literal (``_literal``): so that no value can write a line, a column or a
    row of the table, nor pass for a NULL (``NULL`` is a NULL; the four letters are
    ``'NULL'``)."""
    if v is None:
        return "NULL"
    if (v != "NULL" and v.strip() == v and "|" not in v and not v.startswith("'")
            and all(plain_char(c) for c in v)):
        return v
    return _literal(v)


def _name(v: str) -> str:
    """A prepared statement's or a portal's name, as PostgreSQL reads an identifier
    (``sql_ident``: plain ones as they are, others quoted)."""
    return sql_ident(v)


def _bind(body: bytes, codec: str = DEFAULT_CODEC) -> tuple[str, str, list[str | None], list[int]]:
    """A Bind's portal, statement, values (``_value``: None for a NULL) and result formats."""
    portal, off = _cstr(body, 0, codec)
    stmt, off = _cstr(body, off, codec)
    (nfmt,) = _I16.unpack_from(body, off)
    off += 2
    fmts = [_I16.unpack_from(body, off + 2 * i)[0] for i in range(nfmt)]
    off += 2 * nfmt
    (nparams,) = _I16.unpack_from(body, off)
    off += 2
    params: list[str | None] = []
    for i in range(nparams):
        (length,) = _I32.unpack_from(body, off)
        off += 4
        raw = None if length < 0 else body[off : off + length]
        off += max(length, 0)
        fmt = fmts[0] if nfmt == 1 else (fmts[i] if i < nfmt else 0)
        params.append(_value(raw, fmt == 1, codec=codec))
    (nres,) = _I16.unpack_from(body, off)
    results = [_I16.unpack_from(body, off + 2 + 2 * i)[0] for i in range(nres)]
    return portal, stmt, params, results


def _row_description(body: bytes, codec: str = DEFAULT_CODEC) -> list[tuple[str, int, int]]:
    """(name, format, type oid) per column."""
    (n,) = _I16.unpack_from(body, 0)
    off, cols = 2, []
    for _ in range(n):
        name, off = _cstr(body, off, codec)
        (type_oid,) = _U32.unpack_from(body, off + 6)
        fmt = _I16.unpack_from(body, off + 16)[0]
        off += 18
        cols.append((name, fmt, type_oid))
    return cols


def _data_row(body: bytes, cols: list[tuple[str, int, int]], formats: list[int] | None = None,
              codec: str = DEFAULT_CODEC) -> list[str | None]:
    """A DataRow's values (``_value``: None for a NULL). ``formats``: the result format
    codes the client's Bind asked for (a RowDescription answering a statement Describe
    comes before the Bind and says text for every column)."""
    (n,) = _I16.unpack_from(body, 0)
    off = 2
    vals: list[str | None] = []
    for i in range(n):
        (length,) = _I32.unpack_from(body, off)
        off += 4
        raw = None if length < 0 else body[off : off + length]
        off += max(length, 0)
        fmt = cols[i][1] if i < len(cols) else 0
        if formats:
            fmt = formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0
        vals.append(_value(raw, fmt == 1, cols[i][2] if i < len(cols) else 0, codec))
    return vals


class Transcript:
    """Turns records into text; keeps result sets until their CommandComplete."""

    def __init__(self, out: TextIO, max_rows: int | None = None):
        self.out = out
        self.max_rows = max_rows
        self.wall0: int | None = None
        # Per direction, the bytes of an incomplete frame (a large one is recorded in pieces).
        self.pending = {Direction.C2S: bytearray(), Direction.S2C: bytearray()}
        self.statements: dict[str, str] = {}
        # Result formats: each Bind's per portal; each Execute queues its portal's, and the
        # server answers in order ("Q" and "SYNC" mark simple queries and Sync points).
        self.portal_formats: dict[str, list[int]] = {}
        self.answers: deque[list[int] | str] = deque()
        self.cols: list[tuple[str, int, int]] | None = None
        self.rows: list[list[str]] = []
        self.nrows = 0
        self.t = 0
        self.shapes = DecisionShapes()  # what an allowed decision's "shape" stands for
        self.codec = DEFAULT_CODEC  # the session's client encoding (``reported_codec``)

    def line(self, text: str, mark: str = "  ") -> None:
        """One line of the transcript: ``text`` is words of ours, each value an agent's
        bytes reach in it a literal already; what else is not printable is escaped."""
        self.out.write(f"[{self.t / 1e9:11.6f}s] {mark} {escaped(text)}\n")

    def feed(self, r: Record) -> None:
        self.t = r.t_ns
        if r.kind == Kind.WIRE:
            pending = self.pending[r.direction]
            pending += r.payload
            if len(pending) < _frame_size(pending):
                return  # framing waits for the whole frame: no quadratic joins
            frames, rest = split_frames(bytes(pending))
            self.pending[r.direction] = bytearray(rest)
            for typ, body in frames:
                try:
                    (self.client if r.direction == Direction.C2S else self.server)(typ, body)
                except (ValueError, struct.error, IndexError):
                    self.line(f"(undecodable {typ!r} frame, {len(body)} bytes)", "??")
            return
        try:
            p = r.json()
        except ValueError:  # damaged or forged: not a JSON object
            self.line(f"(undecodable {r.type!r} {r.kind.name.lower()} record, "
                      f"{len(r.payload)} bytes)", "??")
            return
        if r.kind == Kind.DECISION:
            self.decision(r.type, self.shapes.expand(p))
        elif r.kind == Kind.META and r.type == DECISION_SHAPE:
            self.shapes.define(p)  # not an event: the decisions that follow refer to it
        elif r.type == "session.start":
            self.wall0 = p.get("wall_ns")
            when = dt.datetime.fromtimestamp(self.wall0 / 1e9, dt.UTC).isoformat() if self.wall0 else "?"
            self.out.write(escaped(f"-- session {p.get('session')} started {when}") + "\n")
            meta = p.get("meta") or {}
            if meta:
                # the client's names among them (application_name, user, database): literals
                self.out.write("-- " + " ".join(f"{escaped(str(k))}={_meta(v)}"
                                                for k, v in sorted(meta.items())) + "\n")
        elif r.type == "session.end":
            self.flush_rows()
            detail = p.get("detail")  # (the server's FATAL may follow the proxy's words)
            self.line(f"session ended: {p.get('cause')}"
                      f"{' ' + _literal(detail) if detail else ''}", "--")
        else:
            mark = "##" if r.kind == Kind.CONTROL else "--"
            self.line(f"{r.type} {json.dumps(p, sort_keys=True)}", mark)

    def decision(self, verdict: str, p: dict) -> None:
        # the proxy's payload: outcome, sql, statements[{rule, reason, allowed, ...}], error
        outcome = p.get("outcome") or ("denied" if p.get("denied") else "allowed")
        stmts = [x for x in p.get("statements") or [] if isinstance(x, dict)]
        culprit = next((x for x in stmts if not x.get("allowed", True)), stmts[0] if stmts else {})
        rule = p.get("rule") or culprit.get("rule") or ""
        reason = p.get("reason") or culprit.get("reason") or p.get("error") or ""
        # the reason quotes the statement (a name, a parse error's text): a literal
        why = f": {_literal(reason)}" if reason else ""
        if outcome == "denied":
            self.line(f"DENIED {rule}{why}".rstrip(), "!!")
        elif outcome == "would_deny":
            self.line(f"WOULD DENY (dry-run, allowed) {rule}{why}".rstrip(), "??")
        else:
            rules = ", ".join(dict.fromkeys(x.get("rule", "") for x in stmts if x.get("rule")))
            self.line(f"allowed {rules or rule}".rstrip(), "ok")

    def client(self, typ: str, body: bytes) -> None:
        codec = self.codec
        if typ == "Q":
            self.answers.append("Q")
            self.line(_literal(_cstr(body, 0, codec)[0]), "=>")
        elif typ == "P":
            name, off = _cstr(body, 0, codec)
            sql, _ = _cstr(body, off, codec)
            self.statements[name] = sql
            self.line(f"parse{(' ' + _name(name)) if name else ''}: {_literal(sql)}", "=>")
        elif typ == "B":
            portal, stmt, params, formats = _bind(body, codec)
            self.portal_formats[portal] = formats
            ps = ", ".join(f"${i + 1}={_literal(v)}" for i, v in enumerate(params))
            self.line(f"bind{(' ' + _name(stmt)) if stmt else ''}: {ps or '(no parameters)'}", "=>")
        elif typ == "E":
            portal = _cstr(body, 0, codec)[0]
            self.answers.append(self.portal_formats.get(portal, []))
            if portal:
                self.line(f"execute portal {_name(portal)}", "=>")
        elif typ == "d":
            self.line(f"COPY data {len(body)} bytes", "=>")
        elif typ == "F":
            self.line("FunctionCall", "=>")
        elif typ == "S":
            self.answers.append("SYNC")
        elif typ == "X":
            self.line("terminate", "=>")
        elif typ == "":
            self.line(f"startup packet ({len(body)} bytes)", "=>")
        # Flush, Describe, Close: protocol plumbing, not shown

    def server(self, typ: str, body: bytes) -> None:
        codec = self.codec
        if typ == "T":
            self.flush_rows()
            self.cols = _row_description(body, codec)
        elif typ == "D":
            head = self.answers[0] if self.answers else None
            row = _data_row(body, self.cols or [], head if isinstance(head, list) else None, codec)
            if self.cols is None:  # e.g. an Execute of a portal described earlier
                self.cols = [(f"column{i + 1}", 0, 0) for i in range(len(row))]
            self.nrows += 1
            if self.max_rows is None or len(self.rows) < self.max_rows:
                self.rows.append([_cell(v) for v in row])
        elif typ == "C":
            tag = _cstr(body, 0, codec)[0]
            self.executed()
            self.flush_rows()
            self.line(tag, "<=")
        elif typ in ("I", "s"):
            self.executed()
            if typ == "I":
                self.line("(empty query)", "<=")
        elif typ == "Z":
            while self.answers and self.answers.popleft() not in ("SYNC", "Q"):
                pass
        elif typ in ("E", "N"):
            if typ == "E":  # the rest of the extended-query batch is skipped up to Sync
                while self.answers and isinstance(self.answers[0], list):
                    self.answers.popleft()
            self.flush_rows()
            f = _fields(body, codec)
            sev = f.get("V") or f.get("S") or ("ERROR" if typ == "E" else "NOTICE")
            text = f"{sev} {f.get('C', '?????')}: {_literal(f.get('M', ''))}"
            if f.get("D"):
                text += f" DETAIL: {_literal(f['D'])}"
            if f.get("H"):
                text += f" HINT: {_literal(f['H'])}"
            self.line(text, "<=")
        elif typ == "d":
            self.line(f"COPY data {len(body)} bytes", "<=")
        elif typ == "R" and len(body) >= 4 and _I32.unpack_from(body)[0] == 0:
            self.line("authentication ok", "<=")
        elif typ == "S":
            name, off = _cstr(body, 0, codec)
            value = _cstr(body, off, codec)[0]  # application_name: the client's choice
            self.line(f"parameter {_cell(name)} = {_literal(value)}", "<=")
            self.codec = reported_codec(body) or codec
        # ParseComplete, BindComplete, ReadyForQuery, NoData, ...: not shown

    def executed(self) -> None:
        """An Execute's answer ended (CommandComplete, EmptyQuery, PortalSuspended)."""
        if self.answers and isinstance(self.answers[0], list):
            self.answers.popleft()

    def flush_rows(self) -> None:
        if self.cols is None:
            return
        names = [_cell(c[0]) for c in self.cols]  # a column's name is the agent's too
        widths = [len(n) for n in names]
        for row in self.rows:
            for i, v in enumerate(row[: len(widths)]):
                widths[i] = max(widths[i], len(v))
        pad = " " * 16
        self.out.write(pad + " " + " | ".join(n.center(w) for n, w in zip(names, widths, strict=True)) + "\n")
        self.out.write(pad + "-" + "-+-".join("-" * w for w in widths) + "-\n")
        for row in self.rows:
            self.out.write(pad + " " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)) + "\n")
        more = f", {self.nrows - len(self.rows)} not shown" if self.nrows > len(self.rows) else ""
        self.out.write(f"{pad} ({self.nrows} row{'s' if self.nrows != 1 else ''}{more})\n")
        self.cols, self.rows, self.nrows = None, [], 0

    def close(self) -> None:
        self.flush_rows()


def _meta(v) -> str:
    """A value of the session's start metadata: a text a literal (the client's names), else
    its JSON."""
    return _literal(v) if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _not_read(out: TextIO, problems: list[str] | None):
    """Says in the transcript that a chunk was not read (and why), and collects it."""
    def bad(name: str, why: str) -> None:
        line = f"{name}: not intact, not read: {why}"
        out.write(f"!! {line}\n")
        if problems is not None:
            problems.append(line)
    return bad


def replay_session(store: Store, session_id: str, out: TextIO, *, max_rows: int | None = None,
                   follow: bool = False, poll_seconds: float = 0.5,
                   follow_timeout: float | None = None,
                   problems: list[str] | None = None) -> int:
    """Write the transcript; returns the number of records replayed.

    With `follow`, keep polling for new chunks (in order, never past a gap) until the
    session's final checkpoint appears or `follow_timeout` passes. A chunk that does not
    decode is named in the transcript (``!! <name>: not intact, ...``) and in
    ``problems``; the other chunks are replayed.
    """
    tr = Transcript(out, max_rows)
    count = 0
    bad = _not_read(out, problems)
    if not follow:
        for r in iter_records(store, session_id, bad):
            tr.feed(r)
            count += 1
        tr.close()
        return count
    from .signing import State, decode_checkpoint

    prefix = chunks.session_prefix(session_id)
    n = 0
    deadline = None if follow_timeout is None else time.monotonic() + follow_timeout
    while True:
        names = {k[len(prefix):] for k in store.list(prefix)}
        progressed = False
        # a chunk is shown once its checkpoint is stored too (the writer puts the chunk first)
        while (chunks.chunk_key(session_id, n)[len(prefix):] in names
               and chunks.ckpt_key(session_id, n)[len(prefix):] in names):
            try:
                _, records = chunks.decode_chunk(store.get(chunks.chunk_key(session_id, n)))
            except chunks.ChunkError as e:
                records = []
                bad(chunks.chunk_key(session_id, n)[len(prefix):], str(e))
            for r in records:
                tr.feed(r)
                count += 1
            out.flush()
            final = decode_checkpoint(store.get(chunks.ckpt_key(session_id, n))).state == State.FINAL
            n += 1
            progressed = True
            if final:
                tr.close()
                return count
        if deadline is not None and time.monotonic() > deadline:
            tr.close()
            return count
        if not progressed:
            time.sleep(poll_seconds)


def _frame_fields(typ: str, body: bytes, codec: str = DEFAULT_CODEC) -> dict:
    """The few fields a reader wants from a frame, for ``replay --format json``, its texts in
    the session's encoding ``codec``."""
    if typ == "Q":
        return {"sql": _cstr(body, 0, codec)[0]}
    if typ == "P":
        name, off = _cstr(body, 0, codec)
        return {"statement": name, "sql": _cstr(body, off, codec)[0]}
    if typ == "B":
        portal, stmt, params, _formats = _bind(body, codec)
        return {"portal": portal, "statement": stmt, "params": params}
    if typ == "C":
        return {"tag": _cstr(body, 0, codec)[0]}
    if typ in ("E", "N"):
        return {"fields": _fields(body, codec)}
    if typ == "T":
        return {"columns": [c[0] for c in _row_description(body, codec)]}
    if typ == "S" and body:
        name, off = _cstr(body, 0, codec)
        return {"name": name, "value": _cstr(body, off, codec)[0]}
    return {}


def replay_json(store: Store, session_id: str, out: TextIO,
                problems: list[str] | None = None) -> int:
    """One JSON object per line: each event, decision and wire frame, in recorded order.

    A decision that refers to a ``decision.shape`` is printed expanded (the shape's fields;
    its statement's text is the client frame before it). A Bind's values (``params``) and a
    DataRow's (``values``) appear as their decoded text, a NULL as null (never the text
    ``"NULL"``, a value of its own).
    A chunk that does not decode is a line ``{"kind": "problem", "object": name, "detail":
    why}`` (and in ``problems``); the other chunks are read."""
    pending = {Direction.C2S: bytearray(), Direction.S2C: bytearray()}
    count = 0
    cols: list[tuple[str, int, int]] = []
    shapes = DecisionShapes()
    codec = DEFAULT_CODEC  # the session's client encoding (``reported_codec``)

    def bad(name: str, why: str) -> None:
        out.write(json.dumps({"kind": "problem", "object": name, "intact": False,
                              "detail": why}, sort_keys=True) + "\n")
        if problems is not None:
            problems.append(f"{name}: not intact, not read: {why}")

    for r in iter_records(store, session_id, bad):
        base = {"seq": r.seq, "t_ns": r.t_ns}
        if r.kind != Kind.WIRE:
            try:
                p = r.json()
            except ValueError:  # damaged or forged: not a JSON object
                p = {"undecodable": r.payload.hex()}
            if r.kind == Kind.DECISION:
                p = shapes.expand(p)  # an allowed decision's whole payload, but its text
            elif r.kind == Kind.META and r.type == DECISION_SHAPE:
                shapes.define(p)
            line = {**base, "kind": r.kind.name.lower(), "type": r.type, "payload": p}
            out.write(json.dumps(line, sort_keys=True, default=str) + "\n")
            count += 1
            continue
        buf = pending[r.direction]
        buf += r.payload
        frames, rest = split_frames(bytes(buf))
        pending[r.direction] = bytearray(rest)
        for typ, body in frames:
            line = {**base, "kind": "wire", "direction": r.direction.name.lower(),
                    "frame": typ or "startup", "bytes": len(body)}
            try:
                if typ == "T" and r.direction == Direction.S2C:
                    cols = _row_description(body, codec)
                if typ == "D" and r.direction == Direction.S2C:
                    line["values"] = _data_row(body, cols, codec=codec)
                else:
                    line.update(_frame_fields(typ, body, codec))
            except (ValueError, struct.error, IndexError):
                line["undecodable"] = True
            if typ == "S" and r.direction == Direction.S2C:
                codec = reported_codec(body) or codec
            out.write(json.dumps(line, sort_keys=True, default=str) + "\n")
            count += 1
    return count  # absolute time of a line = session.start's wall_ns + t_ns
