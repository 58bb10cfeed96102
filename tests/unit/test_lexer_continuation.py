"""String continuation as PostgreSQL's scanner reads it (scan.l's quotecontinue): the
proxy's lexer against PostgreSQL's own scanner (pglast), which is the judge."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import parser as pg

from policy.classify.crosscheck import token_signature
from policy.engine import _key
from policy.lexer import fingerprint_statements, lex

_BODY = st.text(alphabet="ab\\' ", max_size=6)
_GAP = st.sampled_from(
    ["\n", "\r", " \n ", "\t\n", " -- c\n", "\n-- c\n  ", "\n\n", " ", " /* c */\n", "\f\n"]
)


def _e_body(raw: str) -> str:
    # a body an E-string accepts: quotes doubled, backslashes escaped
    return raw.replace("'", "''").replace("\\", "\\\\")


def _bits(raw: str) -> str:
    return "".join("1" if c == "a" else "0" for c in raw if c in "ab")


def _pg_value(sql: str) -> str | None:
    """The value of the one constant left of ``|| 'z'`` as PostgreSQL parses it (None: a
    syntax error, e.g. two constants side by side where no continuation joins them)."""
    try:
        tree = json.loads(pg.parse_sql_json(sql))
    except pg.ParseError:
        return None
    target = tree["stmts"][0]["stmt"]["SelectStmt"]["targetList"][0]["ResTarget"]["val"]
    const = target["A_Expr"]["lexpr"]["A_Const"]
    if "bsval" in const:
        return const["bsval"]["bsval"][1:]  # b0101 / x1f: the prefix letter first
    return const.get("sval", {}).get("sval", "")


@given(st.sampled_from(["E", "", "B", "X"]), _BODY, st.lists(st.tuples(_GAP, _BODY), max_size=3))
@settings(max_examples=500, deadline=None)
def test_the_lexer_reads_continued_strings_as_postgres_does(prefix, first, continuations):
    """A string followed by continuations, then ``|| 'z'``: the proxy's literal values are
    PostgreSQL's (an E-string or bit string and its continuations are one literal; a
    standard string's continuations are literals of their own whose text joins to it)."""
    body = _bits if prefix in ("B", "X") else _e_body
    sql = f"SELECT {prefix}'{body(first)}'" + "".join(
        f"{gap}'{body(b)}'" for gap, b in continuations
    ) + " || 'z'"
    expected = _pg_value(sql)
    statement = lex(sql)[0]
    if expected is None:
        return  # PostgreSQL refuses it: nothing runs, whatever the proxy's reading
    assert not statement.error, (sql, statement.error)
    literals = statement.literals
    assert literals[-1] == "z", (sql, literals)
    if prefix in ("E", "B", "X"):
        assert literals[:-1] == [expected], (sql, literals, expected)
    else:
        assert "".join(literals[:-1]) == expected, (sql, literals, expected)


def test_an_e_string_continues_in_its_own_mode():
    sql = "SELECT E'a'\n'\\' || ' || (SELECT secret FROM s.v) --'"
    statement = lex(sql)[0]
    assert statement.literals == ["a' || "]  # the E-string PostgreSQL reads
    fp = fingerprint_statements(sql)[0][1]
    assert "s.v" in fp  # the subquery is code, not string
    assert fp != fingerprint_statements("SELECT E'a'\n'b' || 'c'")[0][1]


def test_a_bit_string_continues_in_its_own_mode():
    statement = lex("SELECT X'1'\n'0' || B'1'\n  \n'1'")[0]
    assert statement.literals == ["10", "11"]


def test_not_a_continuation_without_a_newline_or_across_a_block_comment():
    assert lex("SELECT E'a' /* c */\n'b'")[0].literals == ["a", "b"]
    assert lex("SELECT E'a' 'b'")[0].literals == ["a", "b"]


def test_the_cache_key_holds_postgres_reading():
    """Two texts the lexer gave one fingerprint (as the old lexer did) are two keys when
    PostgreSQL's scanner reads them differently; texts that differ only in literal values
    (and in case, spacing and comments) share one."""
    fp = "select \x02\n\x01 || \x01"
    primer, attack = "SELECT E'a'\n'b' || 'c'", "SELECT E'a'\n'\\' || ' || (SELECT 1) --'"
    assert token_signature(primer) != token_signature(attack)
    assert _key(fp, primer) != _key(fp, attack)
    same = ("SELECT * FROM t WHERE a = 1 AND b = 'x'", "select *  from T where a = 22 /* c */ and b = 'y''z'")
    assert _key("f", same[0]) == _key("f", same[1])
    assert _key("f", 'SELECT "T"') != _key("f", "SELECT T")  # quoted names keep their case
    assert _key("f", "SELECT '") is None  # the scanner refuses it: not cached
