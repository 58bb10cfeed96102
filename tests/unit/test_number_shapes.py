"""NumberShapes answers exactly what the lexer (fingerprint_statements) answers, for texts
whose only difference from one it has seen is the digits: numbers in every context the
lexer knows (identifiers, parameters, strings, comments, quoted identifiers, decimals,
exponents, hex, dollar quotes, non-ASCII words) and random SQL-ish text."""

from __future__ import annotations

import random

import pytest

from policy.lexer import fingerprint_statements
from policy.number_shapes import NumberShapes

TEMPLATES = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = {n};",
    "  SELECT abalance FROM pgbench_accounts WHERE aid = {n} ; ",
    "UPDATE pgbench_tellers SET tbalance = tbalance + {n} WHERE tid = {n};",
    "INSERT INTO h (a, b, c) VALUES ({n}, -{n}, {n}) RETURNING id",
    "SELECT * FROM t{n} WHERE a = {n}",
    "SELECT $1::int + {n}",
    "SELECT ${n} + {n}",
    "SELECT '{n}' || x FROM t WHERE id = {n}",
    "SELECT E'\\\\{n}' , {n}",
    "SELECT \"col{n}\" FROM t WHERE id = {n}",
    "SELECT {n}.{n} FROM t",
    "SELECT {n}e{n}, {n} FROM t",
    "SELECT 0x{n}, {n}",
    "SELECT {n}_{n}",
    "SELECT {n}x FROM t",
    "SELECT x{n} FROM t",
    "-- note {n}\nSELECT {n}",
    "/* {n} */ SELECT id FROM t WHERE id = {n}",
    "SELECT id FROM t WHERE id = {n} -- {n}",
    "SELECT $$ {n} $$, {n}",
    "SELECT $a{n}$ x $a{n}$, {n}",
    "SELECT é{n} FROM t WHERE id = {n}",
    "SELECT id FROM t WHERE id = {n}; SELECT {n}",
    "SELECT id FROM t WHERE id IN ({n}, {n}, {n}) LIMIT {n} OFFSET {n}",
    "SELECT a[{n}] FROM t WHERE b::numeric({n},{n}) > {n}",
    "SELECT U&'\\00{n}' , {n}",
    "SELECT {n}",
    "SELECT 1",  # no run of its own besides this one
    "SELECT \x04 + {n}",
    "PREPARE p{n} AS SELECT {n}",
    "SELECT ({n})::int",
    "SELECT id FROM t WHERE id={n}AND x",
]


def _digits(rng: random.Random, width: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(width))


@pytest.mark.parametrize("template", TEMPLATES)
def test_same_shape_same_answer_as_the_lexer(template):
    rng = random.Random(template)
    shapes = NumberShapes()
    for width in (1, 2, 3, 6):
        n = template.count("{n}")
        for _ in range(6):
            values = [_digits(rng, width) for _ in range(n)]
            sql = template.replace("{n}", "\x00").split("\x00")
            text = sql[0] + "".join(v + rest for v, rest in zip(values, sql[1:], strict=True))
            assert shapes.fingerprints(text) == fingerprint_statements(text), text


def test_the_memo_answers_pgbench_statements_without_the_lexer(monkeypatch):
    shapes = NumberShapes()
    first = "SELECT abalance FROM pgbench_accounts WHERE aid = 11;"
    assert shapes.fingerprints(first) == fingerprint_statements(first)
    calls = []
    import policy.number_shapes as mod

    monkeypatch.setattr(mod, "fingerprint_statements", lambda s: calls.append(s))
    got = shapes.fingerprints("SELECT abalance FROM pgbench_accounts WHERE aid = 97;")
    assert calls == []  # a remembered shape
    assert got == fingerprint_statements("SELECT abalance FROM pgbench_accounts WHERE aid = 97;")
    # an identifier with digits is never remembered: t1 and t2 are different tables
    monkeypatch.setattr(mod, "fingerprint_statements", fingerprint_statements)
    shapes.fingerprints("SELECT * FROM t1")
    monkeypatch.setattr(mod, "fingerprint_statements", lambda s: calls.append(s))
    shapes.fingerprints("SELECT * FROM t2")
    assert calls == ["SELECT * FROM t2"]


ALPHABET = list("abcxyz_ ;,.()'\"-/*$=+:\n\té") + ["SELECT ", "FROM ", "--", "/*", "*/", "$$", "E'"]


def test_random_text_same_answer_as_the_lexer():
    rng = random.Random(14)
    shapes = NumberShapes(size=64)
    for _ in range(3000):
        parts = []
        for _ in range(rng.randint(1, 14)):
            if rng.random() < 0.35:
                parts.append(_digits(rng, rng.randint(1, 3)))
            else:
                parts.append(rng.choice(ALPHABET))
        text = "".join(parts)
        shapes.fingerprints(text)  # remembered if the rule holds
        other = "".join(rng.choice("0123456789") if c.isdigit() else c for c in text)
        assert shapes.fingerprints(other) == fingerprint_statements(other), (text, other)
