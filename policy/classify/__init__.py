"""Statement classification: PostgreSQL text -> ``Classified`` per statement (pure).

The package, one concern per module:

* ``model``: ``StatementClass``, ``Classified``;
* ``catalogue``: built-in, dangerous and catalog-state functions;
* ``collector``: sqlglot parsing and the walk collecting relations and functions;
* ``handlers``: statements classified from tokens alone;
* ``classifier``: the dispatch between the two, fail closed;
* ``pgparse`` and ``crosscheck``: PostgreSQL's own parser as a second opinion, reconciled
  with sqlglot's reading into the ``Classified`` the policy decides on.
"""

from __future__ import annotations

from dataclasses import replace

from policy.classify.catalogue import (
    BUILTIN_FUNCTIONS,
    CURRENT_SETTING_PREFIX,
    DANGEROUS_FUNCTIONS,
    LITERAL_NAME_FUNCTIONS,
    SET_CONFIG_PREFIX,
    TYPED_FUNCTIONS,
    is_builtin_function,
    is_dangerous_function,
)
from policy.classify.classifier import Classifier
from policy.classify.crosscheck import pg_readings, reconcile
from policy.classify.model import Classified, StatementClass
from policy.classify.pgparse import without_planner_options
from policy.lexer import Statement, lex, render_name

__all__ = [
    "BUILTIN_FUNCTIONS",
    "DANGEROUS_FUNCTIONS",
    "LITERAL_NAME_FUNCTIONS",
    "CURRENT_SETTING_PREFIX",
    "SET_CONFIG_PREFIX",
    "TYPED_FUNCTIONS",
    "Classified",
    "StatementClass",
    "classify",
    "classify_statement",
    "is_builtin_function",
    "is_dangerous_function",
    "render_name",
]


_ROUTINES = frozenset(("CREATE FUNCTION", "CREATE PROCEDURE"))


def classify_statement(
    stmt: Statement, search_path: tuple[str, ...] = ("public",), pg=None
) -> tuple[Classified, bool]:
    """Classify one lexed statement; the flag says whether its fingerprint may stand for it.

    Both parsers read it (``crosscheck``); ``pg`` is PostgreSQL's reading when the
    caller parsed the whole text (``crosscheck.pg_readings``), else it is parsed here."""
    classified, cacheable = Classifier(search_path).run(stmt)
    decided = reconcile(stmt, classified, cacheable, search_path, pg)
    if decided[0].cls is StatementClass.UNKNOWN and classified.command == "CREATE" and (
        classified.detail.startswith("unsupported statement: CREATE")
    ):
        # a function whose planner options sqlglot cannot read: both parsers read it again
        # without them, and that reading decides it (the text recorded stays the client's)
        plain = without_planner_options(stmt.sql)
        if plain is not None:
            again = lex(plain)
            if len(again) == 1:
                reread, _ = Classifier(search_path).run(again[0])
                got, _ = reconcile(again[0], reread, False, search_path, None)
                if got.cls is StatementClass.DDL and got.command in _ROUTINES:
                    return replace(got, sql=classified.sql), False
    return decided


def classify(sql: str, search_path: tuple[str, ...] = ("public",)) -> tuple[Classified, ...]:
    """Classify every statement of ``sql`` (empty statements are skipped)."""
    stmts = lex(sql)
    pgs = pg_readings(sql, len(stmts)) if stmts else []
    return tuple(
        classify_statement(stmt, search_path, pg)[0] for stmt, pg in zip(stmts, pgs, strict=True)
    )
