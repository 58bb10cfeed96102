"""Object text, and which rows of it a statement may see (pure; PostgreSQL's parse tree).

The catalogs show the text written into objects: a column default, a CHECK constraint, an
index predicate, a trigger's arguments, a row-level security expression, a publication's
row filter, a comment. Literals live there (``DEFAULT 'sk-live-...'``, ``CHECK (pin <>
'4929')``), PUBLIC may read every catalog, and a per-grant database role does not change
that. psql's ``\\d`` and drivers' reflection read the same columns for the relations they
describe, so they cannot simply be refused: a statement may read object text for the
rows it **pins** to relations, and the policy decides on those relations
(``policy.engine``, ``StatementPolicy._described``).

``described(tree)`` returns what a statement's object text depends on, as entries:

* ``("oid", "16385")``: rows pinned to a relation (or index) OID, written as a literal;
* ``("rel", "public.orders")``: pinned to a relation by schema and name (a regclass cast
  of a name, or a view's ``schemaname`` / ``tablename`` columns);
* ``("name", "orders")``: pinned to every relation of that name, whatever its schema;
* ``("any", "pg_catalog.pg_attrdef.adbin")``: object text read for rows not pinned.

A pin is an equality in the conditions that every row the text is computed for has
passed: the top-level ``AND`` conjuncts of the query level's WHERE and of its INNER JOINs'
ON (a LEFT JOIN's ON for its nullable side), ``col = literal``, ``col IN (literals)``,
``col LIKE 'literal'`` without wildcards, and ``col = col`` chains between them, across
levels too when a correlated subquery sits in the outer query's SELECT list (psql's
``\\d`` does that). OR, NOT and everything else pins nothing.

The text must be computed after that filtering, or a condition of the statement's own
can run on the rows it does not pin (``WHERE adrelid = 16385 AND pg_get_expr(adbin,
adrelid)::int > 0``: PostgreSQL orders a level's conditions by cost, and the cast's error
quotes the text of whatever row it meets first). So object text counts as pinned only
in the SELECT list, ORDER BY or GROUP BY of its level (not HAVING, which the planner
may move into WHERE); only in a level that is
not a FROM subquery, CTE or view body (the planner pushes outer conditions down into
those, next to the pin); and, for a column of an outer query's row, only through
subqueries that sit in the SELECT list (or ORDER BY, GROUP BY, HAVING) at every step.
Anything else is ``any``: denied unless a ``read:`` scope names the catalog, or the grant
covers every schema of the database.

Conservative by construction: an unknown node is walked generically and whatever it
holds that names object text counts as unpinned.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from policy.lexer import parse_qualified_name, render_name

__all__ = ["CATALOGS", "DEPARSERS", "bound_pins", "bound_setting_refs", "described", "entries"]


@dataclass(frozen=True, slots=True)
class Catalog:
    """A relation showing object text. ``key``: the column holding the OID of the relation
    a row describes ("" if none); ``names``: the (schema, table) name columns a view
    describes relations by; ``text``: the columns holding object text; ``columns``: every
    column (PostgreSQL 15: ``x.f`` naming none of them is a call ``f(x)`` of the whole
    row); ``rowid``: the column a deparser of this catalog is given."""

    key: str
    text: frozenset[str]
    columns: frozenset[str]
    names: tuple[str, str] | None = None
    rowid: str = "oid"


def _catalog(key: str, text: str, columns: str, names=None, rowid: str = "oid") -> Catalog:
    return Catalog(key, frozenset(text.split()), frozenset(columns.split()), names, rowid)


_PG, _IS = "pg_catalog", "information_schema"

# Columns compared with the server by tests/integration/test_policy_settings.py.
CATALOGS: dict[tuple[str, str], Catalog] = {
    (_PG, "pg_attrdef"): _catalog("adrelid", "adbin", "oid adrelid adnum adbin"),
    (_PG, "pg_attribute"): _catalog(
        "attrelid", "attmissingval attfdwoptions",
        "attrelid attname atttypid attstattarget attlen attnum attndims attcacheoff atttypmod "
        "attbyval attalign attstorage attcompression attnotnull atthasdef atthasmissing "
        "attidentity attgenerated attisdropped attislocal attinhcount attcollation attacl "
        "attoptions attfdwoptions attmissingval", rowid=""),
    (_PG, "pg_constraint"): _catalog(
        "conrelid", "conbin",
        "oid conname connamespace contype condeferrable condeferred convalidated conrelid "
        "contypid conindid conparentid confrelid confupdtype confdeltype confmatchtype "
        "conislocal coninhcount connoinherit conkey confkey conpfeqop conppeqop conffeqop "
        "confdelsetcols conexclop conbin"),
    (_PG, "pg_index"): _catalog(
        "indrelid", "indexprs indpred",
        "indexrelid indrelid indnatts indnkeyatts indisunique indnullsnotdistinct "
        "indisprimary indisexclusion indimmediate indisclustered indisvalid indcheckxmin "
        "indisready indislive indisreplident indkey indcollation indclass indoption indexprs "
        "indpred", rowid="indexrelid"),
    (_PG, "pg_trigger"): _catalog(
        "tgrelid", "tgargs tgqual",
        "oid tgrelid tgparentid tgname tgfoid tgtype tgenabled tgisinternal tgconstrrelid "
        "tgconstrindid tgconstraint tgdeferrable tginitdeferred tgnargs tgattr tgargs tgqual "
        "tgoldtable tgnewtable"),
    (_PG, "pg_policy"): _catalog(
        "polrelid", "polqual polwithcheck",
        "oid polname polrelid polcmd polpermissive polroles polqual polwithcheck"),
    (_PG, "pg_publication_rel"): _catalog(
        "prrelid", "prqual", "oid prpubid prrelid prqual prattrs"),
    (_PG, "pg_description"): _catalog(
        "objoid", "description", "objoid classoid objsubid description", rowid=""),
    # comments on databases, roles and tablespaces: no relation pins them
    (_PG, "pg_shdescription"): _catalog("", "description", "objoid classoid description", rowid=""),
    (_PG, "pg_statistic_ext"): _catalog(
        "stxrelid", "stxexprs",
        "oid stxrelid stxname stxnamespace stxowner stxstattarget stxkeys stxkind stxexprs"),
    (_PG, "pg_type"): _catalog(
        "", "typdefault typdefaultbin",
        "oid typname typnamespace typowner typlen typbyval typtype typcategory typispreferred "
        "typisdefined typdelim typrelid typsubscript typelem typarray typinput typoutput "
        "typreceive typsend typmodin typmodout typanalyze typalign typstorage typnotnull "
        "typbasetype typtypmod typndims typcollation typdefaultbin typdefault typacl"),
    (_PG, "pg_proc"): _catalog(
        "", "proargdefaults",
        "oid proname pronamespace proowner prolang procost prorows provariadic prosupport "
        "prokind prosecdef proleakproof proisstrict proretset provolatile proparallel "
        "pronargs pronargdefaults prorettype proargtypes proallargtypes proargmodes "
        "proargnames proargdefaults protrftypes prosrc probin prosqlbody proconfig proacl"),
    (_PG, "pg_aggregate"): _catalog(  # an aggregate's initial states: literals
        "", "agginitval aggminitval",
        "aggfnoid aggkind aggnumdirectargs aggtransfn aggfinalfn aggcombinefn aggserialfn "
        "aggdeserialfn aggmtransfn aggminvtransfn aggmfinalfn aggfinalextra aggmfinalextra "
        "aggfinalmodify aggmfinalmodify aggsortop aggtranstype aggtransspace aggmtranstype "
        "aggmtransspace agginitval aggminitval", rowid=""),
    # literals an object's definer writes that no relation pins (red-team round 91: an
    # enum's labels), decided by the schemas holding such objects (``_SCHEMA_TEXTS``)
    (_PG, "pg_enum"): _catalog("", "enumlabel", "oid enumtypid enumsortorder enumlabel", rowid=""),
    (_PG, "pg_collation"): _catalog(
        "", "collcollate collctype colliculocale",
        "oid collname collnamespace collowner collprovider collisdeterministic collencoding "
        "collcollate collctype colliculocale collversion", rowid=""),
    (_PG, "pg_ts_dict"): _catalog(
        "", "dictinitoption", "oid dictname dictnamespace dictowner dicttemplate dictinitoption",
        rowid=""),
    (_PG, "pg_foreign_table"): _catalog(
        "ftrelid", "ftoptions", "ftrelid ftserver ftoptions", rowid=""),
    (_PG, "pg_foreign_data_wrapper"): _catalog(
        "", "fdwoptions", "oid fdwname fdwowner fdwhandler fdwvalidator fdwacl fdwoptions"),
    (_PG, "pg_class"): _catalog(  # a partition's bound: FOR VALUES IN ('<literal>')
        "oid", "relpartbound",
        "oid relname relnamespace reltype reloftype relowner relam relfilenode reltablespace "
        "relpages reltuples relallvisible reltoastrelid relhasindex relisshared "
        "relpersistence relkind relnatts relchecks relhasrules relhastriggers relhassubclass "
        "relrowsecurity relforcerowsecurity relispopulated relreplident relispartition "
        "relrewrite relfrozenxid relminmxid relacl reloptions relpartbound"),
    (_PG, "pg_namespace"): _catalog("", "", "oid nspname nspowner nspacl"),
    # a partition is described through its parent (psql's \d of a partitioned table lists
    # its partitions' bounds): inhrelid pinned by inhparent
    (_PG, "pg_inherits"): _catalog(
        "", "", "inhrelid inhparent inhseqno inhdetachpending", rowid=""),
    (_PG, "pg_partitioned_table"): _catalog(
        "partrelid", "partexprs",
        "partrelid partstrat partnatts partdefid partattrs partclass partcollation partexprs",
        rowid=""),

    (_PG, "pg_policies"): _catalog(
        "", "qual with_check",
        "schemaname tablename policyname permissive roles cmd qual with_check",
        ("schemaname", "tablename"), rowid=""),
    (_PG, "pg_indexes"): _catalog(
        "", "indexdef", "schemaname tablename indexname tablespace indexdef",
        ("schemaname", "tablename"), rowid=""),
    (_IS, "columns"): _catalog(
        "", "column_default generation_expression",
        "table_catalog table_schema table_name column_name ordinal_position column_default "
        "is_nullable data_type character_maximum_length character_octet_length "
        "numeric_precision numeric_precision_radix numeric_scale datetime_precision "
        "interval_type interval_precision character_set_catalog character_set_schema "
        "character_set_name collation_catalog collation_schema collation_name domain_catalog "
        "domain_schema domain_name udt_catalog udt_schema udt_name scope_catalog scope_schema "
        "scope_name maximum_cardinality dtd_identifier is_self_referencing is_identity "
        "identity_generation identity_start identity_increment identity_maximum "
        "identity_minimum identity_cycle is_generated generation_expression is_updatable",
        ("table_schema", "table_name"), rowid=""),
    (_IS, "triggers"): _catalog(
        "", "action_statement action_condition",
        "trigger_catalog trigger_schema trigger_name event_manipulation event_object_catalog "
        "event_object_schema event_object_table action_order action_condition "
        "action_statement action_orientation action_timing action_reference_old_table "
        "action_reference_new_table action_reference_old_row action_reference_new_row "
        "created", ("event_object_schema", "event_object_table"), rowid=""),
    (_IS, "foreign_table_options"): _catalog(
        "", "option_value",
        "foreign_table_catalog foreign_table_schema foreign_table_name option_name option_value",
        ("foreign_table_schema", "foreign_table_name"), rowid=""),
    (_IS, "column_options"): _catalog(
        "", "option_value",
        "table_catalog table_schema table_name column_name option_name option_value",
        ("table_schema", "table_name"), rowid=""),
    (_IS, "foreign_data_wrapper_options"): _catalog(
        "", "option_value",
        "foreign_data_wrapper_catalog foreign_data_wrapper_name option_name option_value",
        rowid=""),
    (_IS, "check_constraints"): _catalog(
        "", "check_clause", "constraint_catalog constraint_schema constraint_name check_clause",
        rowid=""),
    (_IS, "parameters"): _catalog(
        "", "parameter_default",
        "specific_catalog specific_schema specific_name ordinal_position parameter_mode "
        "is_result as_locator parameter_name data_type character_maximum_length "
        "character_octet_length character_set_catalog character_set_schema "
        "character_set_name collation_catalog collation_schema collation_name "
        "numeric_precision numeric_precision_radix numeric_scale datetime_precision "
        "interval_type interval_precision udt_catalog udt_schema udt_name scope_catalog "
        "scope_schema scope_name maximum_cardinality dtd_identifier parameter_default",
        rowid=""),
    (_IS, "domains"): _catalog(
        "", "domain_default",
        "domain_catalog domain_schema domain_name data_type character_maximum_length "
        "character_octet_length character_set_catalog character_set_schema "
        "character_set_name collation_catalog collation_schema collation_name "
        "numeric_precision numeric_precision_radix numeric_scale datetime_precision "
        "interval_type interval_precision domain_default udt_catalog udt_schema udt_name "
        "scope_catalog scope_schema scope_name maximum_cardinality dtd_identifier", rowid=""),
    (_IS, "attributes"): _catalog(
        "", "attribute_default",
        "udt_catalog udt_schema udt_name attribute_name ordinal_position attribute_default "
        "is_nullable data_type character_maximum_length character_octet_length "
        "character_set_catalog character_set_schema character_set_name collation_catalog "
        "collation_schema collation_name numeric_precision numeric_precision_radix "
        "numeric_scale datetime_precision interval_type interval_precision "
        "attribute_udt_catalog attribute_udt_schema attribute_udt_name scope_catalog "
        "scope_schema scope_name maximum_cardinality dtd_identifier "
        "is_derived_reference_attribute", rowid=""),
}  # fmt: skip

# Deparsers of object text: name -> (what their first argument is, the catalog it is a
# row or relation of, the pseudo-column read when it is not pinned). "row": the catalog's
# own row id (``pg_get_constraintdef(r.oid)``); "relation": a relation's (or an index's)
# OID. ``pg_get_expr`` is not here: it shows what its first argument holds, a column
# checked above (a pg_node_tree cannot be written as a literal).
DEPARSERS: dict[str, tuple[str, str, str]] = {
    "pg_get_constraintdef": ("row", "pg_constraint", "conbin"),
    "pg_get_triggerdef": ("row", "pg_trigger", "tgargs"),
    "pg_get_statisticsobjdef": ("row", "pg_statistic_ext", "stxexprs"),
    "pg_get_statisticsobjdef_columns": ("row", "pg_statistic_ext", "stxexprs"),
    "pg_get_statisticsobjdef_expressions": ("row", "pg_statistic_ext", "stxexprs"),
    "pg_get_indexdef": ("relation", "pg_index", "indpred"),
    "obj_description": ("relation", "pg_description", "description"),
    "col_description": ("relation", "pg_description", "description"),
    "pg_get_partkeydef": ("relation", "pg_class", "relpartbound"),
    # every ancestor's bound, not only the argument's own (red-team round 16): no pin
    "pg_get_partition_constraintdef": ("function", "pg_class", "relpartbound"),
    # a function's argument defaults: no pin names a function (decided on the snapshot's
    # functions with defaults, policy.catalog.describe_refusal)
    "pg_get_function_arguments": ("function", "pg_proc", "proargdefaults"),
    "pg_get_function_arg_default": ("function", "pg_proc", "proargdefaults"),
    "shobj_description": ("function", "pg_shdescription", "description"),
}

# Where in a SELECT a value is computed only for rows that passed WHERE and the joins.
# Not HAVING: with a GROUP BY, the planner moves a HAVING condition without aggregates into
# WHERE, down to the scan before a join's pin (red-team round 13).
_POST_FILTER = frozenset({"targetList", "sortClause", "groupClause", "distinctClause"})
# Statement nodes whose query is run as is (no outer conditions pushed into it).
_TOP_QUERIES = {
    "InsertStmt": "selectStmt", "CopyStmt": "query", "ExplainStmt": "query",
    "CreateTableAsStmt": "query", "DeclareCursorStmt": "query", "PrepareStmt": "query",
}  # fmt: skip
_EQ_NAMES = ((None, "="), ("pg_catalog", "="))
_LIKE_NAMES = ((None, "~~"), ("pg_catalog", "~~"))
_OID_TYPES = frozenset({"oid", "regclass", "int4", "int8", "int2", "text", "name", "varchar"})

Pin = tuple[str, str]
_MAX_USES, _MAX_EDGES = 64, 128
# Rows whose text holds no expression (primary keys, unique constraints, foreign keys:
# column lists and actions): pinned to nothing, shown whatever relation they belong to.
_PLAIN_CONSTRAINTS = frozenset({"p", "u", "f"})
NOTHING: frozenset[Pin] = frozenset({("none", "")})
Node = tuple[int, str]  # (occurrence id, column)


@dataclass(slots=True)
class _Occ:
    id: int
    key: tuple[str, str]  # (schema, name) of the catalog
    cat: Catalog
    level: _Level
    renamed: bool  # an alias column list: names no longer say which column is which
    # unqualified and named like a CTE of the statement: maybe the CTE, whose rows are the
    # client's own; its text is still looked for, but no pin is taken from its rows
    untrusted: bool = False


@dataclass(slots=True)
class _Level:
    parent: _Level | None
    post: bool  # a subquery in a post-filter clause of its parent (its rows are filtered)
    pushed: bool  # a FROM subquery, CTE or view body: outer conditions may be pushed in
    scope: dict[str, list[_Occ]] = field(default_factory=dict)
    # FROM items that are no catalog (tables, subqueries, VALUES, functions, CTEs) by name
    # or alias -> their column names, or None if not known: a column name resolves to one
    # of them before an outer query's catalog (PostgreSQL's innermost-first rule)
    opaque: dict[str, frozenset[str] | None] = field(default_factory=dict)
    occs: list[_Occ] = field(default_factory=list)
    # (left node, right node or None, literal group or None, occurrence ids it pins or None)
    edges: list[tuple[Node, Node | None, tuple | None, frozenset[int] | None]] = field(
        default_factory=list
    )


@dataclass(slots=True)
class _Use:
    level: _Level
    post: bool
    occ: _Occ | None  # whose text (None: a deparser given a literal or a column's class)
    pseudo: str  # "pg_catalog.pg_attrdef.adbin": what is read if it is not pinned
    arg: Any = None  # a deparser's argument: ("node", Node) or ("lit", group)
    kind: str = ""  # "": a column of occ; "row"/"relation": a deparser


def _names(items) -> list[str | None]:
    return [
        (i.get("String") or {}).get("sval") if isinstance(i, dict) else None for i in items or []
    ]


# A parameter in a pin: its number after a NUL (no SQL literal holds one), decided when
# the value is bound (``bound_pins``).
_PARAM = "\x00"


def _const(node: Any) -> tuple[str, bool] | None:
    """A literal's text (or a parameter's ``_PARAM`` + number), and whether it is cast to
    regclass (a relation by name)."""
    if not isinstance(node, dict):
        return None
    if "ParamRef" in node:
        number = node["ParamRef"].get("number", 0)
        return (f"{_PARAM}{number}", False) if isinstance(number, int) and number > 0 else None
    if "A_Const" in node:
        c = node["A_Const"]
        if "sval" in c:
            return (c["sval"].get("sval", ""), False)
        if "ival" in c:
            return (str(c["ival"].get("ival", 0)), False)
        return None
    if "TypeCast" in node:
        tc = node["TypeCast"]
        inner = _const(tc.get("arg"))
        type_name = tc.get("typeName") or {}
        names = _names(type_name.get("names"))
        if inner is None or not names or names[-1] not in _OID_TYPES or type_name.get("typmods"):
            return None  # varchar(7) truncates the literal: the server reads another name
        if (tc.get("typeName") or {}).get("arrayBounds"):
            return None
        return (inner[0], inner[1] or names[-1] == "regclass")
    return None


# Built-in functions in FROM whose result columns are known (psql's \d calls them beside
# catalogs): their names; a set-returning function of one scalar column: its own name
# (or the alias).
_FUNCTION_COLUMNS = {
    "pg_partition_ancestors": frozenset({"relid"}),
    "pg_partition_tree": frozenset({"relid", "parentrelid", "isleaf", "level"}),
    "pg_options_to_table": frozenset({"option_name", "option_value"}),
}
# (not unnest: an array of a composite type gives that type's columns)
_SCALAR_SET_FUNCTIONS = frozenset({"generate_series", "generate_subscripts"})


def _function_columns(rf: dict, alias: str | None) -> frozenset[str] | None:
    """The columns a FROM function's row has, if one built-in function is called (no
    ROWS FROM, no column definition list), else None (not known)."""
    functions = rf.get("functions") or []
    if len(functions) != 1 or rf.get("ordinality") or rf.get("coldeflist"):
        return None
    items = (functions[0].get("List") or {}).get("items") or []
    call = (items[0] if items else {}).get("FuncCall") if items and isinstance(items[0], dict) else None
    if not isinstance(call, dict):
        return None
    names = _names(call.get("funcname"))
    if not names or (len(names) > 1 and names[-2] != _PG) or names[-1] is None:
        return None
    if names[-1] in _FUNCTION_COLUMNS:
        return _FUNCTION_COLUMNS[names[-1]]
    if names[-1] in _SCALAR_SET_FUNCTIONS:
        return frozenset({alias or names[-1]})
    return None


def entries(tree: Any):
    """Every (key, value) of every object in a libpg_query JSON tree (order not kept)."""
    stack = [tree]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            for key, inner in value.items():
                yield key, inner
                if isinstance(inner, (dict, list)):
                    stack.append(inner)


def _conjuncts(expr: Any) -> list[Any]:
    if isinstance(expr, dict) and "BoolExpr" in expr:
        b = expr["BoolExpr"]
        if b.get("boolop") == "AND_EXPR":
            out = []
            for arg in b.get("args") or []:
                out.extend(_conjuncts(arg))
            return out
        return []
    return [expr] if expr is not None else []


def _like_literal(pattern: str) -> str | None:
    """A LIKE pattern without wildcards, as the value it matches (backslash escapes)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch in "%_":
            return None
        if ch == "\\":
            i += 1
            if i == len(pattern):
                return None
            ch = pattern[i]
        out.append(ch)
        i += 1
    return "".join(out)


class _Walk:
    def __init__(self) -> None:
        self.levels: list[_Level] = []
        self.uses: list[_Use] = []
        self.occs: dict[int, _Occ] = {}  # every catalog occurrence, by id
        self.ctes: frozenset[str] = frozenset()  # every CTE name of the statement

    # -- scopes ------------------------------------------------------------------------
    def _new_level(self, parent: _Level | None, post: bool, pushed: bool) -> _Level:
        level = _Level(parent, post, pushed)
        self.levels.append(level)
        return level

    def _register(self, level: _Level, rv: dict, join_aliases: list[list[_Occ]]) -> _Occ | None:
        occ = self._catalog_occ(level, rv, join_aliases)
        if occ is None:
            alias = rv.get("alias") or {}
            name = alias.get("aliasname") or rv.get("relname") or ""
            level.opaque[name] = None  # a table's (or a CTE's) columns: not known here
        return occ

    def _catalog_occ(self, level: _Level, rv: dict, join_aliases: list[list[_Occ]]) -> _Occ | None:
        schema, name = rv.get("schemaname"), rv.get("relname") or ""
        key = (schema or (_PG if name.startswith("pg_") else ""), name)
        cat = CATALOGS.get(key)
        alias = rv.get("alias") or {}
        if cat is None and schema is None:
            # an unqualified name of an information_schema view is that view only when
            # information_schema is on the search path: taken to be, to be safe
            cat = CATALOGS.get((_IS, name))
            key = (_IS, name) if cat is not None else key
        if cat is None:
            return None
        untrusted = schema is None and name in self.ctes
        occ = _Occ(len(self.occs) + 1, key, cat, level, bool(alias.get("colnames")), untrusted)
        self.occs[occ.id] = occ
        level.occs.append(occ)
        level.scope.setdefault(alias.get("aliasname") or name, []).append(occ)
        for group in join_aliases:
            group.append(occ)
        return occ

    def _resolve(self, level: _Level, fields: list[str | None], strict: bool = False):
        """A ColumnRef: ("col", occs, column) or ("row", occs), searched from ``level``
        outwards as PostgreSQL does: the innermost level with a match. An unqualified
        column is every catalog of that level having one (a renamed one may).

        ``strict`` (a pin, a deparser's argument): only what is surely a catalog's column:
        a name some other FROM item of a level may have (a table, a subquery, a VALUES
        list, a function) stops the search there; loose (object text looked for): those
        are passed over, so a name is taken for the catalog's whenever it may be."""
        if not fields or any(f is None for f in fields):
            return None
        if len(fields) == 1:
            name = fields[0]
            lv: _Level | None = level
            while lv is not None:
                found = [o for occs in lv.scope.values() for o in occs
                         if name in o.cat.columns or o.renamed]  # fmt: skip
                if strict and (
                    any(o.renamed for o in found)
                    or (found and any(c is None or name in c for c in lv.opaque.values()))
                ):
                    # a renamed catalog's column, or another item of the level that may
                    # have the name: not surely the catalog's (red-team round 15)
                    return None
                if found:
                    return ("col", list({o.id: o for o in found}.values()), name)
                if strict and any(cols is None or name in cols for cols in lv.opaque.values()):
                    return None
                if name in lv.scope:  # a bare row name: the whole row
                    return ("row", lv.scope[name])
                lv = lv.parent
            return None
        row, column = fields[-2], fields[-1]
        lv = level
        while lv is not None:
            if row in lv.opaque and (strict or row not in lv.scope):
                return None
            if row in lv.scope:
                occs = lv.scope[row]
                if all(column in o.cat.columns and not o.renamed for o in occs):
                    return ("col", occs, column)
                return ("row", occs)  # x.f, f no column of x: a call f(x) of the whole row
            lv = lv.parent
        return None

    def _node(self, level: _Level, expr: Any) -> Node | None:
        if not (isinstance(expr, dict) and "ColumnRef" in expr):
            return None
        got = self._resolve(level, _names(expr["ColumnRef"].get("fields")), strict=True)
        if got is None or got[0] != "col" or len(got[1]) != 1 or got[1][0].untrusted:
            return None
        return (got[1][0].id, got[2])

    # -- conditions ----------------------------------------------------------------------
    def _edges(self, level: _Level, expr: Any, pins: frozenset[int] | None) -> None:
        for conj in _conjuncts(expr):
            if not (isinstance(conj, dict) and "A_Expr" in conj):
                continue
            a = conj["A_Expr"]
            kind = a.get("kind")
            name = tuple(_names(a.get("name")))
            op = (None, name[0]) if len(name) == 1 else tuple(name[-2:])
            left, right = a.get("lexpr"), a.get("rexpr")
            if kind == "AEXPR_OP" and op in _EQ_NAMES:
                ln, rn = self._node(level, left), self._node(level, right)
                lc, rc = _const(left), _const(right)
                if ln is not None and rn is not None:
                    level.edges.append((ln, rn, None, pins))
                elif ln is not None and rc is not None:
                    level.edges.append((ln, None, (rc,), pins))
                elif rn is not None and lc is not None:
                    level.edges.append((rn, None, (lc,), pins))
            elif kind == "AEXPR_IN" and op in _EQ_NAMES:
                ln = self._node(level, left)
                items = (
                    (right or {}).get("List", {}).get("items") if isinstance(right, dict) else None
                )
                consts = [_const(i) for i in items or []]
                if ln is not None and consts and all(c is not None for c in consts):
                    level.edges.append((ln, None, tuple(consts), pins))
            elif kind == "AEXPR_LIKE" and op in _LIKE_NAMES:
                ln, rc = self._node(level, left), _const(right)
                # a parameter's pattern is not known here: no pin (it may hold wildcards)
                if ln is not None and rc is not None and not rc[1] and not rc[0].startswith(_PARAM):
                    value = _like_literal(rc[0])
                    if value is not None:
                        level.edges.append((ln, None, ((value, False),), pins))

    # -- the walk ------------------------------------------------------------------------
    def statement(self, kind: str, node: dict) -> None:
        self.ctes = frozenset(
            inner.get("ctename", "")
            for key, inner in entries(node)
            if key == "CommonTableExpr" and isinstance(inner, dict)
        )
        if kind == "SelectStmt":
            self.select(node, None, False, False)
            return
        top = self._new_level(None, False, False)
        if kind == "CopyStmt" and isinstance(node.get("relation"), dict):
            occ = self._register(top, node["relation"], [])
            if occ is not None:  # COPY pg_attrdef [(cols)] TO: those columns, unfiltered
                cols = _names(node.get("attlist"))
                shown = occ.cat.text if not cols else occ.cat.text & set(cols)
                for col in sorted(shown):
                    self.uses.append(_Use(top, False, occ, _pseudo(occ, col)))
        query_key = _TOP_QUERIES.get(kind)
        for key, value in node.items():
            if kind == "CopyStmt" and key == "relation":
                continue
            if key == query_key and isinstance(value, dict) and "SelectStmt" in value:
                self.select(value["SelectStmt"], None, False, False)
            else:
                self.generic(top, value, False)

    def select(self, sel: dict, parent: _Level | None, post: bool, pushed: bool) -> None:
        if sel.get("op", "SETOP_NONE") != "SETOP_NONE":
            for side in ("larg", "rarg"):
                if isinstance(sel.get(side), dict):
                    self.select(sel[side], parent, post, pushed)
            for key in ("sortClause", "limitCount", "limitOffset", "withClause"):
                if sel.get(key) is not None:
                    self.generic(self._new_level(parent, False, True), sel[key], False)
            return
        level = self._new_level(parent, post, pushed)
        with_clause = sel.get("withClause")
        if with_clause is not None:  # CTE bodies: outer conditions may be pushed into them
            for cte in (with_clause.get("WithClause") or with_clause).get("ctes") or []:
                body = (cte.get("CommonTableExpr") or {}).get("ctequery")
                self.nested(level, body, False, True)
        for item in sel.get("fromClause") or []:
            self.from_item(level, item, [], None)
        self._edges(level, sel.get("whereClause"), None)
        for key, value in sel.items():
            if key in ("fromClause", "withClause", "op"):
                continue
            self.generic(level, value, key in _POST_FILTER)

    def from_item(self, level: _Level, item: Any, join_aliases: list, nullable: set | None) -> None:
        """Register a FROM item's catalogs; collect its join conditions as pins."""
        if not isinstance(item, dict):
            return
        if "RangeVar" in item:
            occ = self._register(level, item["RangeVar"], join_aliases)
            if occ is not None and nullable is not None:
                nullable.add(occ.id)
            return
        if "JoinExpr" in item:
            j = item["JoinExpr"]
            group: list[_Occ] = []
            groups = (
                [*join_aliases, group] if (j.get("alias") or {}).get("aliasname") else join_aliases
            )
            jt = j.get("jointype", "JOIN_INNER")
            left_ids: set[int] = set()
            right_ids: set[int] = set()
            self.from_item(level, j.get("larg"), groups, left_ids)
            self.from_item(level, j.get("rarg"), groups, right_ids)
            if nullable is not None:
                nullable.update(left_ids | right_ids)
            if (j.get("alias") or {}).get("aliasname"):
                level.scope.setdefault(j["alias"]["aliasname"], []).extend(group)
                level.opaque[j["alias"]["aliasname"]] = None  # pins never go through it
            if jt == "JOIN_INNER":
                self._edges(level, j.get("quals"), None)
            elif jt == "JOIN_LEFT":
                self._edges(level, j.get("quals"), frozenset(right_ids))
            elif jt == "JOIN_RIGHT":
                self._edges(level, j.get("quals"), frozenset(left_ids))
            self.generic(level, j.get("quals"), False)
            if j.get("usingClause") or j.get("isNatural"):
                pass  # USING/NATURAL: no pins taken from them
            return
        if "RangeSubselect" in item:
            sub = item["RangeSubselect"]
            alias = sub.get("alias") or {}
            level.opaque[alias.get("aliasname") or ""] = None  # columns not known
            self.nested(level, sub.get("subquery"), False, True)
            return
        for kind in ("RangeFunction", "RangeTableFunc", "RangeTableSample"):
            if kind in item and isinstance(item[kind], dict):
                alias = item[kind].get("alias") or {}
                # an alias column list renames only the first columns: the rest keep their
                # names (red-team round 16), so with one the columns are not known
                columns = None
                if not alias.get("colnames") and kind == "RangeFunction":
                    columns = _function_columns(item[kind], alias.get("aliasname"))
                # a function's alias names its row and, for one column, that column too
                level.opaque[alias.get("aliasname") or kind] = columns
        self.generic(level, item, False)  # functions in FROM, XMLTABLE, ...: pre-filter

    def nested(self, level: _Level, value: Any, post: bool, pushed: bool) -> None:
        if isinstance(value, dict) and "SelectStmt" in value:
            self.select(value["SelectStmt"], level, post, pushed)
        elif value is not None:
            self.generic(self._new_level(level, post, pushed), value, False)

    def generic(self, level: _Level, value: Any, post: bool) -> None:
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, list):
                stack.extend(v)
                continue
            if not isinstance(v, dict):
                continue
            for key, inner in v.items():
                if key == "SelectStmt" and isinstance(inner, dict):
                    # a query in a statement this walk does not know (a view's body, a
                    # rule's action): outer conditions may be pushed into it
                    self.select(inner, level, False, True)
                elif key == "SubLink" and isinstance(inner, dict):
                    self.nested(level, inner.get("subselect"), post, False)
                    stack.append(inner.get("testexpr"))
                elif key == "RangeSubselect" and isinstance(inner, dict):
                    self.nested(level, inner.get("subquery"), False, True)
                elif key == "CommonTableExpr" and isinstance(inner, dict):
                    self.nested(level, inner.get("ctequery"), False, True)
                elif key == "RangeVar" and isinstance(inner, dict):
                    occ = self._register(level, inner, [])
                    if occ is not None:  # outside a FROM (a DML's target or USING): unfiltered
                        for col in sorted(occ.cat.text):
                            self.uses.append(_Use(level, False, occ, _pseudo(occ, col)))
                elif key == "ColumnRef" and isinstance(inner, dict):
                    self.column(level, inner, post)
                elif key == "FuncCall" and isinstance(inner, dict):
                    self.call(level, inner, post)
                    stack.append(inner)
                elif isinstance(inner, (dict, list)):
                    stack.append(inner)

    def column(self, level: _Level, ref: dict, post: bool) -> None:
        fields = ref.get("fields") or []
        if fields and isinstance(fields[-1], dict) and "A_Star" in fields[-1]:
            if len(fields) == 1:  # *: every catalog of this level
                occs = [o for group in level.scope.values() for o in group]
            else:
                got = self._resolve(level, [*_names(fields[:-1]), "\x00"])
                occs = got[1] if got is not None else []
            for occ in {o.id: o for o in occs}.values():
                for col in sorted(occ.cat.text):
                    self.uses.append(_Use(level, post, occ, _pseudo(occ, col)))
            return
        got = self._resolve(level, _names(fields))
        if got is None:
            return
        if got[0] == "row":
            for occ in {o.id: o for o in got[1]}.values():
                for col in sorted(occ.cat.text):
                    self.uses.append(_Use(level, post, occ, _pseudo(occ, col)))
            return
        for occ in got[1]:
            if occ.renamed:
                for col in sorted(occ.cat.text):
                    self.uses.append(_Use(level, False, occ, _pseudo(occ, col)))
            elif got[2] in occ.cat.text:
                self.uses.append(_Use(level, post, occ, _pseudo(occ, got[2])))

    def call(self, level: _Level, fc: dict, post: bool) -> None:
        names = _names(fc.get("funcname"))
        if not names or names[-1] not in DEPARSERS or (len(names) > 1 and names[-2] != _PG):
            return
        kind, catalog, column = DEPARSERS[names[-1]]
        pseudo = f"{_PG}.{catalog}.{column}"
        args = fc.get("args") or []
        if names[-1] == "obj_description" and len(args) == 1:
            # no catalog named: a comment on an object of any catalog with that OID (a large
            # object's OID is its maker's choice)
            self.uses.append(_Use(level, False, None, pseudo))
            return
        if names[-1] == "obj_description" and len(args) > 1:
            target = _const(args[1])
            if target is None or target[1] or target[0] not in ("pg_class", "pg_catalog.pg_class"):
                # a comment on another kind of object (a function, a schema, a type): no
                # pin says which; read as the catalog
                self.uses.append(_Use(level, False, None, pseudo))
                return
        if not args:
            return
        if kind == "function":
            self.uses.append(_Use(level, False, None, pseudo))
            return
        lit = _const(args[0])
        if lit is not None and kind == "relation":
            self.uses.append(_Use(level, post, None, pseudo, ("lit", (lit,)), kind))
            return
        node = self._node(level, args[0])
        if node is None:
            self.uses.append(_Use(level, False, None, pseudo))
            return
        self.uses.append(_Use(level, post, None, pseudo, ("node", node, catalog), kind))


# A view's object text, as the catalog column it shows (a read: scope on that catalog
# allows both).
_SHOWN_AS = {
    (_PG, "pg_policies"): "pg_policy.polqual",
    (_PG, "pg_indexes"): "pg_index.indpred",
    (_IS, "columns"): "pg_attrdef.adbin",
    (_IS, "attributes"): "pg_attrdef.adbin",
    (_IS, "triggers"): "pg_trigger.tgargs",
    (_IS, "check_constraints"): "pg_constraint.conbin",
    (_IS, "parameters"): "pg_proc.proargdefaults",
    (_IS, "foreign_table_options"): "pg_foreign_table.ftoptions",
    (_IS, "column_options"): "pg_attribute.attfdwoptions",
    (_IS, "foreign_data_wrapper_options"): "pg_foreign_data_wrapper.fdwoptions",
    (_IS, "domains"): "pg_type.typdefault",
}


def _pseudo(occ: _Occ, column: str) -> str:
    shown = _SHOWN_AS.get(occ.key)
    if shown is not None:
        return f"{_PG}.{shown}"
    return f"{occ.key[0]}.{occ.key[1]}.{column}"


class _Pins:
    """The equalities in force for the rows of one occurrence, and what they pin.

    Edges are the equalities of the occurrence's level and of the levels it is a filtered
    subquery of. A WHERE or INNER JOIN conjunct holds for every row; a LEFT JOIN's ON
    holds only where its nullable side is not null-extended. So the search starts at the
    occurrence (its rows exist: it is ``known``), and an ON equality is followed only once
    an occurrence of that nullable side is known; an equality reached lands on a column
    that is then not NULL, which makes its occurrence known too."""

    def __init__(self, walk: _Walk, start: _Level, occ_id: int) -> None:
        self.walk = walk
        self.edges: list[tuple[Node, Node | None, tuple | None, frozenset[int] | None]] = []
        level: _Level = start
        self.edges.extend(level.edges)
        # an outer level's conditions hold here only through a subquery it filters first,
        # and not in a level outer conditions are pushed into (they may run before its own)
        while level.post and level.parent is not None and not level.parent.pushed:
            level = level.parent
            self.edges.extend(level.edges)
        self.known: set[int] = {occ_id}
        self.asked: set[Node] = set()  # parents looked up (a cycle of pg_inherits rows)

    def reach(self, start: Node) -> set[Node]:
        """Every column equal to ``start`` in the rows considered (grows ``known``)."""
        reached = {start}
        self.known.add(start[0])
        changed = True
        while changed:
            changed = False
            for left, right, _group, only in self.edges:
                if right is None or (only is not None and not (self.known & only)):
                    continue
                for here, there in ((left, right), (right, left)):
                    if here in reached and there not in reached:
                        reached.add(there)
                        self.known.add(there[0])
                        changed = True
        return reached

    def literal_groups(self, nodes: set[Node]) -> list[tuple]:
        return [
            group
            for left, right, group, only in self.edges
            if right is None and group is not None and left in nodes
            and (only is None or self.known & only)
        ]  # fmt: skip

    def oid_pins(self, node: Node, partitions: bool = False) -> frozenset[Pin] | None:
        """Pins of a column holding relation OIDs: literals equal to it, or the name of a
        pg_class row whose oid is equal to it; with ``partitions`` (a partition's bound),
        also the children of a pinned table (only a partition has a bound)."""
        nodes = self.reach(node)
        for group in self.literal_groups(nodes):
            pins = _oid_group(group)
            if pins is not None:
                return pins
        for member in sorted(nodes):
            occ = self._occ(member[0])
            if occ is not None and occ.untrusted:
                continue
            if occ is not None and occ.key == (_PG, "pg_class") and member[1] == "oid":
                pins = self.class_names(occ)
                if pins:
                    return pins
            if (
                occ is not None and occ.cat.key and occ.cat.rowid == member[1]
                and occ.key != (_PG, "pg_class") and (occ.id, "") not in self.asked
            ):  # fmt: skip
                # the row id of a pinned row (a constraint's, a trigger's: psql and
                # SQLAlchemy read their comments so): of its relation
                self.asked.add((occ.id, ""))
                pins = self.occurrence(occ)
                if pins and pins is not NOTHING:
                    return pins
            if (
                partitions and occ is not None and occ.key == (_PG, "pg_inherits")
                and member[1] == "inhrelid"
            ):  # fmt: skip
                # a child's bound, read through its pinned parent (psql's \d of any table
                # lists its children so): only a partition has one, a partitioned table's
                # child, whose rows are read through it. Nothing else of a child: an
                # INHERITS child has defaults, constraints, comments of its own (red-team
                # round 15)
                parent = (occ.id, "inhparent")
                if parent not in nodes and parent not in self.asked:
                    self.asked.add(parent)
                    pins = self.oid_pins(parent)
                    if pins:
                        return pins
        return None

    def name_group(self, node: Node) -> list[str] | None:
        for group in self.literal_groups(self.reach(node)):
            if all(not regclass for _, regclass in group):
                return [value for value, _ in group]
        return None

    def class_names(self, occ: _Occ) -> frozenset[Pin] | None:
        """A pg_class row pinned by name: relname, and relnamespace to a pg_namespace row
        pinned by nspname (or no schema: every relation of that name)."""
        tables = self.name_group((occ.id, "relname"))
        if not tables:
            return None
        schemas = None
        for member in sorted(self.reach((occ.id, "relnamespace"))):
            ns = self._occ(member[0])
            if ns is not None and ns.key == (_PG, "pg_namespace") and member[1] == "oid" and not ns.untrusted:
                schemas = self.name_group((ns.id, "nspname"))
                if schemas:
                    break
        return _name_pins(schemas, tables)

    def _occ(self, occ_id: int) -> _Occ | None:
        return self.walk.occs.get(occ_id)

    def occurrence(self, occ: _Occ) -> frozenset[Pin] | None:
        if occ.untrusted:
            return None
        if occ.key == (_PG, "pg_index"):
            pins = self.oid_pins((occ.id, "indexrelid"))  # psql's \d of an index
            if pins:
                return pins
        if occ.cat.key:
            pins = self.oid_pins((occ.id, occ.cat.key), occ.key == (_PG, "pg_class"))
            if pins:
                return pins
        if occ.key == (_PG, "pg_constraint"):
            kinds = self.name_group((occ.id, "contype"))
            if kinds and set(kinds) <= _PLAIN_CONSTRAINTS:
                return NOTHING  # keys and foreign keys: columns, no expression
        if occ.key == (_PG, "pg_class"):
            return self.class_names(occ)
        if occ.cat.names is not None:
            schema_col, table_col = occ.cat.names
            tables = self.name_group((occ.id, table_col))
            if tables:
                return _name_pins(self.name_group((occ.id, schema_col)), tables)
        return None


def _oid_group(group: tuple) -> frozenset[Pin] | None:
    out = set()
    for value, regclass in group:
        if value.startswith(_PARAM):
            out.add(("param", json.dumps(["reg" if regclass else "oid", int(value[1:])])))
        elif value.isdigit() and value.isascii():
            out.add(("oid", str(int(value))))
        elif regclass:
            pin = _regclass_pin(value)
            if pin is None:
                return None
            out.add(pin)
        else:
            return None
    return frozenset(out) if out else None


def _regclass_pin(value: str) -> Pin | None:
    parts = parse_qualified_name(value)
    if not parts or len(parts) > 3:
        return None
    names = [p for p, _ in parts]
    # unqualified: the relation the session's search path finds first
    return ("rel", render_name(names[-2], names[-1])) if len(names) > 1 else ("visible", names[0])


def _name_pins(schemas: list[str] | None, tables: list[str]) -> frozenset[Pin]:
    def part(value: str):
        return int(value[1:]) if value.startswith(_PARAM) else value

    out: set[Pin] = set()
    for t in tables:
        if not schemas:
            out.add(
                ("name", t)
                if not t.startswith(_PARAM)
                else ("param", json.dumps(["name", part(t)]))
            )
        for sch in schemas or ():
            if sch.startswith(_PARAM) or t.startswith(_PARAM):
                out.add(("param", json.dumps(["rel", part(sch), part(t)])))
            else:
                out.add(("rel", render_name(sch, t)))
    return frozenset(out)


def bound_pins(
    value: str, formats: tuple[int, ...], values: tuple[bytes | None, ...], encoding: str
) -> frozenset[Pin] | None:
    """A parameter pin (``("param", value)``) with the values a Bind gives: the pins it
    stands for, or None when a value cannot be read as one (NULL, out of range, a binary
    value of the wrong size, text that is no OID or name): then nothing is pinned."""
    spec = json.loads(value)

    def raw(number: int) -> tuple[bytes, int] | None:
        if not 1 <= number <= len(values):
            return None
        got = values[number - 1]
        if got is None:
            return None
        fmt = formats[0] if len(formats) == 1 else formats[number - 1] if formats else 0
        return got, fmt

    def oid(number: int) -> str | None:
        r = raw(number)
        if r is None:
            return None
        data, fmt = r
        if fmt == 1:  # an oid, int4 or int8 (asyncpg), or int2 (psycopg's small ints)
            if len(data) not in (2, 4, 8):
                return None
            number = int.from_bytes(data, "big", signed=len(data) != 4)
            return str(number) if number >= 0 else None
        text = _text(data, encoding)
        return text if text is not None and text.isdigit() and text.isascii() else None

    def name(number: int | str) -> str | None:
        if isinstance(number, str):
            return number
        r = raw(number)
        return _text(r[0], encoding) if r is not None else None

    kind = spec[0]
    if kind == "oid":
        got = oid(spec[1])
        return frozenset({("oid", str(int(got)))}) if got is not None else None
    if kind == "reg":
        r = raw(spec[1])
        if r is None:
            return None
        if r[1] == 1:
            # a regclass sent in binary is its 4-byte OID; other sizes are another type's
            # value ($1::text::regclass bound as 2 bytes of text is a name to the server)
            if len(r[0]) != 4:
                return None
            got = oid(spec[1])
            return frozenset({("oid", str(int(got)))}) if got is not None else None
        text = _text(r[0], encoding)
        if text is None:
            return None
        if text.isdigit() and text.isascii():
            return frozenset({("oid", str(int(text)))})
        pin = _regclass_pin(text)
        return frozenset({pin}) if pin is not None else None
    if kind == "name":
        table = name(spec[1])
        return frozenset({("name", table)}) if table else None
    if kind == "rel":
        schema, table = name(spec[1]), name(spec[2])
        return frozenset({("rel", render_name(schema, table))}) if schema and table else None
    return None


def bound_setting_refs(
    spec: str, formats: tuple[int, ...], values: tuple[bytes | None, ...], encoding: str
) -> tuple[str, str | None, str | None]:
    """A setting pin's call and the texts its name and value stand for with the values a
    Bind gives (``pgparse._setting_ref``: a parameter's number or a literal; None: NULL, no
    such parameter, a value that is not text, or not a literal or parameter)."""
    call, *refs = json.loads(spec)

    def text(ref: Any) -> str | None:
        if type(ref) is str:
            return ref
        if type(ref) is not int or not 1 <= ref <= len(values):
            return None
        got = values[ref - 1]
        # text or binary alike: a text parameter's binary form is its characters
        return _text(got, encoding) if got is not None else None

    return call, text(refs[0] if refs else None), text(refs[1] if len(refs) > 1 else None)


# what PostgreSQL's int2in/int4in read: blanks (C isspace), a sign, decimal digits, blanks
_INT_TEXT = re.compile(r"[ \t\n\r\v\f]*([+-]?[0-9]+)[ \t\n\r\v\f]*")


def bound_pid(
    spec: str, formats: tuple[int, ...], values: tuple[bytes | None, ...], encoding: str
) -> int | None:
    """The backend pid a signal pin's parameter (``pgparse._signal_ref``: a bare ``$n``, which
    resolves the call only as int4 or int2) stands for with the values a Bind gives: its
    text read as int4in reads it, or its binary int4 or int2; None: NULL, no such parameter,
    anything else."""
    _call, ref = json.loads(spec)
    if type(ref) is not int or not 1 <= ref <= len(values):
        return None
    got = values[ref - 1]
    if got is None:
        return None
    if len(formats) == 1:
        fmt = formats[0]
    elif formats:
        if ref > len(formats):
            return None
        fmt = formats[ref - 1]
    else:
        fmt = 0
    if fmt == 1:
        return int.from_bytes(got, "big", signed=True) if len(got) in (2, 4) else None
    if fmt != 0:
        return None
    text = _text(got, encoding)
    match = _INT_TEXT.fullmatch(text) if text is not None else None
    return int(match.group(1)) if match is not None else None


def _text(data: bytes, encoding: str) -> str | None:
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None
    return text if "\x00" not in text else None


def _chain_ok(use_level: _Level, occ_level: _Level) -> bool:
    """From the level a value is used in up to its occurrence's: every step a filtered
    (post-filter) subquery, none a level outer conditions are pushed into."""
    level: _Level | None = use_level
    while level is not None:
        if level.pushed:
            return False
        if level is occ_level:
            return True
        if not level.post:
            return False
        level = level.parent
    return False


def described(kind: str, tree: dict) -> tuple[frozenset[Pin], bool]:
    """What the statement's object text depends on (see the module), each pin as
    ``(kind, "value@catalog.column")`` (the column read, whose catalog's read scope
    allows it whatever it is pinned to), and whether the decision depends on literals:
    whenever any object text is read (a pin, or a literal that failed to be one)."""
    w = _Walk()
    w.statement(kind, tree)
    out: set[Pin] = set()
    if len(w.uses) > _MAX_USES or sum(len(lv.edges) for lv in w.levels) > _MAX_EDGES:
        # the search is quadratic in the equalities: a statement built to make it slow
        # pins nothing (every psql, JDBC and ORM query has a few dozen at most)
        return frozenset(("any", use.pseudo) for use in w.uses), bool(w.uses)
    for use in w.uses:
        pins: frozenset[Pin] | None = None
        occ = use.occ
        if use.kind == "" and occ is not None:
            # its own level's text counts only after the filter; an outer row's text only
            # through subqueries that row's level filters first (_chain_ok)
            if (use.post or occ.level is not use.level) and _chain_ok(use.level, occ.level):
                pins = _Pins(w, occ.level, occ.id).occurrence(occ)
        elif use.arg is not None and use.arg[0] == "lit":
            if use.post and not use.level.pushed:
                pins = _oid_group(use.arg[1])
        elif use.arg is not None:
            pins = _deparsed(w, use)
        if pins is NOTHING:
            continue
        if pins:
            out.update((k, f"{v}@{use.pseudo}") for k, v in pins)
        else:
            out.add(("any", use.pseudo))
    return frozenset(out), bool(w.uses)


def _deparsed(w: _Walk, use: _Use) -> frozenset[Pin] | None:
    """A deparser given a column: the row it names must be pinned (``r.oid`` of a pinned
    pg_constraint row), or, for a relation OID, the column's class (``c.oid`` with
    ``c.oid = '16385'``)."""
    _, node, catalog = use.arg
    occ = w.occs.get(node[0])
    if occ is None or occ.untrusted or not (use.post or occ.level is not use.level):
        return None
    if not _chain_ok(use.level, occ.level):
        return None
    pins = _Pins(w, occ.level, occ.id)
    if use.kind == "relation":
        found = pins.oid_pins(node)
        if found:
            return found
    # the row id of a pinned row of the deparser's catalog, equal to the argument
    for member in sorted(pins.reach(node)):
        other = pins._occ(member[0])
        if (
            other is not None
            and not other.untrusted
            and other.key == (_PG, catalog)
            and other.cat.rowid
            and member[1] == other.cat.rowid
            and _chain_ok(use.level, other.level)
        ):
            found = _Pins(w, other.level, other.id).occurrence(other)
            if found:
                return found
    return None
