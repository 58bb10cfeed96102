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


def classify_statement(
    stmt: Statement, search_path: tuple[str, ...] = ("public",), pg=None
) -> tuple[Classified, bool]:
    """Classify one lexed statement; the flag says whether its fingerprint may stand for it.

    Both parsers read it (``crosscheck``); ``pg`` is PostgreSQL's reading when the
    caller parsed the whole text (``crosscheck.pg_readings``), else it is parsed here."""
    classified, cacheable = Classifier(search_path).run(stmt)
    return reconcile(stmt, classified, cacheable, search_path, pg)


def classify(sql: str, search_path: tuple[str, ...] = ("public",)) -> tuple[Classified, ...]:
    """Classify every statement of ``sql`` (empty statements are skipped)."""
    stmts = lex(sql)
    pgs = pg_readings(sql, len(stmts)) if stmts else []
    return tuple(
        classify_statement(stmt, search_path, pg)[0] for stmt, pg in zip(stmts, pgs, strict=True)
    )
