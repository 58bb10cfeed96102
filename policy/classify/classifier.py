"""One statement to ``Classified``: the first words pick a token handler
(``policy.classify.handlers``) or the sqlglot path, which maps a parsed tree's kind to a
class; anything else, and any error, is UNKNOWN (fail closed)."""

from __future__ import annotations

from typing import cast

from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from policy.classify.collector import Collector, ident, sqlglot_parse
from policy.classify.handlers import HANDLERS, role_ddl, sub_statement, word_values
from policy.classify.model import (
    Classified,
    StatementClass,
    Unclassifiable,
    result,
    unknown,
)
from policy.lexer import Statement, Token, literal_counts

_DDL_KINDS = frozenset(
    {
        "TABLE",
        "VIEW",
        "INDEX",
        "SEQUENCE",
        "SCHEMA",
        "FUNCTION",
        "PROCEDURE",
        "TRIGGER",
        "TYPE",
        "DOMAIN",
        "MATERIALIZED VIEW",
    }
)


class Classifier:
    """Classifies statements for one search_path; token handlers get it as ``cx``."""

    def __init__(self, search_path: tuple[str, ...]):
        if not search_path:
            raise ValueError("search_path must name at least one schema")
        self.search_path = search_path

    # Returns (Classified, fingerprint_safe)
    def run(self, stmt: Statement) -> tuple[Classified, bool]:
        if stmt.error:
            return unknown(stmt, command_word(stmt), stmt.error), False
        try:
            return self._dispatch(_work_around_sqlglot(stmt))
        except Unclassifiable as e:
            return unknown(stmt, command_word(stmt), str(e)), False
        except RecursionError:
            return unknown(stmt, command_word(stmt), "statement nested too deeply"), False
        except Exception as e:  # fail closed: a classifier bug must never allow or crash
            detail = f"internal classifier error: {type(e).__name__}: {e}"
            return unknown(stmt, command_word(stmt), detail), False

    def _dispatch(self, stmt: Statement) -> tuple[Classified, bool]:
        head = stmt.head(2)  # most statements go to sqlglot on their first two words
        first = head[0].value if head[0].kind == "word" else ""
        second = head[1].value if len(head) > 1 and head[1].kind == "word" else ""
        handler = HANDLERS.get(first)
        if handler is not None:
            found = handler(self, stmt, stmt.tokens, second)
            if found is not None:
                return found, False
        if first in ("create", "alter", "drop"):
            found = role_ddl(self, stmt, first, second, stmt.tokens)
            if found is not None:
                return found, False
        if (first or head[0].value) not in SQLGLOT_FIRST_WORDS:
            raise Unclassifiable(f"unsupported statement: {head[0].value.upper()}")
        return self._parsed(stmt)

    # -- sqlglot path ------------------------------------------------------------------
    def parse(
        self, stmt: Statement, canon: str | None = None, tokens: list[Token] | None = None
    ) -> exp.Expression:
        try:
            trees = sqlglot_parse(
                stmt.canon if canon is None else canon,
                stmt.literal_counts() if tokens is None else literal_counts(tokens),
            )
        except (ParseError, TokenError) as e:
            raise Unclassifiable(f"parse error: {_first_line(e)}") from None
        found = [t for t in trees if t is not None]
        if len(found) != 1:
            raise Unclassifiable("the statement did not parse as exactly one statement")
        # sqlglot types its trees as Expr, the trait every node class mixes in; the nodes
        # it builds are all Expression subclasses
        return cast(exp.Expression, found[0])

    def collect(self, stmt: Statement, tree: exp.Expression) -> Collector:
        col = Collector(stmt, self.search_path)
        col.walk(tree)
        col.expand()
        return col

    def _parsed(self, stmt: Statement) -> tuple[Classified, bool]:
        tree = self.parse(stmt)
        found, col = self._from_tree(stmt, tree)
        col.release()
        return found, not col.literal_dependent and found.cls is not StatementClass.UNKNOWN

    def _from_tree(self, stmt: Statement, tree: exp.Expression) -> tuple[Classified, Collector]:
        if isinstance(tree, exp.Command):
            raise Unclassifiable(f"unsupported statement: {command_word(stmt)}")
        col = self.collect(stmt, tree)
        reads, ops, funcs = col.reads, col.ops, col.functions
        S = StatementClass
        if isinstance(tree, (exp.Select, exp.SetOperation, exp.Values, exp.Subquery)):
            if col.into_ddl and isinstance(tree, exp.Select) and tree.args.get("into"):
                return result(stmt, S.DDL, "SELECT INTO", "", reads, ops, funcs), col
            writes_data = bool(ops) and any(op != "lock" for op, _ in ops)
            cls = S.WRITE if writes_data else S.READ
            detail = "FOR UPDATE/SHARE" if ops and any(op == "lock" for op, _ in ops) else ""
            return result(stmt, cls, "SELECT", detail, reads, ops, funcs), col
        if isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Merge)):
            command = {
                exp.Insert: "INSERT",
                exp.Update: "UPDATE",
                exp.Delete: "DELETE",
                exp.Merge: "MERGE",
            }[type(tree)]
            return result(stmt, S.WRITE, command, "", reads, ops, funcs), col
        if isinstance(tree, exp.TruncateTable):
            if str(tree.args.get("option") or "").upper() == "CASCADE":
                raise Unclassifiable("TRUNCATE ... CASCADE also empties tables it does not name")
            return result(stmt, S.WRITE, "TRUNCATE", "", reads, ops, funcs), col
        if isinstance(tree, (exp.Create, exp.Drop, exp.Alter)):
            kind = str(tree.args.get("kind") or "").upper()
            if isinstance(tree, exp.Create) and kind == "VIEW":
                props = tree.args.get("properties")
                if props and any(
                    isinstance(p, exp.MaterializedProperty) for p in props.expressions
                ):
                    kind = "MATERIALIZED VIEW"
            if isinstance(tree, exp.Drop) and tree.args.get("materialized"):
                kind = "MATERIALIZED VIEW"
            verb = {exp.Create: "CREATE", exp.Drop: "DROP", exp.Alter: "ALTER"}[type(tree)]
            props = tree.args.get("properties")
            if props is not None and any(
                isinstance(p, exp.ExecuteAsProperty) for p in props.expressions
            ):
                # CREATE TABLE ... AS EXECUTE name(args) runs a prepared statement (one a
                # protocol-level Parse made too, its Bind-time checks skipped; or the
                # proxy's own): what it reads is not in this text. sqlglot reads the name
                # as a call, PostgreSQL's grammar as no call at all
                raise Unclassifiable(f"{verb} {kind} ... AS EXECUTE is not supported")
            if isinstance(tree, exp.Drop) and tree.args.get("cascade"):
                raise Unclassifiable("DROP ... CASCADE also drops objects it does not name")
            if kind not in _DDL_KINDS:
                raise Unclassifiable(f"{verb} {kind or '?'} is not supported")
            if not any(op == "ddl" for op, _ in ops):
                raise Unclassifiable(f"{verb} {kind}: could not find the object it changes")
            return result(stmt, S.DDL, f"{verb} {kind}", "", reads, ops, funcs), col
        if isinstance(tree, exp.Comment):
            kind = str(tree.args.get("kind") or "").upper()
            if kind not in _COMMENT_KINDS:
                # sqlglot reads the object of COMMENT ON SCHEMA / DATABASE as a table name
                raise Unclassifiable(f"COMMENT ON {kind or '?'} is not supported")
            if not ops:
                target = tree.this
                if isinstance(target, exp.Column) and target.args.get("table") is not None:
                    schema = ident(target.args.get("db"))
                    table = ident(target.args["table"])
                    if table is None:
                        raise Unclassifiable("COMMENT ON a column of an unnamed relation")
                    rel = col._resolve(schema, table)
                    ops = ops | {("ddl", r) for r in col.candidates(rel)}
                else:
                    raise Unclassifiable("COMMENT ON this kind of object is not supported")
            return result(stmt, S.DDL, "COMMENT", "", reads, ops, funcs), col
        raise Unclassifiable(f"unsupported statement: {type(tree).__name__}")

    def inner(self, stmt: Statement, index: int, command: str, allowed: tuple[type, ...]):
        if index >= len(stmt.tokens):
            raise Unclassifiable(f"{command} without a statement")
        sub = sub_statement(stmt, index)
        first = sub.tokens[0].value if sub.tokens[0].kind == "word" else sub.tokens[0].value
        if first not in SQLGLOT_FIRST_WORDS:
            raise Unclassifiable(f"{command} {first.upper()} is not supported")
        tree = self.parse(sub)
        if not isinstance(tree, allowed):
            raise Unclassifiable(f"{command} of {type(tree).__name__} is not supported")
        inner, col = self._from_tree(sub, tree)
        col.release()
        return inner


# COMMENT ON kinds whose object is a relation, a type or a column (sqlglot reads a
# MATERIALIZED VIEW as VIEW): the comment is DDL on that relation or type
_COMMENT_KINDS = frozenset({"TABLE", "VIEW", "INDEX", "SEQUENCE", "TYPE", "COLUMN"})


def _work_around_sqlglot(stmt: Statement) -> Statement:
    """Rewrite two things sqlglot cannot parse, keeping every token offset valid.

    * ``::oid[]`` (drivers' type introspection) becomes ``::int[]``;
    * a trailing ``WITH [NO] DATA`` of ``CREATE MATERIALIZED VIEW`` is blanked.

    Neither changes which relations or functions a statement uses.
    """
    canon = stmt.canon
    if "oid" not in canon and not canon.startswith("create"):
        return stmt
    tokens = stmt.tokens
    if "oid" in canon:
        for i in range(2, len(tokens) - 1):
            t = tokens[i]
            if (
                t.kind == "word"
                and t.value == "oid"
                and tokens[i + 1].value == "["
                and tokens[i - 1].value == ":"
                and tokens[i - 2].value == ":"
            ):
                canon = canon[: t.start] + "int" + canon[t.start + 3 :]
    if (
        len(tokens) > 4
        and tokens[0].value == "create"
        and tokens[-1].kind == "word"
        and tokens[-1].value == "data"
        and "materialized" in [t.value for t in tokens[1:5] if t.kind == "word"]
    ):
        tail = word_values(tokens[-3:])
        start = None
        if tail[-2:] == ["with", "data"]:
            start = tokens[-2].start
        elif tail == ["with", "no", "data"]:
            start = tokens[-3].start
        if start is not None:
            canon = canon[:start] + " " * (len(canon) - start)
    if canon is stmt.canon:
        return stmt
    return Statement(
        stmt.sql, stmt.fingerprint, canon, stmt.tokens, stmt.literals, stmt.cacheable, stmt.error
    )


def command_word(stmt: Statement) -> str:
    for t in stmt.head(1):
        if t.kind == "word":
            return t.value.upper()
    return "UNKNOWN"


def _first_line(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if errors:
        first = errors[0]
        desc = first.get("description") or str(e)
        return f"{desc} (line {first.get('line')}, col {first.get('col')})"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


# Only statements starting with one of these go to sqlglot: anything else could come back
# as something harmless-looking (``LISTEN x`` parses as a column alias) although PostgreSQL
# means a statement we do not model.
SQLGLOT_FIRST_WORDS = frozenset(
    {
        "select",
        "with",
        "insert",
        "update",
        "delete",
        "merge",
        "values",
        "table",
        "create",
        "alter",
        "drop",
        "truncate",
        "comment",
        "(",
    }
)
