"""What a plan runs, read from a definition's text (red-team rounds 81-82): a function other
than a SQL one that a definition calls only with a column among its arguments is never
folded to a constant, so no plan runs it; every other call is kept, and so is anything the
text does not show as a call (``pgparse.column_bound_calls``, the loader's
``_plan_code_rows``)."""

from __future__ import annotations

import pytest

from policy.classify.pgparse import PgParseError, column_bound_calls
from proxy.catalog_loader import _plan_code_rows

INDEX = "CREATE INDEX ix ON s.t USING btree ({})"
CHECK = "ALTER TABLE pgwitness_check ADD CHECK ({})"


@pytest.mark.parametrize(
    ("definition", "want"),
    [
        (INDEX.format("x.norm(v)"), {"x.norm": True}),
        (INDEX.format("x.norm((v)::text)"), {"x.norm": True}),  # a cast of a column
        (INDEX.format("x.f(v, 5)"), {"x.f": True}),  # one column is enough
        (INDEX.format("(id + x.cutoff())"), {"x.cutoff": False}),
        (INDEX.format("x.f(5)"), {"x.f": False}),
        # nested: the inner call's arguments are constants, the outer's a column
        (INDEX.format("x.f(v, x.g(1))"), {"x.f": True, "x.g": False}),
        # the inner one is folded first, then the outer: both run
        (INDEX.format("x.f(x.g(1))"), {"x.f": False, "x.g": False}),
        # a CASE whose column folds away: not a bare column, kept
        (CHECK.format("x.f(CASE WHEN true THEN 1 ELSE id END) > 0"), {"x.f": False}),
        (CHECK.format("x.f(COALESCE(1, id)) > 0"), {"x.f": False}),
        # one call of a column, one of constants: kept
        (CHECK.format("x.f(id) > 0 AND x.f(1) > 0"), {"x.f": False}),
        (CHECK.format("x.f(a => id) > 0"), {"x.f": True}),  # named
        ('CREATE INDEX ix ON s.t USING btree ("X"."Norm"(v))', {'"X"."Norm"': True}),
    ],
)
def test_which_calls_have_a_column_argument(definition, want):
    assert column_bound_calls(definition) == want


def test_an_unreadable_definition_raises():
    with pytest.raises(PgParseError):
        column_bound_calls("CREATE INDEX (((")


def row(fn: str, is_sql: bool, definition: str) -> list[str]:
    schema, name = fn.split(".")
    return ["s", "t", schema, name, "true" if is_sql else "false", definition]


def test_the_loader_leaves_out_only_a_column_bound_call_of_a_function_not_sql():
    rows = [
        row("x.norm", False, INDEX.format("x.norm(v)")),  # left out
        row("x.sqlnorm", True, INDEX.format("x.sqlnorm(v)")),  # inlined: kept
        row("x.cutoff", False, INDEX.format("(id + x.cutoff())")),
        row("x.opf", False, INDEX.format("(v OPERATOR(x.###) 1)")),  # an operator's: kept
        row("x.keyf", False, ""),  # a parent's key, no text: kept
        row("x.bad", False, "CREATE INDEX ((("),  # unreadable: kept
    ]
    kept = {fn for _s, _t, _fs, fn in _plan_code_rows(rows)}
    assert kept == {"sqlnorm", "cutoff", "opf", "keyf", "bad"}


def test_a_function_kept_by_any_definition_is_kept():
    rows = [
        row("x.f", False, INDEX.format("x.f(v)")),
        row("x.f", False, CHECK.format("x.f(1) > 0")),
    ]
    assert _plan_code_rows(rows) == [("s", "t", "x", "f")]
