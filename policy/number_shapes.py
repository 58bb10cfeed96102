"""The lexer's fingerprints, remembered per *number shape* of a statement's text.

Statements that differ only in the digits of their number literals (``aid = 17`` and
``aid = 52``: what pgbench, ORMs and agents send) lex alike: same boundaries, same
fingerprint. ``NumberShapes.fingerprints(sql)`` answers exactly what
``policy.lexer.fingerprint_statements(sql)`` would, from the answer the lexer gave
for an earlier text of the same shape, and asks the lexer otherwise.

The shape is the text with every digit replaced by ``0`` (same length, same characters
everywhere else), so two texts of one shape have their digits in the same places. A
lexer's answer is remembered only when the lexer's fingerprint holds one number
placeholder per run of digits in the text (so every run was a number of its own, none
sat inside an identifier, string, quoted identifier or comment: the rule the tests show
to be needed), and, as a second guard, the text shows each run as a number without
lexing: nothing but separators and operators around it (no letter, ``_``, ``$``, ``.``,
quote, backslash or non-ASCII character: no ``t1``, ``$1``, ``1.5``, ``1e5``, ``0x1f``,
``1_000``, ``E'\\1 '``).
With only the digits' values changing, nothing the lexer decides on changes (the
fingerprint cache already treats such texts as one). Only single-statement texts are
remembered. The second guard alone (whatever the lexer says) also keeps PostgreSQL's
scanner from telling two texts of one shape apart: it splits them at the same places
(docs/decisions.md, "PostgreSQL's scanner and the number-shape tier"), which is why the
engine's number-shape tier (``StatementPolicy._from_shape``) does not run it again;
tests/unit/test_number_shapes.py attacks both claims on generated text.
"""

from __future__ import annotations

import re

from policy.lexer import fingerprint_statements

__all__ = ["ZERO_DIGITS", "NumberShapes", "shape_of"]

# the table ``shape_of`` translates a text's UTF-8 bytes with (every digit to 0)
ZERO_DIGITS = _ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_RUN = re.compile(r"[0-9]+")
# a run of digits that can only be a number of its own, whatever its digits
_NOT_AROUND = r"0-9A-Za-z_.$'\"\\\x80-\U0010ffff"
_NUMBER_RUN = re.compile(rf"(?<![{_NOT_AROUND}])[0-9]+(?![{_NOT_AROUND}])")
_FP_NUM = "\x04"  # the lexer's number placeholder in fingerprints

Answer = list[tuple[str, str, bool]] | None


class NumberShapes:
    """A bounded, process-wide memo of ``fingerprint_statements`` by number shape."""

    def __init__(self, size: int = 4096, max_text: int = 2048):
        self.size = size
        self.max_text = max_text
        # shape -> (characters before the statement's text, after it, fingerprint, cacheable)
        self._by_shape: dict[bytes, tuple[int, int, str, bool]] = {}

    def clear(self) -> None:
        self._by_shape.clear()

    def known(self, sql: str) -> tuple[bytes, int, int] | None:
        """(shape, characters before the statement's text, after it) if ``sql``'s shape is
        remembered: ``fingerprints(sql)`` would answer from it without the lexer."""
        if len(sql) > self.max_text:
            return None
        shape = shape_of(sql)
        if shape is None:
            return None
        hit = self._by_shape.get(shape)
        return None if hit is None else (shape, hit[0], hit[1])

    def fingerprints(self, sql: str) -> Answer:
        if len(sql) > self.max_text:
            return fingerprint_statements(sql)
        try:
            shape = sql.encode("utf-8", "surrogatepass").translate(_ZERO_DIGITS)
        except UnicodeError:
            return fingerprint_statements(sql)
        hit = self._by_shape.get(shape)
        if hit is not None:
            lead, tail, fingerprint, cacheable = hit
            return [(sql[lead : len(sql) - tail], fingerprint, cacheable)]
        answer = fingerprint_statements(sql)
        entry = _entry(sql, answer)
        if entry is not None:
            by_shape = self._by_shape
            if len(by_shape) >= self.size:
                try:
                    by_shape.pop(next(iter(by_shape)))
                except (StopIteration, KeyError, RuntimeError):  # another thread got there
                    pass
            by_shape[shape] = entry
        return answer


def shape_of(sql: str) -> bytes | None:
    """``sql``'s number shape (None: a lone surrogate, not encodable)."""
    try:
        return sql.encode("utf-8", "surrogatepass").translate(_ZERO_DIGITS)
    except UnicodeError:
        return None


def _entry(sql: str, answer: Answer) -> tuple[int, int, str, bool] | None:
    """What to remember for ``sql``'s shape, or None if the rule above does not hold."""
    if not answer or len(answer) != 1 or _FP_NUM in sql:
        return None
    text, fingerprint, cacheable = answer[0]
    runs = len(_RUN.findall(sql))
    if not runs or len(_NUMBER_RUN.findall(sql)) != runs or fingerprint.count(_FP_NUM) != runs:
        return None
    lead = sql.find(text)
    if lead < 0:
        return None
    tail = len(sql) - lead - len(text)
    if _RUN.search(sql, 0, lead) or _RUN.search(sql, lead + len(text)):
        return None  # (the text holds every digit, so its place is the same in the shape)
    return lead, tail, fingerprint, cacheable
