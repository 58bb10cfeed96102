"""Server errors that quote rows of relations the grant may not read, withheld.

A statement the policy allows can make PostgreSQL raise an error in a relation the
statement never named: a foreign key's ON DELETE SET NULL or ON UPDATE CASCADE runs in the
referencing table (as its owner, so PostgreSQL's own check on showing the row passes), a
trigger writes to another table. The error's DETAIL then quotes that table's row (``Failing
row contains (...)``, ``Key (k)=(...) already exists``) and its CONTEXT the internal
query. Such an error names its relation in the schema and table fields (``s``, ``t``); if
the grant may not read that relation, the DETAIL is replaced by a note and the CONTEXT is
dropped. The message, SQLSTATE and constraint name stay: the client still learns what
failed, not the row it failed on.

An error or notice raised in a relation the statement wrote through a foreign key's
action names no relation when it comes from a trigger's RAISE or an expression failing on
that relation's row (``invalid input syntax for type integer: "<the row's value>"``). For
statements whose actions reach a relation the grant may not read
(``StatementPolicy.writes_unreadable``), the relay keeps, from the first such statement
on (prepared or run) to the end of the session, only the severity and SQLSTATE of the
server's errors and notices (``withhold_message``). Sans-IO: bytes in, bytes
out.
"""

from __future__ import annotations

from collections.abc import Callable

from common.wire.errors import frame as _frame

TABLE_FIELD = b"\x00t"  # a table field follows an earlier field's terminator (never first)
# Errors whose DETAIL quotes a row without the error naming its relation: a view's WITH
# CHECK OPTION failing (SQLSTATE 44000: ``Failing row contains (...)``, the columns the
# statement did not set included) and integrity errors PostgreSQL raises without a table
# field (no partition found for a row: ``Partition key of the failing row contains``).
# Whose row it is cannot be told, so their DETAIL is withheld for every enforcing grant (a
# write scope alone would read the row's other values through them).
CHECK_OPTION = b"44000"
INTEGRITY = b"23"  # class 23, integrity constraint violation
ROW_STATE_FIELDS = (b"\x00C44000\x00", b"\x00C23")  # in an error frame: look closer
_UNNAMED_ROW_NOTE = (
    "pgwitness: detail withheld: it shows a row without naming its relation (a view's "
    "CHECK OPTION, partition routing), whose values this grant may not read"
)
_WITHHELD = (ord("D"), ord("W"))  # detail (row values, keys), context (the internal query)


def error_fields(frame: bytes) -> list[tuple[int, bytes]]:
    """An ErrorResponse/NoticeResponse's fields as (code, raw value), in order."""
    fields = []
    pos = 5
    while pos < len(frame) and frame[pos] != 0:
        end = frame.find(b"\x00", pos + 1)
        if end < 0:
            break
        fields.append((frame[pos], frame[pos + 1 : end]))
        pos = end + 1
    return fields


def redact_error(frame: bytes, may_read: Callable[[str, str], bool], encoding: str) -> bytes | None:
    """``frame`` without what it shows of a relation the grant may not read; None if it
    names no relation, names a readable one, or has nothing to withhold."""
    fields = error_fields(frame)
    named = dict(fields)
    table = named.get(ord("t"))
    if table is None:
        state = named.get(ord("C"), b"")
        if ord("D") not in named or not (state == CHECK_OPTION or state.startswith(INTEGRITY)):
            return None
        note = _UNNAMED_ROW_NOTE.encode(encoding, "replace")
    else:
        schema = named.get(ord("s"), b"").decode(encoding, "replace")
        name = table.decode(encoding, "replace")
        if may_read(schema, name) or not any(code in _WITHHELD for code, _ in fields):
            return None
        note = (
            f"pgwitness: detail withheld: it shows a row of {schema}.{name}, which this grant "
            "may not read"
        ).encode(encoding, "replace")
    body = b"".join(
        bytes((code,)) + (note if code == ord("D") else value) + b"\x00"
        for code, value in fields
        if code != ord("W")
    )
    return _frame(frame[:1], body + b"\x00")


# Code quoted by an error's or notice's context: PostgreSQL's SPI names the statement,
# expression or assignment of a function body that failed (spi.c, _SPI_error_callback);
# PL/Python's traceback and PL/Tcl's "while executing" quote source lines (indented, or
# in double quotes). The internal query and its position are the same statement again.
CODE_FIELDS = (b"\x00W", b"\x00q")  # a context or internal query field (never first)
_CODE_LINES = ('SQL statement "', 'SQL expression "', 'PL/pgSQL assignment "', '"',
               "while executing", "invoked from within")  # fmt: skip
_INTERNAL = (ord("q"), ord("p"))  # internal query, internal position


def _code_line(line: str) -> bool:
    return line.startswith(_CODE_LINES) or line[:1].isspace()


def quotes_code(frame: bytes) -> bool:
    """Whether an error or notice may quote code (a context or internal query field)."""
    return CODE_FIELDS[0] in frame or CODE_FIELDS[1] in frame


def worth_a_look(frame: bytes, strips_code: bool) -> bool:
    """Whether an ErrorResponse may show what ``redact_error`` (or, for a grant whose
    code is stripped, ``strip_code``) withholds: a byte test, so that an error showing
    nothing of the kind is passed on unparsed."""
    return (
        TABLE_FIELD in frame
        or ROW_STATE_FIELDS[0] in frame
        or ROW_STATE_FIELDS[1] in frame
        or (strips_code and quotes_code(frame))
    )


def strip_code(frame: bytes, encoding: str) -> bytes | None:
    """``frame`` (an ErrorResponse or NoticeResponse) without the code it quotes: the
    internal query and position, and the CONTEXT lines that quote a function body's
    statements (a grant without ``read:pg_catalog.pg_proc`` may not read bodies:
    docs/policy.md, "Code holds secrets too"). The other context lines (``PL/pgSQL
    function f(text) line 4 at SQL statement``) say where it failed and stay. None: it
    quotes none."""
    fields = error_fields(frame)
    out: list[tuple[int, bytes]] = []
    changed = False
    for code, value in fields:
        if code in _INTERNAL:
            changed = True
            continue
        if code == ord("W"):
            lines = value.decode(encoding, "replace").split("\n")
            kept = [line for line in lines if not _code_line(line)]
            if len(kept) != len(lines):
                changed = True
                kept.append("(pgwitness: the function body's statement is withheld)")
                value = "\n".join(kept).encode(encoding, "replace")
        out.append((code, value))
    if not changed:
        return None
    body = b"".join(bytes((code,)) + value + b"\x00" for code, value in out)
    return _frame(frame[:1], body + b"\x00")


_KEPT = (ord("S"), ord("V"), ord("C"))  # severity (localized and not), SQLSTATE


# Why a message is withheld (``withhold_message``'s note): the session writes rows the
# grant may not read (``Relay.withholding``), or another session's schema change may have
# attached code to what this statement ran after it was checked (``writes_moved``).
UNREADABLE_WRITES = (
    "pgwitness: message withheld: this session writes rows of a relation this grant "
    "may not read (itself or through foreign-key actions), and the server's message "
    "may quote them"
)
SCHEMA_MOVED = (
    "pgwitness: message withheld: a schema change (DDL) in another session of this "
    "database was open or went through while this statement ran, so the server may have "
    "run code its check did not know of, and the message may quote rows this grant may "
    "not read; the same statement gets the full message once no schema change is in "
    "progress"
)

HIDDEN_ROWS = (
    "pgwitness: message withheld: this statement runs code on rows this grant may not "
    "read (a view's query over a relation it may not read, a row security policy's "
    "expression, a materialized view's query at REFRESH), and the server's message may "
    "quote them"
)

# The server's own fixed texts that quote nothing, by SQLSTATE (its untranslated message,
# no DETAIL): passed on whole where messages are withheld, since a driver acts on them
# (asyncpg prepares a statement again on "cached plan must not change result type"; the
# drivers' differential, session 26). A translated text does not match: withheld.
_FIXED_TEXTS = frozenset({
    (b"0A000", b"cached plan must not change result type"),
})  # fmt: skip


def withhold_message(frame: bytes, encoding: str, note: str = UNREADABLE_WRITES) -> bytes:
    """An ErrorResponse/NoticeResponse reduced to its severity and SQLSTATE, with ``note``
    (why) for a message: the server's message may quote rows the grant may not read. One
    of the server's fixed texts that quote nothing (``_FIXED_TEXTS``) goes on whole."""
    all_fields = error_fields(frame)
    found = dict(all_fields)
    if (found.get(ord("C")), found.get(ord("M"))) in _FIXED_TEXTS and ord("D") not in found:
        return frame
    note_bytes = note.encode(encoding, "replace")
    fields = [(code, value) for code, value in all_fields if code in _KEPT]
    fields.append((ord("M"), note_bytes))
    body = b"".join(bytes((code,)) + value + b"\x00" for code, value in fields)
    return _frame(frame[:1], body + b"\x00")
