"""What classification says about one statement: ``StatementClass`` and ``Classified``.

``Unclassifiable`` is raised inside classification; the statement then is UNKNOWN with its
message as the detail (denied: fail closed)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from policy.lexer import Statement

EMPTY: frozenset = frozenset()


class StatementClass(enum.Enum):
    READ = "READ"
    WRITE = "WRITE"
    DDL = "DDL"
    ROLE = "ROLE"
    FUNCTION = "FUNCTION"
    SESSION_SET = "SESSION_SET"
    TRANSACTION = "TRANSACTION"
    UTILITY = "UTILITY"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class Classified:
    sql: str  # the statement's own text
    cls: StatementClass
    command: str  # "SELECT", "INSERT", "SET", "COPY", "EXPLAIN", ...
    reads: frozenset[str]  # "schema.table", lower-cased unless quoted
    writes: frozenset[str]
    functions: frozenset[str]  # "schema.fn" or bare "fn" for unqualified calls
    detail: str = ""  # setting name for SET, COPY direction, parse error text, ...
    # (operation, relation) for everything in ``writes``: insert update delete truncate
    # ddl lock. Lets a grant say insert-only; ``writes`` is the set of relations.
    write_ops: frozenset[tuple[str, str]] = frozenset()
    # From PostgreSQL's parser (policy.classify.crosscheck): operator names ("=", "public.===") and
    # names used with column syntax (x.name), which the server may resolve as name(x).
    operators: frozenset[str] = frozenset()
    attributes: frozenset[str] = frozenset()
    # From PostgreSQL's parser: the types the statement names outside pg_catalog (casts,
    # column and argument types), "schema.type" or bare: a value made one may run a domain's
    # constraint functions or a cast's function (policy.catalog, USER_TYPES_SQL).
    types: frozenset[str] = frozenset()
    # From PostgreSQL's parser: what the statement's object text (column defaults, CHECKs,
    # comments, ...) depends on, "kind:value" (policy.classify.metadata: "oid:16385",
    # "rel:public.orders", "name:orders", "any:pg_catalog.pg_attrdef.adbin"); decided on
    # the catalog snapshot (policy.engine, StatementPolicy._described).
    describes: frozenset[str] = frozenset()
    # From PostgreSQL's parser: the relations every mention of which excludes their
    # inheritance children (``ONLY t``, COPY's table, an INSERT's target); every other
    # relation read or written reaches its children too (policy.engine, _through_inheritance)
    only: frozenset[str] = frozenset()
    # From PostgreSQL's parser: DDL that neither checks, recomputes nor rebuilds a stored
    # row of the relations it changes (``ADD COLUMN`` of a built-in type with no default or
    # constraint, an index of plain columns: ``pgparse.rows_idle``), so their CHECKs,
    # generated columns and index expressions do not run (policy.engine, check_functions)
    rows_idle: bool = False


class Unclassifiable(Exception):
    """Raised inside classification: the statement is UNKNOWN with this detail."""


def result(
    stmt: Statement,
    cls: StatementClass,
    command: str,
    detail: str = "",
    reads=EMPTY,
    ops=EMPTY,
    functions=EMPTY,
) -> Classified:
    return Classified(
        stmt.sql,
        cls,
        command,
        frozenset(reads),
        frozenset({r for _, r in ops}),
        frozenset(functions),
        detail,
        frozenset(ops),
    )


def unknown(stmt: Statement, command: str, detail: str) -> Classified:
    return Classified(stmt.sql, StatementClass.UNKNOWN, command, EMPTY, EMPTY, EMPTY, detail)
