"""The sqlglot side: parsing canonical text, and one walk over a tree collecting the
relations read and written, the functions called and whether a literal matters."""

from __future__ import annotations

import re
import threading
from typing import cast

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError
from sqlglot.tokens import TokenType

from policy.classify.catalogue import (
    BY_NUMBER,
    BY_PARAMETER,
    CURRENT_SETTING_PREFIX,
    LITERAL_NAME_FUNCTIONS,
    OWN_BACKEND,
    SEQUENCE_FUNCTIONS,
    SET_CONFIG_PREFIX,
    SIGNAL_FUNCTIONS,
    is_builtin_function,
    is_dangerous_function,
)
from policy.classify.model import Unclassifiable
from policy.encodings import check_client_encoding
from policy.lexer import (
    Statement,
    ascii_lower,
    parse_qualified_name,
    render_name,
    truncate_identifier,
)

_PLAIN_NAME_RE = re.compile(r"[a-z_][a-z0-9_$]*\Z")
_DIALECT = sqlglot.Dialect.get_or_raise("postgres")


class _ParserCache(threading.local):
    """A tokenizer and parser per thread: building them costs more than parsing a statement."""

    def __init__(self) -> None:
        self.tokenizer = _DIALECT.tokenizer()
        self.parser = _DIALECT.parser()


_PARSERS = _ParserCache()


_STRING_TOKENS = frozenset(
    {
        TokenType.STRING,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.BYTE_STRING,
        TokenType.NATIONAL_STRING,
        TokenType.RAW_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
        TokenType.NATIONAL_RAW_STRING,
    }
)


# sqlglot's tokenizer fails on a parameter followed by a comma and another parameter
# (``IN ($1,$2)``: "Error tokenizing"), which PostgreSQL reads as ``$1, $2``: a space is put
# after such a comma, outside quoted identifiers (canonical text holds no other quotes).
_PARAM_COMMA_RE = re.compile(r'"(?:[^"]|"")*"|(\$[0-9]+),(?=\$)')


def _spaced_parameters(sql: str) -> str:
    return _PARAM_COMMA_RE.sub(lambda m: m.group(0) if m.group(1) is None else m.group(1) + ", ", sql)


def sqlglot_parse(sql: str, ours: tuple[int, int]) -> list[exp.Expr | None]:
    """Parse canonical text; refuse if sqlglot's tokens disagree with ours on literals.

    ``ours``: (string literals, quoted identifiers) our lexer found in ``sql``.
    """
    if "$" in sql:
        sql = _spaced_parameters(sql)
    cache = _PARSERS
    theirs = cache.tokenizer.tokenize(sql)
    strings = quoted = 0
    if "'" in sql or '"' in sql:  # without either, neither lexer can have found any
        for t in theirs:
            if t.token_type in _STRING_TOKENS:
                strings += 1
            elif t.token_type is TokenType.IDENTIFIER:
                quoted += 1
    if (strings, quoted) != ours:
        raise ParseError("sqlglot and the PostgreSQL lexer disagree about literals")
    return cache.parser.parse(theirs, sql)


_REG_TYPES = frozenset(
    {
        "REGCLASS",
        "REGPROC",
        "REGPROCEDURE",
        "REGOPER",
        "REGOPERATOR",
        "REGTYPE",
        "REGCONFIG",
        "REGDICTIONARY",
        "REGNAMESPACE",
        "REGROLE",
        "REGCOLLATION",
    }
)
# Syntax sqlglot models as function nodes although no function is called.
_SKIP_FUNC_NODES = (
    exp.Cast,
    exp.TryCast,
    exp.Exists,
    exp.Any,
    exp.All,
    exp.Array,
    exp.Case,
    exp.If,
    exp.Connector,
)


def ident(node: exp.Expression | str | None) -> str | None:
    """An identifier as PostgreSQL sees it: unquoted ASCII-lower-cased, 63 bytes at most."""
    if node is None:
        return None
    if isinstance(node, str):
        return truncate_identifier(ascii_lower(node))
    if isinstance(node, exp.Identifier):
        text = node.this
        return truncate_identifier(text if node.quoted else ascii_lower(text))
    return None


class Collector:
    """One walk over a sqlglot tree: relations read/written, functions, literal use."""

    __slots__ = (
        "stmt",
        "search_path",
        "reads",
        "ops",
        "functions",
        "literal_dependent",
        "into_ddl",
        "alternates",
        "nodes",
    )

    def __init__(self, stmt: Statement, search_path: tuple[str, ...]):
        self.stmt = stmt
        self.search_path = search_path
        self.reads: set[str] = set()
        self.ops: set[tuple[str, str]] = set()
        self.functions: set[str] = set()
        self.literal_dependent = False
        self.into_ddl = False
        # unqualified name -> the same name in the later search_path schemas: PostgreSQL
        # takes the first schema where it exists, which we cannot know, so all must pass
        self.alternates: dict[str, list[str]] = {}
        self.nodes: list[exp.Expr] = []  # the tree's nodes, walked once (``release``)

    # -- names -----------------------------------------------------------------------
    def _resolve(self, schema: str | None, name: str, temp: bool = False) -> str:
        if schema is None:
            if temp:
                schema = "pg_temp"
            elif name.startswith("pg_"):
                schema = "pg_catalog"
            else:
                primary = render_name(self.search_path[0], name)
                if len(self.search_path) > 1:
                    self.alternates[primary] = [
                        render_name(other, name) for other in self.search_path[1:]
                    ]
                return primary
        return render_name(schema, name)

    def candidates(self, rel: str) -> list[str]:
        """``rel`` and, if it was an unqualified name, the other schemas it may mean."""
        return [rel, *self.alternates.get(rel, ())]

    def expand(self) -> None:
        """Apply every use of an unqualified name to all its search_path candidates."""
        if not self.alternates:
            return
        for rel in list(self.reads):
            self.reads.update(self.alternates.get(rel, ()))
        for op, rel in list(self.ops):
            self.ops.update((op, alt) for alt in self.alternates.get(rel, ()))

    def _table_name(self, table: exp.Table, temp: bool = False) -> str | None:
        return self._name(ident(table.args.get("this")), ident(table.args.get("db")), temp)

    def _name(self, name: str | None, schema: str | None, temp: bool = False) -> str | None:
        if name is None:
            return render_name(schema) + ".*" if schema is not None else None
        return self._resolve(schema, name, temp)

    def _literal_value(self, node: exp.Expression) -> str | None:
        if isinstance(node, exp.Cast) and _is_reg_cast(node, "REGCLASS"):
            node = node.this
        if isinstance(node, exp.Literal) and node.is_string:
            self.literal_dependent = True
            try:
                return self.stmt.literals[int(node.this)]
            except (ValueError, IndexError):
                return None
        return None

    def _literal_relation(self, node: exp.Expression, what: str) -> str:
        value = self._literal_value(node)
        parts = parse_qualified_name(value) if value is not None else None
        if not parts or len(parts) > 3:
            raise Unclassifiable(f"{what} needs a literal relation name")
        names = [p for p, _ in parts]
        if len(names) == 1:
            return self._resolve(None, names[0])
        return render_name(names[-2], names[-1])

    # -- walk ------------------------------------------------------------------------
    def walk(self, tree: exp.Expression) -> None:
        consumed: set[int] = set()  # regclass casts already read as a sequence argument
        categories = _CATEGORIES
        self.nodes = nodes = list(tree.walk())
        for node in nodes:
            cat = categories.get(type(node))
            if cat is None:
                cat = _category(type(node))
            if cat == _C_PLAIN:
                continue
            # the category was looked up by the node's type: it names the node's class
            if cat == _C_TABLE:
                self._table(cast(exp.Table, node))
            elif cat == _C_FUNC:
                self._function(cast(exp.Func, node), consumed)
            elif cat == _C_CAST:
                node = cast(exp.Cast, node)
                if _is_reg_array(node):
                    raise Unclassifiable("a cast to an array of object names")
                if _is_reg_cast(node) and id(node) not in consumed:
                    self.literal_dependent = True
                    if _is_reg_cast(node, "REGCLASS"):
                        if not (isinstance(node.this, exp.Literal) and node.this.is_string):
                            continue  # an expression cast to regclass names no relation
                        if (self._literal_value(node.this) or "").strip().isdigit():
                            # '16412'::regclass: a relation by OID, as psql's \d writes it
                            # (no name to decide on; what acts on a relation through a
                            # regclass, the sequence functions, needs a name: _function)
                            continue
                        self.reads.add(self._literal_relation(node, "a regclass cast"))
            elif cat == _C_LOCK:
                self._lock(cast(exp.Lock, node))
            elif cat == _C_COMMAND:
                raise Unclassifiable(f"unsupported syntax inside the statement: {node.name}")
            elif cat == _C_INTO:
                self.into_ddl = True

    def release(self) -> None:
        """Unlink the walked tree's nodes from their parents once nothing reads the tree:
        without the cycles, reference counting frees it at once, and the cyclic garbage
        collector (a few microseconds per statement otherwise) has less to do."""
        for node in self.nodes:
            node.parent = None
        self.nodes = []

    def _table(self, table: exp.Table) -> None:
        this = table.args.get("this")
        if (this is not None and not isinstance(this, exp.Identifier)) or table.args.get(
            "rows_from"
        ):
            return  # a table function: its Func node is visited on its own
        node: exp.Expr = table
        parent = table.parent
        if type(parent) in _READ_PARENTS:  # FROM/JOIN: the common case, a plain read
            name = ident(this)
            db = table.args.get("db")
            if db is None and is_cte_reference(table, name):
                return
            rel = self._name(name, ident(db))  # self._table_name(table), ident(this) once
            if rel is None:
                raise Unclassifiable("a relation reference without a name")
            self.reads.add(rel)
            return
        if isinstance(parent, exp.Schema) and node.arg_key == "this":
            node, parent = parent, parent.parent
        key = node.arg_key
        if isinstance(parent, exp.Lock):
            return  # FOR UPDATE OF <alias>: handled by _lock
        role = "read"
        temp = False
        if key == "this" and isinstance(parent, exp.Insert):
            role = "insert"
        elif key == "this" and isinstance(parent, exp.Update):
            role = "update"
        elif key == "this" and isinstance(parent, exp.Delete):
            role = "delete"
        elif key == "this" and isinstance(parent, exp.Merge):
            role = "merge"
        elif isinstance(parent, exp.TruncateTable):
            role = "truncate"
        elif isinstance(parent, exp.Into):
            role, temp = "ddl", bool(parent.args.get("temporary"))
        elif key == "this" and isinstance(parent, exp.Create):
            role, temp = "ddl", _is_temp_create(parent)
        elif isinstance(parent, exp.Drop):
            if str(parent.args.get("kind") or "").upper() == "TRIGGER":
                return  # the trigger's own name; its table is the ON clause
            if str(parent.args.get("kind") or "").upper() == "CONSTRAINT" and isinstance(
                parent.parent, exp.Alter
            ):
                return  # ALTER TABLE t DROP CONSTRAINT c: the constraint's name; t is the
                # ALTER's (red-team round 36: read as a relation, refused as DDL of it)
            role = "ddl"
        elif _is_ddl_target(parent, key):
            role = "ddl"
        elif isinstance(parent, exp.AlterRename):
            alter = parent.parent
            name = ident(this)
            if name is None:
                raise Unclassifiable("a relation reference without a name")
            if ident(table.args.get("db")) is None and isinstance(alter, exp.Alter):
                base = alter.this if isinstance(alter.this, exp.Table) else None
                schema = ident(base.args.get("db")) if base is not None else None
                self.ops.add(("ddl", self._resolve(schema, name)))
                return
            role = "ddl"
        elif key == "this" and isinstance(parent, exp.Copy):
            role = "insert" if parent.args.get("kind") else "read"
        if (
            role == "read"
            and this is not None
            and table.args.get("db") is None
            and is_cte_reference(table, ident(this))
        ):
            return
        rel = self._table_name(table, temp)
        if rel is None:
            raise Unclassifiable("a relation reference without a name")
        if role == "read":
            self.reads.add(rel)
            if isinstance(parent, exp.LikeProperty) and _like_copies_expressions(parent):
                # CREATE TABLE ... (LIKE t INCLUDING DEFAULTS ...): t's expressions are
                # copied and run on the new table's writes, as on t's: a use of t's write
                # side (PostgreSQL's reading says so too: pgparse._Walk.table_like)
                self.ops.add(("insert", rel))
        elif role == "merge":
            merge_ops = _merge_ops(cast(exp.Merge, parent))  # role "merge": parent is one
            if not merge_ops:
                self.reads.add(rel)  # only DO NOTHING: the target is merely read
            for op in merge_ops:
                self.ops.add((op, rel))
        else:
            self.ops.add((role, rel))
            if role == "insert" and isinstance(parent, exp.Insert):
                conflict = parent.args.get("conflict")
                if (
                    conflict is not None
                    and "UPDATE" in str(conflict.args.get("action") or "").upper()
                ):
                    self.ops.add(("update", rel))

    def _function(self, func: exp.Func, consumed: set[int]) -> None:
        if isinstance(func, exp.Anonymous):
            raw = func.args.get("this")
            name = ident(raw) if isinstance(raw, exp.Identifier) else ident(str(raw))
        else:
            name = _POSTGRES_NAMES.get(type(func)) or func.sql_name().lower()
        if not name:
            raise Unclassifiable("a function call without a name")
        schema = None
        parent = func.parent
        if isinstance(parent, exp.Table) and func.arg_key == "this":
            # a function in FROM keeps its schema on the Table node: FROM s.fn()
            schema = ident(parent.args.get("db"))
            if schema is None and parent.args.get("db") is not None:
                raise Unclassifiable("an unsupported qualified function call")
        elif isinstance(parent, exp.Dot) and func.arg_key == "expression":
            qual = parent.this
            if isinstance(qual, exp.Dot):
                qual = qual.expression
            schema = ident(qual)
            if schema is None:
                raise Unclassifiable("an unsupported qualified function call")
        if schema is not None and schema != "pg_catalog":
            self.functions.add(render_name(schema, name))
            return
        if (
            schema is None
            and isinstance(func, exp.Anonymous)
            and not name.startswith("pg_")
            and not is_builtin_function(name)
            and not is_dangerous_function(name)
            and name not in LITERAL_NAME_FUNCTIONS
        ):
            # an unqualified call of something that is not a known built-in resolves
            # through search_path: it may be the function of that name in any schema
            self.functions.update(render_name(schema, name) for schema in self.search_path)
            return
        if name in LITERAL_NAME_FUNCTIONS:
            self.literal_dependent = True
        if name == "current_setting" and isinstance(func, exp.Anonymous) and func.expressions:
            setting = self._literal_value(func.expressions[0])
            if setting is not None:
                # decided like SHOW of that setting (PostgreSQL's reading must agree)
                self.functions.add(CURRENT_SETTING_PREFIX + ascii_lower(setting))
                return
            if _setting_parameter(func.expressions[0]) is not None:
                # decided at each Bind on the name bound (PostgreSQL's reading pins it)
                self.literal_dependent = True
                self.functions.add(CURRENT_SETTING_PREFIX + BY_PARAMETER)
                return
        if name == "set_config" and isinstance(func, exp.Anonymous) and func.expressions:
            args = func.expressions
            setting = self._literal_value(args[0])
            if len(args) == 3 and (_setting_parameter(args[0]) is not None or (
                setting is not None and ascii_lower(setting) == "client_encoding"
                and _setting_parameter(args[1]) is not None
            )):  # decided at each Bind on the values bound (PostgreSQL's reading pins them)
                self.literal_dependent = True
                self.functions.add(SET_CONFIG_PREFIX + BY_PARAMETER)
                return
            if setting is not None:
                key = setting.strip().lower()
                if key == "client_encoding":
                    # the encoding is checked as SET's is (one that can hide quotes is
                    # refused); a value not written as a literal stays the plain call
                    value = self._literal_value(args[1]) if len(args) > 1 else None
                    if value is None:
                        self.functions.add("set_config")
                        return
                    refusal = check_client_encoding(value)
                    if refusal is not None:
                        raise Unclassifiable(refusal)
                # decided like SET of that setting (drivers turn jit off this way)
                self.functions.add(SET_CONFIG_PREFIX + key)
                return
        if name in SIGNAL_FUNCTIONS and isinstance(func, exp.Anonymous):
            target = _signal_target(name, func.expressions)
            if target is not None:  # one backend, decided on its pid (PostgreSQL's reading agrees)
                self.literal_dependent = True
                self.functions.add(f"{name}:{target}")
                return
        self.functions.add(name if _PLAIN_NAME_RE.match(name) else render_name(name))
        op = SEQUENCE_FUNCTIONS.get(name)
        if op is not None:
            args = func.expressions if isinstance(func, exp.Anonymous) else [func.this]
            if not args:
                raise Unclassifiable(f"{name}() without arguments")
            rel = self._literal_relation(args[0], f"{name}()")
            consumed.add(id(args[0]))
            if op == "read":
                self.reads.add(rel)
            else:
                self.ops.add((op, rel))

    def _lock(self, lock: exp.Lock) -> None:
        select = lock.parent
        if not isinstance(select, exp.Select):
            raise Unclassifiable("a locking clause outside SELECT")
        items = []
        from_ = select.args.get("from_")
        if from_ is not None:
            items.append(from_.this)
        for join in select.args.get("joins") or ():
            items.append(join.this)
        for item in items:
            if isinstance(item, exp.Table) and isinstance(item.args.get("this"), exp.Identifier):
                name = ident(item.this)
                if item.args.get("db") is None and is_cte_reference(item, name):
                    continue
                rel = self._table_name(item)
                if rel is not None:
                    self.ops.add(("lock", rel))


def _number(node: exp.Expression) -> bool:
    """A number literal (the canonical text sqlglot reads writes every number as 0)."""
    return isinstance(node, exp.Literal) and not node.is_string


def _signal_target(name: str, args: list) -> str | None:
    """``pg_terminate_backend(pid[, timeout])`` / ``pg_cancel_backend(pid)``: the pid as
    ``catalogue.signal_target`` renders it (BY_NUMBER for a number literal, whose value
    PostgreSQL's reading gives: ``crosscheck.reconcile``; BY_PARAMETER for a bare ``$n``,
    OWN_BACKEND for ``pg_backend_pid()``), or None: another call."""
    if not args or len(args) > (2 if name == "pg_terminate_backend" else 1):
        return None
    if len(args) == 2 and not _number(args[1]) and _parameter_number(args[1]) is None:
        return None
    first = args[0]
    if _number(first):
        return BY_NUMBER
    if _parameter_number(first) is not None:
        return BY_PARAMETER
    if isinstance(first, exp.Anonymous) and not first.expressions:
        raw = first.args.get("this")
        if (ident(raw) if isinstance(raw, exp.Identifier) else ident(str(raw))) == "pg_backend_pid":
            return OWN_BACKEND
    return None


def _parameter_number(node: exp.Expression) -> int | None:
    """A bare ``$n`` (as ``pgparse._setting_ref`` reads it): n; else None."""
    if isinstance(node, exp.Parameter) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        text = str(node.this.this)
        return int(text) if text.isdigit() and text.isascii() and int(text) > 0 else None
    return None


def _setting_parameter(node: exp.Expression) -> int | None:
    """A bare ``$n``, or ``$n::text`` / ``$n::varchar`` with no type modifier (as
    ``pgparse._setting_param`` reads it): n; else None."""
    if isinstance(node, exp.Cast):
        to = node.args.get("to")
        if (
            not isinstance(to, exp.DataType)
            or to.this not in (exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR)
            or to.expressions or to.args.get("nested") or node.args.get("format")
        ):  # fmt: skip
            return None
        node = node.this
    return _parameter_number(node)


def _is_reg_cast(node: exp.Cast, which: str | None = None) -> bool:
    name = _reg_type_name(node.args.get("to"))
    if name is None:
        return False
    return name == which if which else name in _REG_TYPES


def _reg_type_name(to: object) -> str | None:
    """The upper-cased type name a cast names, as PostgreSQL would look it up: the last
    part of a qualified name (``pg_catalog.regclass`` is ``regclass``; so is a type of
    that name in any schema, which at worst reads a literal as a relation: fail closed),
    a quoted part kept as written. None: not a type named by a plain name."""
    if isinstance(to, exp.ObjectIdentifier):
        return str(to.this).upper()
    if not isinstance(to, exp.DataType) or to.this != exp.DataType.Type.USERDEFINED:
        return None
    kind = to.args.get("kind")
    last = kind.expression if isinstance(kind, exp.Dot) else kind
    if isinstance(last, exp.Identifier):
        name = last.this if last.quoted else last.this.lower()
        return name.upper() if name.lower() == name else name  # "REGCLASS" is no reg type
    return to.sql().upper()


def _is_reg_array(node: exp.Cast) -> bool:
    """A cast to an array of an object-name type (``pg_catalog.regclass[]``): each element
    of the literal is a name PostgreSQL resolves."""
    to = node.args.get("to")
    if not isinstance(to, exp.DataType) or to.this != exp.DataType.Type.ARRAY:
        return False
    return any(
        isinstance(e, exp.DataType) and _reg_type_name(e) in _REG_TYPES for e in to.expressions
    )


# Typed nodes whose sqlglot name is not the function PostgreSQL calls (the postgres
# dialect writes them back under PostgreSQL's name): reported under PostgreSQL's, so that
# PostgreSQL's reading finds the same call (and a user's function of that name is looked for).
_POSTGRES_NAMES: dict[type, str] = {
    exp.BitwiseAndAgg: "bit_and",
    exp.BitwiseOrAgg: "bit_or",
    exp.BitwiseXorAgg: "bit_xor",
}


# CREATE TABLE ... (LIKE t <options>): PostgreSQL 15's CREATE_TABLE_LIKE_* bits, and the
# ones that copy expressions (CONSTRAINTS, DEFAULTS, GENERATED, INDEXES, STATISTICS: as
# pgparse._LIKE_COPIES_EXPRESSIONS).
_LIKE_OPTIONS = {
    "COMMENTS": 1 << 0, "COMPRESSION": 1 << 1, "CONSTRAINTS": 1 << 2, "DEFAULTS": 1 << 3,
    "GENERATED": 1 << 4, "IDENTITY": 1 << 5, "INDEXES": 1 << 6, "STATISTICS": 1 << 7,
    "STORAGE": 1 << 8, "ALL": 0x7FFFFFFF,
}  # fmt: skip
_LIKE_COPIES_EXPRESSIONS = (1 << 2) | (1 << 3) | (1 << 4) | (1 << 6) | (1 << 7)


def _like_copies_expressions(like: exp.LikeProperty) -> bool:
    """Do the LIKE options copy expressions? Read as gram.y does: INCLUDING sets an
    option's bits, EXCLUDING clears them, left to right; anything else is refused."""
    options = 0
    for prop in like.expressions:
        if not isinstance(prop, exp.Property):
            raise Unclassifiable("an unrecognised LIKE option")
        verb = str(prop.this).upper()
        value = prop.args.get("value")
        bits = _LIKE_OPTIONS.get(str(value.this).upper()) if isinstance(value, exp.Var) else None
        if bits is None or verb not in ("INCLUDING", "EXCLUDING"):
            raise Unclassifiable("an unrecognised LIKE option")
        options = options | bits if verb == "INCLUDING" else options & ~bits
    return bool(options & _LIKE_COPIES_EXPRESSIONS)


# Node categories for the walk, decided once per sqlglot class.
_C_PLAIN, _C_TABLE, _C_FUNC, _C_CAST, _C_LOCK, _C_COMMAND, _C_INTO = range(7)
_CATEGORIES: dict[type, int] = {}
_READ_PARENTS = frozenset({exp.From, exp.Join})


def _category(cls: type) -> int:
    if issubclass(cls, exp.Table):
        cat = _C_TABLE
    elif issubclass(cls, exp.Cast):
        cat = _C_CAST
    elif issubclass(cls, exp.Func):
        cat = _C_PLAIN if issubclass(cls, _SKIP_FUNC_NODES) else _C_FUNC
    elif issubclass(cls, exp.Lock):
        cat = _C_LOCK
    elif issubclass(cls, exp.Command):
        cat = _C_COMMAND
    elif issubclass(cls, exp.Into):
        cat = _C_INTO
    else:
        cat = _C_PLAIN
    _CATEGORIES[cls] = cat
    return cat


def _is_ddl_target(parent: exp.Expr | None, key: str | None) -> bool:
    """Is a table under ``parent`` (as ``key``) the object a DDL statement changes?"""
    if isinstance(parent, exp.UserDefinedFunction):
        return isinstance(parent.parent, exp.Create)
    if isinstance(parent, exp.Index):
        return key == "table" and isinstance(parent.parent, exp.Create)
    if isinstance(parent, (exp.TriggerProperties, exp.PartitionedOfProperty, exp.InheritsProperty)):
        return True  # a trigger, partition or child table changes that table too
    if isinstance(parent, exp.OnProperty):
        return isinstance(parent.parent, exp.Drop)
    return key == "this" and isinstance(parent, (exp.Alter, exp.Comment))


def _is_temp_create(create: exp.Create) -> bool:
    props = create.args.get("properties")
    return bool(props and any(isinstance(p, exp.TemporaryProperty) for p in props.expressions))


def _merge_ops(merge: exp.Merge) -> set[str]:
    ops: set[str] = set()
    whens = merge.args.get("whens")
    for when in whens.expressions if whens is not None else ():
        then = when.args.get("then")
        if isinstance(then, exp.Insert):
            ops.add("insert")
        elif isinstance(then, exp.Update):
            ops.add("update")
        elif (
            isinstance(then, exp.Delete)
            or isinstance(then, exp.Var)
            and str(then.this).upper() == "DELETE"
        ):
            ops.add("delete")
        elif not (isinstance(then, exp.Var) and str(then.this).upper() == "DO NOTHING"):
            raise Unclassifiable("an unrecognised MERGE action")
    return ops


def _cte_names(with_: exp.With) -> list[str | None]:
    return [
        ident(cte.args.get("alias").this) if cte.args.get("alias") else None
        for cte in with_.expressions
    ]


def is_cte_reference(table: exp.Expr, name: str | None) -> bool:
    """Does unqualified ``name`` at ``table`` refer to a CTE in scope (PostgreSQL rules)?"""
    if name is None:
        return False
    node: exp.Expr | None = table
    while node is not None and node.parent is not None:
        parent = node.parent
        if isinstance(parent, exp.With):
            # node is one of the CTEs: earlier CTEs are visible, all of them if RECURSIVE
            names = _cte_names(parent)
            if parent.args.get("recursive"):
                visible = names
            else:
                idx = next((i for i, c in enumerate(parent.expressions) if c is node), len(names))
                visible = names[:idx]
            if name in visible:
                return True
            node = parent.parent  # skip the owner's WITH: already looked at
            continue
        with_ = parent.args.get("with_")
        if isinstance(with_, exp.With) and node is not with_ and name in _cte_names(with_):
            return True
        node = parent
    return False
