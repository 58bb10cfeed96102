"""Differential corpus: PostgreSQL 15's own regression SQL through both parsers.

``tests/data/pg15_regress_statements.json.gz`` holds the 40,000-odd statements of the
``src/test/regress/sql`` files of PostgreSQL 15.18 (Debian source package
``postgresql-15_15.18``) that libpg_query reads as exactly one statement, without psql
meta-commands or variables; rebuilt with ``tests/data/build_corpus.py``. PostgreSQL is
distributed under the PostgreSQL License, which permits copying these files with its
copyright notice (``tests/data/POSTGRESQL-COPYRIGHT``).

The test fails if any statement PostgreSQL's parser says touches a relation or calls a
function is classified as touching none (the policy would allow it as a relation-free
statement); it reports how often the parsers disagree.
"""

from __future__ import annotations

import collections
import gzip
import json
import pathlib

import pytest

from policy.classify import StatementClass, classify
from policy.classify.crosscheck import DISAGREE, pg_reading
from policy.classify.pgparse import BARRIER_LOWERED

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CORPUS = pathlib.Path(__file__).parents[1] / "data" / "pg15_regress_statements.json.gz"
S = StatementClass
# Classes the policy can allow with no relation named: the ones that must not hide any.
_OPEN = (S.READ, S.WRITE, S.DDL, S.SESSION_SET, S.TRANSACTION, S.UTILITY)
_ALLOWED_UTILITY = frozenset({"LISTEN", "UNLISTEN", "DEALLOCATE", "DISCARD", "FETCH", "MOVE", "CLOSE"})


def _can_allow(c) -> bool:
    return c.cls in _OPEN and (c.cls is not S.UTILITY or c.command in _ALLOWED_UTILITY)


# what pgparse refuses although it read the statement (a PgParseError of its own)
_REFUSED_BY_THE_READING = (BARRIER_LOWERED,)


def test_regression_corpus_hides_no_relation_or_call():
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        corpus = json.load(f)
    assert len(corpus) > 30000
    outcome = collections.Counter()
    hidden = []
    for source, sql in corpus:
        pg = pg_reading(sql)
        if isinstance(pg, str) and pg.startswith(_REFUSED_BY_THE_READING):
            # read, and refused by PostgreSQL's reading itself (pgparse): never allowed
            assert not any(_can_allow(r) for r in classify(sql)), (source, sql)
            outcome["refused"] += 1
            continue
        assert not isinstance(pg, str), (source, sql, pg)  # the corpus was built that way
        results = classify(sql)
        if len(results) != 1:  # the proxy's lexer splits it elsewhere: all refused
            assert not any(_can_allow(r) for r in results), (source, sql, results)
            outcome["disagree"] += 1
            continue
        (c,) = results
        if c.cls is S.UNKNOWN:
            outcome["disagree" if c.detail.startswith(DISAGREE) else "unknown"] += 1
            continue
        outcome["pg-only" if "decided on PostgreSQL's reading" in c.detail else "both"] += 1
        touches = pg.relations or pg.functions
        if touches and _can_allow(c) and not (c.reads or c.writes or c.functions):
            hidden.append((source, sql[:200], c.cls.name, c.command))
    total = len(corpus)
    report = ", ".join(f"{k} {v} ({v / total:.1%})" for k, v in sorted(outcome.items()))
    print(f"\n{total} statements: {report}")
    assert not hidden, hidden[:20]
