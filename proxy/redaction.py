"""Server errors that quote rows of relations the grant may not read, withheld.

A statement the policy allows can make PostgreSQL raise an error in a relation the
statement never named: a foreign key's ON DELETE SET NULL or ON UPDATE CASCADE runs in the
referencing table (as its owner, so PostgreSQL's own check on showing the row passes), a
trigger writes to another table. The error's DETAIL then quotes that table's row (``Failing
row contains (...)``, ``Key (k)=(...) already exists``) and its CONTEXT the internal
query. Such an error names its relation in the schema and table fields (``s``, ``t``); if
the grant may not read that relation, the DETAIL is replaced by a note and the CONTEXT is
dropped. The message, SQLSTATE and constraint name stay: the client still learns what
failed, not the row it failed on. Sans-IO: bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Callable

from common.wire.errors import frame as _frame

TABLE_FIELD = b"\x00t"  # a table field follows an earlier field's terminator (never first)
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
        return None
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
