"""Facts from one recording, sans-IO: the statements a client ran and what the server said.

``SessionFacts.feed(record, verified)`` takes a session's records in order and builds its
session row, one row per statement execution and its events. The outcome of a statement
is derived from the recorded s2c frames (what the client saw), matched to the client's
messages the way the server answers them: in order; an error in the extended protocol
makes it skip everything up to the next Sync (a Query or FunctionCall included); in
copy-in mode it ignores Sync and Flush; a message it cannot read (a Flush or Sync with
stray bytes, a field past the end) gets an ErrorResponse of its own, and an error answering
a Sync rolls back what its group ran. These are the rules ``common.wire.syncgroups`` applies
for the relay (the recorder may not import it: docs/decisions.md, round 20c);
tests/unit/test_audit_derive_pairing.py holds derive to them, frame by frame.

Rows per execution: a simple Query (its text, all of it); an extended-protocol Execute (the
text of the prepared statement it binds, its parameters, the decision made at Parse, or on
the Execute itself where the policy follows portals); a Parse or Bind the server (or the
policy) refused (a Bind's row with the values it bound, as an Execute's); a Describe the
policy refused; a FunctionCall. A Parse that succeeds is not a row by itself: its decision is
carried to the Executes that use it. Statement and portal names are read as the server reads
them when it answers: a Parse or Bind that failed, or that the policy refused, leaves the
name to what the server held before (a later Execute of it runs that).

Texts (statements, names, values, the server's messages) are decoded in the session's client
encoding as the server last reported it before the frame was recorded, as replay decodes
them (recorder/replay.py: a frame sent while a change is in flight reads as the proxy's
relay read it, in the encoding last reported).
"""

from __future__ import annotations

import json
import re
import struct
from collections import deque
from dataclasses import dataclass, field

from ..encodings import DEFAULT_CODEC
from ..literal import sql_ident, sql_literal
from ..pgbinary import binary_text
from ..records import DECISION_SHAPE, DecisionShapes, Direction, Kind, Record
from ..replay import _bind, _cstr, _fields, reported_codec, split_frames

_ROWS_RE = re.compile(
    r"(?:INSERT [0-9]+ |SELECT |UPDATE |DELETE |MERGE |COPY |FETCH |MOVE )([0-9]+)", re.ASCII)
_ASYNC = frozenset("NAS")  # notices, notifications, parameter status: any time
_READY = "ready"  # the name of a unit that stands for a ReadyForQuery still to come


def _oids(body: bytes, off: int) -> list[int]:
    """Parameter type OIDs: Parse's declared list or a ParameterDescription's."""
    (n,) = struct.unpack_from(">h", body, off)
    return list(struct.unpack_from(f">{n}I", body, off + 2)) if n > 0 else []


def malformed(typ: str, body: bytes) -> bool:
    """Whether the server rejects this client message as it reads it (08P01 "invalid message
    format" and the like: a field runs past the end, or bytes are left after the last one).
    Checked as PostgreSQL reads Sync, Flush, Query, Parse, Execute, Describe and Close;
    other messages are taken as well-formed (the proxy reads Bind and FunctionCall itself)."""
    try:
        if typ in ("S", "H"):
            return body != b""
        if typ == "Q":
            return body.index(b"\x00") != len(body) - 1
        if typ == "E":
            return body.index(b"\x00") + 5 != len(body)
        if typ in ("D", "C"):
            return body[:1] not in (b"S", b"P") or body.index(b"\x00", 1) != len(body) - 1
        if typ == "P":
            off = body.index(b"\x00", body.index(b"\x00") + 1) + 1
            (n,) = struct.unpack_from(">h", body, off)
            return off + 2 + 4 * max(n, 0) != len(body)
    except (ValueError, struct.error):
        return True
    return False


_INTS = {20: 8, 21: 2, 23: 4, 26: 4}  # int8, int2, int4, oid
_FLOATS = {700: ">f", 701: ">d"}


_DECISION_KEYS = ("decision", "rule", "reason", "classes", "relations")
# command tags of statements that make, close or end statements and portals the client may
# name (``SessionFacts._sql_named``)
_NAMING_TAGS = frozenset((
    "PREPARE", "DECLARE CURSOR", "CLOSE CURSOR", "CLOSE CURSOR ALL", "DEALLOCATE",
    "DEALLOCATE ALL", "DISCARD ALL", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
    "PREPARE TRANSACTION",
))  # fmt: skip
# a refcursor column's type OID in a RowDescription (1790), as it is on the wire
_REFCURSOR_OID = struct.pack("!I", 1790)


def _refcursor_columns(body: bytes) -> tuple[int, ...]:
    """The columns of a RowDescription ``body`` whose type is refcursor."""
    found = []
    try:
        (n,) = struct.unpack_from("!h", body, 0)
        off = 2
        for k in range(n):
            off = body.index(b"\x00", off) + 1 + 6  # name, table OID, column number
            if body[off : off + 4] == _REFCURSOR_OID:
                found.append(k)
            off += 12  # type OID, size, modifier, format
    except (ValueError, struct.error):
        return ()  # (malformed: what the server sent is recorded as is)
    return tuple(found) if off == len(body) else ()


def _column_values(body: bytes, columns: tuple[int, ...], codec: str) -> list[str]:
    """The values of a DataRow ``body``'s ``columns`` that are not NULL, as text."""
    values = []
    try:
        (n,) = struct.unpack_from("!h", body, 0)
        off = 2
        for k in range(n):
            (size,) = struct.unpack_from("!i", body, off)
            off += 4
            if size < 0:
                continue
            if k in columns:
                values.append(body[off : off + size].decode(codec, "replace"))
            off += size
    except struct.error:
        pass
    return values


def _held(sql: str) -> bool:
    """Is ``sql`` a ``DECLARE name ... CURSOR WITH HOLD FOR ...`` (a portal that outlives
    its transaction)?"""
    # the words before the first token that is not one (the options before CURSOR may
    # repeat, as many times as the client likes: ``BINARY BINARY ... CURSOR WITH HOLD``)
    words = _words(sql, len(sql), partial=True)
    if not words or words[0] != ("declare", False):
        return False
    plain = [w for w, quoted in words[2:] if not quoted]
    at = plain.index("cursor") if "cursor" in plain else -1
    return at >= 0 and plain[at + 1 : at + 3] == ["with", "hold"]


def _typed(params: list, oids: list[int], binary: tuple[bool, ...] | None = None,
           codec: str = DEFAULT_CODEC) -> list:
    """Binary parameters (shown as \\x... by replay) decoded: the common scalar types as
    numbers and booleans, the others ``pgbinary`` reads (text types, jsonb, numeric, date,
    timestamp, uuid) as the text the server's log shows. ``binary``: which the Bind sent in
    binary format (None: not known, so only the scalar types are read); a value sent as text
    is left as it is, whatever it looks like (the text ``\\x61`` is not the binary ``a``)."""
    out = []
    for i, v in enumerate(params):
        oid = oids[i] if i < len(oids) else 0
        sent = None if binary is None else (binary[i] if i < len(binary) else False)
        if isinstance(v, str) and v.startswith("\\x") and oid and sent is not False:
            try:
                raw = bytes.fromhex(v[2:])
                if _INTS.get(oid) == len(raw):
                    v = int.from_bytes(raw, "big", signed=oid != 26)
                elif oid in _FLOATS and len(raw) == struct.calcsize(_FLOATS[oid]):
                    v = struct.unpack(_FLOATS[oid], raw)[0]
                elif oid == 16 and len(raw) == 1:
                    v = raw != b"\x00"
                elif sent and (text := binary_text(raw, oid, codec)) is not None:
                    v = text  # (asyncpg sends text in binary: 'a' was shown as \\x61)
            except ValueError:
                pass
        out.append(v)
    return out


def _param_formats(body: bytes) -> tuple[bool, ...]:
    """Which of a Bind's parameters are in binary format (its format codes)."""
    off = body.index(b"\x00", body.index(b"\x00") + 1) + 1
    (nfmt,) = struct.unpack_from(">h", body, off)
    fmts = struct.unpack_from(f">{nfmt}h", body, off + 2) if nfmt > 0 else ()
    off += 2 + 2 * max(nfmt, 0)
    (nparams,) = struct.unpack_from(">h", body, off)
    return tuple((fmts[0] if nfmt == 1 else fmts[i] if i < nfmt else 0) == 1
                 for i in range(max(nparams, 0)))


# Rows that change nothing a rollback undoes: by the policy's classes where it decided
# (a pass-through session has none), else by the command tag
_UNCHANGING_CLASSES = frozenset(("READ", "TRANSACTION", "SESSION_SET"))
_UNCHANGING_TAGS = frozenset((
    "BEGIN", "START", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT", "SELECT", "SHOW", "SET",
    "RESET", "FETCH", "MOVE", "DECLARE", "CLOSE", "LISTEN", "UNLISTEN", "DISCARD",
    "DEALLOCATE", "PREPARE", "EXPLAIN",
))  # fmt: skip


def _changes(row: dict) -> bool:
    """Whether a row's statement may have changed what a rollback undoes."""
    classes = row.get("classes")
    if classes:
        return not set(classes.split(",")) <= _UNCHANGING_CLASSES
    tag = (row.get("command_tag") or "").rsplit("; ", 1)[-1]
    return tag.split(" ", 1)[0] not in _UNCHANGING_TAGS


def _changing(row: dict, tags: list[str]) -> list[bool]:
    """Which of the statements a row ran (``tags``: their tags) may have changed something."""
    if len(tags) == 1:
        return [_changes(row)]
    # each statement by its tag; none if the policy's classes say the row changes nothing
    may = _changes({"classes": row.get("classes")}) if row.get("classes") else True
    return [may and _changes({"command_tag": t}) for t in tags]


def _writes(u) -> bool:
    """Whether the Execute ``u`` runs a statement the policy classed as a write."""
    for unit in (u.bind, u.src):
        decision = getattr(unit, "decision", None) if unit is not None else None
        if decision:
            return "WRITE" in (decision.get("classes") or "").split(",")
    return False


# --- statements' text: enough of PostgreSQL's lexer to split a Query and read savepoints ---

_IDENT_START = re.compile(r"[A-Za-z_\x80-\U0010ffff]")
_IDENT = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
_DOLLAR = re.compile(r"\$([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_NAMEDATALEN = 64  # identifiers are cut to 63 bytes, as the server cuts them


def _skip(sql: str, i: int) -> int:
    """The end of the quoted string, quoted identifier, dollar-quoted string or comment that
    starts at ``sql[i]`` (``i`` itself if none does). standard_conforming_strings is on
    (the proxy refuses a session where it is not)."""
    c, n = sql[i], len(sql)
    if c in "'\"":
        backslash = c == "'" and i > 0 and sql[i - 1] in "eE" and (
            i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] in "_$"))
        j = i + 1
        while j < n:
            if backslash and sql[j] == "\\":
                j += 2
                continue
            if sql[j] == c:
                if j + 1 < n and sql[j + 1] == c:
                    j += 2
                    continue
                return j + 1
            j += 1
        return n
    if c == "-" and sql.startswith("--", i):
        j = sql.find("\n", i)
        return n if j < 0 else j + 1
    if c == "/" and sql.startswith("/*", i):
        depth, j = 0, i
        while j < n:
            if sql.startswith("/*", j):
                depth, j = depth + 1, j + 2
            elif sql.startswith("*/", j):
                depth, j = depth - 1, j + 2
                if depth == 0:
                    return j
            else:
                j += 1
        return n
    if c == "$" and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] in "_$")):
        m = _DOLLAR.match(sql, i)
        if m:
            j = sql.find(m.group(0), m.end())
            return n if j < 0 else j + len(m.group(0))
    return i


def statements_of(sql: str) -> list[str]:
    """A Query's statements as the server splits it (on semicolons outside quotes, dollar
    quotes and comments), the empty ones (only blanks and comments: no CommandComplete) left
    out, each stripped."""
    out: list[str] = []
    start = i = 0
    blank = True
    n = len(sql)
    while i < n:
        j = _skip(sql, i)
        if j != i:
            if sql[i] not in "-/":
                blank = False
            i = j
            continue
        if sql[i] == ";":
            if not blank:
                out.append(sql[start:i].strip())
            start, blank = i + 1, True
        elif not sql[i].isspace():
            blank = False
        i += 1
    if not blank:
        out.append(sql[start:].strip())
    return out


def _words(sql: str, limit: int = 6, partial: bool = False) -> list[tuple[str, bool]] | None:
    """The first tokens of a statement: (word, quoted), an unquoted word lower-cased, every
    name cut to 63 bytes; None if anything else (an operator, a string) comes first
    (``partial``: the words before it)."""
    out: list[tuple[str, bool]] = []
    i, n = 0, len(sql)
    while i < n and len(out) <= limit:
        c = sql[i]
        if c.isspace():
            i += 1
            continue
        if c in "-/" and (j := _skip(sql, i)) != i:
            i = j
            continue
        if c == '"':
            j = _skip(sql, i)
            if sql[j - 1 : j] != '"' or j - i < 3:
                return out if partial else None
            word, quoted = sql[i + 1 : j - 1].replace('""', '"'), True
        elif _IDENT_START.match(c):
            m = _IDENT.match(sql, i)
            assert m is not None
            j = m.end()
            # the server folds unquoted names to lower case (ASCII letters only, in UTF-8)
            word, quoted = m.group(0).translate(_ASCII_LOWER), False
        else:
            return out if partial else None
        out.append((word.encode()[: _NAMEDATALEN - 1].decode("utf-8", "ignore"), quoted))
        i = j
    return out


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def savepoint_op(sql: str) -> tuple[str, str] | None:
    """What a statement does to the savepoints: ("set", name) for ``SAVEPOINT name``,
    ("release", name) for ``RELEASE [SAVEPOINT] name``, ("rollback", name) for ``ROLLBACK
    [WORK | TRANSACTION] TO [SAVEPOINT] name``, None for any other statement."""
    stmts = statements_of(sql)
    words = _words(stmts[0]) if len(stmts) == 1 else None
    if not words or words[0][1]:
        return None
    kw = [w if not q else None for w, q in words]  # keywords are never quoted
    first = kw[0]
    if first == "savepoint" and len(words) == 2:
        return ("set", words[1][0])
    if first == "release":
        rest = words[2:] if len(words) == 3 and kw[1] == "savepoint" else words[1:]
        return ("release", rest[0][0]) if len(rest) == 1 else None
    if first == "rollback":
        k = 2 if len(kw) > 1 and kw[1] in ("work", "transaction") else 1
        if k < len(kw) and kw[k] == "to":
            rest = words[k + 1 :]
            if len(rest) == 2 and kw[k + 1] == "savepoint":
                rest = rest[1:]
            return ("rollback", rest[0][0]) if len(rest) == 1 else None
    return None


_TWO_PHASE = re.compile(
    r"\s*(prepare\s+transaction|commit\s+prepared|rollback\s+prepared)\s+", re.ASCII | re.I)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def two_phase_op(sql: str) -> tuple[str, str | None] | None:
    """What a statement does in two-phase commit: ("prepare", gid) for ``PREPARE TRANSACTION
    'gid'``, ("commit", gid) for ``COMMIT PREPARED 'gid'``, ("rollback", gid) for ``ROLLBACK
    PREPARED 'gid'`` (gid None where its literal is not read: a form this reader does not
    decode); None for any other statement. The gid is a string constant: '...', E'...' or
    $$...$$ (each checked on the server)."""
    stmts = statements_of(sql)
    m = _TWO_PHASE.match(stmts[0]) if len(stmts) == 1 else None
    if m is None:
        return None
    op = m.group(1).split(None, 1)[0].lower()
    text, i = stmts[0], m.end()
    escapes = text[i : i + 2].lower() == "e'"
    i += escapes
    j = _skip(text, i) if i < len(text) else i
    rest = text[j:].lstrip()
    while rest.startswith(("--", "/*")):  # comments may follow it
        rest = rest[_skip(rest, 0) :].lstrip()
    if j - i < 2 or rest or text[i] not in "'$" or text[j - 1] != text[i]:
        return (op, None)
    if text[i] == "$":
        inner = text[text.index("$", i + 1) + 1 : text.rindex("$", 0, j - 1)]
    else:
        inner = text[i + 1 : j - 1]
        if escapes:
            if re.search(r"\\[0-7xuU]", inner):
                return (op, None)
            inner = re.sub(r"''|\\(.)", lambda e: _ESCAPES.get(e[1], e[1]) if e[1] else "'", inner,
                           flags=re.S)
        else:
            inner = inner.replace("''", "'")
    return (op, inner)


# --- a value an agent chose, in the answer's words: as PostgreSQL reads it -----------------
# (recorder.literal, shared with the replay's transcript; re-exported for the answer. It
# lived here until session 37's second round, and its map of escapes replaced the one
# ``two_phase_op`` decodes E'' gids with: ``E'a\\nb'`` read as ``anb``.)

_ident = sql_ident


def _gid_literal(gid: str) -> str:
    """A gid, a cursor's name, in a sentence of ours: a literal (``sql_literal``)."""
    return sql_literal(gid)


def rows_of(tag: str) -> int | None:
    m = _ROWS_RE.fullmatch(tag)
    return int(m.group(1)) if m else None


# A refusal that names no statement (a FunctionCall) carries its rule in its message only:
# the policy's messages end "(rule <name>)".
_RULE_IN_MESSAGE = re.compile(r"\(rule ([A-Za-z0-9_.:-]+)\)\Z", re.ASCII)


def _text(v) -> str:
    """A JSON field that should be text ('' if it is not: a damaged or forged record)."""
    return v if isinstance(v, str) else ""


def _texts(v) -> list[str]:
    return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []


# the reason of a statement whose text the proxy replaced (``_decision_fields``)
_SENT_AS = "sent as (CASCADE run as RESTRICT): "


def _decision_fields(p: dict) -> dict:
    raw = p.get("statements")
    stmts = [x for x in raw if isinstance(x, dict)] if isinstance(raw, list) else []
    outcome = _text(p.get("outcome")) or ("denied" if p.get("denied") else "allowed")
    error = _text(p.get("error"))
    culprit = next((x for x in stmts if not x.get("allowed", True)), None)
    if culprit is not None:
        rule, reason = _text(culprit.get("rule")), _text(culprit.get("reason"))
    else:
        rule = ",".join(dict.fromkeys(r for x in stmts if (r := _text(x.get("rule")))))
        reason = ""
    if not stmts and outcome == "denied":
        # no statement judged: a FunctionCall refused by the policy (its rule is in its
        # message), or a message refused while the recorder could not record
        m = _RULE_IN_MESSAGE.search(error)
        rule, reason = (m.group(1) if m else "refused.unrecorded"), error
    if p.get("shape_missing"):  # damaged or forged: a verified recording defines it first
        rule, reason = "shape.missing", f"decision shape {p.get('shape')} is not in the recording"
    classes = dict.fromkeys(c for x in stmts if (c := _text(x.get("class"))))
    relations = {r for x in stmts for r in _texts(x.get("reads")) + _texts(x.get("writes"))}
    run_as = _text(p.get("run_as"))
    if run_as and not reason and not error:
        # the text the proxy sent in place of the client's (a CASCADE run as RESTRICT:
        # policy.engine.StatementPolicy.check_query): what the server ran
        reason = _SENT_AS + run_as
    return {
        "decision": outcome,
        "rule": rule or None,
        "reason": reason or error or None,
        "classes": ",".join(classes) or None,
        "relations": ",".join(sorted(relations)) or None,
    }


# What became of a transaction's statements: (the outcome of a row all of whose changing
# statements it was, that row's message, the words after those statements in a row of
# which only some were)
_ENDED_BY_ROLLBACK = (
    "rolled back",
    "its transaction block ended without COMMIT (ROLLBACK)",
    "undone by the transaction's ROLLBACK",
)
_ENDED_BY_ERROR = (
    "rolled back",
    "its transaction block ended without COMMIT (an error)",
    "undone by the error that ended the transaction",
)


# a COPY FROM STDIN whose data the client had not finished sending when the session ended
_COPY_CUT = ("the session ended ({}) while the client was still sending the COPY's data (no "
             "CopyDone): the server could not complete it, and what it did was rolled back")


def _ended_with_session(cause: str, owed: int = 0) -> tuple[str, str, str]:
    """The session ended inside the transaction: the server rolled it back (``owed``: the
    client messages it had not answered, none of which could have committed it)."""
    none = (f" with {owed} client message{'s' if owed != 1 else ''} the server had not answered,"
            f" {'none of which could' if owed != 1 else 'which could not'} commit it") if owed else ""
    return (
        "rolled back",
        f"its transaction was still open when the session ended ({cause or 'no cause given'})"
        f"{none}: the server rolled it back",
        "undone when the session ended inside its transaction",
    )


def _prepared(gid: str | None) -> tuple[str, str, str]:
    """PREPARE TRANSACTION: its statements wait for COMMIT PREPARED or ROLLBACK PREPARED."""
    if gid is None:
        return ("prepared", "prepared for two-phase commit (its identifier not read): neither "
                "committed nor rolled back until COMMIT PREPARED or ROLLBACK PREPARED, not "
                "followed", "prepared for two-phase commit (pending)")
    lit = _gid_literal(gid)
    return (
        "prepared",
        f"prepared for two-phase commit as {lit}: neither committed nor rolled back until "
        f"COMMIT PREPARED or ROLLBACK PREPARED {lit}, which this session's recording does not "
        "hold after it (another session's is not followed)",
        f"prepared for two-phase commit as {lit} (pending)",
    )


def _resolved(op: str, gid: str) -> tuple[str, str, str]:
    """COMMIT PREPARED or ROLLBACK PREPARED, later in the session, of its prepared statements."""
    lit, word = _gid_literal(gid), op.upper()
    return (
        "ok" if op == "commit" else "rolled back",
        f"prepared for two-phase commit as {lit}, then {'committed' if op == 'commit' else 'undone'}"
        f" by {word} PREPARED later in this session",
        f"prepared as {lit}, then {'committed' if op == 'commit' else 'undone'} by {word} PREPARED",
    )


def _open_at_end(ended: str | None, owed: int) -> tuple[str, str, str]:
    """The recording ends inside the transaction and cannot say how it ended."""
    if ended is None:
        why = "its transaction was still open where the recording ends (no session end is recorded)"
    else:
        why = (f"its transaction was still open when the session ended ({ended or 'no cause given'})"
               f" with {owed} client message{'s' if owed != 1 else ''} the server had not "
               "answered (a COMMIT among them may have committed it)")
    return ("unknown", f"{why}: whether it committed is not known",
            "of unknown outcome (the recording ends inside its transaction)")


# an ok row only some of whose changing statements were undone (prepared, of unknown fate):
# "partly <these>: statement 1 (INSERT 0 1) undone by ..."
_PARTLY = {"rolled back": "rolled back", "prepared": "prepared", "unknown": "of unknown outcome"}


def mark_fates(row: dict, outcome: str | None, message: str | None,
               undone: dict[int, tuple[str, str, str]]
               ) -> tuple[str | None, str | None, str | None]:
    """A row's outcome, message and note once some of its statements' fates are known:
    ``outcome`` and ``message`` as the server answered it, ``undone`` its statements' fates
    (statement index -> (fate, the message of a row that is all that statement, the words
    after it in a row only partly so)). Used by derive, and by the index when a two-phase
    resolution in another session decides prepared statements again
    (recorder/audit/twophase.py).

    The note is the answer's own words, never the server's: an error row keeps the server's
    message as it was, and what its transaction undid is its note alone (session 37, second
    round: the note was appended to the message, ``division by zero (statement 1 (INSERT 0 1)
    undone by ...)``, the one field a ``RAISE`` writes, so a RAISE wrote the note itself). A
    row the server said nothing of has the note for its message too, as before."""
    idx = sorted(undone)
    if not idx:
        return outcome, message, None
    tags = (row.get("command_tag") or "").split("; ") if row.get("command_tag") else [""]
    still = sum(_changing(row, tags)) - len(idx)  # changing statements that committed
    fates = {undone[i][0] for i in idx}
    if outcome == "ok" and not still and len({undone[i][:2] for i in idx}) == 1:
        return undone[idx[0]][0], undone[idx[0]][1], undone[idx[0]][1]
    by_why: dict[str, list[str]] = {}
    for i in idx:
        which = f"statement {i + 1} ({tags[i] if i < len(tags) else '?'})"
        by_why.setdefault(undone[i][2], []).append(which)
    said = "; ".join(f"{', '.join(which)} {why}" for why, which in by_why.items())
    if outcome != "ok":  # an error row: the statements it ran before its error
        return outcome, message, said
    if still or "ok" in fates:  # some of it committed
        partly = [w for f, w in _PARTLY.items() if f in fates]
        note = f"partly {' and '.join(partly)}: {said}" if partly else said
        return "ok", note, note
    # none of it committed: unknown, else pending, else undone
    return next(f for f in ("unknown", "prepared", "rolled back") if f in fates), said, said


@dataclass
class _Fate:
    """A statement row some of whose statements an end of their transaction decided (undone,
    or prepared for two-phase commit and maybe resolved since, or unknown): what it said
    before."""

    row: dict
    outcome: str | None  # as the server answered it: ok, or error
    message: str | None
    undone: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # statement -> fate
    # statement -> the PREPARE TRANSACTION event (SessionFacts.two_phase) that prepared it
    prepared_by: dict[int, dict] = field(default_factory=dict)

    def mark(self) -> None:
        """Say so in the row (its statements' fates are known: it was answered whole)."""
        outcome, message, note = mark_fates(self.row, self.outcome, self.message, self.undone)
        self.row.update(outcome=outcome, message=message, note=note)


@dataclass
class Unit:
    """One client message the server owes an answer to."""

    kind: str  # Q P B D E C S F
    row: dict | None = None
    name: str = ""
    sql: str = ""
    decision: dict | None = None
    start: int = 0
    order: int = 0  # the client message's position in the session
    oids: list[int] | None = None  # Parse: parameter types (declared or described)
    params: list[str | None] | None = None  # Bind: the values it bound (replay's: None a NULL)
    src: Unit | None = None  # Bind/Execute: the Parse of their statement
    bind: Unit | None = None  # Execute: the Bind of its portal (its decision, if checked)
    stmt: str = ""  # Bind: the statement name it binds; Describe/Close: the name, after S or P
    answered: bool = False  # Execute: the server's answer to it has begun
    cursors: tuple[int, ...] = ()  # Query: the refcursor columns of the rows being returned
    hold: bool = False  # a portal: a cursor DECLAREd WITH HOLD (outlives a commit)
    binary: tuple[bool, ...] | None = None  # Bind: which values it sent in binary format
    codec: str = DEFAULT_CODEC  # Bind: the client encoding its frame was read in


@dataclass
class SessionFacts:
    session_id: str
    session: dict = field(default_factory=dict)
    statements: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # meta events other than start/end
    control: list[dict] = field(default_factory=list)  # control records (control streams)
    # two-phase commit's statements that succeeded, in order: {"n", "k" (the statement's
    # index in its row), "at_ns" (when the server's answer to it was recorded), "op"
    # (prepare|commit|rollback), "gid" (None: not read), "prepared" (a PREPARE's: [n, i] of
    # the statements it prepared)}; set by finish(). The index pairs them across sessions
    # (recorder/audit/twophase.py).
    two_phase: list[dict] = field(default_factory=list)
    is_control: bool = False
    records: int = 0
    wire_bytes: int = 0

    def __post_init__(self) -> None:
        self._wall0 = 0
        self._buf = {Direction.C2S: bytearray(), Direction.S2C: bytearray()}
        self._pending: deque[Unit] = deque()
        self._awaiting: deque[Unit] = deque()  # statement messages waiting for their decision
        # Binds of the frames being read: the proxy checks (and records a "Bind" decision
        # for) those whose statement's object text a parameter pins
        self._binds: deque[Unit] = deque()
        # Executes and Describes of those frames: the policy decides some (portals_watched)
        self._portal_units: deque[Unit] = deque()
        # statement name -> its Parse; portal -> (that Parse, parameters). Set when the client
        # sends them (a pipeline binds before the server answers); the Parse's decision is
        # read when the Execute's row is emitted (decisions follow the client's frames).
        self._prepared: dict[str, Unit] = {}
        self._portals: dict[str, tuple[Unit | None, list[str | None], Unit | None]] = {}
        # What the server holds under each name as it answers, in its order: the Parse
        # whose ParseComplete came (or a SQL PREPARE that completed), the Bind whose
        # BindComplete came. A Parse or Bind that failed (or that the policy refused: the
        # server never saw it under the client's name) leaves the earlier one, which a
        # later Bind or Execute of the name runs: those are read here when the server
        # answers them, not from what the client last sent under the name.
        self._server_stmts: dict[str, Unit] = {}
        self._server_portals: dict[str, Unit] = {}
        # the unnamed portal held when a single-statement Query failed with nothing to say
        # whether it had made its own (no RowDescription, no row, no tag: an UPDATE failing
        # at run time replaced it, a syntax error did not), and that Query's SQLSTATE
        self._unnamed_unsure: tuple[Unit, str | None] | None = None
        # the open transaction's short result values (a name a portal may be opened under)
        # -> the statement whose row returned it, and the decision on it: a cursor code
        # opened and named in a value of another type than refcursor (session 34's gap (b))
        self._named_in_rows: dict[str, tuple[str, dict | None]] = {}
        self._rows_read = 0  # DataRows read for them in the open transaction (_NAMES_READ)
        # The portals made in the open transaction, in the order the server made them, and
        # its savepoints: (name, how many of those were made before it). A ROLLBACK TO
        # closes those made after its savepoint, a transaction that does not commit all of
        # them (WITH HOLD too), one that commits all but the held (session 34's red-team
        # round: a portal the server had closed, kept here, took the name of the next one).
        self._young: list[str] = []
        self._portal_savepoints: list[tuple[str, int]] = []
        self._skipping = False  # the server skips the client's messages up to Sync
        self._copy_in = False  # copy-in mode whose CopyDone/CopyFail the client has not sent
        # rows answered ok since the last ReadyForQuery (the group being answered: an error
        # answering its Sync undid them)
        self._since_ready: list[dict] = []
        # The open transaction's statements that may have changed something, in the order
        # the server ran them: (row, its statement's index in the row's tags), and the
        # savepoints set in it: (name, how many of those ran before it). A ROLLBACK TO
        # undoes those after its savepoint; a RELEASE forgets savepoints, undoing nothing;
        # the transaction's end undoes them all unless it committed. The transaction is an
        # explicit block or an implicit one (a Query's statements, a Sync group's).
        self._changed: list[tuple[dict, int]] = []
        self._savepoints: list[tuple[str, int]] = []
        # id(row) -> its statements undone so far (kept while its transaction may undo more:
        # a Query may run statements on both sides of a transaction's end)
        self._fates: dict[int, _Fate] = {}
        # gid -> the statements its PREPARE TRANSACTION prepared (their rows' fates), until a
        # COMMIT PREPARED or ROLLBACK PREPARED of it in this session decides them
        self._prepared_tx: dict[str, list[tuple[_Fate, int]]] = {}
        self._events: list[dict] = []  # two-phase events, rows not numbered yet
        self._prepared_fates: dict[int, _Fate] = {}  # id -> a fate of prepared statements
        self._tag_ns: dict[int, list[int]] = {}  # id(Query row) -> when each tag came
        self._failed = False  # an error answered a statement since the last ReadyForQuery
        self._unread_rollback = False  # a ROLLBACK tag whose statement was not read
        self._status = b"I"
        self._terminated = False  # the client sent Terminate
        self._fatal = False  # a FATAL error came: the server ended the session there
        self._server_fatal: str | None = None  # its SQLSTATE and message (a verified frame's)
        self._t = 0
        self._seq = 0  # the record being read
        # when the last ReadyForQuery came: the server had finished what was sent before it
        # (it flushes its answers there), and began the next message no earlier (``_emit``)
        self._free_ns = 0
        self._verified = True
        self._meta: dict = {}
        self._started = False  # the first signed session.start was read: attribution set
        self._n = 0
        self._shapes = DecisionShapes()
        # the session's client encoding: the codec its texts are read in, as the server
        # last reported it (ParameterStatus client_encoding: recorder/replay.py)
        self._codec = DEFAULT_CODEC

    # --- input ------------------------------------------------------------------

    def feed(self, r: Record, verified: bool = True) -> None:
        self.records += 1
        self._t, self._verified, self._seq = r.t_ns, verified, r.seq
        if r.kind == Kind.WIRE:
            self.wire_bytes += len(r.payload)
            buf = self._buf[r.direction]
            buf += r.payload
            frames, rest = split_frames(bytes(buf))
            self._buf[r.direction] = bytearray(rest)
            if r.direction == Direction.C2S:
                self._awaiting.clear()  # decisions follow the client frames they judge
                self._binds.clear()
                self._portal_units.clear()
                for typ, body in frames:
                    self._client(typ, body)
            else:
                for typ, body in frames:
                    self._server(typ, body)
                    if typ == "Z":
                        self._ready(body[:1])
                        self._free_ns = self._t
            return
        try:
            p = r.json()
        except ValueError:
            p = {"undecodable": r.payload.hex()}
        if r.kind == Kind.DECISION:
            full = self._shapes.expand(p)
            if full.get("message") == "Bind":  # a checked Bind's: not a statement message's
                statement = full.get("statement")
                for u in self._binds:
                    if (u.src.name if u.src is not None else None) == statement:
                        self._binds.remove(u)
                        u.decision = _decision_fields(full)
                        break
                return
            message = full.get("message")
            if message in ("Execute", "Describe"):
                # a portal's Execute or Describe the policy refused (deny.cursor) or would
                # have: that message's, never the next Query's or Parse's
                self._portal_decision(message, full)
                return
            if message not in (None, "Query", "Parse", "FunctionCall"):
                return  # CopyData, CopyDone refused while the recorder could not record
            if self._awaiting:
                u = self._awaiting.popleft()
                u.decision = _decision_fields(self._shapes.expand(p))
                if u.row is not None:
                    u.row.update(u.decision)
            return
        if r.kind == Kind.CONTROL:
            self.control.append({"seq": r.seq, "t_ns": r.t_ns, "at_ns": self._wall0 + r.t_ns,
                                 "kind": r.type, "payload": p, "verified": verified})
            return
        if r.type == DECISION_SHAPE:
            self._shapes.define(p)  # what the allowed decisions after it refer to
            return
        if r.type == "session.start" and verified and not self._started:
            self._start(p)
        elif r.type == "session.end" and verified and self._started:
            self.session.update(ended_ns=self._wall0 + r.t_ns, end_cause=_text(p.get("cause")),
                                end_detail=_text(p.get("detail")) or None)
        else:
            # an unverified (possibly forged) or a second start or end is evidence to show,
            # never attribution: who, which grant and task, and when come from the first
            # signed session.start only (red-team round 20c)
            self.events.append({"seq": r.seq, "at_ns": self._wall0 + r.t_ns, "kind": r.type,
                                "payload": p, "verified": verified})
            if r.type == "authenticated" and verified:
                self.session.setdefault("authenticated", True)

    def _portal_decision(self, message: str, full: dict) -> None:
        """The decision on an Execute or a Describe of the frames being read: on its unit
        (by its portal, or the statement a Describe names); an Execute's row carries it, a
        Describe the policy refused gets a row of its own when its error comes."""
        kind = "E" if message == "Execute" else "D"
        name = full.get("portal", full.get("statement"))
        for u in self._portal_units:
            if u.kind == kind and (name is None or name == (u.name if kind == "E" else u.stmt)):
                self._portal_units.remove(u)
                u.decision = _decision_fields(full)
                if u.row is not None:
                    u.row.update(u.decision)
                return

    def _start(self, p: dict) -> None:
        self._started = True
        wall = p.get("wall_ns")
        self._wall0 = wall if isinstance(wall, int) and wall > 0 else 0
        meta = p.get("meta")
        self._meta = meta if isinstance(meta, dict) else {}
        self.is_control = self._meta.get("stream") == "control"
        self.session.update(_session_row(self.session_id, p, self._meta))

    def finish(self) -> None:
        """End of the records: whatever is still owed an answer gets none; a transaction
        still open is decided by the session's end, if the recording has it."""
        unanswered = [u for u in self._pending if not (u.kind == "S" and u.name == _READY)]
        owed = len(unanswered)
        if (self._server_fatal and self.session.get("ended_ns") and self._started
                and self.session.get("end_cause") == "upstream"):  # (the proxy's own: its words)
            # the session's end says the database ended it; the server's FATAL says why (was:
            # "the upstream database ended the session (FATAL)" alone, the same for an
            # administrator's pg_terminate_backend as for an idle transaction's timeout:
            # s35 round 4)
            said = self.session.get("end_detail")
            self.session["end_detail"] = (f"{said}: {self._server_fatal}" if said
                                          else self._server_fatal)
        # the session ended (recorded) while the client was still sending a COPY's data:
        # without its CopyDone the server cannot finish the COPY, and ended it undone
        copying = self._copy_in and bool(self.session.get("ended_ns"))
        while self._pending:
            u = self._pending.popleft()
            if u.row is not None:
                u.row["outcome"] = "no answer"
                if copying and u.row.get("copy"):
                    cut = _COPY_CUT.format(self.session.get("end_cause") or "no cause given")
                    u.row.update(outcome="rolled back", message=cut, note=cut)
                copying = False
                self._emit(u.row, u)
        if self._changed:
            # The server rolls back the transaction a session leaves open (the proxy ends
            # the upstream session then: it keeps one for reuse only idle, outside any
            # transaction, owing nothing, proxy/upstream_pool.py). Unless the recording has
            # the session's end and no message the server had not answered may have
            # committed it (a COMMIT in flight), it cannot say. After a FATAL the server
            # ran nothing more: the transaction it was in was rolled back.
            ended = self.session.get("end_cause") if self.session.get("ended_ns") else None
            if ended is not None and (
                    self._fatal or not (owed and self._may_commit(unanswered))):
                self._undo(0, _ended_with_session(ended, owed))
            else:
                self._undo(0, _open_at_end(ended, owed))
        self._annotate_db_denials()
        self.statements.sort(key=lambda s: s["order"])  # the order the client sent them
        for i, s in enumerate(self.statements, 1):
            s["n"] = i
        self._two_phase_facts()

    def _may_commit(self, unanswered: list[Unit]) -> bool:
        """Whether one of the client's messages the server had not answered when the
        recording ends may have committed the open transaction. A failed block ('E') only
        rolls back, its COMMIT too. An explicit block ('T') commits (or prepares) only at a
        COMMIT, END or PREPARE TRANSACTION: none among the unanswered Queries' statements or
        Executes' texts (an Execute of a text not known: maybe). The implicit block of a
        Sync group ('I') ends committing at a Sync, a Query's or a FunctionCall's end, or a
        procedure's or DO block's COMMIT."""
        if self._status == b"E":
            return False
        implicit = self._status == b"I"
        for u in unanswered:
            if implicit and u.kind in ("S", "Q", "F"):
                return True
            if u.kind == "Q" and u.row is not None:
                texts = statements_of(u.row.get("text") or "")
            elif u.kind == "E" and u.row is not None:
                bound = self._server_portals.get(u.name)
                texts = [u.row.get("text") or "", *([bound.sql] if bound is not None else [])]
            else:
                continue  # Parse, Bind, Describe, Close, CopyDone, a Sync in a block: none
            for text in texts:
                if not text.strip():
                    return True  # an Execute of a statement not known
                words = _words(text, 0)
                first = words[0][0] if words and not words[0][1] else ""
                if first in ("commit", "end", "prepare") or (implicit and first in ("call", "do")):
                    return True
        return False

    def _two_phase_facts(self) -> None:
        """Number the two-phase events (``two_phase``); each row with prepared statements
        keeps, in ``fates``, what its outcome and message were made of, with each prepared
        statement pending and its PREPARE named, so a resolution the index finds in another
        session can decide them again (recorder/audit/twophase.py). ``gid`` names the gid a
        row was prepared as, or the one its two-phase statement names."""
        self.two_phase = []
        for e in self._events:
            out = {"n": e["row"]["n"], "k": e["k"], "at_ns": e["at_ns"], "op": e["op"],
                   "gid": e["gid"]}
            if e["op"] == "prepare":
                out["prepared"] = [[r["n"], k] for r, k in e.get("prepared", [])]
            self.two_phase.append(out)
            if e["gid"] is not None:
                e["row"]["gid"] = e["gid"]
        for fate in self._prepared_fates.values():
            undone: list[list] = []
            for i, why in sorted(fate.undone.items()):
                prep = fate.prepared_by.get(i)
                if prep is None:
                    undone.append([i, *why, None])
                else:  # pending, whatever this session made of it: the index decides
                    undone.append([i, *_prepared(prep["gid"]), [prep["row"]["n"], prep["k"]]])
                    if prep["gid"] is not None:
                        fate.row["gid"] = prep["gid"]
            fate.row["fates"] = json.dumps(
                {"outcome": fate.outcome, "message": fate.message, "undone": undone})

    # --- client messages --------------------------------------------------------

    def _row(self, protocol: str, text: str, decision: dict | None, params=None) -> dict:
        row = {"n": 0, "order": self._n + 1, "start_ns": self._t, "protocol": protocol, "text": text,
               "params": json.dumps(params) if params is not None else None,
               "decision": None, "rule": None, "reason": None, "classes": None, "relations": None,
               "outcome": None, "command_tag": None, "rows": None, "sqlstate": None,
               "message": None, "note": None, "end_ns": None, "verified": self._verified,
               "copy": False}
        if decision:
            row.update(decision)
        return row

    def _client(self, typ: str, body: bytes) -> None:
        if self._terminated:
            return  # the proxy acts on nothing after Terminate: never checked nor sent
        if typ == "X":
            self._terminated = True
            return
        if self._copy_in:
            if typ in ("S", "H"):
                return  # the server ignores Sync and Flush in copy-in mode
            if typ in ("c", "f"):
                self._copy_in = False
        if typ == "S":
            self._pending.append(Unit("S"))  # a malformed one too: the server fails it there
            self._skipping = False
            return
        if self._skipping:
            if typ in ("Q", "P", "F"):
                # The server discards it (an error earlier in this Sync group), but the
                # proxy checked it and recorded a decision, the next in order: it is
                # this message's, no row's (red-team, session 12)
                self._awaiting.append(Unit(typ))
            return
        if malformed(typ, body):
            # the server answers it with an ErrorResponse of its own (08P01) and, for an
            # extended-protocol message, skips to Sync: a unit, so that error is its own
            u = Unit("!", name=typ)
            if typ in ("Q", "P", "F"):
                self._awaiting.append(u)  # the proxy may have recorded a decision for it
            self._n += 1
            u.start, u.order = self._t, self._n
            self._pending.append(u)
            return
        if typ in ("c", "f"):
            self._pending.append(Unit("c"))  # no answer: it ends a copy-in (or is ignored)
            return
        if typ in ("", "H", "d", "p"):
            return
        codec = self._codec
        try:
            if typ == "Q":
                u = Unit("Q", self._row("simple", _cstr(body, 0, codec)[0], None))
                self._awaiting.append(u)
            elif typ == "P":
                name, off = _cstr(body, 0, codec)
                sql, off = _cstr(body, off, codec)
                u = Unit("P", name=name, sql=sql, oids=_oids(body, off))
                self._awaiting.append(u)
                self._prepared[name] = u
            elif typ == "B":
                portal, stmt, params, _formats = _bind(body, codec)
                src = self._prepared.get(stmt)
                u = Unit("B", name=portal, sql=src.sql if src else "", src=src, params=params,
                         stmt=stmt, binary=_param_formats(body), codec=codec)
                self._portals[portal] = (src, params, u)
                self._binds.append(u)
            elif typ == "E":
                portal = _cstr(body, 0, codec)[0]
                src, params, bound = self._portals.get(portal, (None, [], None))
                u = Unit("E", self._row("extended", src.sql if src else "", None, params),
                         name=portal, src=src, bind=bound)
                self._portal_units.append(u)
            elif typ == "F":
                u = Unit("F", self._row("function", "(FunctionCall)", None))
                self._awaiting.append(u)
            elif typ in ("D", "C"):  # a statement's ParameterDescription names its types
                u = Unit(typ, name=body[:1].decode("latin-1"), stmt=_cstr(body, 1, codec)[0])
                if typ == "D":
                    self._portal_units.append(u)
            else:
                return
        except (ValueError, struct.error, IndexError):
            return
        self._n += 1
        u.start, u.order = self._t, self._n
        self._pending.append(u)

    # --- server messages --------------------------------------------------------

    def _server(self, typ: str, body: bytes) -> None:
        codec = self._codec
        if typ in _ASYNC:
            if typ == "A":
                # a notification the client received (another session's NOTIFY on a channel
                # the session listens on): an event of the session, as the proxy's
                # ``notification.withheld`` is of one it kept from the client; its channel,
                # the notifying backend and the frame's size, never its payload (s35 round 3:
                # the answer said nothing of either)
                try:
                    (pid,) = struct.unpack_from(">i", body, 0)
                    channel = _cstr(body, 4, codec)[0]
                except (ValueError, struct.error):
                    return
                self.events.append({"seq": self._seq, "at_ns": self._wall0 + self._t,
                                    "kind": "notification", "verified": self._verified,
                                    "payload": {"channel": channel, "pid": pid,
                                                "bytes": len(body) + 5}})  # fmt: skip
                return
            if typ == "S":
                self._codec = reported_codec(body) or codec
                try:
                    name, off = _cstr(body, 0, codec)
                    if name == "application_name":
                        self.session["application_name_seen"] = _cstr(body, off, codec)[0]
                except ValueError:
                    pass
            return
        while self._pending and self._pending[0].kind == "c":
            self._pending.popleft()  # CopyDone/CopyFail: answered by the COPY's own frames
        if typ == "E" and self._verified:
            f = _fields(body, codec)
            if (f.get("V") or f.get("S")) in ("FATAL", "PANIC"):
                # the server ending the session: why, in its words (an administrator's
                # pg_terminate_backend or shutdown, 57P01; an idle transaction's timeout,
                # 25P03; ...), for the session's end (``finish``)
                self._server_fatal = f"{f.get('C')} {f.get('M')}"
        if not self._pending:
            return  # startup-phase frames (R, K, the first Z) and FATALs outside a statement
        u = self._pending[0]
        if u.kind == "E" and not u.answered:
            u.answered = True
            err = _fields(body, codec) if typ == "E" else {}
            self._executing(u, gone=typ == "E" and _no_portal(err), aborted=err.get("C") == "25P02")
        if u.kind == "Q" and (typ in "TDCGH" or (u.decision or {}).get("decision") == "denied"):
            # A simple Query drops the unnamed statement as it starts, and runs each of its
            # statements in the unnamed portal (which it replaces): the server holds neither
            # after it (exec_simple_query). A Query the policy refused is the proxy's DO
            # block: the same. (One that failed before any statement ran may leave the portal:
            # only a failed transaction's, which no Execute can run.)
            self._server_stmts.pop("", None)
            self._server_portals.pop("", None)
        if typ == "E":
            self._copy_in = False  # an error ends copy-in mode
            f = _fields(body, codec)
            if (f.get("V") or f.get("S")) in ("FATAL", "PANIC"):
                self._fatal = True  # the server ends the session: nothing after runs
            if u.kind == "S":
                # the Sync itself failed (malformed, or the implicit transaction's commit):
                # the server rolled back what the group did; its ReadyForQuery follows
                self._rolled_back(f)
                return
            self._pending.popleft()
            self._failed = True  # the transaction is aborted: undone at its end (_ready)
            if u.kind == "Q" and self._server_portals.get("") is not None:
                # a Query that failed before any of its statements said anything: the unnamed
                # portal is the one held before, or the Query's own (made once parsed and
                # planned, before it ran), the server's next word on it decides (_executing)
                self._unnamed_unsure = (self._server_portals[""], f.get("C"))
            if u.kind == "!":  # a malformed message's own error
                if u.name in ("Q", "F"):
                    self._await_ready(u)
                else:
                    self._skip_to_sync()
                return
            if u.kind == "P" and not u.name and (u.decision or {}).get("decision") != "denied":
                # the server drops its unnamed statement before it parses the next (the
                # policy's refusal never reached it under that name: the earlier one stays)
                self._server_stmts.pop("", None)
            elif u.kind == "B":
                self._bound(u)
            row = u.row
            if row is None and u.kind == "D" and u.decision is not None:
                # a Describe the policy refused (a portal the client did not make: what it
                # would say reads rows): a denial, a row of its own, of what it names
                held = (self._server_portals if u.name == "P" else self._server_stmts).get(u.stmt)
                row = self._row("extended", held.sql if held is not None else "", u.decision)
                row["start_ns"], row["order"] = u.start, u.order
                u.row = row
            if row is None and u.kind in ("P", "B"):  # a refused Parse/Bind is a statement row
                # (a Bind's with the values it bound: _emit types them as an Execute's)
                row = self._row("extended", u.sql, None, u.params)
                row["start_ns"], row["order"] = u.start, u.order
                u.row = row
            if row is not None:
                row.update(outcome="error", sqlstate=f.get("C"), message=f.get("M"))
                self._emit(row, u)
            if u.kind in ("Q", "F"):
                self._await_ready(u)
                return
            self._skip_to_sync()
            return
        k = u.kind
        if k == "Q" or k == "F":
            row = u.row
            assert row is not None  # Query and FunctionCall units get their row when sent
            if typ == "C":
                tag = _cstr(body, 0, codec)[0]
                row["command_tag"] = f"{row['command_tag']}; {tag}" if row["command_tag"] else tag
                self._tag_ns.setdefault(id(row), []).append(self._t)
                n = rows_of(tag)
                if n is not None:
                    row["rows"] = (row["rows"] or 0) + n
                if tag in _NAMING_TAGS:
                    self._sql_named(row, len(self._tag_ns[id(row)]) - 1, tag)
                u.cursors = ()
            elif typ == "T":
                u.cursors = _refcursor_columns(body) if _REFCURSOR_OID in body else ()
            elif typ == "D" and (u.cursors or self._rows_read < _NAMES_READ):
                i = len(self._tag_ns.get(id(row), ()))  # (its statements completed so far)
                texts = statements_of(row.get("text") or "")
                sql = texts[i] if i < len(texts) else row.get("text") or ""
                decision = {k: row.get(k) for k in _DECISION_KEYS} if row.get("decision") else None
                if u.cursors:
                    self._cursors_returned(sql, decision, u.cursors, body, codec)
                self._names_returned(sql, decision, body, codec)
            elif typ in ("G", "H"):
                row["copy"] = True
                if typ == "G":
                    self._copy_in_began()
            elif typ == "Z":
                self._pending.popleft()
                if row.get("outcome") is None:
                    row["outcome"] = "ok"
                    row["end_ns"] = self._t
                    self._emit(row, u)
        elif k == "P":
            if typ == "1":
                self._pending.popleft()
                self._server_stmts[u.name] = u
        elif k == "B":
            if typ == "2":
                self._pending.popleft()
                self._bound(u)
                self._open_portal(u.name, u)
        elif k == "C":
            if typ == "3":
                self._pending.popleft()
                (self._server_stmts if u.name == "S" else self._server_portals).pop(u.stmt, None)
        elif k == "D":
            if typ == "t" and u.name == "S" and (src := self._server_stmts.get(u.stmt)):
                src.oids = _oids(body, 0)
            elif typ in ("T", "n"):
                self._pending.popleft()
                held = (self._server_portals if u.name == "P" else self._server_stmts).get(u.stmt)
                if held is not None:  # (the rows an Execute of it returns: refcursors?)
                    held.cursors = _refcursor_columns(body) if _REFCURSOR_OID in body else ()
        elif k == "E":
            row = u.row
            assert row is not None  # so do Executes
            if typ == "D":
                row["rows"] = (row["rows"] or 0) + 1  # a suspended portal has no tag
                held = u.bind if u.bind is not None and u.bind.cursors else u.src
                # the decision its row will have (_emit): a checked Bind's, else its Parse's
                decision = (u.bind.decision if u.bind is not None else None) or (
                    u.src.decision if u.src is not None else None)  # fmt: skip
                if held is not None and held.cursors:
                    self._cursors_returned(row.get("text") or "", decision, held.cursors, body, codec)
                if self._rows_read < _NAMES_READ and row.get("text"):
                    self._names_returned(row["text"], decision, body, codec)
                return
            if typ == "C":
                tag = _cstr(body, 0, codec)[0]
                n = rows_of(tag)
                row.update(outcome="ok", command_tag=tag, rows=row["rows"] if n is None else n)
            elif typ == "I":
                row.update(outcome="ok", command_tag="(empty)")
            elif typ == "s":
                if _writes(u):
                    # a data-modifying statement runs to its end at the first Execute (its
                    # RETURNING rows are kept for the fetches): it changed every row it
                    # was going to, however few it has returned; the server does not say
                    # how many (red-team round 22: "suspended, 1 row" for a DELETE of 3)
                    row.update(outcome="ok", command_tag="(portal suspended)", rows=None)
                else:
                    row.update(outcome="suspended")
            elif typ in ("G", "H"):
                row["copy"] = True
                if typ == "G":
                    self._copy_in_began()
                return
            else:
                return
            self._pending.popleft()
            row["end_ns"] = self._t
            self._emit(row, u)
            if typ == "C" and row["command_tag"] in _NAMING_TAGS:
                # a PREPARE or DECLARE (CLOSE, DEALLOCATE, DISCARD ALL) sent through the
                # protocol names what it names as a simple Query's does
                self._sql_named(row, 0, row["command_tag"])
        elif k == "S" and typ == "Z":
            self._pending.popleft()

    def _bound(self, u: Unit) -> None:
        """The Bind ``u`` as the server reads it: of the statement it holds under the name."""
        src = self._server_stmts.get(u.stmt)
        if src is not None:
            u.src, u.sql = src, src.sql

    def _executing(self, u: Unit, gone: bool = False, aborted: bool = False) -> None:
        """The Execute ``u`` is being answered: its row names the portal the server holds
        under its name (the text and values it runs), not what the client last bound.
        ``gone``: the server's answer is that it holds no portal of that name (34000 from
        the Execute's own lookup), whatever derive held: a single-statement Query that
        failed at run time in a block (its unnamed portal made, the old one dropped, no
        RowDescription to say so) left derive the old one, and after a ROLLBACK TO the
        Execute's 34000 row showed the old statement, which the server never ran (s35
        round 2). The server's word decides."""
        if gone:
            self._server_portals.pop(u.name, None)
        if u.row is None:
            return
        bound = self._server_portals.get(u.name)
        unsure = self._unnamed_unsure
        if (aborted and not u.name and unsure is not None and bound is unsure[0]
                and not _parse_analysis(unsure[1])):
            # 25P02 (the block failed): the server found a portal under the name, and it is
            # the failed Query's own unless that Query failed in parse analysis (the server's
            # log names its text: the portal's). Derive cannot tell which one; the row named
            # the one bound before, which the server may no longer hold (s35 round 4): no text
            bound = None
        if bound is None:
            # no portal this recording shows made (the server fails it, 34000, or runs one
            # made by code derive cannot see): not what the client last bound to the name,
            # which is gone (session 34: a protocol DECLARE's cursor shown as the earlier
            # Bind's statement)
            u.bind = u.src = None
            u.row["text"], u.row["params"] = "", json.dumps([])
            named = (self._named_in_rows.get(u.name) if u.name and not gone
                     and u.row.get("decision") != "denied" else None)  # (refused: none ran)
            if named is not None:
                # a name an earlier statement of the transaction returned in a row (as text,
                # not refcursor): a cursor code it called opened, whose own query only that
                # code holds. The row said nothing of what ran (a dry run lets the Execute
                # through: the server returned the cursor's rows; session 34's gap (b), s35
                # round 4): it names that statement, as for a refcursor, and says so
                u.row["text"] = named[0]
                u.row["message"] = u.row["note"] = (
                    f"a cursor {_gid_literal(u.name)} no statement recorded opened; this "
                    "statement's result row held its name (as text, not a refcursor): code it "
                    "ran likely opened it. The server ran the cursor's own query, which no "
                    "recording holds")  # fmt: skip
            return
        u.bind, u.src = bound, bound.src
        u.row["text"], u.row["params"] = bound.sql, json.dumps(bound.params)

    def _sql_named(self, row: dict, i: int, tag: str) -> None:
        """Statement ``i`` of the Query ``row`` completed with ``tag``: a SQL ``PREPARE name
        [(types)] AS ...`` holds a statement a Bind may name, a ``DECLARE name ... CURSOR
        FOR ...`` a portal an Execute may name. The server runs them under their text (its
        log: ``execute q1: PREPARE q1 AS ...``, ``execute <unnamed>/c: DECLARE c ...``); the
        rows of those Executes have it, and the decision on it."""
        texts = statements_of(row.get("text") or "")
        text = texts[i] if i < len(texts) else ""
        if tag in ("COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PREPARE TRANSACTION"):
            self._portal_lifetimes(text, tag)
            return
        # DISCARD ALL and DEALLOCATE ALL drop every named statement, DISCARD ALL and CLOSE
        # ALL every portal but the one running them (the unnamed one's, here)
        if tag in ("DISCARD ALL", "DEALLOCATE ALL"):
            self._server_stmts = {k: v for k, v in self._server_stmts.items() if not k}
        if tag in ("DISCARD ALL", "CLOSE CURSOR ALL"):
            self._server_portals = {k: v for k, v in self._server_portals.items() if not k}
        if tag in ("DISCARD ALL", "DEALLOCATE ALL", "CLOSE CURSOR ALL"):
            return
        words = _words(text, 2, partial=True) if text else None
        first = {"PREPARE": "prepare", "DECLARE CURSOR": "declare", "CLOSE CURSOR": "close",
                 "DEALLOCATE": "deallocate"}[tag]  # fmt: skip
        if not words or len(words) < 2 or words[0] != (first, False):
            return
        name = words[1][0]
        if first == "deallocate":  # DEALLOCATE [PREPARE] name
            if words[1] == ("prepare", False) and len(words) > 2:
                name = words[2][0]
            self._server_stmts.pop(name, None)
            return
        if first == "close":
            self._server_portals.pop(name, None)
            return
        decision = {k: row.get(k) for k in _DECISION_KEYS}
        src = Unit("P", name=name, sql=text, decision=decision if row.get("decision") else None)
        if tag == "PREPARE":
            self._server_stmts[name] = src
        else:
            self._open_portal(name, Unit("B", name=name, sql=text, src=src, params=[],
                                         hold=_held(text)))

    def _open_portal(self, name: str, unit: Unit) -> None:
        """The server made portal ``name`` (in the open transaction)."""
        self._server_portals[name] = unit
        self._young.append(name)

    def _portal_lifetimes(self, text: str, tag: str) -> None:
        """A statement that ends portals with their transaction or subtransaction: COMMIT
        keeps only the cursors declared WITH HOLD (PREPARE TRANSACTION none), ROLLBACK none
        of those the transaction made, ROLLBACK TO those made since its savepoint."""
        op = savepoint_op(text) if tag != "COMMIT" else None
        if op is not None and op[0] == "set":
            self._portal_savepoints.append((op[1], len(self._young)))
        elif op is not None:
            at = next((k for k in range(len(self._portal_savepoints) - 1, -1, -1)
                       if self._portal_savepoints[k][0] == op[1]), None)  # fmt: skip
            if at is None:
                return
            made = self._portal_savepoints[at][1]
            if op[0] == "release":
                del self._portal_savepoints[at:]
            else:
                del self._portal_savepoints[at + 1 :]
                for name in self._young[made:]:
                    self._server_portals.pop(name, None)
                del self._young[made:]
        elif tag in ("COMMIT", "PREPARE TRANSACTION"):
            self._end_portals(committed=True)
        elif tag == "ROLLBACK":
            self._end_portals(committed=False)

    def _end_portals(self, committed: bool) -> None:
        """The open transaction ended: its portals with it, but cursors declared WITH HOLD
        whose transaction committed."""
        young = set(self._young) if not committed else set()
        self._server_portals = {k: u for k, u in self._server_portals.items()
                                if u.hold and k not in young}  # fmt: skip
        self._young.clear()
        self._portal_savepoints.clear()

    def _cursors_returned(self, sql: str, decision: dict | None, columns: tuple[int, ...],
                          body: bytes, codec: str) -> None:  # fmt: skip
        """A result row of statement ``sql`` (decided ``decision``) holds refcursors
        (``columns``): a portal an Execute may name, opened by code the statement called (a
        function returning a refcursor). The server runs the cursor's own query, which
        nothing recorded holds (its log: ``execute <unnamed portal 1>: SELECT ...``); the
        rows of those Executes have the statement that returned it, and the decision on it."""
        src = Unit("P", sql=sql, decision=decision)
        for name in _column_values(body, columns, codec):
            # a name the server holds a portal under already is not one the function opened
            # (opening it would have failed: 42P03): it returned the name of that portal
            if name not in self._server_portals:
                self._open_portal(name, Unit("B", name=name, sql=sql, src=src, params=[]))

    def _names_returned(self, sql: str, decision: dict | None, body: bytes, codec: str) -> None:
        """A result row of statement ``sql``: its short values, each a name a cursor that
        code the statement called opened may be under (a function that opens one and returns
        its name as ``text``: no refcursor column says so). Read for the first
        ``_NAMES_READ`` rows of a transaction only (a cursor's name is returned where it
        is opened, in a row of the call)."""
        self._rows_read += 1
        for name in _column_values(body, tuple(range(8)), codec):
            if 0 < len(name) <= 63 and name not in self._named_in_rows:
                self._named_in_rows[name] = (sql, decision)

    def _copy_in_began(self) -> None:
        """CopyInResponse to the head message: until the client's CopyDone or CopyFail the
        server ignores Sync and Flush, those already sent included (so two Syncs can get one
        ReadyForQuery: red-team round 20b)."""
        after = list(self._pending)[1:]
        keep = [self._pending[0]]
        for i, w in enumerate(after):
            if w.kind == "c":
                keep += after[i:]
                break
            if w.kind != "S" and not (w.kind == "!" and w.name in ("S", "H")):
                keep.append(w)
        else:
            self._copy_in = True  # the copy's end is still to come from the client
        self._pending = deque(keep)

    def _rolled_back(self, f: dict[str, str]) -> None:
        """The Sync's ErrorResponse: the statements the group ran since its last COMMIT or
        ROLLBACK are undone (their rows say so, with the Sync's error)."""
        marked = set()
        for row in reversed(self._since_ready):
            if row.get("command_tag") in ("COMMIT", "ROLLBACK"):
                break
            row.update(outcome="rolled back", sqlstate=f.get("C"), message=f.get("M"))
            marked.add(id(row))
        self._since_ready.clear()
        self._changed = [(r, i) for r, i in self._changed if id(r) not in marked]

    def _await_ready(self, u: Unit) -> None:
        """A Query/FunctionCall error: its ReadyForQuery still follows (not after a FATAL);
        keep a marker (no client message: ``finish`` does not count it)."""
        if not self._fatal:
            self._pending.appendleft(Unit("S", name=_READY))

    def _skip_to_sync(self) -> None:
        while self._pending and self._pending[0].kind != "S":
            self._pending.popleft()  # skipped by the server: never executed, not a row
        if not self._pending:
            self._skipping = True

    def _emit(self, row: dict, u: Unit | None = None) -> None:
        parse = None if u is None else (u if u.kind == "P" else u.src)
        bound = None if u is None else (u if u.kind == "B" else u.bind)
        if row.get("decision") is None and bound is not None and bound.decision:
            row.update(bound.decision)  # a checked Bind decided on its values: that decision
            said = parse.decision.get("reason") if parse is not None and parse.decision else None
            if row.get("reason") is None and said and said.startswith(_SENT_AS):
                row["reason"] = said  # (the text its Parse sent in the client's place)
        elif row.get("decision") is None and parse is not None and parse.decision:
            row.update(parse.decision)
        if parse is not None and parse.oids and row.get("params"):
            binary, codec = (bound.binary, bound.codec) if bound is not None else (None, self._codec)
            row["params"] = json.dumps(_typed(json.loads(row["params"]), parse.oids, binary, codec))
        # A message pipelined behind a Query or a Sync group (sent before their ReadyForQuery)
        # began when the server had answered them, not when the client sent it: its time and
        # duration are not theirs (a SELECT 1 sent behind a pg_sleep(1) took 1 s otherwise).
        # Inside one Sync group the server holds its answers until the Sync: an Execute sent
        # behind another of its group is timed from when it was sent (docs/audit.md).
        row["start_ns"] = max(row["start_ns"], self._free_ns)
        if row.get("end_ns") is None:
            row["end_ns"] = self._t
        self.statements.append(row)
        if row.get("outcome") == "ok":
            self._since_ready.append(row)
        if row.get("outcome") in ("ok", "error"):
            self._transaction(row)

    def _transaction(self, row: dict) -> None:
        """Follow the transaction as the server ran ``row``'s statements (those it completed:
        an error row's tags are the statements before its error): its savepoints, its end."""
        tags = (row.get("command_tag") or "").split("; ") if row.get("command_tag") else []
        if not tags:
            if row.get("outcome") != "ok":
                return  # failed at its only statement: nothing ran
            tags = [""]  # a FunctionCall, an empty query: no tag, one "statement"
        if row.get("protocol") == "simple":
            texts = statements_of(row.get("text") or "")
            if len(texts) < len(tags):
                texts = [""] * len(tags)  # not split as the server did: no statement read
        else:
            texts = [row.get("text") or ""]
        changing = _changing(row, tags)
        for i, (text, tag) in enumerate(zip(texts, tags, strict=False)):
            word = tag.split(" ", 1)[0]
            op = savepoint_op(text) if word in ("SAVEPOINT", "RELEASE", "ROLLBACK") else None
            if op is not None and op[0] == "set":
                self._savepoints.append((op[1], len(self._changed)))
            elif op is not None:
                at = next((k for k in range(len(self._savepoints) - 1, -1, -1)
                           if self._savepoints[k][0] == op[1]), None)
                if at is None:
                    continue  # the server answered it; not a savepoint we saw set
                if op[0] == "release":
                    del self._savepoints[at:]  # it and those set after it; nothing undone
                else:
                    del self._savepoints[at + 1 :]  # it stays, those set after it go
                    why = f"undone by ROLLBACK TO SAVEPOINT {_ident(op[1])}"
                    self._undo(self._savepoints[at][1], ("rolled back", why, why))
            elif tag == "ROLLBACK" and not text:
                # ROLLBACK or ROLLBACK TO? Not read: the transaction's end, if ReadyForQuery
                # says it ended, undoes what ran in it (_ready)
                self._unread_rollback = True
            elif tag == "PREPARE TRANSACTION":
                # The transaction is prepared for two-phase commit, neither committed nor
                # undone: COMMIT PREPARED or ROLLBACK PREPARED decides, in this session or
                # another, or never. (In an implicit block too: PostgreSQL warns "there is
                # no transaction in progress" and prepares what ran since its start.)
                phase = two_phase_op(text) if text else None
                gid = phase[1] if phase is not None and phase[0] == "prepare" else None
                prepared = list(self._changed)
                self._undo(0, _prepared(gid))
                event = self._event(row, i, "prepare", gid)
                event["prepared"] = prepared
                for r, k in prepared:
                    fate = self._fates[id(r)]
                    fate.prepared_by[k] = event
                    self._prepared_fates[id(fate)] = fate
                if gid is not None:  # a gid used again: the earlier one was decided elsewhere
                    self._prepared_tx[gid] = [(self._fates[id(r)], k) for r, k in prepared]
                self._savepoints.clear()
            elif tag in ("COMMIT PREPARED", "ROLLBACK PREPARED"):
                # outside any transaction block (PostgreSQL refuses it in one): undoes nothing
                # of the open transaction, decides a prepared one
                phase = two_phase_op(text) if text else None
                word = "commit" if tag == "COMMIT PREPARED" else "rollback"
                self._event(row, i, word, phase[1] if phase is not None else None)
                if phase is not None and phase[1] is not None:
                    self._resolve(phase[0], phase[1])
            elif tag in ("COMMIT", "ROLLBACK"):
                # The transaction ended: committed (COMMIT [AND CHAIN]), prepared for
                # two-phase commit, or undone (the tag ROLLBACK: ROLLBACK or ABORT [AND
                # CHAIN], a COMMIT [AND CHAIN] or PREPARE TRANSACTION of a failed block, a
                # ROLLBACK in an implicit block, which PostgreSQL warns of and obeys). AND
                # CHAIN starts the next one at once (ReadyForQuery stays 'T').
                if tag == "ROLLBACK":
                    self._undo(0, _ENDED_BY_ROLLBACK)
                self._changed.clear()
                self._savepoints.clear()
            elif changing[i]:
                self._changed.append((row, i))

    def _event(self, row: dict, i: int, op: str, gid: str | None) -> dict:
        """A two-phase statement that succeeded: statement ``i`` of ``row``."""
        times = self._tag_ns.get(id(row))
        at = times[i] if times is not None and i < len(times) else row.get("end_ns") or self._t
        event = {"row": row, "k": i, "at_ns": at, "op": op, "gid": gid}
        self._events.append(event)
        return event

    def _resolve(self, op: str, gid: str) -> None:
        """COMMIT PREPARED (``op`` "commit") or ROLLBACK PREPARED of ``gid``: the statements
        this session prepared as ``gid`` are committed or undone."""
        entries = self._prepared_tx.pop(gid, [])
        why = _resolved(op, gid)
        for fate, i in entries:
            fate.undone[i] = why
        for fate in {id(f.row): f for f, _ in entries}.values():
            fate.mark()

    def _undo(self, start: int, why: tuple[str, str, str]) -> None:
        """What ran since ``start`` in the open transaction was undone, ``why`` = (its fate:
        rolled back, or prepared or unknown; the message of a row all of whose changing
        statements were, the words after those undone in a row only partly undone). A row all of whose changing statements were undone is rolled
        back; one only partly undone (statements of one Query on both sides of a savepoint or
        a transaction's end) stays ok and says which were; an error row says which of the
        statements it ran before its error were."""
        undone, self._changed[start:] = self._changed[start:], []
        for row, i in undone:
            fate = self._fates.get(id(row))
            if fate is None:
                fate = self._fates[id(row)] = _Fate(row, row.get("outcome"), row.get("message"))
            fate.undone[i] = why
        for fate in {id(row): self._fates[id(row)] for row, _ in undone}.values():
            fate.mark()

    def _ready(self, status: bytes) -> None:
        """A ReadyForQuery. No transaction open ('I'): the one the server was in ended. If an
        error aborted it (a failed statement of an implicit block, a failing COMMIT or
        PREPARE TRANSACTION, the proxy's refusal of one: ``ROLLBACK`` injected before it,
        red-team round 22), what ran in it and was not undone already was undone; otherwise
        it committed (the implicit block of a Query or a Sync group)."""
        self._since_ready = []
        self._tag_ns.clear()  # the rows answered are emitted: their events are made
        failed = self._failed
        if status == b"I":
            if self._changed and self._failed:
                self._undo(0, _ENDED_BY_ERROR)
            elif self._changed and self._unread_rollback:
                self._undo(0, _ENDED_BY_ROLLBACK)
            self._changed.clear()
            self._savepoints.clear()
            self._fates.clear()
            # the transaction's portals ended with it, but a cursor declared WITH HOLD whose
            # transaction committed (an error ended an implicit one: it did not)
            self._end_portals(committed=not failed)
            self._named_in_rows.clear()
            self._rows_read = 0
            self._unnamed_unsure = None
        self._failed = self._unread_rollback = False
        self._status = status

    def _annotate_db_denials(self) -> None:
        """Each ``db.denied`` event marks the statement row it is about (once)."""
        for ev in self.events:
            if ev["kind"] != "db.denied":
                continue
            p = ev["payload"]
            t = ev["at_ns"] - self._wall0
            best = None
            for row in self.statements:
                if row.get("db_denied_rule") is not None or row.get("sqlstate") != (p.get("sqlstate") or "42501"):
                    continue
                if best is None or abs(row["end_ns"] - t) < abs(best["end_ns"] - t):
                    best = row
            if best is not None:
                best["db_denied_rule"] = p.get("rule") or ""
                ev["matched"] = True


# the DataRows of a transaction whose short values derive keeps as names a cursor may be
# under (``SessionFacts._names_returned``)
_NAMES_READ = 64


def _parse_analysis(sqlstate: str | None) -> bool:
    """Whether a Query's error ``sqlstate`` is one of parse analysis (a syntax error, an
    unknown relation, column or function: class 42 but 42501, which the executor raises at
    its start), before the server made the Query's portal in place of the unnamed one."""
    return sqlstate is not None and sqlstate.startswith("42") and sqlstate != "42501"


def _no_portal(f: dict) -> bool:
    """An Execute's ErrorResponse ``f`` is the server's lookup of its portal failing
    (``portal "..." does not exist``, exec_execute_message), not an error of what the
    portal ran (code it calls can raise 34000 for a cursor of its own)."""
    if f.get("C") != "34000":
        return False
    routine = f.get("R")
    return routine == "exec_execute_message" if routine else f.get("M", "").startswith("portal ")


def _options_words(text: str) -> list[str]:
    """A startup packet's ``options`` split as PostgreSQL splits it (pg_split_opts): on
    whitespace, a backslash taking the next character as it is."""
    words: list[str] = []
    word: list[str] | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            if word is not None:
                words.append("".join(word))
                word = None
        else:
            if ch == "\\" and i + 1 < len(text):
                i += 1
                ch = text[i]
            word = (word or []) + [ch]
        i += 1
    if word is not None:
        words.append("".join(word))
    return words


def client_application_name(params: dict) -> str | None:
    """The ``application_name`` a client's startup parameters name its session with, as
    PostgreSQL reads them: a parameter's name case folded (of two spellings, the packet's
    last wins; the start record keeps its keys sorted, so the answer takes the last so),
    over a setting in ``options`` (``-c name=value``, ``-cname=value``, ``--name=value``;
    the last wins); else a ``fallback_application_name``, as the proxy counts it (s35
    round 3: the answer read the ``application_name`` key alone, and said a client that
    named itself in ``options`` or as ``Application_Name`` gave no name)."""
    explicit = from_options = fallback = None
    for key, value in params.items():
        name = str(key).lower()
        if name == "application_name":
            explicit = value
        elif name == "fallback_application_name":
            fallback = value
        elif name == "options" and isinstance(value, str):
            words, i = _options_words(value), 0
            while i < len(words):
                word = words[i]
                i += 1
                if word == "-c":  # its argument is the next word, whatever it looks like
                    pair = words[i] if i < len(words) else ""
                    i += 1
                elif word.startswith("-c") or word.startswith("--"):
                    pair = word[2:]
                else:
                    continue
                setting, sep, val = pair.partition("=")
                if sep and setting.replace("-", "_").lower() == "application_name":
                    from_options = val
    for v in (explicit, from_options, fallback):
        if v is not None:
            return v
    return None


def _session_row(sid: str, start: dict, meta: dict) -> dict:
    params = meta.get("startup_params") or {}
    return {
        "session_id": sid,
        "started_ns": int(start.get("wall_ns") or 0),
        "host": start.get("host"),
        "pid": start.get("pid"),
        "grant_id": meta.get("grant_id") or meta.get("grant"),
        "agent": meta.get("agent"),
        "task": meta.get("task"),
        "reason": meta.get("reason"),
        "granted_by": meta.get("granted_by"),
        "scopes": meta.get("scopes"),
        "database": meta.get("database"),
        "client_addr": meta.get("client_addr"),
        "client_tls": meta.get("client_tls"),
        "application_name": client_application_name(params),
        "upstream_application_name": meta.get("upstream_application_name"),
        "upstream": meta.get("upstream"),
        "upstream_user": meta.get("upstream_user"),
        "upstream_tls": meta.get("upstream_tls"),
        "backend_pid": meta.get("backend_pid"),
        # the backend served an earlier session of the same grant (older proxies never did)
        "upstream_reused": bool(meta.get("upstream_reused", False)),
        "enforce": meta.get("enforce"),
        "record_rows": meta.get("record_rows"),
        "meta": json.dumps(meta, sort_keys=True, default=str),
    }
