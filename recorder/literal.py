"""A value an agent's bytes reach, in a text a person reads: as PostgreSQL reads a literal.

One implementation for every text output of the recorder: the audit answer
(``recorder.audit.answer``, ``recorder.audit.derive``) and the replay's transcript
(``recorder.replay``). An agent chooses the text of its statements, its parameters, the
server's messages (a ``RAISE`` says anything), the names it gives (a savepoint, a prepared
statement, a portal, a column), its ``application_name``: written as a literal, where its
bytes begin and end is the reader's, whatever they hold (a newline cannot write a line of
ours, a terminal's escape cannot reach the terminal, a quote cannot close the literal early).
"""

from __future__ import annotations

import re

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# what reads as a quote and is not one: a value could seem to close its literal with it
_QUOTE_LIKE = frozenset("\u2018\u2019\u201a\u201b\u2032\u2035\u02b9\u02bc\u02c8\uff07\u00b4")


def escape_char(c: str) -> str:
    """One character's escape, as PostgreSQL's ``E'...'`` reads it: ``\\x`` is a byte, so a
    character past ASCII (NEL, U+0085) is ``\\u0085``, never ``\\x85``."""
    return _ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x80 else f"\\u{ord(c):04x}"
                               if ord(c) < 0x10000 else f"\\U{ord(c):08x}")  # fmt: skip


def plain_char(c: str) -> bool:
    """Whether a character can be shown as it is inside a literal."""
    return c.isprintable() and c not in _QUOTE_LIKE


def sql_literal(value) -> str:
    """A value an agent's bytes reach (a statement's text, a server's message quoting them,
    a name it chose), as SQL writes a literal: between quotes, its own quotes doubled, so
    that where it begins and ends is ours, whatever it holds (red-team session 37: ``SELECT
    1 -- params ["x"]`` read as ``SELECT 1 --`` bound to ``x``). A value with what cannot be
    printed as it is (a newline, a carriage return, U+2028, NEL, a terminal's escape, a
    bidirectional override, a character that looks like a quote) is an escape string,
    ``E'...'``, as PostgreSQL reads one: those as ``\\n``, ``\\r``, ``\\x1b``, ``\\u2028``,
    and its backslashes doubled, so ``E'a\\nb'`` (a newline) and ``'a\\nb'`` (a backslash and
    ``n``) read apart. None (SQL's NULL) is ``NULL``, unquoted."""
    if value is None:
        return "NULL"
    text = str(value)
    if all(plain_char(c) for c in text):
        return "'" + text.replace("'", "''") + "'"
    body = "".join(c if plain_char(c) else escape_char(c) for c in text.replace("\\", "\\\\"))
    return "E'" + body.replace("'", "''") + "'"


_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*", re.ASCII)


def sql_ident(name: str) -> str:
    """A name the agent chose (a savepoint's, a prepared statement's, a portal's) in a
    sentence of ours, as PostgreSQL reads an identifier: as it is if a plain lower-case
    name, else quoted, its quotes doubled (a savepoint named ``"a; statement 2 (INSERT 0 1)
    undone by ..."`` went on as the message's own words: session 37), and with what cannot
    be printed as it is a Unicode escape identifier (``U&"a\\000ab"``, its backslashes
    doubled)."""
    if _PLAIN_IDENT.fullmatch(name):
        return name
    if all(plain_char(c) for c in name):
        return '"' + name.replace('"', '""') + '"'
    body = "".join(c if plain_char(c) else f"\\{ord(c):04x}" if ord(c) < 0x10000
                   else f"\\+{ord(c):06x}" for c in name.replace("\\", "\\\\"))  # fmt: skip
    return 'U&"' + body.replace('"', '""') + '"'


def escaped(text: str) -> str:
    """Words of ours that may hold a name already quoted (``sql_literal``, ``sql_ident``) on
    one line, as data: what is not printable (a newline, a carriage return, a terminal's
    escape sequence, a bidirectional override) written as its escape. Not a literal: for
    text no agent writes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else escape_char(c) for c in text)
