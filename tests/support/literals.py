"""Reading back what the text outputs print as SQL literals (``recorder/literal.py``): the
tests parse each value where the report or transcript puts it, as PostgreSQL would, and
compare it whole, independently of the code that wrote it."""

from __future__ import annotations

_ESCAPED = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}
_WIDTHS = {"x": 2, "u": 4, "U": 8}


def literal_at(line: str, i: int) -> tuple[str, int]:
    """The value of the SQL literal (``'...'`` or ``E'...'``) at ``line[i]``, and where it
    ends: as PostgreSQL reads it."""
    escape = line.startswith("E'", i)
    i += 2 if escape else 1
    assert line[i - 1] == "'", (line, i)
    out = []
    while True:
        c = line[i]
        if c == "'":
            if line[i + 1 : i + 2] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        if escape and c == "\\":
            n = line[i + 1]
            if n in _ESCAPED:
                out.append(_ESCAPED[n])
                i += 2
            else:
                width = _WIDTHS[n]
                out.append(chr(int(line[i + 2 : i + 2 + width], 16)))
                i += 2 + width
            continue
        out.append(c)
        i += 1
