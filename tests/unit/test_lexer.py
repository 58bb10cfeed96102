"""The lexer's plain-SQL fast path must answer exactly as the reference lexer does.

``fingerprint_statements`` and ``lex`` take a shortcut (whole-text regex passes, tokens read
lazily off the canonical text) for plain statements and run the reference scanner on
everything else. The fingerprint cache's soundness rests on fingerprints, so any
disagreement between the two paths would be a way to make two statements look alike.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy import lexer as fpmod
from policy.lexer import fingerprint_statements, lex, literal_counts

# Pieces that make plain statements, and pieces that must push a text off the fast path.
_PLAIN = [
    "SELECT", "select", "From", " ", "  ", "\n", "\r\n", "\t", "\f", "\v", "a", "A", "abc",
    "x1", "_", "t_2", "1", "12", "1.5", "0", ".", ",", "(", ")", "::", ":", "[", "]", ";",
    "'x'", "''", "'a''b'", "'é;--/*$\"\\'", "+", "-", "*", "/", "<>", "=", "<=", "&", "|",
    "?", "#", "%", "^", "~", "!", "@", "`", "/* c */", "/**/", "/***/", "/*';$\"é*/",
    "/*\n*/", "-- c\n", "--;'x\n", "--", "/*", "*/",
    '"Q"', '"a b"', '"x""y"', '"it\'s;--/*"', '"values (1), (2)"', '"SELECT"', '""',
]  # fmt: skip
_OFF_PATH = [
    "e", "E", "b", "B", "x", "X", "u", "U", "n", "N", "$", "$1", "$$", "$a$", "'", '"',
    '"é"', '"\t"', "é", "\\", "1e5", "1_0", "0x1F", ".5", "{", "\x00", "U&", "/* /* */ */",
]  # fmt: skip
_sql = st.lists(st.sampled_from(_PLAIN + _OFF_PATH), max_size=30).map("".join)
_plain_sql = st.lists(st.sampled_from(_PLAIN), max_size=30).map("".join)


def _shape(statements):
    return [
        (s.sql, s.fingerprint, s.canon, list(s.tokens), s.literals, s.cacheable, s.error)
        for s in statements
    ]


def _check_agrees(sql: str) -> None:
    assert fingerprint_statements(sql) == fpmod._scan_fingerprints(sql), repr(sql)
    fresh = lex(sql)
    # head() and literal_counts() before the lazy tokens exist, then against them
    heads = [(s.head(1), s.head(2), s.head(3)) for s in fresh]
    counts = [s.literal_counts() for s in fresh]
    assert _shape(fresh) == _shape(fpmod._scan(sql)), repr(sql)
    for s, (h1, h2, h3), c in zip(fresh, heads, counts, strict=True):
        assert (h1, h2, h3) == (s.tokens[:1], s.tokens[:2], s.tokens[:3]), repr(sql)
        assert c == literal_counts(s.tokens), repr(sql)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(_sql)
def test_fast_path_agrees_with_reference_lexer(sql):
    _check_agrees(sql)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(_plain_sql)
def test_fast_path_agrees_on_plain_text(sql):
    _check_agrees(sql)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=40))
def test_fast_path_agrees_on_any_text(sql):
    _check_agrees(sql)


PLAIN_EXAMPLES = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
    "UPDATE pgbench_accounts SET abalance = abalance + -17 WHERE aid = 3;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
    "VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP);",
    "select 'a;b', 'it''s' from t where x <> 'é' ; select 1.5",
    "BEGIN;\nSELECT *\n  FROM orders o\n WHERE o.id = 7;\nCOMMIT",
    "SELECT '$$', '\"', '--', '/*' FROM t",
    "/* agent: inspect */ SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = 5",
    "SELECT 1 -- it's; a comment\n, 2; -- trailing",
    "SELECT /* ; ' */ a FROM t /* x */ WHERE b = 'c -- d'",
    'SELECT "Mixed" FROM t',
    'INSERT INTO "app_order" ("id", "note") VALUES (1, \'a\'), (2, \'b\')',
    'SELECT "app_order"."id" FROM "app_order" WHERE "app_order"."note" = \'x;"y"\' LIMIT 21',
    'SELECT "a""b", "it\'s", "--", "/*" FROM t; SELECT 1',
]

OFF_PATH_EXAMPLES = [
    "SELECT 1 /* nested /* comment */ */",
    "SELECT 1 /* unterminated",
    'SELECT "é" FROM t',
    'SELECT U&"x" FROM t',
    'SELECT a"b" FROM t',
    'SELECT "a"b FROM t',
    'SELECT 1"a" FROM t',
    'SELECT "tab\there" FROM t',
    'SELECT "unterminated FROM t',
    "SELECT E'\\n'",
    "SELECT B'0101', X'1F'",
    "SELECT U&'d\\0061t\\+000061'",
    "SELECT $1",
    "SELECT $$x$$",
    "SELECT 1e5",
    "SELECT 1_000",
    "SELECT .5",
    "SELECT a.5 FROM t",
    "SELECT 1. FROM t",
    "SELECT 'a'1",
    "SELECT 1'a'",
    "SELECT café FROM t",
    "SELECT 'unterminated",
    "SELECT {1}",
    "SELECT a$b FROM t",
]


def test_plain_statements_take_the_fast_path():
    # The point of the fast path: if it silently stopped applying, only speed would show.
    for sql in PLAIN_EXAMPLES:
        assert fpmod._plain_split(sql) is not None, sql
        _check_agrees(sql)


def test_everything_unusual_goes_to_the_reference_lexer():
    for sql in OFF_PATH_EXAMPLES:
        assert fpmod._plain_split(sql) is None, sql
        _check_agrees(sql)


def test_comments_are_separators_and_not_part_of_the_text():
    sql = "/* lead; */ SELECT a/*x*/b, 'q' -- it's\n FROM t; /* only a comment */"
    assert fpmod._plain_split(sql) is not None
    (only,) = lex(sql)  # the comment-only statement is dropped, as the reference does
    assert only.sql == "SELECT a/*x*/b, 'q' -- it's\n FROM t"
    assert only.fingerprint == "select a b, \x01\nfrom t"
    assert only.literals == ["q"]
    _check_agrees(sql)


def test_strings_keep_their_values_and_semicolons():
    (first, second) = lex("select 'a;b', 'it''s' from t ; select 2")
    assert first.literals == ["a;b", "it's"]
    assert first.canon == "select '0', '1' from t"
    assert [t.value for t in first.tokens if t.kind == "str"] == ["a;b", "it's"]
    assert second.sql == "select 2" and [t.value for t in second.tokens] == ["select", "2"]


def test_memo_never_answers_for_another_text():
    a, b = "SELECT 1 FROM t", "SELECT 2 FROM u -- c"
    for _ in range(3):
        assert fingerprint_statements(a)[0][1] != fingerprint_statements(b)[0][1]
        assert lex(a)[0].tokens[-1].value == "t"
        assert lex(b)[0].tokens[-1].value == "u"
    # an equal text in another str object is answered the same
    c = "".join(["SELECT 1 ", "FROM t"])
    assert c is not a and lex(c) == lex(a)


def test_long_operator_and_whitespace_runs_stay_linear():
    # A backtracking validator would take exponential time on these before declining.
    for sql in ("+" * 4000 + "$", " " * 20000 + '"', "a+" * 3000 + "{", "(" * 5000 + "'"):
        _check_agrees(sql)


@pytest.mark.parametrize("prefix", ["x", "X", "b", "B"])
def test_a_bit_string_ends_at_the_next_quote_as_in_postgresql(prefix):
    """B'...' and X'...' take no doubled quote: PostgreSQL reads x'''' as x'' then ''.
    Found by test_same_skeleton_different_literals: the cache merged x'''' with x''."""
    from policy.classify.crosscheck import pg_reading

    sql = f"SELECT {prefix}'''' FROM orders"
    assert lex(sql)[0].literals == ["", ""]
    assert isinstance(pg_reading(sql), str)  # PostgreSQL's parser refuses it too
    assert lex(f"SELECT {prefix}'' FROM orders")[0].fingerprint != lex(sql)[0].fingerprint
    assert lex("SELECT max'a''b'")[0].literals == ["a'b"]  # a word ending in x: a plain string
