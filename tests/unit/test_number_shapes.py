"""NumberShapes answers exactly what the lexer (fingerprint_statements) answers, for texts
whose only difference from one it has seen is the digits: numbers in every context the
lexer knows (identifiers, parameters, strings, comments, quoted identifiers, decimals,
exponents, hex, dollar quotes, non-ASCII words) and random SQL-ish text."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pglast import parser as pg
from pglast.error import Error as pg_error

from policy.lexer import fingerprint_statements
from policy.number_shapes import _NUMBER_RUN, _RUN, NumberShapes, shape_of

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
    'SELECT "col{n}" FROM t WHERE id = {n}',
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


# -- PostgreSQL's scanner reads every text of a remembered shape alike -----------------
# The engine's number-shape tier does not run PostgreSQL's scanner again (docs/decisions.md,
# "PostgreSQL's scanner and the number-shape tier"). The claim: if every run of digits in a
# text passes the regex guard (_NUMBER_RUN), the scanner gives every text of its shape the
# same tokens at the same places (an integer may be ICONST or FCONST: out of int32 range
# it is FCONST; the split looks at keywords, parentheses and ';' only), the same statement
# slices, or fails on all of them. The memo only remembers texts that pass the guard, so
# the claim covers whatever it remembers whatever the lexer says.

# digits next to every kind of token PostgreSQL's scanner has, in and out of strings,
# comments, quoted identifiers and dollar quotes; {n} is a run of digits
FRAGMENTS = [
    "SELECT", "select", "FROM t", "WHERE", "id", "x", "t{n}", "{n}t", "x{n}y", "é{n}",
    "{n}é", "{n}", " {n} ", "({n})", "[{n}]", "{n},{n}", "-{n}", "+{n}", "{n}+", "{n}-",
    "<{n}", "{n}>=", "{n}::int", "::{n}", "{n}.{n}", "{n}..{n}", ".{n}", "{n}.", "{n}e{n}",
    "{n}E+{n}", "{n}e-", "{n}_{n}", "_{n}", "0x{n}", "0X{n}f", "0o{n}", "0b{n}", "{n}x",
    "${n}", "${n}x", "$ {n}", "$$ {n} $$", "$${n}$$", "$q$ {n};{n} $q$", "$a{n}$ x $a{n}$",
    "$a$ $b{n}$ {n} $a$", "--{n}", "-- {n}\n", "-- {n};\n", "/*{n}*/", "/* {n} /* {n} */ */",
    "/*{n}", "*/ {n}", "'{n}'", "' {n} '", "'{n};{n}'", "'{n}''{n}'", "'{n}'\n'{n}'",
    "E'\\{n}'", "E'\\{n} '", "E'\\\\{n} '", "E' \\{n} {n}'", "E'\\x{n}'", "E'\\x{n} '",
    "E'\\u{n}'", "E'\\u{n} '", "E'\\U{n}'", "E'\\'{n}'", "e'{n}\\''", "U&'\\{n} '",
    "U&'\\+{n} '", "U&'!{n} ' UESCAPE '!'", "U&\"{n}\"", "U&\" {n} \"", "B'{n}'", "b' {n} '",
    "X'{n}'", "x' {n} '", "N'{n}'", "n' {n} '", "\"{n}\"", "\" {n} \"", "\"a\"\"{n}\"",
    "\\{n}", "{n}\\", "\\ {n}", ";", "; ", "{n};", ";{n}", "'", "\"", "$$", "$", "E'", "--",
    "/*", "*/", "\n", "\t", " ", "", "=", "||", "LIMIT {n}", "OFFSET {n}", "\x04 {n}",
]  # fmt: skip
RUNS = ["0", "1", "7", "8", "9", "00", "07", "10", "12", "99", "000", "377", "400", "777",
        "0000", "0041", "d800", "2147483647", "2147483648", "9999999999"]  # fmt: skip


def _fill(template: str, rng: random.Random) -> str:
    parts = template.split("{n}")
    return parts[0] + "".join(
        "".join(c if not c.isdigit() else rng.choice("0123456789") for c in rng.choice(RUNS)) + rest
        for rest in parts[1:]
    )


def _mate(text: str, rng: random.Random, runs: list[str]) -> str:
    """``text`` with every run of digits replaced by another of the same length."""
    out = []
    last = 0
    for m in _RUN.finditer(text):
        width = m.end() - m.start()
        pick = rng.choice([r for r in runs if len(r) == width and r.isdigit()] or ["0" * width])
        if rng.random() < 0.5:
            pick = "".join(rng.choice("0123456789") for _ in range(width))
        out += (text[last : m.start()], pick)
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def _scanner(text: str):
    """PostgreSQL's scanner on ``text``: its tokens (numbers as one kind), and its statement
    slices, or that it fails."""
    try:
        tokens = tuple(
            (t.start, t.end, "NUMBER" if t.name in ("ICONST", "FCONST") else t.name)
            for t in pg.scan(text)
        )
    except pg_error:
        tokens = None
    try:
        slices = tuple(
            (s.start, s.stop) for s in pg.split(text, with_parser=False, only_slices=True)
        )
    except pg_error:
        slices = None
    return tokens, slices


def _guarded(text: str) -> bool:
    runs = len(_RUN.findall(text))
    return runs > 0 and len(_NUMBER_RUN.findall(text)) == runs


# fragments whose runs pass the guard on their own (in strings, comments, dollar quotes,
# next to operators, ...), so that most generated texts are guarded
GUARDED = [f for f in FRAGMENTS if "{n}" not in f or _guarded(f.replace("{n}", "1"))]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=12),
        st.lists(st.sampled_from(GUARDED), min_size=1, max_size=12),
    ),
    st.lists(st.sampled_from([" ", "", "\n", "; ", ";", ", "]), min_size=12, max_size=12),
    st.randoms(use_true_random=False),
)
def test_the_scanner_reads_every_text_of_a_guarded_shape_alike(fragments, seps, rng):
    template = "".join(f + s for f, s in zip(fragments, seps, strict=False))
    text = _fill(template, rng)
    shapes = NumberShapes()
    shapes.fingerprints(text)
    remembered = shapes.known(text) is not None
    assert not remembered or _guarded(text), text  # the memo keeps only guarded texts
    event(f"guarded: {_guarded(text)}, remembered: {remembered}")
    if not _guarded(text):
        return
    reference = _scanner(text)
    for _ in range(4):
        mate = _mate(text, rng, RUNS)
        assert shape_of(mate) == shape_of(text)
        assert _scanner(mate) == reference, (text, mate)
        if remembered:
            assert shapes.known(mate) is not None


# Texts of one shape that the guard lets through: the memo remembers each (so the engine's
# shape tier may answer its mates without the scanner); each is tried with every run set
# to every value in RUNS of its width and to random digits.
REMEMBERED = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
    "SELECT 1 FROM t WHERE a = 2147483647 AND b = 10",  # ICONST or FCONST by value
    "SELECT id FROM t WHERE id = 12 -- x;\n",  # a comment after it
    "/* a; */ SELECT id FROM t WHERE id = 1 ; ",
    "SELECT a FROM t WHERE b IN (1, 2, 3) ORDER BY 1 LIMIT 10 OFFSET 400",
    "SELECT x[1:2] FROM t WHERE y::numeric(10,2) > -377 AND z <> +0",
    "SELECT 'a;b' || 'c', \"q;\" FROM t WHERE n = 1",
    "SELECT $$;$$, E'\\\\', 'x' FROM t WHERE n = 7",
    "SELECT 1 ; ",
]


@pytest.mark.parametrize("text", REMEMBERED)
def test_remembered_texts_scan_alike_for_every_digit_value(text):
    shapes = NumberShapes()
    shapes.fingerprints(text)
    assert shapes.known(text) is not None, text
    reference = _scanner(text)
    assert reference[1] is not None and len(reference[1]) == 1
    rng = random.Random(text)
    for _ in range(60):
        mate = _mate(text, rng, RUNS)
        assert shapes.known(mate) is not None
        assert _scanner(mate) == reference, mate


def test_a_digit_after_a_backslash_is_never_remembered():
    """The counterexample the guard is built around: in an E'' string ``\\1`` is an octal
    escape and ``\\0`` a NUL byte, so PostgreSQL's scanner reads ``E'\\1 '`` and fails on
    ``E'\\0 '`` (invalid byte sequence), two texts of one shape. No quote, letter, ``.``
    or ``$`` touches the digit, so only the backslash in the guard keeps such a run out of
    the memo without trusting the lexer (which knows E'' strings and never makes these
    digits a number)."""
    read, fails = "SELECT E'\\1 ' , 5", "SELECT E'\\0 ' , 5"
    assert shape_of(read) == shape_of(fails)
    assert _scanner(read)[1] is not None and _scanner(fails)[1] is None
    for text in (read, fails, "SELECT E'\\400 '", "SELECT 1\\ 2", "SELECT \\1"):
        assert not _guarded(text), text
        shapes = NumberShapes()
        shapes.fingerprints(text)
        assert shapes.known(text) is None, text
