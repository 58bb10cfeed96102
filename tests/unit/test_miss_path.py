"""The shortcuts of the classification miss path must answer as their reference paths do.

A miss (a statement no cache knows) is lexed, parsed by sqlglot and by PostgreSQL's parser,
walked twice and reconciled; the pieces below take shortcuts there (memos of pure name
functions, two words read without the tokenizer, a constructor spelled out). Each is
compared with the code it stands for, on PostgreSQL's regression statements and on
generated text.
"""

from __future__ import annotations

import dataclasses
import gc
import gzip
import inspect
import json
import pathlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy import lexer
from policy.classify import Classified, StatementClass, catalogue, crosscheck, pgparse
from policy.lexer import lex, parse_qualified_name, render_name
from policy.memo import MEMO_SIZE

CORPUS = pathlib.Path(__file__).parents[1] / "data" / "pg15_regress_statements.json.gz"


@pytest.fixture(scope="module")
def corpus_sample() -> list[str]:
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        corpus = json.load(f)
    return [sql for _source, sql in corpus[::7]]


_name = st.text(
    alphabet=st.sampled_from(list('abzAZ_09$ ."é\x00\t') + ["ß", "İ", "\ud7ff"]), max_size=12
)


@given(st.lists(_name, min_size=1, max_size=3))
@settings(max_examples=400, deadline=None)
def test_render_name_memo_answers_as_the_function(parts):
    expected = lexer._render_name(tuple(parts))
    assert render_name(*parts) == expected
    assert render_name(*parts) == expected  # the second call may come from the memo


@given(_name)
@settings(max_examples=400, deadline=None)
def test_parse_qualified_name_memo_answers_as_the_function(text):
    expected = lexer._parse_qualified_name(text)
    for _ in range(2):
        found = parse_qualified_name(text)
        assert found == (None if expected is None else list(expected))
        if found is not None:
            found.append(("mutated", False))  # a caller's list is its own


def test_name_memos_stay_bounded_and_skip_long_names():
    long = "x" * (lexer._NAME_MEMO_MAX + 1)
    assert render_name("public", long) == "public." + long
    assert ("public", long) not in lexer._rendered
    assert parse_qualified_name(long) == [(long[:63], False)]
    assert long not in lexer._qualified
    for i in range(MEMO_SIZE + 10):
        render_name(f"n{i}")
        parse_qualified_name(f"s.n{i}")
    assert len(lexer._rendered) <= MEMO_SIZE
    assert len(lexer._qualified) <= MEMO_SIZE


def _heads_agree(sql: str) -> None:
    for stmt in lex(sql):
        if stmt._tokens is not None:
            continue  # the reference lexer's statements keep their tokens
        for n in (1, 2, 3):
            reference = lexer._canon_tokens(stmt.canon, stmt.literals, stmt._numbers or [], n)
            assert stmt.head(n) == reference, (sql, n)
        assert stmt._tokens is None  # head() does not tokenize the whole statement


def test_head_agrees_with_the_tokenizer_on_the_regression_corpus(corpus_sample):
    for sql in corpus_sample:
        _heads_agree(sql)


_words = st.lists(
    st.sampled_from(
        ["select", "SELECT", "x", "a$b", "_", "t1", " ", "  ", "\n", "(", "'s'", "1", '"Q"',
         ";", "--c\n", "/*c*/", "é", "$1", "::", "*"]
    ),
    max_size=8,
).map("".join)  # fmt: skip


@given(_words)
@settings(max_examples=500, deadline=None)
def test_head_agrees_with_the_tokenizer_on_generated_text(sql):
    _heads_agree(sql)


def test_with_pg_is_dataclasses_replace():
    """``crosscheck._with_pg`` spells the constructor out: every field must carry over."""
    values = {
        "sql": "select 1",
        "cls": StatementClass.WRITE,
        "command": "UPDATE",
        "reads": frozenset({"public.a"}),
        "writes": frozenset({"public.b"}),
        "functions": frozenset({"f"}),
        "detail": "d",
        "write_ops": frozenset({("update", "public.b")}),
        "operators": frozenset({"="}),
        "attributes": frozenset({"x"}),
        "types": frozenset({"public.t"}),
        "describes": frozenset({"oid:16385"}),
        "only": frozenset({"public.a"}),
        "rows_idle": True,
    }
    assert {f.name for f in dataclasses.fields(Classified)} == set(values)
    c = Classified(**values)
    new = crosscheck._with_pg(c, {"g"}, frozenset({"+"}), frozenset({"y"}), frozenset({"u"}))
    assert new == dataclasses.replace(
        c, functions=frozenset({"g"}), operators=frozenset({"+"}), attributes=frozenset({"y"}),
        types=frozenset({"u"}),
    )  # fmt: skip


def test_walk_statement_kinds_list_every_branch():
    """Kinds outside ``_STATEMENT_KINDS`` skip ``_Walk.statement``'s branches."""
    source = inspect.getsource(pgparse._Walk.statement)
    named = set(re.findall(r'"([A-Za-z]+Stmt)"', source))
    named |= set(pgparse._TARGET_ROLE) | set(pgparse._DDL_RELATION_KEYS)
    assert named <= pgparse._STATEMENT_KINDS
    assert set(pgparse._NODES).isdisjoint(pgparse._WITH_OWNERS)


def test_a_classified_statement_leaves_no_cyclic_garbage():
    """``Collector.release``: the sqlglot tree is freed by reference counting.

    (Not every statement: sqlglot leaves cyclic pieces of its own behind for some syntax,
    a JOIN ... USING for one, and a statement it cannot read leaves its tree to a traceback.)"""
    from sqlglot import exp

    from policy.classify import classify

    def trees() -> int:
        return sum(isinstance(o, exp.Expression) for o in gc.get_objects())

    classify("SELECT a FROM t WHERE b = 1")  # warm: sqlglot's own module-level nodes
    gc.collect()
    gc.disable()
    try:
        before = trees()
        for i in range(20):
            for sql in (
                f"UPDATE t{i} SET a = a + {i} WHERE id = (SELECT max(id) FROM u)",
                f"EXPLAIN SELECT * FROM t{i} WHERE id IN (SELECT id FROM u)",
                f"PREPARE p{i} AS SELECT a FROM t{i} WHERE b = $1",
                f"EXECUTE p{i} ((SELECT max(id) FROM u))",
                f"COPY t{i} (a, b) FROM STDIN",
            ):
                (c,) = classify(sql)
                assert c.cls is not StatementClass.UNKNOWN or c.command == "EXECUTE", c
        assert trees() - before < 10
    finally:
        gc.enable()


@given(st.text(alphabet=st.sampled_from(list('abglopr_tsn$0."')), max_size=14))
@settings(max_examples=400, deadline=None)
def test_function_catalogue_memos_answer_as_the_checks(name):
    for _ in range(2):
        assert catalogue.is_builtin_function(name) == catalogue._is_builtin_function(name)
        assert catalogue.is_dangerous_function(name) == catalogue._is_dangerous_function(name)


def test_function_catalogue_memos_on_every_listed_name():
    names = (
        catalogue.BUILTIN_FUNCTIONS
        | catalogue.DANGEROUS_FUNCTIONS
        | catalogue.TYPED_FUNCTIONS
        | catalogue.CATALOG_STATE_FUNCTIONS
        | catalogue.LITERAL_NAME_FUNCTIONS
        | {p + "x" for p in catalogue.DANGEROUS_PREFIXES + catalogue.BUILTIN_PREFIXES}
        | {"pg_x_is_visible", "has_x_privilege", "pg_stat_get_backend_pid", "lo_x", "f" * 200}
    )
    for name in sorted(names):
        for _ in range(2):
            assert catalogue.is_builtin_function(name) == catalogue._is_builtin_function(name)
            assert catalogue.is_dangerous_function(name) == catalogue._is_dangerous_function(name)
    assert not catalogue.is_builtin_function("pg_read_file")
    assert catalogue.is_dangerous_function("pg_read_file")


def test_parse_tree_decoding_is_json_loads(corpus_sample):
    from pglast import parser as pg

    for sql in corpus_sample[::5]:
        assert pgparse._tree(sql) == (json.loads(pg.parse_sql_json(sql)).get("stmts") or [])


@given(st.text(alphabet=st.sampled_from(list("ab_z90.5 \n'\x01\x04\x05(),-+é")), max_size=20))
@settings(max_examples=1000, deadline=None)
def test_number_pattern_matches_its_plain_spelling(text):
    plain = re.compile(r"(?<![a-z0-9_])[0-9]+(?:\.[0-9]+)?")
    assert lexer._PLAIN_NUM_RE.sub("\x04", text) == plain.sub("\x04", text)
    assert lexer._PLAIN_NUM_RE.findall(text) == plain.findall(text)
