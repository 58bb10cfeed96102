"""Column syntax decided with the database's catalog (pure; the loading is the proxy's).

PostgreSQL reads ``x.name`` (and ``(expr).name``) as a column if ``x``'s row type has one
called ``name``, and otherwise as the call ``name(x)``: any function whose first argument
can take a row (a composite type, ``record``, a polymorphic or domain type) and that can be
called with one argument. The parser cannot tell which; the catalog can. A ``Snapshot``
holds, for one database, the names of such functions and the columns of its relations;
``attribute_calls`` says which column-syntax names of a statement may be calls, which the
policy then decides like any other call (an execute scope, or a built-in).

Fail closed: without a snapshot every column-syntax name counts as a possible call; with a
stale one (DDL went through the proxy since it was loaded) a name that is not a known
column of the statement's relations counts as one too.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from policy.classify.catalogue import CURRENT_SETTING_PREFIX, SET_CONFIG_PREFIX, signal_target
from policy.classify.pgparse import ANY_RELATION, DERIVED_ROWS, inlined_reads, view_hides_rows
from policy.lexer import render_name
from policy.scopes import split_name

if TYPE_CHECKING:
    import asyncio

    from policy.scopes import Scopes

__all__ = [
    "rests_on_completeness",
    "stale_refusal",
    "COLUMNS_SQL",
    "FUNCTIONS_SQL",
    "ROLE_SCHEMAS_SQL",
    "USER_FUNCTIONS_SQL",
    "USER_OPERATORS_SQL",
    "USER_TYPES_SQL",
    "USER_TYPE_OIDS_SQL",
    "INLINABLE_SQL",
    "RELATION_OIDS_SQL",
    "DEFAULTED_FUNCTIONS_SQL",
    "DOMAIN_SCHEMAS_SQL",
    "USER_SCHEMAS_SQL",
    "RULED_SQL",
    "TRIGGERED_SQL",
    "INHERITANCE_SQL",
    "STATISTICS_SQL",
    "DEFAULT_FUNCTIONS_SQL",
    "POLICY_READS_SQL",
    "PUBLISHED_SQL",
    "POLICY_EXPRS_SQL",
    "TYPE_USERS_SQL",
    "VIEWS_SQL",
    "OPCLASS_FUNCTIONS_SQL",
    "RELATION_OPCLASS_SQL",
    "RELATION_PLAN_CODE_SQL",
    "ARGUMENT_DEFAULTS_SQL",
    "TYPE_DEPENDENTS_SQL",
    "FOREIGN_KEYS_SQL",
    "RELATION_CHECKS_SQL",
    "EVENT_TRIGGERS_SQL",
    "FUNCTION_TYPES_SQL",
    "RELATION_CASTS_SQL",
    "GLOBAL_CASTS_SQL",
    "VIEW_NAMES_SQL",
    "VIEW_READS_SQL",
    "CatalogCache",
    "Snapshot",
    "attribute_calls",
    "covers_database",
    "describe_refusal",
    "names_schema",
    "shadowing_calls",
    "merge_defined",
    "with_defined",
    "without_columns",
    "RENAMED_TO",
    "inlinable_from_rows",
    "plain_inlinable_from_rows",
    "view_functions_from_rows",
    "relation_names",
    "views_from_rows",
]

# Functions callable as x.name: one argument needed, the first able to take a row.
FUNCTIONS_SQL = """
SELECT DISTINCT p.proname
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_type t ON t.oid = p.proargtypes[0]
WHERE p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1 AND p.prokind <> 'p'
  AND t.typtype IN ('c', 'p', 'd')
"""
# Columns of every relation outside the system schemas (the catalogs' own columns are
# known to the policy only as names of functions they do not have).
COLUMNS_SQL = """
SELECT n.nspname, c.relname, a.attname
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'm', 'f', 'p', 'c')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
"""

# User-written functions outside the system schemas, by name: any language but C and
# internal (only a superuser can add those), and every aggregate and window function
# (recorded as internal whatever runs inside them). PostgreSQL resolves an unqualified call
# by the best match of argument types across the whole search path, not by the first
# schema: lower(1) runs public.lower(int) if one exists, since pg_catalog.lower(text) would
# need a cast. So a call spelled like a built-in is a call of every user function of that
# name (temporary schemas excepted: unqualified calls never look there).
_WRITTEN = """
  SELECT p.oid, n.nspname, p.proname
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
  WHERE (l.lanname NOT IN ('c', 'internal') OR p.prokind IN ('a', 'w'))
    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
USER_FUNCTIONS_SQL = f"""
SELECT w.nspname, w.proname FROM ({_WRITTEN}) w
WHERE w.nspname !~ '^pg_(toast|temp_|toast_temp_)'
"""
# Operators outside the system schemas whose function is user-written: an unqualified
# operator (1 || 2), or one the grammar implies (BETWEEN, CASE x WHEN, JOIN ... USING), may
# resolve to one as a function call does, by argument types.
USER_OPERATORS_SQL = f"""
SELECT o.oprname, w.nspname, w.proname
FROM pg_catalog.pg_operator o
JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
JOIN ({_WRITTEN}) w ON w.oid = o.oprcode
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# Types outside the system schemas that run user-written functions when a value of them is
# made or converted (a cast, a literal of the type, an argument, column or parameter of it):
# a domain's constraints and DEFAULT (pg_depend records the functions, operators and types
# they use), a
# cast into or out of the type by a function, and whatever a type made of it runs: a
# domain over it or whose constraint uses it, an array of it, a row type with a column of
# it, a range over it. Each row: the type's OID and name and one function it may run.
# Every type outside the system schemas (a user's or an extension's)
_USERTYPE = """
  SELECT t.oid FROM pg_catalog.pg_type t
  JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# (type, function) of what compares a type's values with no operator written (red-team
# round 30): ORDER BY, DISTINCT, GROUP BY, UNION, joins of rows or arrays, window ORDER BY
# and CREATE INDEX use the type's default operator classes (a superuser's CREATE OPERATOR
# CLASS ... DEFAULT FOR TYPE), whose support functions and operators' functions run; a
# range compares its bounds by its subtype's operator class and runs its subtype_diff and
# canonical functions
_COMPARES = """
  SELECT oc.opcintype, ap.amproc FROM pg_catalog.pg_opclass oc
  JOIN pg_catalog.pg_amproc ap ON ap.amprocfamily = oc.opcfamily
  WHERE oc.opcdefault
  UNION
  SELECT oc.opcintype, o.oprcode FROM pg_catalog.pg_opclass oc
  JOIN pg_catalog.pg_amop ao ON ao.amopfamily = oc.opcfamily
  JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr
  WHERE oc.opcdefault
  UNION
  SELECT r.rngtypid, ap.amproc FROM pg_catalog.pg_range r
  JOIN pg_catalog.pg_opclass oc ON oc.oid = r.rngsubopc
  JOIN pg_catalog.pg_amproc ap ON ap.amprocfamily = oc.opcfamily
  UNION
  SELECT r.rngtypid, o.oprcode FROM pg_catalog.pg_range r
  JOIN pg_catalog.pg_opclass oc ON oc.oid = r.rngsubopc
  JOIN pg_catalog.pg_amop ao ON ao.amopfamily = oc.opcfamily
  JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr
  UNION
  SELECT r.rngtypid, r.rngsubdiff FROM pg_catalog.pg_range r WHERE r.rngsubdiff <> 0
  UNION
  SELECT r.rngtypid, r.rngcanonical FROM pg_catalog.pg_range r WHERE r.rngcanonical <> 0"""
# (operator family, function) of every support function and operator's function of a family
_FAMILY_FUNCTIONS = """
  SELECT ap.amprocfamily, ap.amproc FROM pg_catalog.pg_amproc ap
  UNION
  SELECT ao.amopfamily, o.oprcode FROM pg_catalog.pg_amop ao
  JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr"""
# (relation, operator class) of every index's columns and partition key's columns: scans,
# index maintenance and partition routing run the class's family (red-team round 31: a
# non-default class of user-written functions on an int4 column ran on a plain read)
_RELATION_OPCLASSES = """
  SELECT i.indrelid, k.opc FROM pg_catalog.pg_index i
  CROSS JOIN LATERAL unnest(i.indclass::pg_catalog.oid[]) AS k(opc)
  UNION
  SELECT pt.partrelid, k.opc FROM pg_catalog.pg_partitioned_table pt
  CROSS JOIN LATERAL unnest(pt.partclass::pg_catalog.oid[]) AS k(opc)"""

# (relation, function) of every function its indexes' and partition key's classes' families
# hold (the caller keeps the user-written ones)
_RELATION_OPCLASS_CODE = f"""
  SELECT r.relid, f.fn FROM ({_RELATION_OPCLASSES}) r(relid, opc)
  JOIN pg_catalog.pg_opclass oc ON oc.oid = r.opc
  JOIN ({_FAMILY_FUNCTIONS}) f(family, fn) ON f.family = oc.opcfamily"""

# What a type's values are made of, (part, whole): a domain's base type, an array's
# element, a row type's columns (a table's, a view's, a composite type's), a range's
# subtype, a range's multirange (what the part runs, the whole may run)
_PARTS = """
  SELECT t.typbasetype, t.oid FROM pg_catalog.pg_type t WHERE t.typbasetype <> 0
  UNION ALL
  SELECT t.typelem, t.oid FROM pg_catalog.pg_type t WHERE t.typelem <> 0
  UNION ALL
  SELECT a.atttypid, c.reltype
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  WHERE a.attnum > 0 AND NOT a.attisdropped AND c.reltype <> 0
  UNION ALL
  SELECT r.rngsubtype, r.rngtypid FROM pg_catalog.pg_range r
  UNION ALL
  SELECT r.rngtypid, r.rngmultitypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid <> 0"""
USER_TYPES_SQL = f"""
WITH RECURSIVE
written AS ({_WRITTEN}),
usertype AS ({_USERTYPE}),
constraint_uses AS (
  SELECT c.contypid AS typ, d.refclassid, d.refobjid
  FROM pg_catalog.pg_constraint c
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
   AND d.objid = c.oid
  WHERE c.contypid <> 0
  UNION ALL
  -- what a type's own definition uses (a domain's DEFAULT: recorded against the type)
  SELECT d.objid, d.refclassid, d.refobjid FROM pg_catalog.pg_depend d
  WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
    AND d.objid IN (SELECT oid FROM usertype)
),
direct AS (
  SELECT typ, refobjid AS fn FROM constraint_uses
  WHERE refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
  UNION
  SELECT u.typ, o.oprcode FROM constraint_uses u
  JOIN pg_catalog.pg_operator o ON o.oid = u.refobjid
  WHERE u.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass
  UNION
  SELECT c.casttarget, c.castfunc FROM pg_catalog.pg_cast c
  WHERE c.castfunc <> 0 AND c.casttarget IN (SELECT oid FROM usertype)
  UNION
  SELECT c.castsource, c.castfunc FROM pg_catalog.pg_cast c
  WHERE c.castfunc <> 0 AND c.castsource IN (SELECT oid FROM usertype)
  UNION
  SELECT typ, fn FROM ({_COMPARES}) cmp(typ, fn)
  WHERE typ IN (SELECT oid FROM usertype) AND fn IN (SELECT oid FROM written)
),
made_of(part, whole) AS (
{_PARTS}
  UNION ALL
  SELECT refobjid, typ FROM constraint_uses
  WHERE refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass
),
runs(typ, fn) AS (
  SELECT typ, fn FROM direct WHERE fn IN (SELECT oid FROM written)
  UNION
  SELECT m.whole, r.fn FROM runs r JOIN made_of m ON m.part = r.typ
)
SELECT t.oid::text, tn.nspname, t.typname, w.nspname, w.proname
FROM runs r
JOIN pg_catalog.pg_type t ON t.oid = r.typ
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
JOIN written w ON w.oid = r.fn
WHERE tn.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# Casts by user-written functions, which run where a value is converted with no call
# written (red-team round 26): ``mood::text``, an implicit cast in ``substr(mood, 1)``, an
# assignment into a column. Each row: a relation outside the system schemas and the
# function of a cast into or out of a user type its values are made of (a column's type,
# a domain's base type, an array's element, a row type's column, a range's subtype), so a
# statement reading or writing the relation may run it (``StatementPolicy._casts``).
RELATION_CASTS_SQL = f"""
WITH RECURSIVE
written AS ({_WRITTEN}),
usertype AS ({_USERTYPE}),
usercast AS (
  SELECT c.castsource, c.casttarget, c.castfunc FROM pg_catalog.pg_cast c
  WHERE c.castfunc IN (SELECT oid FROM written)
),
direct(typ, fn) AS (
  SELECT castsource, castfunc FROM usercast WHERE castsource IN (SELECT oid FROM usertype)
  UNION
  SELECT casttarget, castfunc FROM usercast WHERE casttarget IN (SELECT oid FROM usertype)
  UNION
  SELECT typ, fn FROM ({_COMPARES}) cmp(typ, fn)
  WHERE typ IN (SELECT oid FROM usertype) AND fn IN (SELECT oid FROM written)
),
made_of(part, whole) AS (
{_PARTS}
),
runs(typ, fn) AS (
  SELECT typ, fn FROM direct
  UNION
  SELECT m.whole, r.fn FROM runs r JOIN made_of m ON m.part = r.typ
)
SELECT n.nspname, c.relname, w.nspname, w.proname
FROM runs r
JOIN pg_catalog.pg_class c ON c.reltype = r.typ
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN written w ON w.oid = r.fn
WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# Casts by user-written functions between two system types, and user-written functions in
# a system type's default operator classes (only a superuser makes either): any statement
# may convert or compare such values with none written, so every statement that evaluates
# anything needs the execute scope on each.
GLOBAL_CASTS_SQL = f"""
SELECT DISTINCT w.nspname, w.proname
FROM pg_catalog.pg_cast c
JOIN ({_WRITTEN}) w ON w.oid = c.castfunc
JOIN pg_catalog.pg_type s ON s.oid = c.castsource
JOIN pg_catalog.pg_namespace sn ON sn.oid = s.typnamespace
JOIN pg_catalog.pg_type t ON t.oid = c.casttarget
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
WHERE sn.nspname IN ('pg_catalog', 'information_schema')
  AND tn.nspname IN ('pg_catalog', 'information_schema')
UNION
SELECT w.nspname, w.proname
FROM ({_COMPARES}) cmp(typ, fn)
JOIN ({_WRITTEN}) w ON w.oid = cmp.fn
JOIN pg_catalog.pg_type t ON t.oid = cmp.typ
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
WHERE tn.nspname IN ('pg_catalog', 'information_schema')
"""
# Operator classes outside the system schemas with user-written functions in their family:
# a statement naming one (CREATE INDEX ... (a s.ops), PARTITION BY ... (a s.ops)) runs them
# at once (red-team round 31), decided like calls (``StatementPolicy._casts``).
OPCLASS_FUNCTIONS_SQL = f"""
SELECT DISTINCT n.nspname, oc.opcname, w.nspname, w.proname
FROM pg_catalog.pg_opclass oc
JOIN pg_catalog.pg_namespace n ON n.oid = oc.opcnamespace
JOIN ({_FAMILY_FUNCTIONS}) f(family, fn) ON f.family = oc.opcfamily
JOIN ({_WRITTEN}) w ON w.oid = f.fn
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# Relations whose indexes or partition keys use an operator class with user-written
# functions, and their ancestors (a read of a parent scans its children's indexes, an
# insert routes through them): (schema, relation, function schema, function), merged into
# ``Snapshot.relation_casts`` (a read or write of the relation may run them).
RELATION_OPCLASS_SQL = f"""
WITH RECURSIVE written AS ({_WRITTEN}),
runs(relid, fn) AS (
  SELECT relid, fn FROM ({_RELATION_OPCLASS_CODE}) code(relid, fn)
  WHERE fn IN (SELECT oid FROM written)
  UNION
  SELECT i.inhparent, runs.fn FROM pg_catalog.pg_inherits i JOIN runs ON i.inhrelid = runs.relid
)
SELECT n.nspname, c.relname, w.nspname, w.proname
FROM runs JOIN pg_catalog.pg_class c ON c.oid = runs.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN written w ON w.oid = runs.fn
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# Relations with row security on and the user-written functions their policies' expressions
# call (pg_depend records them): a read or write of the relation runs them on its rows, and
# what they say (a NOTICE, an error) may quote rows the grant may not read (red-team round
# 53): merged into ``Snapshot.relation_casts``, each needs the execute scope. The last
# column says whether the policy applies to the proxy's own login (the loader's): not to
# its own relations without FORCE, whose owner PostgreSQL applies no policy to (round 29:
# the policy is inert for it). A session that logs in as a role of its own (``db_role``:
# per-grant or mapped) owns none of them as far as the policy knows: every row here counts
# for it (``Snapshot.relation_casts_role``; session 27).
RELATION_POLICY_SQL = f"""
SELECT DISTINCT n.nspname, c.relname, w.nspname, w.proname,
       (c.relforcerowsecurity OR c.relowner <> (
        SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user))::text
FROM pg_catalog.pg_policy pol
JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass
     AND d.objid = pol.oid AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
JOIN ({_WRITTEN}) w ON w.oid = d.refobjid
WHERE c.relrowsecurity AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# The relations a row security policy's expressions read (a subquery: ``USING (owner IN
# (SELECT secret FROM x.acc))``), as (relation schema, name, read schema, name, applies):
# which of the grant's own rows come back tells which values those hold (red-team round 64).
# ``applies``: to the proxy's login (FORCE, or not the owner; not a superuser or BYPASSRLS
# login; the policy is for PUBLIC or a role the login is a member of).
_POLICY_APPLIES = """
((c.relforcerowsecurity OR c.relowner <> r.oid) AND NOT (r.rolsuper OR r.rolbypassrls)
 AND (0 = ANY (pol.polroles) OR EXISTS (
     SELECT 1 FROM pg_catalog.unnest(pol.polroles) AS pr(role)
     WHERE pg_catalog.pg_has_role(r.oid, pr.role, 'MEMBER'))))::text"""
POLICY_READS_SQL = f"""
SELECT DISTINCT n.nspname, c.relname, bn.nspname, b.relname, {_POLICY_APPLIES}
FROM pg_catalog.pg_policy pol
JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_roles r ON r.rolname = current_user
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass
     AND d.objid = pol.oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
     AND d.refobjid <> c.oid
JOIN pg_catalog.pg_class b ON b.oid = d.refobjid
JOIN pg_catalog.pg_namespace bn ON bn.oid = b.relnamespace
WHERE c.relrowsecurity
"""
# Every row security policy's expressions (USING and WITH CHECK), deparsed with every name
# outside pg_catalog qualified, as (relation schema, name, the relation quoted for SQL, the
# expression, applies): what a statement on the relation runs with no word of it, decided
# as if the statement ran ``SELECT (expression) FROM relation`` (red-team round 65: a
# policy reading pg_proc.prosrc, or a table through query_to_xml, records no dependency).
# ``applies``: to the proxy's login (FORCE, or not the owner; not a superuser or BYPASSRLS
# login; the policy is for PUBLIC or a role the login is a member of). Run last, after its
# own SET: the search_path is what makes pg_get_expr qualify names.
POLICY_EXPRS_SQL = f"""
SET search_path = pg_catalog;
SELECT n.nspname, c.relname,
       pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname), e.expr,
       {_POLICY_APPLIES}
FROM pg_catalog.pg_policy pol
JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_roles r ON r.rolname = current_user
CROSS JOIN LATERAL (VALUES (pg_catalog.pg_get_expr(pol.polqual, pol.polrelid)),
                           (pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid))) AS e(expr)
WHERE c.relrowsecurity AND e.expr IS NOT NULL;
RESET search_path
"""
# Relations a publication lists by name (pg_publication_rel), as (schema, name, publication):
# a DROP of one removes it from the publication, which RESTRICT does not protect (an AUTO
# dependency: red-team round 64, as round 62's statistics objects).
PUBLISHED_SQL = """
SELECT n.nspname, c.relname, p.pubname
FROM pg_catalog.pg_publication_rel pr
JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
"""
# Enabled event triggers whose function is user-written (a superuser's): any DDL the grant
# may run fires them (red-team round 30), so each needs the execute scope.
EVENT_TRIGGERS_SQL = f"""
SELECT DISTINCT w.nspname, w.proname
FROM pg_catalog.pg_event_trigger e
JOIN ({_WRITTEN}) w ON w.oid = e.evtfoid
WHERE e.evtenabled <> 'D'
"""
# The user types a function outside the system schemas takes or returns (red-team round
# 28): a granted function's result cast (``f()::text``) or an argument converted into its
# parameter's type (an implicit cast, a domain's CHECK, a row type's columns) runs what the
# type runs, though the statement names no type. Each row: the function, one such type.
FUNCTION_TYPES_SQL = """
SELECT DISTINCT n.nspname, p.proname, tn.nspname, t.typname
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
LEFT JOIN pg_catalog.pg_aggregate ag ON ag.aggfnoid = p.oid
-- every parameter (OUT and TABLE columns too: proallargtypes), the result, and an
-- aggregate's state types (a domain's CHECK runs on each state: round 29)
CROSS JOIN LATERAL unnest(
  coalesce(p.proallargtypes, p.proargtypes::pg_catalog.oid[])
  || ARRAY[p.prorettype, coalesce(ag.aggtranstype, 0), coalesce(ag.aggmtranstype, 0)]
) AS a(typ)
JOIN pg_catalog.pg_type t ON t.oid = a.typ
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND tn.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# Every type a user made (OIDs from FirstNormalObjectId on): a Parse message may give a
# parameter's type by OID, and one the snapshot does not know is not decided (fail closed).
USER_TYPE_OIDS_SQL = "SELECT oid::text FROM pg_catalog.pg_type WHERE oid >= 16384"
FIRST_NORMAL_OID = 16384  # PostgreSQL's FirstNormalObjectId: lower OIDs are initdb's

# Can "$user" in a per-grant role's search_path resolve anywhere, now or by a grant's doing?
# Only if a schema named like a per-grant role exists, or a per-grant role may create
# schemas: pgwitness gives them CREATE on schemas only, never on the database, so only
# PUBLIC (every role's floor) or a DBA's own GRANT can.
# Does user-written code exist that may change client_encoding, or make temporary relations,
# where the policy cannot see it: a function (any kind, outside the system schemas) in a
# procedural language other than SQL and PL/pgSQL (it can run any SQL), or one whose source
# or SET clauses name client_encoding, NAMES, set_config, a temporary object, or run
# dynamic SQL (EXECUTE). Reached from triggers, defaults, row security, casts, domains as
# well as calls: so a database with any makes every session assume it (red-team rounds
# 34-35 found each route by enumerating them). C functions are trusted like built-ins;
# ``oid >= 16384`` (FirstNormalObjectId): the built-ins are skipped before any regex.
# A function's text as these checks read it: its source, and for an SQL-standard body
# (``BEGIN ATOMIC``, PostgreSQL 14 on: ``prosrc`` empty, the body a parse tree in
# ``prosqlbody``, read through to_jsonb so that older servers, without the column, read
# NULL) the names of the functions its tree calls and of the relations and types it depends
# on (red-team rounds 38-39: such a body inserting into a table whose trigger runs DDL, or
# coercing to a domain whose CHECK does).
_CODE_TEXT = r"""lower(coalesce(p.prosrc, '') || ' ' || coalesce((
    SELECT string_agg(b.proname, ' ') FROM pg_catalog.regexp_matches(
      pg_catalog.to_jsonb(p) ->> 'prosqlbody', ':(?:funcid|opfuncid) (\d+)', 'g') f(m)
    JOIN pg_catalog.pg_proc b ON b.oid = f.m[1]::oid), '') || ' ' || coalesce((
    SELECT string_agg(coalesce(r.relname, t.typname), ' ') FROM pg_catalog.pg_depend d
    LEFT JOIN pg_catalog.pg_class r
      ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND r.oid = d.refobjid
    LEFT JOIN pg_catalog.pg_type t
      ON d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass AND t.oid = d.refobjid
    WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
      AND d.refobjid >= 16384), ''))"""

# ... and code stored with a relation or a type that may: a view's or a rule's query, a
# column DEFAULT or generated column, a CHECK (a domain's too), a row security policy, a
# trigger's WHEN, a domain's DEFAULT, an index's expressions and predicate, a statistics
# object's or a partition key's expressions, calling (by name, operator or cast: each is a
# ``:funcid`` or ``:opfuncid`` in the stored tree) a function that may set settings, or a
# rule's action naming pg_settings (its UPDATE sets them). PostgreSQL records no dependency
# on a built-in (it is pinned), so the stored trees are read (red-team round 85: ``CREATE
# VIEW v AS SELECT set_config('search_path', 'x', false)``, a read grant's ``SELECT * FROM
# v`` moved the pinned path, and the next statement, decided as ``public.t``, read
# ``x.t``). The functions that may set settings (``flagged`` of kind ``f``): the built-ins
# that do or that run SQL from text (set_config, the ``*_to_xml`` family, ts_stat,
# ts_rewrite: rounds 87-88), a user-written function in a language not read, or whose
# source has SET, RESET, DISCARD, EXECUTE, pg_settings or a ``U&`` spelling (round 88: a
# SQL function's ``SET search_path TO x``); and, to a fixed point, a user-written function
# whose source names something flagged (a function; a relation or domain whose stored trees
# call one; an operator, cast or aggregate one implements), or whose SQL-standard body or argument
# defaults call or read it (round 87: a DEFAULT's ``ident()`` whose argument default was
# ``set_config(...)``; round 88: a function reading a view that calls one). Names match as
# substrings of the lower-cased source: too many is a refusal naming the scope, never a
# leak. Only objects made after initdb (``oid >= 16384``): the system views' trees are most
# of the text.
_SETTERS_CTE = r"""
sc(rel) AS (SELECT 'pg_catalog.pg_settings'::pg_catalog.regclass::pg_catalog.oid),
code(oid, proname, src, tree) AS (
  SELECT p.oid, p.proname::pg_catalog.text, pg_catalog.lower(coalesce(p.prosrc, '')),
    coalesce(pg_catalog.to_jsonb(p) ->> 'prosqlbody', '') || ' '
      || coalesce(p.proargdefaults::pg_catalog.text, '')
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
  WHERE p.oid >= 16384 AND l.lanname NOT IN ('c', 'internal')
),
tree(relid, typ, pol, node) AS (
  SELECT w.ev_class, 0::pg_catalog.oid, 0::pg_catalog.oid,
    w.ev_action::pg_catalog.text
      || CASE WHEN w.ev_type <> '1' AND position(':relid ' || sc.rel::pg_catalog.text || ' '
              IN w.ev_action::pg_catalog.text) > 0 THEN ' :pg_settings' ELSE '' END
  FROM pg_catalog.pg_rewrite w, sc WHERE w.oid >= 16384
  UNION ALL
  SELECT a.adrelid, 0::pg_catalog.oid, 0::pg_catalog.oid, a.adbin::pg_catalog.text
  FROM pg_catalog.pg_attrdef a WHERE a.oid >= 16384
  UNION ALL
  SELECT k.conrelid, k.contypid, 0::pg_catalog.oid, k.conbin::pg_catalog.text
  FROM pg_catalog.pg_constraint k WHERE k.oid >= 16384 AND k.conbin IS NOT NULL
  UNION ALL
  SELECT y.polrelid, 0::pg_catalog.oid, y.oid,
    coalesce(y.polqual::pg_catalog.text, '') || coalesce(y.polwithcheck::pg_catalog.text, '')
  FROM pg_catalog.pg_policy y WHERE y.oid >= 16384
  UNION ALL
  SELECT g.tgrelid, 0::pg_catalog.oid, 0::pg_catalog.oid, g.tgqual::pg_catalog.text
  FROM pg_catalog.pg_trigger g WHERE g.oid >= 16384 AND g.tgqual IS NOT NULL
  UNION ALL
  SELECT 0::pg_catalog.oid, t.oid, 0::pg_catalog.oid, t.typdefaultbin::pg_catalog.text
  FROM pg_catalog.pg_type t WHERE t.oid >= 16384 AND t.typdefaultbin IS NOT NULL
  UNION ALL
  SELECT x.indrelid, 0::pg_catalog.oid, 0::pg_catalog.oid,
    coalesce(x.indexprs::pg_catalog.text, '') || coalesce(x.indpred::pg_catalog.text, '')
  FROM pg_catalog.pg_index x
  WHERE x.indexrelid >= 16384 AND (x.indexprs IS NOT NULL OR x.indpred IS NOT NULL)
  UNION ALL
  SELECT e.stxrelid, 0::pg_catalog.oid, 0::pg_catalog.oid, e.stxexprs::pg_catalog.text
  FROM pg_catalog.pg_statistic_ext e WHERE e.oid >= 16384 AND e.stxexprs IS NOT NULL
  UNION ALL
  SELECT pt.partrelid, 0::pg_catalog.oid, 0::pg_catalog.oid, pt.partexprs::pg_catalog.text
  FROM pg_catalog.pg_partitioned_table pt
  WHERE pt.partrelid >= 16384 AND pt.partexprs IS NOT NULL
),
-- the functions each stored tree calls, and what each function's SQL-standard body and
-- argument defaults call (f), read (r) or make rows of (t): read out once, then joined
-- (a pattern made for each flagged function cost ~0.5 ms a function a load)
calls(relid, typ, pol, fn) AS MATERIALIZED (
  SELECT t.relid, t.typ, t.pol, m[1]::pg_catalog.oid FROM tree t
  CROSS JOIN LATERAL pg_catalog.regexp_matches(
    t.node, ':(?:funcid|opfuncid|aggfnoid|winfnoid) (\d+) ', 'g') m
),
coderefs(kind, oid, ref) AS MATERIALIZED (
  SELECT 'f'::pg_catalog.text, c.oid, m[1]::pg_catalog.oid FROM code c
  CROSS JOIN LATERAL pg_catalog.regexp_matches(
    c.tree, ':(?:funcid|opfuncid|aggfnoid|winfnoid) (\d+) ', 'g') m
  UNION ALL
  SELECT 'r', c.oid, m[1]::pg_catalog.oid FROM code c
  CROSS JOIN LATERAL pg_catalog.regexp_matches(c.tree, ':relid (\d+) ', 'g') m
  UNION ALL
  SELECT 't', c.oid, m[1]::pg_catalog.oid FROM code c
  CROSS JOIN LATERAL pg_catalog.regexp_matches(c.tree, ':resulttype (\d+) ', 'g') m
),
-- what runs each function, relation or type (skind, src): the relations and domains whose
-- stored trees call a function, the operators, aggregates and casts it implements (red-team
-- round 88), and the user-written functions whose SQL-standard body or argument defaults
-- call or read it; worked out once, and looked up by (kind, OID) in the fixed point below
-- (a scan of these for each flagged function was ~0.75 ms a function a load: session 39)
edges(skind, src, kind, oid, name) AS MATERIALIZED (
  SELECT 'f'::pg_catalog.text, t.fn, 'r'::pg_catalog.text, t.relid, r.relname::pg_catalog.text
  FROM calls t JOIN pg_catalog.pg_class r ON r.oid = t.relid WHERE t.relid <> 0
  UNION ALL
  SELECT 'f', t.fn, 't', t.typ, y.typname::pg_catalog.text
  FROM calls t JOIN pg_catalog.pg_type y ON y.oid = t.typ WHERE t.typ <> 0
  UNION ALL
  SELECT 'f', o.oprcode::pg_catalog.oid, 'o', o.oid, o.oprname::pg_catalog.text
  FROM pg_catalog.pg_operator o WHERE o.oprcode <> 0
  UNION ALL
  -- an aggregate one of whose support functions it is (its calls are ``:aggfnoid``)
  SELECT 'f', s.fn, 'f', a.aggfnoid::pg_catalog.oid, p.proname::pg_catalog.text
  FROM pg_catalog.pg_aggregate a JOIN pg_catalog.pg_proc p ON p.oid = a.aggfnoid
  CROSS JOIN LATERAL pg_catalog.unnest(ARRAY[a.aggtransfn, a.aggfinalfn, a.aggcombinefn,
    a.aggserialfn, a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn,
    a.aggmfinalfn]::pg_catalog.oid[]) s(fn)
  WHERE s.fn <> 0
  UNION ALL
  SELECT 'f', k.castfunc, 't', y.oid, y.typname::pg_catalog.text FROM pg_catalog.pg_cast k
  JOIN pg_catalog.pg_type y ON y.oid IN (k.castsource, k.casttarget) WHERE k.castfunc <> 0
  UNION ALL
  SELECT x.kind, x.ref, 'f', c.oid, c.proname FROM coderefs x JOIN code c ON c.oid = x.oid
),
edgemap(m) AS MATERIALIZED (
  SELECT coalesce(pg_catalog.jsonb_object_agg(k, v), '{}'::pg_catalog.jsonb) FROM (
    SELECT skind || src::pg_catalog.text,
      pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(kind, oid::pg_catalog.text, name))
    FROM edges GROUP BY skind, src) g(k, v)
),
flagged(kind, oid, name) AS (
  SELECT 'f'::pg_catalog.text, p.oid, p.proname::pg_catalog.text FROM pg_catalog.pg_proc p
  WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
    AND p.proname IN ('set_config', 'query_to_xml', 'query_to_xmlschema',
                      'query_to_xml_and_xmlschema', 'table_to_xml', 'table_to_xmlschema',
                      'table_to_xml_and_xmlschema', 'schema_to_xml', 'schema_to_xmlschema',
                      'schema_to_xml_and_xmlschema', 'database_to_xml',
                      'database_to_xmlschema', 'database_to_xml_and_xmlschema',
                      'cursor_to_xml', 'cursor_to_xmlschema', 'ts_stat', 'ts_rewrite')
  UNION
  SELECT 'f', p.oid, p.proname::pg_catalog.text FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
  WHERE p.oid >= 16384 AND l.lanname NOT IN ('sql', 'plpgsql', 'c', 'internal')
  UNION
  SELECT 'f', c.oid, c.proname FROM code c
  WHERE c.src ~ '(pg_settings|\mexecute\M|u&|\mset\M|\mreset\M|\mdiscard\M)'
  UNION
  SELECT x.kind, x.oid, x.name FROM flagged f CROSS JOIN edgemap em CROSS JOIN LATERAL (
    -- what runs it (``edges``), looked up rather than scanned for each flagged one
    SELECT e.v ->> 0, (e.v ->> 1)::pg_catalog.oid, e.v ->> 2
    FROM pg_catalog.jsonb_array_elements(em.m -> (f.kind || f.oid::pg_catalog.text)) e(v)
    UNION ALL
    -- ... and a user-written function whose source names what is flagged
    SELECT 'f', c.oid, c.proname FROM code c
    WHERE position(pg_catalog.lower(f.name) IN c.src) > 0
  ) x(kind, oid, name)
),
setters(oid) AS (SELECT oid FROM flagged WHERE kind = 'f'),
stored(relid, typ, pol, fn) AS (
  SELECT t.relid, t.typ, t.pol, s.oid FROM calls t JOIN setters s ON s.oid = t.fn
  UNION
  SELECT t.relid, t.typ, t.pol,
    'pg_catalog.set_config(text,text,boolean)'::pg_catalog.regprocedure::pg_catalog.oid
  FROM tree t WHERE position(' :pg_settings' IN t.node) > 0
)"""
# Is there any (outside the system schemas)? Part of the flags (CODE_FLAGS_SQL,
# _SETS_CONSTRAINT_EXCLUSION): such code may set any setting.
_STORED_SETS = f"""EXISTS (WITH RECURSIVE {_SETTERS_CTE}
  SELECT 1 FROM stored
  LEFT JOIN pg_catalog.pg_class c ON c.oid = stored.relid
  LEFT JOIN pg_catalog.pg_type t ON t.oid = stored.typ
  JOIN pg_catalog.pg_namespace n ON n.oid = coalesce(c.relnamespace, t.typnamespace)
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))"""
CODE_FLAGS_SQL = rf"""
SELECT
  EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_catalog.pg_language l ON l.oid = p.prolang
          WHERE p.oid >= 16384 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND (l.lanname NOT IN ('sql', 'plpgsql', 'c', 'internal')
                 OR {_CODE_TEXT} ~ '(client_encoding|set_config|\mnames\M|\mexecute\M|pg_settings|u&|_to_xml|xmlschema|ts_stat|ts_rewrite)'
                 OR array_to_string(p.proconfig, ' ') ~* 'client_encoding'))
  -- stored SQL calling set_config or naming pg_settings (red-team rounds 85-86)
  OR {_STORED_SETS},
  EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_catalog.pg_language l ON l.oid = p.prolang
          WHERE p.oid >= 16384 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND (l.lanname NOT IN ('sql', 'plpgsql', 'c', 'internal')
                 OR {_CODE_TEXT} ~ '(\mtemp\M|\mtemporary\M|pg_temp|\mexecute\M)'
                 -- (a SET search_path = pg_temp, ... makes its plain CREATE TABLE one: round 80)
                 OR array_to_string(p.proconfig, ' ') ~* 'pg_temp')),
  -- code that may leave a cursor or a prepared statement of its own in the session, whose
  -- text pg_cursors and pg_prepared_statements show (red-team round 72)
  EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_catalog.pg_language l ON l.oid = p.prolang
          WHERE p.oid >= 16384 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND (l.lanname NOT IN ('sql', 'c', 'internal')
                 OR {_CODE_TEXT} ~ '(\mcursor\M|\mprepare\M|\mexecute\M|\mopen\M)')),
  -- code that may leave a cursor open for the client to read (a PL/pgSQL OPEN, a DECLARE
  -- or OPEN it builds, a procedural language's own): the session's portals are then
  -- followed (``StatementPolicy.portals_watched``; a FOR loop's portal closes with it)
  EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_catalog.pg_language l ON l.oid = p.prolang
          WHERE p.oid >= 16384 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND (l.lanname NOT IN ('sql', 'plpgsql', 'c', 'internal')
                 OR {_CODE_TEXT} ~ '(\mcursor\M|\mexecute\M|\mopen\M|refcursor)'))
"""

# User-written functions that may run DDL: a source naming a DDL command (CREATE, ALTER,
# DROP, COMMENT, GRANT, REVOKE, SECURITY LABEL, REFRESH, REINDEX, IMPORT, CLUSTER), running
# SQL it builds (plpgsql EXECUTE, DO, query_to_xml and its kin, ts_stat, ts_rewrite), or
# spelling words so they cannot be read (a backslash escape, U&); a procedural language
# other than SQL and PL/pgSQL (not read: it can run any SQL); and, to a fixed point, a
# function whose source names such a function or an object that runs one (a trigger's or
# rule's or policy's or default's table, a triggered table's parent or the table its
# foreign key cascades from, a domain, an operator, a type, a cast's target),
# or whose argument defaults call one (pg_depend). Plus whether anything but a function
# uses one. A statement that may run one counts as DDL (``StatementPolicy._runs_ddl_code``):
# its transaction's end makes the snapshot stale and reloads it, as DDL through the proxy
# does (red-team rounds 34 and 37). Names are matched as substrings of the lower-cased
# source: an over-approximation costs a catalog load per transaction, never a leak. C
# functions are trusted like built-ins, as in CODE_FLAGS_SQL.
# The relations whose objects run each user-written function, as (function, relation):
# the table of a trigger, rule, CHECK, default or generated column, row security policy,
# index expression or partition key using it,
# every relation whose rows are made of a type whose domain CHECK or DEFAULT, or a cast
# into or out of which, uses it (``typerel``: domains over domains, arrays, row types,
# ranges; red-team round 39), both tables of a constraint using an operator it implements
# (a foreign key's equality, an exclusion), and a relation whose indexes or partition key
# use an operator class of it (red-team round 40: a foreign-key check through a user
# operator class).
_RUNS_FUNCTIONS = r"""
SELECT d.refobjid, CASE d.classid
  WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN (SELECT g.tgrelid
    FROM pg_catalog.pg_trigger g WHERE g.oid = d.objid)
  WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN (SELECT w.ev_class
    FROM pg_catalog.pg_rewrite w WHERE w.oid = d.objid)
  WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN (SELECT nullif(k.conrelid, 0)
    FROM pg_catalog.pg_constraint k WHERE k.oid = d.objid)
  WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN (SELECT a.adrelid
    FROM pg_catalog.pg_attrdef a WHERE a.oid = d.objid)
  WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass THEN (SELECT y.polrelid
    FROM pg_catalog.pg_policy y WHERE y.oid = d.objid)
  WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN (SELECT coalesce(i.indrelid, r.oid)
    FROM pg_catalog.pg_class r LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = r.oid
    WHERE r.oid = d.objid)
  END
FROM pg_catalog.pg_depend d
WHERE d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid >= 16384
UNION ALL
SELECT ty.fn, c.oid FROM (
  SELECT d.refobjid, x.typ FROM pg_catalog.pg_depend d CROSS JOIN LATERAL (
    SELECT k.contypid FROM pg_catalog.pg_constraint k
    WHERE d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND k.oid = d.objid
    UNION ALL
    SELECT d.objid WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
    UNION ALL
    SELECT t FROM pg_catalog.pg_cast k, LATERAL unnest(ARRAY[k.castsource, k.casttarget]) t
    WHERE d.classid = 'pg_catalog.pg_cast'::pg_catalog.regclass AND k.oid = d.objid
      AND t >= 16384  -- (a user type: a system type's cast is GLOBAL_CASTS_SQL's)
  ) x(typ)
  WHERE d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid >= 16384
  UNION ALL
  SELECT cmp.fn, cmp.typ FROM ({compares}) cmp(typ, fn)
) ty(fn, typ)
JOIN typerel tr ON tr.typ = ty.typ
JOIN pg_catalog.pg_class c ON c.reltype = tr.whole
UNION ALL
SELECT od.refobjid, unnest(ARRAY[k.conrelid, nullif(k.confrelid, 0)])
FROM pg_catalog.pg_depend od
JOIN pg_catalog.pg_depend cd ON cd.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass
  AND cd.refobjid = od.objid AND cd.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
JOIN pg_catalog.pg_constraint k ON k.oid = cd.objid
WHERE od.classid = 'pg_catalog.pg_operator'::pg_catalog.regclass
  AND od.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND od.refobjid >= 16384
UNION ALL
SELECT fn, relid FROM ({opclass_code}) oc(relid, fn)
"""
# ... and every relation a statement on which reaches one of those (``reach``): a view or
# a relation with rules whose query reads or writes it, an inheritance parent, a table
# whose foreign key actions write it; to any depth. Both worked out once for every
# user-written function (``runs``, ``reaching``), not for each flagged one in the fixed
# point and again after it (200 schemas with a dynamic-SQL trigger function each: ~140 of
# a load's ~370 ms, session 39).
DDL_CODE_SQL = r"""
WITH RECURSIVE code AS (
  SELECT p.oid, n.nspname, p.proname, {text} AS src, l.lanname
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
  WHERE p.oid >= 16384 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND l.lanname NOT IN ('c', 'internal')
),
step(base, rel) AS (
  SELECT d.refobjid, w.ev_class FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid
  WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> w.ev_class
  UNION
  SELECT i.inhrelid, i.inhparent FROM pg_catalog.pg_inherits i
  UNION
  SELECT k.conrelid, k.confrelid FROM pg_catalog.pg_constraint k
  WHERE k.contype = 'f' AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))
),
reach(base, rel) AS (
  SELECT base, rel FROM step
  UNION
  SELECT h.base, s.rel FROM reach h JOIN step s ON s.base = h.rel
),
madeof(part, whole) AS ({parts}),
-- what user-written functions compare and which relations' classes hold them, worked out
-- once rather than for each function below (each is a user-written one: oid >= 16384)
cmpfn(typ, fn) AS MATERIALIZED (
  SELECT typ, fn FROM ({compares_sql}) cmp(typ, fn) WHERE fn >= 16384),
opcfn(relid, fn) AS MATERIALIZED (
  SELECT relid, fn FROM ({opclass_code}) oc(relid, fn) WHERE fn >= 16384),
typerel(typ, whole) AS (
  -- types whose domain constraints or defaults, or casts, use a user-written function,
  -- and every type made of one
  SELECT k.contypid, k.contypid FROM pg_catalog.pg_constraint k
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
    AND d.objid = k.oid AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
    AND d.refobjid >= 16384
  WHERE k.contypid <> 0
  UNION
  SELECT d.objid, d.objid FROM pg_catalog.pg_depend d
  WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
    AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid >= 16384
  UNION
  SELECT t, t FROM pg_catalog.pg_cast k,
    LATERAL unnest(ARRAY[k.castsource, k.casttarget]) t WHERE k.castfunc >= 16384 AND t >= 16384
  UNION
  -- a type compared by a user-written function (a default operator class, a range's
  -- subtype class, subtype_diff, canonical: round 41)
  SELECT typ, typ FROM ({compares}) cmp(typ, fn) WHERE fn >= 16384 AND typ >= 16384
  UNION
  SELECT tr.typ, m.whole FROM typerel tr JOIN madeof m ON m.part = tr.whole
),
runs(fn, rel) AS MATERIALIZED ({runs_functions}),
reaching(fn, rel) AS MATERIALIZED (
  SELECT fn, rel FROM runs WHERE rel IS NOT NULL
  UNION
  SELECT r.fn, h.rel FROM runs r JOIN reach h ON h.base = r.rel),
ddl(oid, names) AS (
  -- names: it may also prepare or remove statements (PREPARE, DEALLOCATE or DISCARD in
  -- its source), and what reaches it. Only the words: SQL built from pieces, spellings
  -- and languages not read would make nearly every plpgsql function with dynamic SQL or
  -- a regular expression one, and calling it would cost a session every statement its
  -- driver prepared (the drivers' differential, session 23); code that does is trusted
  -- as its body's reads are (docs/decisions.md)
  SELECT oid, src ~ '\m(prepare|deallocate|discard)\M'
  FROM code
  WHERE lanname NOT IN ('sql', 'plpgsql')
     OR src ~ '\m(create|alter|drop|comment|grant|revoke|label|refresh|reindex|import|execute|do|cluster|security|prepare|deallocate|discard)\M'
     OR src ~ '(\\|u&|_to_xml|xmlschema|ts_stat|ts_rewrite)'
  UNION
  SELECT x.oid, ddl.names FROM ddl CROSS JOIN LATERAL (
    -- a function whose source names the flagged one, or an object that runs it: the
    -- names worked out once for the flagged one (``OFFSET 0``: not again for each function
    -- they are looked for in, which cost ~4 ms per function with dynamic SQL a load)
    SELECT m.oid FROM (SELECT ARRAY(SELECT DISTINCT pg_catalog.lower(nm.name) FROM (
      SELECT p.proname AS name FROM pg_catalog.pg_proc p WHERE p.oid = ddl.oid
      UNION ALL
      SELECT CASE d.classid
        WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN (SELECT t.typname
          FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_type t ON t.oid = k.contypid
          WHERE k.oid = d.objid)
        WHEN 'pg_catalog.pg_operator'::pg_catalog.regclass THEN (SELECT o.oprname
          FROM pg_catalog.pg_operator o WHERE o.oid = d.objid)
        WHEN 'pg_catalog.pg_type'::pg_catalog.regclass THEN (SELECT t.typname
          FROM pg_catalog.pg_type t WHERE t.oid = d.objid)
        WHEN 'pg_catalog.pg_cast'::pg_catalog.regclass THEN (SELECT t.typname
          FROM pg_catalog.pg_cast k JOIN pg_catalog.pg_type t ON t.oid = k.casttarget
          WHERE k.oid = d.objid)
        END
      FROM pg_catalog.pg_depend d
      WHERE d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid = ddl.oid
      UNION ALL
      -- a cast's source type too (round 40: ``'calm'::mood::integer`` names mood)
      SELECT t.typname FROM pg_catalog.pg_cast k
      JOIN pg_catalog.pg_type t ON t.oid = k.castsource WHERE k.castfunc = ddl.oid
      UNION ALL
      -- a type it compares (round 41: a range's subtype class)
      SELECT t.typname FROM ({compares}) cmp(typ, fn)
      JOIN pg_catalog.pg_type t ON t.oid = cmp.typ WHERE cmp.fn = ddl.oid
      UNION ALL
      SELECT r.relname FROM reaching a JOIN pg_catalog.pg_class r ON r.oid = a.rel
      WHERE a.fn = ddl.oid
    ) nm WHERE nm.name IS NOT NULL) AS names OFFSET 0) nms
    CROSS JOIN LATERAL (SELECT c.oid FROM code c WHERE EXISTS (
      SELECT 1 FROM pg_catalog.unnest(nms.names) u(name) WHERE position(u.name IN c.src) > 0
    ) OFFSET 0) m
    UNION
    -- a function whose argument defaults or SQL-standard body call it
    SELECT d.objid FROM pg_catalog.pg_depend d
    WHERE d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid = ddl.oid
      AND d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
  ) x
)
SELECT n.nspname, p.proname,
  EXISTS (SELECT 1 FROM pg_catalog.pg_depend dep
          WHERE dep.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
            AND dep.refobjid = p.oid
            AND dep.classid <> 'pg_catalog.pg_proc'::pg_catalog.regclass)::text,
  f.names::text
FROM (SELECT oid, bool_or(names) AS names FROM ddl GROUP BY oid) f
JOIN pg_catalog.pg_proc p ON p.oid = f.oid
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
UNION ALL
SELECT n.nspname, r.relname, 'relation', x.names::text
FROM (SELECT a.rel AS oid, bool_or(ddl.names) AS names
      FROM ddl JOIN reaching a ON a.fn = ddl.oid GROUP BY a.rel) x
JOIN pg_catalog.pg_class r ON r.oid = x.oid
JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
""".format(
    text=_CODE_TEXT,
    parts=_PARTS,
    compares="SELECT typ, fn FROM cmpfn",
    compares_sql=_COMPARES,
    opclass_code=_RELATION_OPCLASS_CODE,
    runs_functions=_RUNS_FUNCTIONS.format(
        opclass_code="SELECT relid, fn FROM opcfn", compares="SELECT typ, fn FROM cmpfn"
    ),
)

ROLE_SCHEMAS_SQL = """
SELECT NOT has_database_privilege('public', current_database(), 'CREATE')
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname LIKE 'pgw\\_g\\_%')
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname LIKE 'pgw\\_g\\_%'
                   AND has_database_privilege(r.oid, current_database(), 'CREATE'))
"""


# Foreign keys whose ON DELETE / ON UPDATE action (CASCADE, SET NULL, SET DEFAULT) writes
# the referencing table when the referenced one is written: (referenced schema, table,
# referencing schema, table, whether an ON UPDATE action is one of them). An error raised
# in the referencing table (a trigger's RAISE, a CHECK failing on its row) names no relation
# and may quote that row (proxy/redaction.py).
CASCADES_SQL = """
SELECT n1.nspname, c1.relname, n2.nspname, c2.relname, k.confupdtype IN ('c', 'n', 'd')
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c1 ON c1.oid = k.confrelid
JOIN pg_catalog.pg_namespace n1 ON n1.oid = c1.relnamespace
JOIN pg_catalog.pg_class c2 ON c2.oid = k.conrelid
JOIN pg_catalog.pg_namespace n2 ON n2.oid = c2.relnamespace
WHERE k.contype = 'f' AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))
"""


def cascade_reach(edges) -> dict[str, frozenset[str]]:
    """``{referenced: every relation a write of it may write through foreign-key actions}``
    from ``(referenced, referencing)`` pairs (names as classify renders them): the
    transitive closure, since a cascaded write cascades on."""
    direct: dict[str, set[str]] = {}
    for referenced, referencing in edges:
        direct.setdefault(referenced, set()).add(referencing)
    out: dict[str, frozenset[str]] = {}
    for start in direct:
        seen: set[str] = set()
        todo = list(direct[start])
        while todo:
            rel = todo.pop()
            if rel not in seen:
                seen.add(rel)
                todo.extend(direct.get(rel, ()))
        out[start] = frozenset(seen)
    return out


# Views outside the catalogs: (schema, name, reloptions as text, the query as PostgreSQL
# prints it), and the relations each one's query reads (its rewrite rule's dependencies).
VIEWS_SQL = """
SELECT n.nspname, c.relname, c.reloptions::text, pg_catalog.pg_get_viewdef(c.oid)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_temp\\_%'
"""
# The same views without their queries: what a load falls back to when reading a query
# waits for a lock (pg_get_viewdef locks every relation the view reads: a migration's open
# transaction that renamed or altered one holds it). Each view then counts as hiding rows
# (``view_hides_rows`` of no text), so no view is taken for more harmless than it is.
VIEW_NAMES_SQL = """
SELECT n.nspname, c.relname, c.reloptions::text, NULL
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_temp\\_%'
"""
VIEW_READS_SQL = """
SELECT DISTINCT vn.nspname, v.relname, bn.nspname, b.relname
FROM pg_catalog.pg_rewrite r
JOIN pg_catalog.pg_class v ON v.oid = r.ev_class
JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
     AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
     AND d.refobjid <> v.oid
JOIN pg_catalog.pg_class b ON b.oid = d.refobjid
JOIN pg_catalog.pg_namespace bn ON bn.oid = b.relnamespace
WHERE v.relkind = 'v' AND vn.nspname NOT IN ('pg_catalog', 'information_schema')
  AND vn.nspname NOT LIKE 'pg\\_temp\\_%'
  AND b.relkind IN ('r', 'v', 'm', 'f', 'p')
"""
# The same for materialized views: REFRESH plans the query on what it reads, so it runs
# what those relations' plans fold, their casts and their policies' code (red-team round
# 85: a partial index folding code under a matview's base answered a NOTICE quoting the
# vault to ``REFRESH MATERIALIZED VIEW``); a read of the stored rows runs none of it.
MATVIEW_READS_SQL = VIEW_READS_SQL.replace("v.relkind = 'v'", "v.relkind = 'm'")

# What an expression calls, by the object it belongs to: a function, an operator's, a
# cast's (red-team round 68: PostgreSQL records the operator, not the function behind
# it). A CTE of VIEW_FUNCTIONS_SQL and DEFAULT_FUNCTIONS_SQL.
_CALLS_CTE = """deps(classid, objid, fn) AS (
  SELECT d.classid, d.objid, CASE d.refclassid
    WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass THEN d.refobjid
    WHEN 'pg_catalog.pg_operator'::pg_catalog.regclass THEN
      (SELECT o.oprcode::pg_catalog.oid FROM pg_catalog.pg_operator o WHERE o.oid = d.refobjid)
    ELSE (SELECT k.castfunc FROM pg_catalog.pg_cast k WHERE k.oid = d.refobjid) END
  FROM pg_catalog.pg_depend d
  WHERE d.refclassid IN ('pg_catalog.pg_proc'::pg_catalog.regclass,
                         'pg_catalog.pg_operator'::pg_catalog.regclass,
                         'pg_catalog.pg_cast'::pg_catalog.regclass)
)"""

# (relation, function) of what PostgreSQL may run to plan a statement on the relation,
# with nothing of it written (red-team round 81): where the planner loads a relation's
# definition it folds an immutable function of constant arguments (eval_const_expressions)
# in its indexes' expressions and predicates, its partition key's expressions, its extended
# statistics' expressions and, under constraint exclusion, its children's and partitions'
# CHECK constraints, counted at the parent (``constraint_exclusion = partition``, which the
# proxy pins for every enforced session as it pins ``search_path``: a child read directly
# or a UNION ALL member is not excluded by its CHECKs). An index's, a key's and a
# statistics object's functions must be immutable; of a CHECK's, the immutable ones are
# folded, and a SQL function of any volatility is inlined first, its body's calls folded
# then (red-team round 82: pg_depend records no call a plain SQL body makes). A table
# rewrite or an index build runs them on every row. An index's and a
# partition key's dependencies are recorded against the index or the table itself. Needs
# ``deps`` (``_CALLS_CTE``: through operators and casts); the caller keeps the
# user-written functions.
_PLAN_CODE = """
  SELECT ix.indrelid, d.fn, pg_catalog.pg_get_indexdef(ix.indexrelid) FROM deps d
  JOIN pg_catalog.pg_index ix ON ix.indexrelid = d.objid
  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
  UNION
  SELECT pt.partrelid, d.fn,
         'CREATE TABLE pgwitness_key () PARTITION BY ' || pg_catalog.pg_get_partkeydef(pt.partrelid)
  FROM deps d JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = d.objid
  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
  UNION
  -- (anything else recorded against a relation: kept whole)
  SELECT d.objid, d.fn, '' FROM deps d
  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index ix WHERE ix.indexrelid = d.objid)
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partitioned_table pt WHERE pt.partrelid = d.objid)
  UNION
  SELECT s.stxrelid, d.fn, pg_catalog.pg_get_statisticsobjdef(s.oid) FROM pg_catalog.pg_statistic_ext s
  JOIN deps d ON d.classid = 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass AND d.objid = s.oid
  UNION
  SELECT i.inhparent, d.fn,
         'ALTER TABLE pgwitness_check ADD ' || pg_catalog.pg_get_constraintdef(co.oid)
  FROM pg_catalog.pg_constraint co
  JOIN pg_catalog.pg_inherits i ON i.inhrelid = co.conrelid
  JOIN deps d ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = co.oid
  JOIN pg_catalog.pg_proc p ON p.oid = d.fn
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
  WHERE co.contype = 'c' AND (p.provolatile = 'i' OR l.lanname = 'sql')"""
# a partitioned table's key: its expressions' functions and its operator classes' (what a
# row's routing and a partition's constraint run), which a write to a partition runs as its
# own (its partition constraint is made of the key: red-team round 82), for every partition
# at any depth, as (relid, fn). Needs ``deps``.
_KEY_DOWN = f"""key_code(relid, fn) AS (
  SELECT d.objid, d.fn FROM deps d
  JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = d.objid
  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
  UNION
  SELECT pt.partrelid, f.fn FROM pg_catalog.pg_partitioned_table pt
  CROSS JOIN LATERAL unnest(pt.partclass::pg_catalog.oid[]) AS k(opc)
  JOIN pg_catalog.pg_opclass oc ON oc.oid = k.opc
  JOIN ({_FAMILY_FUNCTIONS}) f(family, fn) ON f.family = oc.opcfamily
), key_down(relid, fn) AS (
  SELECT i.inhrelid, k.fn FROM pg_catalog.pg_inherits i JOIN key_code k ON k.relid = i.inhparent
  UNION
  SELECT i.inhrelid, k.fn FROM pg_catalog.pg_inherits i JOIN key_down k ON k.relid = i.inhparent
)"""
# ... and every relation whose plan runs it: the relation and its ancestors (a read of a
# parent plans each child, an insert routes through a partition's), as (relid, fn). Needs
# ``written`` and ``deps``.
_PLAN_RUNS = f"""{_KEY_DOWN}, plan_runs(relid, fn, def) AS (
  SELECT relid, fn, def FROM ({_PLAN_CODE} UNION SELECT relid, fn, '' FROM key_down)
    code(relid, fn, def)
  WHERE fn IN (SELECT oid FROM written)
  UNION
  SELECT i.inhparent, r.fn, r.def FROM pg_catalog.pg_inherits i
  JOIN plan_runs r ON i.inhrelid = r.relid
)"""

# The user-written functions a view's query calls (its _RETURN rule depends on them): a
# SQL function PostgreSQL may inline there is a view within the view, and a statement's
# conditions on the view reach the rows its query hides (red-team round 52).
VIEW_FUNCTIONS_SQL = f"""
WITH {_CALLS_CTE}
SELECT DISTINCT vn.nspname, v.relname, pn.nspname, p.proname
FROM pg_catalog.pg_rewrite r
JOIN pg_catalog.pg_class v ON v.oid = r.ev_class
JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace
JOIN deps d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
JOIN pg_catalog.pg_proc p ON p.oid = d.fn
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE v.relkind = 'v' AND vn.nspname NOT IN ('pg_catalog', 'information_schema')
  AND vn.nspname NOT LIKE 'pg\\_temp\\_%'
  AND pn.nspname NOT IN ('pg_catalog', 'information_schema')
"""


# User-written SQL functions PostgreSQL may inline where a statement calls one in FROM
# (clauses.c, inline_set_returning_function): a set-returning SQL function that is not
# STRICT, VOLATILE or SECURITY DEFINER and has no SET clause. Its body, as text: a
# ``BEGIN ATOMIC`` body (PostgreSQL 14+: ``prosqlbody``, read through to_jsonb so that
# the query runs on 13 too) as the whole definition PostgreSQL prints.
INLINABLE_SQL = """
SELECT n.nspname, p.proname,
       CASE WHEN pg_catalog.to_jsonb(p) ->> 'prosqlbody' IS NOT NULL
            THEN pg_catalog.pg_get_functiondef(p.oid) ELSE p.prosrc END
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.prolang = (SELECT oid FROM pg_catalog.pg_language WHERE lanname = 'sql')
  AND p.prokind = 'f' AND p.proretset AND NOT p.proisstrict AND NOT p.prosecdef
  AND p.provolatile <> 'v' AND p.proconfig IS NULL
  AND p.prorettype <> 'pg_catalog.void'::pg_catalog.regtype
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


def inlinable_from_rows(rows) -> dict[str, tuple[tuple[str | None, str], ...]]:
    """``Snapshot.inlinable`` from INLINABLE_SQL's rows: ``{"schema.fn" and bare "fn": the
    relations (schema or None, name) read by the row-hiding queries of the functions of
    that name}`` (overloads and same-named functions of other schemas together: a call is
    decided by name)."""
    return _inlinable_reads(rows, hiding=True)


def plain_inlinable_from_rows(rows) -> dict[str, tuple[tuple[str | None, str], ...]]:
    """``Snapshot.inlinable_plain`` from INLINABLE_SQL's rows: the functions PostgreSQL may
    inline whose own query hides no rows, by name as ``inlinable_from_rows``, and the
    relations (schema or None, name) that query reads. Such a call shows no more than its
    query's rows, but a condition on it goes on into a view without a barrier it reads, and
    there onto the rows that view hides (red-team round 52)."""
    return _inlinable_reads(rows, hiding=False)


def _inlinable_reads(rows, hiding: bool) -> dict[str, tuple[tuple[str | None, str], ...]]:
    """The inlinable functions whose query hides rows (``hiding``) or reads relations
    without hiding any, by name, and the relations their queries read ((None, "") for a
    row-hiding query that could not be read)."""
    out: dict[str, set[tuple[str | None, str]]] = {}
    for schema, name, body in rows:
        read = inlined_reads(body or "")
        if read is None or read[0] is not hiding or not (hiding or read[1]):
            continue  # not inlined, or of the other kind, or (plain) reads nothing
        for key in (render_name(schema, name), render_name(name)):
            out.setdefault(key, set()).update(read[1] or {(None, "")})
    return {k: tuple(sorted(v, key=lambda r: (r[0] or "", r[1]))) for k, v in out.items()}


def security_barrier(reloptions: str | None) -> bool:
    """Is ``security_barrier`` on in a relation's options (``{security_barrier=true,...}``),
    read as PostgreSQL reads a boolean (``parse_bool``: true, yes, on, 1 and their unique
    prefixes)? Anything unreadable: off."""
    if not reloptions:
        return False
    for option in reloptions.strip("{}").split(","):
        key, _, value = option.strip('"').partition("=")
        if key.strip() == "security_barrier":
            value = value.strip().lower()
            return value == "on" or value == "1" or (
                value != "" and ("true".startswith(value) or "yes".startswith(value))
            )
    return False


def view_exposure(views, reads) -> dict[str, frozenset[str]]:
    """``{view: the relations a condition on it may be evaluated on}`` for every view that
    is not a security barrier and hides rows (its own query does, or one of the views it
    reads through does: ``pgparse.view_hides_rows``).

    ``views``: ``{view: (security_barrier, hides rows)}``; ``reads``: ``{view: relations
    its query reads}`` (names as classify renders them). PostgreSQL pushes a statement's
    conditions into such a view and on through every view under it that is not a barrier,
    so what they reach is each relation read on the way; a barrier is read (its rows are
    what it shows) but not looked into."""

    def walk(view: str, path: frozenset[str]) -> tuple[set[str], bool]:
        reached: set[str] = set()
        hides = views[view][1]
        for rel in reads.get(view, ()):
            reached.add(rel)
            inner = views.get(rel)
            if inner is not None and not inner[0] and rel not in path:
                more, inner_hides = walk(rel, path | {rel})
                reached |= more
                hides = hides or inner_hides
        return reached, hides

    out: dict[str, frozenset[str]] = {}
    for view, (barrier, _hides) in views.items():
        if barrier:
            continue
        reached, hides = walk(view, frozenset((view,)))
        if hides and reached:
            out[view] = frozenset(reached)
    return out


# Relations with rules of their own (not a view's _RETURN): a plan of a statement on one
# shows the rules' actions, literals and all.
RULED_SQL = """
SELECT DISTINCT n.nspname, c.relname
FROM pg_catalog.pg_rewrite r
JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE r.rulename <> '_RETURN' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""

# Relations with triggers of their own (not the internal ones of foreign keys), or whose
# defaults, generated columns, CHECKs, indexes, statistics objects or domain columns call
# user-written functions (rounds 30, 81), and their ancestors (a write to a parent reaches a child's rows, and routes into a
# partition): a write to one runs code that may read or write relations the statement does
# not name, and quote them in an error (StatementPolicy.writes_unreadable withholds).
TRIGGERED_SQL = f"""
WITH RECURSIVE written AS ({_WRITTEN}), {_CALLS_CTE},
up(relid) AS (
    SELECT t.tgrelid FROM pg_catalog.pg_trigger t WHERE NOT t.tgisinternal
    UNION
    -- a DEFAULT or generated column, or a CHECK, calling a user-written function
    -- (``deps``: through operators and casts, red-team round 84)
    SELECT coalesce(ad.adrelid, co.conrelid)
    FROM deps d
    LEFT JOIN pg_catalog.pg_attrdef ad
      ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND ad.oid = d.objid
    LEFT JOIN pg_catalog.pg_constraint co
      ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND co.oid = d.objid
    WHERE d.fn IN (SELECT oid FROM written)
      AND coalesce(ad.adrelid, co.conrelid, 0) <> 0
    UNION
    -- an index's expressions or predicate, a partition key's expressions (recorded
    -- against the index or the table: round 31)
    SELECT coalesce(ix.indrelid, d.objid)
    FROM deps d
    LEFT JOIN pg_catalog.pg_index ix ON ix.indexrelid = d.objid
    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.fn IN (SELECT oid FROM written)
    UNION
    -- an index or partition key using an operator class of user-written functions
    SELECT relid FROM ({_RELATION_OPCLASS_CODE}) code(relid, fn)
    WHERE fn IN (SELECT oid FROM written)
    UNION
    -- a column of a domain whose constraint or default calls one
    SELECT a.attrelid FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_constraint co ON co.contypid = a.atttypid
    JOIN deps d ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
      AND d.objid = co.oid AND d.fn IN (SELECT oid FROM written)
    WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION
    -- an extended statistics object's expressions (round 81)
    SELECT s.stxrelid FROM pg_catalog.pg_statistic_ext s
    JOIN deps d ON d.classid = 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass
      AND d.objid = s.oid AND d.fn IN (SELECT oid FROM written)
    UNION
    SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.relid
)
SELECT n.nspname, c.relname
FROM up JOIN pg_catalog.pg_class c ON c.oid = up.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


# Inheritance (INHERITS, ALTER TABLE ... INHERIT) and partitioning: (parent schema, name,
# child schema, name, whether the child is a partition). A read of an inheritance parent
# without ONLY returns the child's rows, an UPDATE, DELETE, TRUNCATE, LOCK or ALTER TABLE
# of it reaches the child, and PostgreSQL asks for the parent's privilege alone
# (``Snapshot.descendants``); a partition's rows are its parent's by definition (they
# satisfy its bound, and a grant on a partitioned table is a grant on its data), but its
# definition is its own: DDL of the parent (ALTER TABLE, CREATE INDEX, DROP TABLE) changes
# or drops every partition, wherever it lives (``Snapshot.partitions``: red-team round 60).
# Temporary children are left out: PostgreSQL skips other sessions' (their rows never show
# through the parent), and a session's own hold only what it wrote itself.
INHERITANCE_SQL = """
SELECT pn.nspname, p.relname, cn.nspname, c.relname, c.relispartition
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
WHERE c.relkind IN ('r', 'f', 'p') AND c.relpersistence <> 't'
"""

# Extended statistics objects in a schema other than their relation's: (relation schema,
# name, statistics object schema, name). PostgreSQL drops one with a column it covers or
# with its relation, without CASCADE (an AUTO dependency: red-team rounds 60, 62), wherever
# it lives.
STATISTICS_SQL = """
SELECT rn.nspname, r.relname, sn.nspname, s.stxname
FROM pg_catalog.pg_statistic_ext s
JOIN pg_catalog.pg_class r ON r.oid = s.stxrelid
JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
JOIN pg_catalog.pg_namespace sn ON sn.oid = s.stxnamespace
WHERE s.stxnamespace <> r.relnamespace
"""

# The user-written functions a relation's column defaults and generated columns call, and
# the defaults of the domains its columns are of (along each domain's base types), as
# (relation schema, name, function schema, name): an INSERT or UPDATE runs them without
# naming them, and its plan (EXPLAIN VERBOSE) prints a SQL function inlined (red-team round
# 63). PostgreSQL records what each default expression calls in pg_depend.
DEFAULT_FUNCTIONS_SQL = f"""
WITH RECURSIVE domains(typ, base) AS (
  SELECT t.oid, t.oid FROM pg_catalog.pg_type t WHERE t.typtype = 'd'
  UNION
  SELECT d.typ, t.typbasetype FROM domains d JOIN pg_catalog.pg_type t ON t.oid = d.base
  WHERE t.typtype = 'd'
), {_CALLS_CTE}, calls(rel, fn) AS (
  SELECT ad.adrelid, d.fn FROM pg_catalog.pg_attrdef ad
  JOIN deps d ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
  UNION
  SELECT a.attrelid, d.fn FROM pg_catalog.pg_attribute a
  JOIN domains dm ON dm.typ = a.atttypid
  JOIN deps d ON d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = dm.base
  WHERE a.attnum > 0 AND NOT a.attisdropped
)
SELECT DISTINCT rn.nspname, r.relname, pn.nspname, p.proname
FROM calls c
JOIN pg_catalog.pg_class r ON r.oid = c.rel
JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
JOIN pg_catalog.pg_proc p ON p.oid = c.fn
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE pn.nspname NOT IN ('pg_catalog', 'information_schema')
"""

# The user-written functions PostgreSQL may run to plan a statement on a relation
# (``_PLAN_CODE``) and its ancestors', as (relation schema, name, function schema, name,
# whether it is a SQL function, the definition calling it as PostgreSQL deparses it with
# every name outside pg_catalog qualified: the loader leaves out a function other than a SQL
# one, which is never inlined, that the definition calls only with a column among its
# arguments, which is never folded: ``pgparse.column_bound_calls``; its own SET and RESET):
# merged into ``Snapshot.relation_casts``, a read or write of the relation (or DDL of it,
# which may rebuild its indexes) needs the execute scope on each, as a cast's or an
# operator class's (red-team round 81: an IMMUTABLE function in a partial index's
# predicate raised a NOTICE quoting a table the grant may not read, on a plain SELECT).
_SETS_CONSTRAINT_EXCLUSION = rf"""(EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
  WHERE p.oid >= 16384 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND (l.lanname NOT IN ('sql', 'plpgsql', 'c', 'internal')
         OR {_CODE_TEXT} ~ '(constraint_exclusion|set_config|pg_settings|\mexecute\M|u&|_to_xml|xmlschema|ts_stat|ts_rewrite)'
         OR array_to_string(p.proconfig, ' ') ~* 'constraint_exclusion'))
  OR {_STORED_SETS})"""
RELATION_PLAN_CODE_SQL = f"""
SET search_path = pg_catalog;
WITH RECURSIVE written AS ({_WRITTEN}), {_CALLS_CTE}, {_PLAN_RUNS},
found(relid, fn, def) AS (
  SELECT relid, fn, def FROM plan_runs
  UNION
  -- a table's own CHECK, where code may turn constraint_exclusion on over the pin (a
  -- granted function's set_config: red-team round 83)
  SELECT co.conrelid, d.fn, 'ALTER TABLE pgwitness_check ADD ' || pg_catalog.pg_get_constraintdef(co.oid)
  FROM pg_catalog.pg_constraint co
  JOIN deps d ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = co.oid
  JOIN pg_catalog.pg_proc p ON p.oid = d.fn
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
  WHERE co.contype = 'c' AND co.conrelid <> 0 AND (p.provolatile = 'i' OR l.lanname = 'sql')
    AND d.fn IN (SELECT oid FROM written) AND {_SETS_CONSTRAINT_EXCLUSION}
)
SELECT DISTINCT n.nspname, c.relname, w.nspname, w.proname,
  -- kept whatever its calls' arguments: a SQL function (inlined), one a cast or an operator
  -- runs (called where the definition shows no call of it by name: red-team round 83)
  (l.lanname = 'sql' OR p.pronargdefaults > 0
   OR EXISTS (SELECT 1 FROM pg_catalog.pg_cast k WHERE k.castfunc = r.fn)
   OR EXISTS (SELECT 1 FROM pg_catalog.pg_operator o WHERE o.oprcode = r.fn))::text,
  r.def
FROM found r JOIN pg_catalog.pg_class c ON c.oid = r.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN written w ON w.oid = r.fn
JOIN pg_catalog.pg_proc p ON p.oid = r.fn
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema');
RESET search_path
"""

# The user-written functions a function's argument defaults call (through operators and
# casts), as (function schema, name, called schema, name): a call leaving the argument out
# runs the default in the calling statement (PostgreSQL puts it into the call at parse
# analysis, and checks the caller's EXECUTE on it), so a call of the function is a call of
# each (red-team round 81). pg_depend records a default's dependencies from the function's
# own row; a SQL-standard body's (BEGIN ATOMIC) are recorded there too, so such a function
# with defaults counts its body's calls as well (the conservative side).
ARGUMENT_DEFAULTS_SQL = f"""
WITH {_CALLS_CTE}
SELECT DISTINCT n.nspname, p.proname, w.nspname, w.proname
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN deps d ON d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
JOIN ({_WRITTEN}) w ON w.oid = d.fn
WHERE p.pronargdefaults > 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""

# What depends on a user type without a function named (red-team round 82: a cast to a
# domain whose CHECK calls the code, in an index expression, a CHECK, a generated column or
# a default, a partition key, a view's query or an argument default: pg_depend records the
# type, not the domain's functions), as (kind, schema, name, type OID); the loader turns
# each type into what it runs (``Snapshot.type_oids``, USER_TYPES_SQL): ``plan``, a
# relation whose plan loads it (its indexes, its own partition key, its statistics objects,
# its children's CHECKs at the parent: ``_PLAN_CODE``'s objects), merged into
# ``relation_casts``; ``view``, a view whose query holds it, likewise; ``refresh``, a
# materialized view whose query holds it, merged into ``check_functions`` (its REFRESH runs
# the query; a read of its stored rows does not: red-team round 85); ``write``, a relation
# a write of which runs it (its defaults and generated columns, its CHECKs, and the above),
# which counts as TRIGGERED (its messages withheld); ``function``, a function with argument
# defaults whose definition names the type (its signature's types too: the conservative
# side), merged into ``argument_defaults``.
TYPE_DEPENDENTS_SQL = f"""
WITH usertype AS ({_USERTYPE}),
tdeps AS (
  SELECT d.classid, d.objid, d.objsubid, d.refobjid AS typ FROM pg_catalog.pg_depend d
  WHERE d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass
    AND d.refobjid IN (SELECT oid FROM usertype)
),
planned(relid, typ) AS (
  SELECT ix.indrelid, t.typ FROM tdeps t JOIN pg_catalog.pg_index ix ON ix.indexrelid = t.objid
  WHERE t.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
  UNION
  SELECT pt.partrelid, t.typ FROM tdeps t
  JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = t.objid
  WHERE t.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND t.objsubid = 0
  UNION
  SELECT s.stxrelid, t.typ FROM tdeps t JOIN pg_catalog.pg_statistic_ext s ON s.oid = t.objid
  WHERE t.classid = 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass
  UNION
  SELECT i.inhparent, t.typ FROM tdeps t
  JOIN pg_catalog.pg_constraint co ON co.oid = t.objid AND co.contype = 'c'
  JOIN pg_catalog.pg_inherits i ON i.inhrelid = co.conrelid
  WHERE t.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
),
written(relid, typ) AS (
  SELECT relid, typ FROM planned
  UNION
  -- a column's type, whatever it is made of (a domain over a domain, an array of one, a
  -- composite or range type with one: the loader asks ``type_oids``; red-team round 83)
  SELECT t.objid, t.typ FROM tdeps t
  WHERE t.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND t.objsubid > 0
  UNION
  SELECT ad.adrelid, t.typ FROM tdeps t JOIN pg_catalog.pg_attrdef ad ON ad.oid = t.objid
  WHERE t.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass
  UNION
  SELECT co.conrelid, t.typ FROM tdeps t JOIN pg_catalog.pg_constraint co ON co.oid = t.objid
  WHERE t.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND co.conrelid <> 0
)
SELECT 'plan', n.nspname, c.relname, p.typ::text FROM planned p
JOIN pg_catalog.pg_class c ON c.oid = p.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT 'write', n.nspname, c.relname, w.typ::text FROM written w
JOIN pg_catalog.pg_class c ON c.oid = w.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
UNION ALL
SELECT DISTINCT CASE c.relkind WHEN 'm' THEN 'refresh' ELSE 'view' END, n.nspname, c.relname,
  t.typ::text FROM tdeps t
JOIN pg_catalog.pg_rewrite r ON r.oid = t.objid
JOIN pg_catalog.pg_class c ON c.oid = r.ev_class JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE t.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
UNION ALL
SELECT DISTINCT 'function', n.nspname, p.proname, t.typ::text FROM tdeps t
JOIN pg_catalog.pg_proc p ON p.oid = t.objid AND p.pronargdefaults > 0
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE t.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
"""

# Every foreign key, as (referencing schema, name, referenced schema, name): its checks and
# actions are queries PostgreSQL plans on the other relation (RI_FKey_check and the
# actions, through SPI), and a DDL re-validating it one joining both, so what their plans run
# a write or DDL of either runs (red-team rounds 81-82: ``Snapshot.fk_code``).
FOREIGN_KEYS_SQL = """
SELECT DISTINCT n1.nspname, c1.relname, n2.nspname, c2.relname
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c1 ON c1.oid = k.conrelid
JOIN pg_catalog.pg_namespace n1 ON n1.oid = c1.relnamespace
JOIN pg_catalog.pg_class c2 ON c2.oid = k.confrelid
JOIN pg_catalog.pg_namespace n2 ON n2.oid = c2.relnamespace
WHERE k.contype = 'f'
"""
# The user-written functions of a relation's own CHECK constraints, of any volatility, of
# its generated columns and of its indexes' expressions and predicates (through operators
# and casts), as (relation schema, name, function schema, name): DDL that checks, recomputes
# or rebuilds its rows runs them on every row (``VALIDATE CONSTRAINT``, a rewrite changing a
# column's type or its persistence), and DDL's messages are never withheld (red-team round
# 82: ``Snapshot.check_functions``). A plain default is not: no DDL evaluates a stored
# row's.
RELATION_CHECKS_SQL = f"""
WITH {_CALLS_CTE}
SELECT DISTINCT rn.nspname, r.relname, w.nspname, w.proname
FROM pg_catalog.pg_constraint co
JOIN deps d ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = co.oid
JOIN ({_WRITTEN}) w ON w.oid = d.fn
JOIN pg_catalog.pg_class r ON r.oid = co.conrelid
JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
WHERE co.contype = 'c' AND co.conrelid <> 0
UNION
SELECT rn.nspname, r.relname, w.nspname, w.proname
FROM pg_catalog.pg_attrdef ad
JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
JOIN deps d ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
JOIN ({_WRITTEN}) w ON w.oid = d.fn
JOIN pg_catalog.pg_class r ON r.oid = ad.adrelid
JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
WHERE a.attgenerated <> ''
UNION
SELECT rn.nspname, r.relname, w.nspname, w.proname
FROM pg_catalog.pg_index ix
JOIN deps d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = ix.indexrelid
JOIN ({_WRITTEN}) w ON w.oid = d.fn
JOIN pg_catalog.pg_class r ON r.oid = ix.indrelid
JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
"""

# What stored code of a relation or a type may change the session's settings
# (``_SETTERS_CTE``), as (kind, schema, name, function schema, function name, extra):
# ``relation`` (a statement on it may run the function), ``policy`` (the same, by its row
# security policy; extra: whether it applies to the proxy's own login, as in
# RELATION_POLICY_SQL), ``type`` (a value converted to it runs it; extra: its OID; arrays,
# ranges, composites and domains made of it too, and every relation with a column of one).
# The loader merges them into ``Snapshot.relation_casts`` (and its ancestors', the tables
# whose foreign-key actions write it, the views over it) and ``user_types``/``type_oids``:
# each is decided like a call of the function, and no grant may call set_config on a
# setting it does not name (``decide.check_function``). Code reached only by a trigger's
# function is not here: a write's trigger runs what it runs (its messages are withheld);
# docs/policy.md, Known gaps.
SETTINGS_CODE_SQL = rf"""
WITH RECURSIVE {_SETTERS_CTE},
madeof(part, whole) AS ({_PARTS}),
typs(typ, fn) AS (
  SELECT typ, fn FROM stored WHERE typ <> 0
  UNION
  SELECT m.whole, typs.fn FROM typs JOIN madeof m ON m.part = typs.typ
)
SELECT CASE WHEN stored.pol <> 0 THEN 'policy' ELSE 'relation' END, n.nspname, c.relname,
  fn.nspname, p.proname,
  CASE WHEN stored.pol <> 0 THEN (c.relforcerowsecurity OR c.relowner <> (
    SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user))::pg_catalog.text
  ELSE '' END
FROM stored JOIN pg_catalog.pg_class c ON c.oid = stored.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_proc p ON p.oid = stored.fn
JOIN pg_catalog.pg_namespace fn ON fn.oid = p.pronamespace
WHERE stored.relid <> 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'relation', n.nspname, c.relname, fn.nspname, p.proname, ''
FROM typs
JOIN pg_catalog.pg_attribute a ON a.atttypid = typs.typ AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_proc p ON p.oid = typs.fn
JOIN pg_catalog.pg_namespace fn ON fn.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'type', n.nspname, t.typname, fn.nspname, p.proname, t.oid::pg_catalog.text
FROM typs JOIN pg_catalog.pg_type t ON t.oid = typs.typ
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
JOIN pg_catalog.pg_proc p ON p.oid = typs.fn
JOIN pg_catalog.pg_namespace fn ON fn.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""

# Columns holding values of a user-made composite type (a table's row type too) or enum:
# of that type, or of a type made over it, transitively (an array, a domain, a range or
# multirange, a composite type or table row type with an attribute of it: red-team round
# 61), as (type schema, name, relation schema, name). ALTER TYPE ... ADD/DROP ATTRIBUTE,
# ALTER TABLE ... ADD/DROP COLUMN of the table whose row type it is, ALTER TYPE ... RENAME
# VALUE change the values stored in those columns without CASCADE (red-team round 60),
# wherever the relation lives (a composite type's own attributes included: relkind 'c').
TYPE_USERS_SQL = """
WITH RECURSIVE user_types AS (
  SELECT t.oid, t.typtype, t.typbasetype, t.typelem, t.typlen FROM pg_catalog.pg_type t
  JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
), over(base, made) AS (
  SELECT typbasetype, oid FROM user_types WHERE typtype = 'd'
  UNION ALL SELECT typelem, oid FROM user_types WHERE typelem <> 0 AND typlen = -1
  UNION ALL SELECT r.rngsubtype, r.rngtypid FROM pg_catalog.pg_range r
            JOIN user_types u ON u.oid = r.rngtypid
  UNION ALL SELECT r.rngtypid, r.rngmultitypid FROM pg_catalog.pg_range r
            JOIN user_types u ON u.oid = r.rngtypid
  UNION ALL SELECT a.atttypid, c.reltype FROM pg_catalog.pg_attribute a
            JOIN user_types u ON u.oid = a.atttypid
            JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
            WHERE a.attnum > 0 AND NOT a.attisdropped AND c.reltype <> 0
), made(root, typ) AS (
  SELECT oid, oid FROM user_types WHERE typtype IN ('c', 'e')
  UNION SELECT m.root, o.made FROM made m JOIN over o ON o.base = m.typ
)
SELECT DISTINCT tn.nspname, t.typname, rn.nspname, c.relname
FROM made m
JOIN pg_catalog.pg_type t ON t.oid = m.root
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
JOIN pg_catalog.pg_attribute a ON a.atttypid = m.typ AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace rn ON rn.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f', 'm', 'c') AND c.relpersistence <> 't'
"""


def relation_names(rows) -> frozenset[str]:
    """The relations of rows that start (schema, name): ``Snapshot.view_names`` from
    VIEWS_SQL's, ``Snapshot.ruled`` from RULED_SQL's."""
    return frozenset(render_name(schema, name) for schema, name, *_ in rows)


def policy_exprs_from_rows(
    rows, applying: bool
) -> dict[str, tuple[tuple[str, str], ...]]:
    """``Snapshot.policy_exprs`` (``applying``: the rows that apply to the proxy's login) or
    ``policy_exprs_role`` (every row) from POLICY_EXPRS_SQL's rows."""
    out: dict[str, list[tuple[str, str]]] = {}
    for schema, name, quoted, expr, applies in rows:
        if applying and applies == "false":
            continue
        entry = (quoted, expr)
        found = out.setdefault(render_name(schema, name), [])
        if entry not in found:
            found.append(entry)
    return {k: tuple(v) for k, v in out.items()}


def view_functions_from_rows(view_rows, read_rows, function_rows) -> dict[str, frozenset[str]]:
    """``Snapshot.view_functions`` from VIEWS_SQL's, VIEW_READS_SQL's and
    VIEW_FUNCTIONS_SQL's rows: ``{view that is no security barrier: the user-written
    functions ("schema.fn") its query calls, and those of every view under it that is no
    barrier either}``: a statement's conditions on the view are pushed down that far
    (``view_exposure``), into any of them PostgreSQL inlines."""
    barrier = {render_name(s, n): security_barrier(o) for s, n, o, _d in view_rows}
    reads = _by_view(read_rows)
    calls = _by_view(function_rows)
    out: dict[str, frozenset[str]] = {}
    for view, is_barrier in barrier.items():
        if is_barrier:
            continue
        found: set[str] = set()
        seen = {view}
        todo = [view]
        while todo:
            v = todo.pop()
            found |= calls.get(v, set())
            for rel in reads.get(v, ()):
                if rel in barrier and not barrier[rel] and rel not in seen:
                    seen.add(rel)
                    todo.append(rel)
        if found:
            out[view] = frozenset(found)
    return out


def views_from_rows(view_rows, read_rows) -> dict[str, frozenset[str]]:
    """``Snapshot.views`` from VIEWS_SQL's and VIEW_READS_SQL's rows."""
    views = {
        render_name(schema, name): (security_barrier(options), view_hides_rows(definition or ""))
        for schema, name, options, definition in view_rows
    }
    return view_exposure(views, _by_view(read_rows))


def _by_view(rows) -> dict[str, set[str]]:
    """``{view: the objects it depends on}`` from (view schema, view, schema, name) rows."""
    out: dict[str, set[str]] = {}
    for view_schema, view, schema, name in rows:
        out.setdefault(render_name(view_schema, view), set()).add(render_name(schema, name))
    return out


@dataclass(frozen=True, slots=True)
class Snapshot:
    functions: frozenset[str]  # names callable with column syntax
    columns: dict[str, frozenset[str]]  # "schema.table" (as classify renders it) -> columns
    loaded_at: float = 0.0
    stale: bool = False  # DDL went through the proxy since this was loaded
    # no schema named like a per-grant role, and PUBLIC may not create one (ROLE_SCHEMAS_SQL)
    role_schemas_absent: bool = False
    # bare name -> the user-written functions of that name, "schema.name" as classify
    # renders calls (USER_FUNCTIONS_SQL), plus those defined through the proxy since
    # (``CatalogCache.defined``): never forgotten, so no reload can race a definition
    user_functions: dict[str, frozenset[str]] = field(default_factory=dict)
    # operator name -> the user-written functions behind operators of that name
    user_operators: dict[str, frozenset[str]] = field(default_factory=dict)
    # type, "schema.type" and bare -> the user-written functions a value of it may run
    user_types: dict[str, frozenset[str]] = field(default_factory=dict)
    # the same by type OID (a Parse message's parameter types), and every user type's OID:
    # an OID from FIRST_NORMAL_OID on that is in neither was made after the load
    type_oids: dict[int, frozenset[str]] = field(default_factory=dict)
    known_type_oids: frozenset[int] = frozenset()
    # referenced relation -> the relations its writes may write through foreign-key
    # actions (CASCADES_SQL, cascade_reach)
    cascades: dict[str, frozenset[str]] = field(default_factory=dict)
    # view that hides rows and is no security barrier -> the relations a statement's own
    # condition on it may be evaluated on (VIEWS_SQL, VIEW_READS_SQL, view_exposure)
    views: dict[str, frozenset[str]] = field(default_factory=dict)
    # every view outside the catalogs: a plan (EXPLAIN) shows its query
    view_names: frozenset[str] = frozenset()
    # every relation with rules of its own (RULED_SQL): a plan shows their actions
    ruled: frozenset[str] = frozenset()
    # SQL function PostgreSQL may inline and whose query hides rows -> the relations that
    # query names (INLINABLE_SQL, inlinable_from_rows; (None, "") for a body unreadable)
    inlinable: dict[str, tuple[tuple[str | None, str], ...]] = field(default_factory=dict)
    # relation OID -> (schema, name) of every relation, an index's being its table's
    # (RELATION_OIDS_SQL): object text pinned by OID (policy.classify.metadata)
    relation_oids: dict[int, tuple[str, str]] = field(default_factory=dict)
    # every schema outside the system's (USER_SCHEMAS_SQL)
    user_schemas: frozenset[str] = frozenset()
    # (schema, name) of every function outside them with argument defaults
    # (DEFAULTED_FUNCTIONS_SQL)
    defaulted_functions: frozenset[tuple[str, str]] = frozenset()
    # every relation with triggers of its own (TRIGGERED_SQL)
    triggered: frozenset[str] = frozenset()
    # parent -> every relation that inherits from it, directly or not (INHERITANCE_SQL,
    # cascade_reach): reached by a statement naming the parent without ONLY
    descendants: dict[str, frozenset[str]] = field(default_factory=dict)
    # partitioned table -> every partition under it, directly or not (INHERITANCE_SQL,
    # cascade_reach): changed or dropped by the parent's DDL
    partitions: dict[str, frozenset[str]] = field(default_factory=dict)
    # user composite type or enum (a table's row type by the table's name) -> every other
    # relation with a column of it (TYPE_USERS_SQL): their stored values change with it
    type_users: dict[str, frozenset[str]] = field(default_factory=dict)
    # view -> every relation its query reads, through the views it reads (VIEW_READS_SQL,
    # cascade_reach): a write through an auto-updatable view lands in one of them
    view_bases: dict[str, frozenset[str]] = field(default_factory=dict)
    # materialized view -> every relation its query reads, through the views it reads
    # (MATVIEW_READS_SQL): its REFRESH runs the query on their rows
    matview_bases: dict[str, frozenset[str]] = field(default_factory=dict)
    # relation -> its extended statistics objects in other schemas (STATISTICS_SQL): dropped
    # with its columns or with it
    statistics: dict[str, frozenset[str]] = field(default_factory=dict)
    # referenced relation -> the relations its UPDATEs may write through ON UPDATE actions
    # alone (CASCADES_SQL's flag, cascade_reach; a DELETE's ON DELETE SET NULL / SET DEFAULT
    # update rows too, so a DELETE follows ``cascades``)
    update_cascades: dict[str, frozenset[str]] = field(default_factory=dict)
    # relation -> the user-written functions its column defaults (its domains' included) and
    # generated columns call (DEFAULT_FUNCTIONS_SQL): its plan may print them inlined
    default_functions: dict[str, frozenset[str]] = field(default_factory=dict)
    # view -> the user-written functions its own query calls (VIEW_FUNCTIONS_SQL), barrier
    # or not: an inlined one's query is planned, and estimated, within the view
    view_calls: dict[str, frozenset[str]] = field(default_factory=dict)
    # relation -> the relations its row security policies read (POLICY_READS_SQL), where
    # they apply to the proxy's login; ``policy_reads_role`` every policy's, for a session
    # of a role of its own (as ``relation_casts_role``)
    policy_reads: dict[str, frozenset[str]] = field(default_factory=dict)
    policy_reads_role: dict[str, frozenset[str]] = field(default_factory=dict)
    # relation -> the publications listing it by name (PUBLISHED_SQL): a DROP changes them
    published: dict[str, frozenset[str]] = field(default_factory=dict)
    # relation -> (the relation quoted for SQL, expression) of its row security policies
    # (POLICY_EXPRS_SQL) that apply to the proxy's login; ``policy_exprs_role`` every one
    policy_exprs: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    policy_exprs_role: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # relations renamed or moved through the proxy in a transaction that may still be open
    # (``without_columns``: a key (old, RENAMED_TO + new)): each name involved -> every name
    # of its renames, whose knowledge by name it may now stand for
    unsettled: dict[str, frozenset[str]] = field(default_factory=dict)
    # the load could not read the views' queries (a lock: VIEW_NAMES_SQL), so every view
    # counts as hiding rows: a refusal that rests on it waits for a load that can
    views_unread: bool = False
    # relation -> the user-written functions a statement on it may run with none written:
    # the casts its values may be converted by (RELATION_CASTS_SQL), its indexes' and
    # partition key's operator classes' (RELATION_OPCLASS_SQL), what its plan folds
    # (RELATION_PLAN_CODE_SQL) and its row security policies' (RELATION_POLICY_SQL); every
    # such function of a cast between system types (GLOBAL_CASTS_SQL), "schema.name" as
    # classify renders calls
    relation_casts: dict[str, frozenset[str]] = field(default_factory=dict)
    # the same for a session logging in as a role of its own (``db_role``), for which every
    # row security policy's functions count (RELATION_POLICY_SQL); None: ``relation_casts``
    relation_casts_role: dict[str, frozenset[str]] | None = None
    global_casts: frozenset[str] = frozenset()
    # function "schema.name" -> the user types it takes or returns, "schema.type" as
    # ``Classified.types`` renders them (FUNCTION_TYPES_SQL)
    function_types: dict[str, frozenset[str]] = field(default_factory=dict)
    # function "schema.name" -> the user-written functions its argument defaults call
    # (ARGUMENT_DEFAULTS_SQL): a call leaving an argument out runs them
    argument_defaults: dict[str, frozenset[str]] = field(default_factory=dict)
    # relation -> what the plans of its foreign keys' checks and actions run on the
    # relations they link it with, through cascades (FOREIGN_KEYS_SQL and the plan and
    # operator-class code of each): a write or DDL of it runs them
    fk_code: dict[str, frozenset[str]] = field(default_factory=dict)
    # relation -> the user-written functions its own CHECKs call (RELATION_CHECKS_SQL): DDL
    # checking its rows runs them
    check_functions: dict[str, frozenset[str]] = field(default_factory=dict)
    # the user-written functions of enabled event triggers (EVENT_TRIGGERS_SQL): any DDL
    # runs them
    event_functions: frozenset[str] = frozenset()
    # operator class "schema.name" -> the user-written functions of its family
    # (OPCLASS_FUNCTIONS_SQL): a statement naming the class runs them
    opclass_functions: dict[str, frozenset[str]] = field(default_factory=dict)
    # some user-written code may change client_encoding / make temporary relations
    # (CODE_FLAGS_SQL): the relay and the policy then assume it of every session
    encoding_code: bool = False
    temp_code: bool = False
    # user-written functions that may run DDL (DDL_CODE_SQL), "schema.name" and bare, and
    # functions defined through the proxy since the load; whether a trigger, default,
    # CHECK, view or other object uses one (then a row write to a ``triggered`` relation
    # or a read of a view may run it): ``StatementPolicy._runs_ddl_code``
    ddl_functions: frozenset[str] = frozenset()
    ddl_objects: bool = False
    # of those, the functions and relations whose code may also prepare or remove
    # statements (DDL_CODE_SQL's last column): a statement running one leaves the policy
    # holding no statement's text (``StatementPolicy.names_unknown``; red-team round 40)
    names_functions: frozenset[str] = frozenset()
    names_relations: frozenset[str] = frozenset()
    # relations a read or write of which may run such a function: where a trigger, rule,
    # CHECK, default, row security policy or index uses one, and every view, ruled
    # relation, inheritance parent or foreign-key parent reaching them (DDL_CODE_SQL's
    # "relation" rows; red-team round 38)
    ddl_relations: frozenset[str] = frozenset()
    # SQL function PostgreSQL may inline whose query hides no rows -> the relations that
    # query reads (INLINABLE_SQL, plain_inlinable_from_rows): a condition on a call of it
    # reaches through the views without a barrier among them (``views``)
    inlinable_plain: dict[str, tuple[tuple[str | None, str], ...]] = field(default_factory=dict)
    # view that is no security barrier -> the user-written functions its query, or that of
    # a view under it that is no barrier either, calls (VIEW_FUNCTIONS_SQL,
    # view_functions_from_rows): an inlinable one hides rows within the view
    view_functions: dict[str, frozenset[str]] = field(default_factory=dict)
    # the database's DDL count (``_Entry.epoch``) when the load's queries started: the
    # counts after it are the DDL this snapshot cannot speak for (``StatementPolicy``
    # asks whether each was its session's own: ``_only_own_ddl``)
    loaded_epoch: int = -1
    # every type's name outside the temporary schemas (TYPE_NAMES_SQL): the built-ins, the
    # user-made, each relation's row type: what a temporary object may not be named
    # (``StatementPolicy._shadowing_temp``)
    type_names: frozenset[str] = frozenset()
    # user-written code may leave cursors or prepared statements of its own in a session
    # (CODE_FLAGS_SQL; a procedural language: PL/pgSQL's OPEN, EXECUTE 'PREPARE ...'):
    # their text in pg_cursors and pg_prepared_statements is code (``_code_state_read``)
    cursor_code: bool = True
    # user functions whose results drivers fetch as cursors (REFCURSOR_FUNCTIONS_SQL): a
    # refcursor one of them returns may be fetched where ``portal_code`` holds
    # (policy/portals.py)
    refcursor_functions: frozenset[str] = frozenset()
    # user-written code may leave a cursor open for the client to read (CODE_FLAGS_SQL):
    # the client reads only the portals it made (``StatementPolicy.portals_watched``)
    portal_code: bool = True
    # catalog ("pg_catalog.pg_type": domains with a DEFAULT, "pg_catalog.pg_enum",
    # "pg_catalog.pg_collation", "pg_catalog.pg_ts_dict") -> the schemas outside the
    # system's with objects whose text it shows (DOMAIN_SCHEMAS_SQL, ``_SCHEMA_TEXTS``)
    text_schemas: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def user_schema_safe(self) -> bool:
        """May a per-grant role's session read ``"$user", public``? Only from a fresh
        snapshot that saw no way for ``"$user"`` to resolve (stale: DDL since; unknown)."""
        return self.role_schemas_absent and not self.stale


# Every relation by OID, an index by its table's name (psql's \d pins object text to a
# relation by its OID, and pg_get_indexdef takes an index's).
RELATION_OIDS_SQL = """
SELECT c.oid::text, COALESCE(tn.nspname, n.nspname), COALESCE(t.relname, c.relname)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
LEFT JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
LEFT JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
"""

# Functions outside the system schemas with argument defaults (a DEFAULT can hold a
# literal; psql's \df shows it through pg_get_function_arguments, for every function it
# lists: no pin names a function, so those are decided on this list).
DEFAULTED_FUNCTIONS_SQL = r"""
SELECT n.nspname, p.proname FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.pronargdefaults > 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""

# Schemas outside the system's with domains that have a DEFAULT, enums, collations and
# text search dictionaries with options, as (schema, the catalog showing their text): that
# text is decided on the schemas (no pin names a type, a collation or a dictionary:
# ``_SCHEMA_TEXTS``; ``Snapshot.text_schemas``).
DOMAIN_SCHEMAS_SQL = r"""
SELECT DISTINCT n.nspname, 'pg_catalog.pg_type' FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype = 'd' AND t.typdefaultbin IS NOT NULL
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION
-- ... and the schemas of the other objects whose definer writes text no relation pins:
-- enum labels (red-team round 91), collations' locales, text search dictionaries' options
SELECT n.nspname, 'pg_catalog.pg_enum' FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype = 'e' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION
SELECT n.nspname, 'pg_catalog.pg_collation' FROM pg_catalog.pg_collation c
JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace
WHERE c.oid >= 16384 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION
SELECT n.nspname, 'pg_catalog.pg_ts_dict' FROM pg_catalog.pg_ts_dict d
JOIN pg_catalog.pg_namespace n ON n.oid = d.dictnamespace
WHERE d.oid >= 16384 AND d.dictinitoption IS NOT NULL
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""

# Every type's and relation's name outside the temporary schemas (array types' ``_x`` and
# a table named ``_x`` alike: red-team round 71; a sequence's, ``nextval('s')`` resolves
# its text on the path too):
# PostgreSQL searches pg_temp first for relations and types wherever a path leaves it out
# (a function's own SET search_path), so a temporary object of such a name would stand for
# the other in granted code (red-team round 69).
TYPE_NAMES_SQL = r"""
SELECT t.typname FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
UNION
SELECT c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
"""

# User functions (by qualified name) every overload of which returns one plain refcursor
# (or a set of them), no built-in of whose name an unqualified call would reach first, and
# no column of whose name a call in function notation could select (``f(row)`` is
# ``row.f``, of any type, for a one-argument call no function takes: rounds 75-76): every
# value a statement of nothing but calls of these returns is a name one of them gave
# (policy/portals.py: a granted function's cursor is fetched where code may open others).
REFCURSOR_FUNCTIONS_SQL = r"""
SELECT f.nspname, f.proname FROM (
  SELECT n.nspname, p.proname FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  WHERE p.oid >= 16384 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  GROUP BY n.nspname, p.proname
  HAVING bool_and(p.prorettype = 'pg_catalog.refcursor'::pg_catalog.regtype)
  -- (the names looked for below only then, for the few that return refcursors: a search
  -- of pg_attribute by name for every function cost ~0.15 ms a function a load)
  OFFSET 0) f
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc b
                  WHERE b.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
                    AND b.proname = f.proname)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                  WHERE a.attname = f.proname AND a.attnum > 0 AND NOT a.attisdropped)
"""

# Schemas outside the system's: a grant naming each with schema.* has nothing outside it.
USER_SCHEMAS_SQL = r"""
SELECT nspname FROM pg_catalog.pg_namespace
WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%'
"""

_ARGUMENT_DEFAULTS = "pg_catalog.pg_proc.proargdefaults"
_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast", "pg_temp"})
_DESCRIBING_OPS = ("read", "insert", "update", "delete", "truncate", "ddl")


def rests_on_completeness(
    describes: frozenset[str],
    scopes: Scopes,
    snapshot: Snapshot,
    defer_params: bool = False,
    search_path: tuple[str, ...] = ("public",),
) -> bool:
    """Does ``describe_refusal``'s answer on this object text rest on the snapshot listing
    every object of a kind, which another session may have made or dropped since it was
    loaded: unpinned argument or domain defaults (``_unpinned_refusal``: no pin names a
    function or a type), or a grant naming whole schemas where nothing but its covering
    the database would allow it (``covers_database``: a schema made since the load is
    outside the grant, one dropped since no longer keeps it from covering)?"""
    for entry in describes:
        kind, _, value = entry.partition(":")
        if kind == "any" and (value == _ARGUMENT_DEFAULTS or value in _SCHEMA_TEXTS):
            return True
    wild = any(name is None for targets in scopes.relations.values() for _schema, name in targets)
    return wild and describe_refusal(
        describes, scopes, snapshot, defer_params, search_path, covered=False
    ) is not None


def stale_refusal(snapshot: Snapshot, now: float) -> str:
    """Why ``needs_complete``'s decision is not made on ``snapshot``, loaded before the
    statement arrived (a reload failed, or a Bind, which cannot wait for one)."""
    return (
        f"may not read this object text on a catalog snapshot {now - snapshot.loaded_at:.0f} s "
        "old: it is allowed only on a snapshot that lists every function and type with "
        "defaults and every schema, loaded after the statement arrived (another session "
        "may have made one since), and none could be loaded now: run the statement again"
    )


def covers_database(scopes: Scopes, snapshot: Snapshot | None) -> bool:
    """Does the grant name every user schema with ``schema.*`` (any relation operation)?
    Then no relation is outside it (a schema made since the load by this grant is one of
    its own: ``ddl:s.*`` is what creates schema ``s``)."""
    if snapshot is None or not snapshot.user_schemas:
        return False
    wild = {schema for targets in scopes.relations.values() for schema, name in targets if name is None}
    return snapshot.user_schemas <= wild


def names_schema(scopes: Scopes, schema: str) -> bool:
    """Does the grant name anything in ``schema`` (a relation scope of any operation, an
    execute scope)? A per-grant role has USAGE on exactly those schemas."""
    return any(s == schema for targets in scopes.relations.values() for s, _ in targets) or any(
        s == schema for s, _ in scopes.execute
    )


def describe_refusal(
    describes: frozenset[str],
    scopes: Scopes,
    snapshot: Snapshot | None,
    defer_params: bool = False,
    search_path: tuple[str, ...] = ("public",),
    covered: bool | None = None,
) -> str | None:
    """Why a statement may not show the object text it reads (``Classified.describes``,
    policy.classify.metadata), or None. Pinned rows need a relation the grant names (any
    of its relation operations: structure is described to whoever may touch it); rows
    not pinned need a ``read:`` scope on the catalog, or a grant that covers the database;
    an object of a schema (a type, an object-name literal) needs the grant to name
    something in that schema, as PostgreSQL asks USAGE on it. A pin that is a parameter
    is decided when the value is bound (``defer_params``: a protocol-level Parse, whose
    Binds are checked); anywhere else (a SQL-level PREPARE) it pins nothing. ``covered``:
    whether the grant covers the database, if not asked of the snapshot."""
    if covered is None:
        covered = covers_database(scopes, snapshot)
    for entry in sorted(describes):
        kind, _, value = entry.partition(":")
        if kind == "schema":
            if covered or names_schema(scopes, value):
                continue
            return (
                f"may not use objects of schema {render_name(value)} (a type or an object "
                "named in a literal): this grant names nothing in it"
            )
        value, _, via = value.rpartition("@") if "@" in value else (value, "", "")
        catalog, _, column = (via or value).rpartition(".")
        if covered or scopes.allows_relation("read", catalog):
            continue
        if kind == "param":
            if defer_params:
                continue
            kind, value = "any", via
        if kind == "any":
            why = _unpinned_refusal(value, scopes, snapshot)
            if why is None:
                continue
            return why
        if kind == "oid":
            known = snapshot.relation_oids.get(int(value)) if snapshot is not None else None
            if known is None:
                why = "no catalog loaded" if snapshot is None else "made after the catalog was loaded?"
                return f"may not read the definitions of relation OID {value}: unknown ({why})"
            names = [render_name(*known)]
        elif kind == "rel":
            names = [value]
        elif kind == "visible":  # an unqualified regclass: whichever the search path finds
            names = [render_name(schema, value) for schema in search_path]
        else:  # "name": a relation's name without its schema
            # every relation of that name is read, and the snapshot may not know one made
            # since it was loaded by another session: the schema must be written too
            return (
                f"may not read the definitions of relations named {render_name(value)} "
                "without their schema (another schema's relation of that name would be read "
                "too): name the schema as well (table_schema = '<schema>', nspname = ...)"
            )
        for rel in names:
            target = split_name(rel)
            if target is None:
                return f"may not read the definitions of {rel} (unrecognised name)"
            if target[0] in _SYSTEM_SCHEMAS:
                continue
            if not any(scopes.allows_relation(op, rel) for op in _DESCRIBING_OPS):
                return (
                    f"may not read the definitions of {rel} (its defaults, constraints, "
                    "indexes, triggers, policies, comments, partitions): this grant names "
                    f"no scope on it (a read:{catalog} scope would allow it)"
                )
    return None


def _unpinned_refusal(value: str, scopes: Scopes, snapshot: Snapshot | None) -> str | None:
    """Object text read for rows no pin names (``value``: "pg_catalog.pg_attrdef.adbin").
    Argument defaults and domain defaults belong to functions and types, which no pin names:
    allowed while every user-written one that has them is the grant's (the snapshot's
    lists, at most ``refresh_after`` old for objects other sessions create)."""
    catalog, _, column = value.rpartition(".")
    if snapshot is not None and value == _ARGUMENT_DEFAULTS:
        hidden = sorted(f for f in snapshot.defaulted_functions if not scopes.allows_function(*f))
        if not hidden:
            return None  # every function with a default is one the grant may call
        return (
            "may not read the argument defaults of functions outside the grant "
            f"({render_name(*hidden[0])} has some; a DEFAULT can hold a literal): "
            f"an execute scope on it, or a read:{catalog} scope, allows it"
        )
    if snapshot is not None and value in _SCHEMA_TEXTS:
        owner, what = _SCHEMA_TEXTS[value]
        schemas = snapshot.text_schemas.get(owner, frozenset())
        hidden_schemas = sorted(s for s in schemas if not names_schema(scopes, s))
        if not hidden_schemas:
            return None  # every such object is in a schema the grant names
        return (
            f"may not read {column} of {catalog} for {what} outside the grant (schema "
            f"{render_name(hidden_schemas[0])} has some): a read:{catalog} scope allows it"
        )
    return (
        f"may not read {column} of {catalog} for relations outside the grant (object "
        "text: defaults, constraints, index predicates, triggers' arguments, policies' "
        "expressions and comments hold literals): pin the rows to a granted relation "
        "(WHERE <relation column> = '<oid>' or '<schema.table>'::regclass, as psql's "
        f"\\d does), or a read:{catalog} scope allows it"
    )


def _with_domains(text_schemas, domain_schemas) -> dict[str, frozenset[str]]:
    """``CatalogCache.put``'s ``text_schemas``, with ``domain_schemas`` (tests name
    domains' schemas on their own) as those of ``pg_catalog.pg_type``."""
    out = {k: frozenset(v) for k, v in (text_schemas or {}).items()}
    if domain_schemas:
        out["pg_catalog.pg_type"] = out.get("pg_catalog.pg_type", frozenset()) | frozenset(
            domain_schemas
        )
    return out


# Object text of objects no relation pins, decided by the schemas that hold such objects
# (``_unpinned_refusal``): column -> (the catalog listing them, what they are)
_SCHEMA_TEXTS = {
    "pg_catalog.pg_type.typdefault": ("pg_catalog.pg_type", "types"),
    "pg_catalog.pg_type.typdefaultbin": ("pg_catalog.pg_type", "types"),
    # an enum's labels (red-team round 91: a label is a literal its definer wrote)
    "pg_catalog.pg_enum.enumlabel": ("pg_catalog.pg_enum", "enum types"),
    # a collation's locale (an ICU locale takes any tag) and a dictionary's options
    "pg_catalog.pg_collation.collcollate": ("pg_catalog.pg_collation", "collations"),
    "pg_catalog.pg_collation.collctype": ("pg_catalog.pg_collation", "collations"),
    "pg_catalog.pg_collation.colliculocale": ("pg_catalog.pg_collation", "collations"),
    "pg_catalog.pg_ts_dict.dictinitoption": ("pg_catalog.pg_ts_dict", "text search dictionaries"),
}


def attribute_calls(
    attributes: frozenset[str], relations: frozenset[str], snapshot: Snapshot | None
) -> frozenset[str]:
    """The column-syntax names of a statement that PostgreSQL may resolve as calls.

    ``relations``: every relation the statement touches. A name is a column (not a call)
    only if every one of them has a column of that name: the policy does not map aliases
    to relations, so ``c.fn`` is taken for a call unless no relation could make it one."""
    if not attributes:
        return frozenset()
    derived = DERIVED_ROWS in attributes  # rows not a relation's: no column exempts a name
    if derived:
        attributes = attributes - {DERIVED_ROWS}
    if snapshot is None:
        return attributes
    out = set()
    for name in attributes:
        if name in snapshot.functions or snapshot.stale:
            cols = [snapshot.columns.get(rel) for rel in relations]
            if derived or not cols or any(c is None or name not in c for c in cols):
                out.add(name)
    return frozenset(out)


def called_name(fn: str) -> str:
    """The function a call rendered as ``fn`` (classify's rendering) calls:
    ``current_setting:<setting>`` and ``set_config:<setting>`` (a setting named by a
    literal or a parameter) are calls of current_setting and set_config, which a
    user-written function of that name may take (red-team round 57); so are
    ``pg_terminate_backend:<pid>`` and ``pg_cancel_backend:<pid>``."""
    if (
        fn.startswith(CURRENT_SETTING_PREFIX) or fn.startswith(SET_CONFIG_PREFIX)
        or signal_target(fn) is not None
    ):  # fmt: skip
        return fn.partition(":")[0]
    return fn


def shadowing_calls(
    functions: frozenset[str],
    operators: frozenset[str],
    snapshot: Snapshot,
    types: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """The user-written functions PostgreSQL may run for a statement's unqualified calls
    and operators, and for the types it names: ``{"schema.fn": "what in the statement may
    resolve to it or run it, and why"}``.

    ``functions`` and ``operators`` as classify renders them: bare for unqualified calls
    (a qualified one names its function and is decided as written); ``types`` as
    ``Classified.types``. The policy decides each function found like a call of it (an
    execute scope)."""
    out: dict[str, str] = {}
    if snapshot.user_types:
        for t in types:
            for target in snapshot.user_types.get(t, ()):
                out.setdefault(target, f"a value of type {t} runs {target} (a domain "
                               "constraint or a cast)")
    if snapshot.user_functions:
        for fn in functions:
            for target in snapshot.user_functions.get(called_name(fn), ()):
                out.setdefault(target, f"{fn}(...) may resolve to {target}, a user-written "
                               "function of that name (PostgreSQL picks by argument types)")
    if snapshot.user_operators:
        for op in operators:
            for target in snapshot.user_operators.get(op, ()):
                out.setdefault(target, f"operator {op} may resolve to a user-written "
                               f"operator that calls {target}")
    return out


def code_ran(entry: _Entry, told: bool = False) -> None:
    """Code that may run DDL runs in a session of this worker (``StatementPolicy``), or in
    another worker's (``told``: its news): every session of the database checks its
    statement names with the server until a load that started after its block ended
    (``_Entry.code_window``). This worker's own runs go to ``on_code`` (the loader tells
    the other workers, whose sessions may call what the code redefined)."""
    entry.code_ended = None if entry.blocks_open > 0 else time.monotonic()
    if not told and entry.on_code is not None:
        entry.on_code()
    _notify(entry)


def _notify(entry: _Entry) -> None:
    for listener in list(entry.listeners):
        listener.catalog_changed()


def with_defined(snapshot: Snapshot, defined: dict[str, frozenset[str]], stale: bool = False) -> Snapshot:
    """``snapshot`` with functions defined since (bare name -> {"schema.name"}) known: as
    unqualified calls and as column-syntax calls (``functions`` holds the bare names)."""
    if not defined and not stale:
        return snapshot
    ddl_functions = snapshot.ddl_functions
    names_functions = snapshot.names_functions
    if stale and defined:
        # DDL just defined them: until a load reads their source, they may run DDL, and
        # replace statements (red-team round 44: one defined in a block was neither)
        code = frozenset(defined) | frozenset().union(*defined.values())
        ddl_functions = ddl_functions | code
        names_functions = names_functions | code
    return replace(
        snapshot,
        functions=snapshot.functions | _raw_names(defined),
        stale=snapshot.stale or stale,
        user_functions=merge_defined(snapshot.user_functions, defined),
        ddl_functions=ddl_functions,
        names_functions=names_functions,
    )


def _raw_names(defined) -> frozenset[str]:
    """The names themselves (as PostgreSQL stores them) of ``{bare: {"schema.name"}}``."""
    out = set()
    for targets in defined.values():
        for target in targets:
            parts = split_name(target)
            if parts is not None and parts[1] is not None:
                out.add(parts[1])
    return frozenset(out)


def merge_defined(a: dict[str, frozenset[str]], b) -> dict[str, frozenset[str]]:
    """``a`` with ``b``'s targets added name by name ({bare name: {"schema.name"}})."""
    if not b:
        return a
    out = dict(a)
    for name, targets in b.items():
        out[name] = out.get(name, frozenset()) | targets
    return out


@dataclass
class _Entry:
    snapshot: Snapshot | None = None
    loading: asyncio.Task[None] | None = None  # the proxy's in-flight load, if any
    # when its queries started (monotonic), or None while it waits to start (behind the one
    # before it, or paced): then it speaks for every statement that arrived before it starts
    loading_started: float | None = None
    last_started: float = float("-inf")  # the newest load's start: the next is paced after it
    # functions defined through the proxy (bare name -> "schema.name"), kept for good: a
    # reload that ran before their transaction committed would not show them
    defined: dict[str, frozenset[str]] = field(default_factory=dict)
    # columns renamed or dropped through the proxy ("schema.table", column) -> None while
    # the DDL's transaction may still be open (a load then may not show it), or when it
    # ended (monotonic): dropped by the first load that started after that (``put``)
    removed: dict[tuple[str, str], float | None] = field(default_factory=dict)
    # how many sessions (of every worker) hold each key in a transaction that may still be
    # open: a key ends only when the last of them settled (another session's settle must
    # not end a window the first one still holds: red-team round 25)
    holders: dict[tuple[str, str], int] = field(default_factory=dict)
    # functions defined through the proxy (bare and "schema.name") -> None while a DDL block
    # may still be open (a load then reads the old source, or none), or when every block
    # had ended (monotonic): until a load that started after that, they count as code that
    # may run DDL and replace statements (``put``; red-team round 44)
    unread: dict[str, float | None] = field(default_factory=dict)
    # when DDL last went through (monotonic, ``invalidate``): a load whose queries started
    # before it cannot speak for it, so the snapshot it makes is stale too (``put``)
    invalidated_at: float = float("-inf")
    # what to call when the snapshot changes (a session's policy: its prepared statements
    # are decided again at their next Bind or EXECUTE); held weakly
    listeners: weakref.WeakSet = field(default_factory=weakref.WeakSet)
    # DDL through the proxy and the ends of its transactions, counted (``invalidate``), and
    # the transaction blocks with DDL open in this worker's sessions and in each other
    # worker's (its pid -> its count, from its news): a write decided before a count, or
    # while another session's block was open, may run what that DDL attached, so what the
    # server says about it is withheld (``StatementPolicy.writes_moved``; red-team round 36)
    epoch: int = 0
    open_blocks: int = 0
    remote_open: dict[int, int] = field(default_factory=dict)
    blocks_open: int = 0  # open_blocks plus every other worker's (``count_blocks``)
    # code that may run DDL ran through the proxy (``code_ran``): it may have redefined any
    # function (``EXECUTE`` of a CREATE OR REPLACE), which a load shows only once it ended:
    # None while a block may be open, when every block had ended (monotonic), -inf when no
    # such code ran since a load that started after that (``put``; red-team round 46)
    code_ended: float | None = float("-inf")
    # called when code ran in this worker (``code_ran``): the loader counts it and, with
    # workers > 1, tells the other workers, which open their window too (session 26)
    on_code: Callable[[], None] | None = None

    def count_blocks(self, delta: int = 0, origin: int | None = None, count: int = 0) -> None:
        """This worker's blocks changed by ``delta``, or worker ``origin`` has ``count``."""
        if origin is None:
            self.open_blocks = max(self.open_blocks + delta, 0)
        else:
            self.remote_open[origin] = max(count, 0)
        self.blocks_open = self.open_blocks + sum(self.remote_open.values())
        if self.blocks_open == 0 and self.unread:
            now = time.monotonic()  # every block that may have defined them has ended
            for name, ended in self.unread.items():
                if ended is None:
                    self.unread[name] = now
        if self.blocks_open == 0 and self.code_ended is None:
            self.code_ended = time.monotonic()

    def code_window(self) -> bool:
        """May a function have been redefined by code no load has read since?"""
        return self.code_ended != float("-inf")

    def defining(self) -> bool:
        """Is a block that defined functions through the proxy still open?"""
        return any(ended is None for ended in self.unread.values())


# the column part of a ``removed`` key that stands for a rename: (old name, RENAMED_TO + new)
RENAMED_TO = "\x00renamed to "


def without_columns(snapshot: Snapshot, removed: frozenset[tuple[str, str]]) -> Snapshot:
    """``snapshot`` without the columns ``removed`` names: after ``RENAME COLUMN a`` or
    ``DROP COLUMN a`` PostgreSQL reads ``x.a`` as the call ``a(x)`` (a statement prepared
    before included: its plan is analysed again), whatever a load that ran before the DDL
    committed says; and with the relations a key ``(old, RENAMED_TO + new)`` renamed in
    ``unsettled``. A key ``(ANY_RELATION, column)`` (a composite type's attribute renamed or
    dropped with CASCADE) takes the column from every relation: the tables made OF the type
    lose it, and the snapshot does not say which they are."""
    if not removed:
        return snapshot
    columns = dict(snapshot.columns)
    changed = False
    renames = [(rel, column[len(RENAMED_TO):]) for rel, column in removed
               if column.startswith(RENAMED_TO)]  # fmt: skip
    if renames:
        unsettled = dict(snapshot.unsettled)
        for old, new in renames:
            names = unsettled.get(old, frozenset()) | unsettled.get(new, frozenset()) | {old, new}
            for name in names:
                unsettled[name] = names
        snapshot = replace(snapshot, unsettled=unsettled)
    for rel, column in removed:
        if column.startswith(RENAMED_TO):
            continue
        if rel == ANY_RELATION:  # a type's attribute: from every table made OF it
            for name, held in columns.items():
                if column in held:
                    columns[name] = held - {column}
                    changed = True
            continue
        cols = columns.get(rel)
        if cols is not None and column in cols:
            columns[rel] = cols - {column}
            changed = True
    return replace(snapshot, columns=columns) if changed else snapshot


@dataclass
class CatalogCache:
    """Snapshots per database, refreshed by the proxy (``refresh_after`` seconds, or at
    once after DDL: ``invalidate``). The cache holds no I/O: the proxy loads and ``put``s."""

    refresh_after: float = 300.0
    entries: dict[str, _Entry] = field(default_factory=dict)

    def get(self, database: str) -> Snapshot | None:
        entry = self.entries.get(database)
        return entry.snapshot if entry is not None else None

    def put(
        self,
        database: str,
        functions,
        columns,
        role_schemas_absent: bool = False,
        user_functions: dict[str, frozenset[str]] | None = None,
        user_operators: dict[str, frozenset[str]] | None = None,
        user_types: dict[str, frozenset[str]] | None = None,
        type_oids: dict[int, frozenset[str]] | None = None,
        known_type_oids=(),
        cascades: dict[str, frozenset[str]] | None = None,
        views: dict[str, frozenset[str]] | None = None,
        view_names=(),
        inlinable: dict[str, tuple[tuple[str | None, str], ...]] | None = None,
        ruled=(),
        relation_oids: dict[int, tuple[str, str]] | None = None,
        user_schemas=(),
        defaulted_functions=(),
        domain_schemas=(),
        triggered=(),
        loaded_at: float | None = None,
        descendants: dict[str, frozenset[str]] | None = None,
        views_unread: bool = False,
        relation_casts: dict[str, frozenset[str]] | None = None,
        relation_casts_role: dict[str, frozenset[str]] | None = None,
        global_casts=(),
        function_types: dict[str, frozenset[str]] | None = None,
        argument_defaults: dict[str, frozenset[str]] | None = None,
        fk_code: dict[str, frozenset[str]] | None = None,
        check_functions: dict[str, frozenset[str]] | None = None,
        event_functions=(),
        opclass_functions: dict[str, frozenset[str]] | None = None,
        encoding_code: bool = False,
        temp_code: bool = False,
        ddl_functions=(),
        ddl_objects: bool = False,
        ddl_relations=(),
        names_functions=(),
        names_relations=(),
        inlinable_plain: dict[str, tuple[tuple[str | None, str], ...]] | None = None,
        view_functions: dict[str, frozenset[str]] | None = None,
        partitions: dict[str, frozenset[str]] | None = None,
        type_users: dict[str, frozenset[str]] | None = None,
        view_bases: dict[str, frozenset[str]] | None = None,
        matview_bases: dict[str, frozenset[str]] | None = None,
        statistics: dict[str, frozenset[str]] | None = None,
        update_cascades: dict[str, frozenset[str]] | None = None,
        default_functions: dict[str, frozenset[str]] | None = None,
        view_calls: dict[str, frozenset[str]] | None = None,
        policy_reads: dict[str, frozenset[str]] | None = None,
        policy_reads_role: dict[str, frozenset[str]] | None = None,
        published: dict[str, frozenset[str]] | None = None,
        policy_exprs: dict[str, tuple[tuple[str, str], ...]] | None = None,
        policy_exprs_role: dict[str, tuple[tuple[str, str], ...]] | None = None,
        loaded_epoch: int | None = None,
        type_names=(),
        cursor_code: bool = False,
        refcursor_functions=(),
        portal_code: bool = False,
        text_schemas: dict[str, frozenset[str]] | None = None,
    ) -> Snapshot:
        """``loaded_at``: when the load's queries started (monotonic; default now): what a
        statement arriving later may be decided on (``StatementPolicy._describe_refusal``);
        ``loaded_epoch``: the entry's ``epoch`` then (default: now's)."""
        entry = self.entries.setdefault(database, _Entry())
        if loaded_at is None:
            loaded_at = time.monotonic()
        if loaded_epoch is None:
            loaded_epoch = entry.epoch
        snap = Snapshot(
            frozenset(functions), dict(columns),
            # a load that started before DDL went through: stale as the snapshot it replaces
            loaded_at, loaded_at <= entry.invalidated_at, role_schemas_absent,
            dict(user_functions or {}), dict(user_operators or {}), dict(user_types or {}),
            dict(type_oids or {}), frozenset(known_type_oids), dict(cascades or {}),
            dict(views or {}), frozenset(view_names), frozenset(ruled), dict(inlinable or {}),
            dict(relation_oids or {}), frozenset(user_schemas), frozenset(defaulted_functions),
            frozenset(triggered), dict(descendants or {}),
            views_unread=views_unread, relation_casts=dict(relation_casts or {}),
            relation_casts_role=(
                None if relation_casts_role is None else dict(relation_casts_role)
            ),
            global_casts=frozenset(global_casts), function_types=dict(function_types or {}),
            argument_defaults=dict(argument_defaults or {}),
            fk_code=dict(fk_code or {}), check_functions=dict(check_functions or {}),
            event_functions=frozenset(event_functions),
            opclass_functions=dict(opclass_functions or {}),
            encoding_code=encoding_code, temp_code=temp_code,
            ddl_functions=frozenset(ddl_functions), ddl_objects=ddl_objects,
            ddl_relations=frozenset(ddl_relations),
            names_functions=frozenset(names_functions),
            names_relations=frozenset(names_relations),
            inlinable_plain=dict(inlinable_plain or {}),
            view_functions=dict(view_functions or {}),
            partitions=dict(partitions or {}), type_users=dict(type_users or {}),
            view_bases=dict(view_bases or {}), matview_bases=dict(matview_bases or {}),
            statistics=dict(statistics or {}),
            update_cascades=dict(update_cascades or {}),
            default_functions=dict(default_functions or {}),
            view_calls=dict(view_calls or {}), policy_reads=dict(policy_reads or {}),
            policy_reads_role=dict(policy_reads_role or {}), published=dict(published or {}),
            policy_exprs=dict(policy_exprs or {}), policy_exprs_role=dict(policy_exprs_role or {}),
            loaded_epoch=loaded_epoch, type_names=frozenset(type_names),
            cursor_code=cursor_code, refcursor_functions=frozenset(refcursor_functions),
            portal_code=portal_code,
            text_schemas=_with_domains(text_schemas, domain_schemas),
        )  # fmt: skip
        if entry.removed:
            started = snap.loaded_at
            for key, ended in list(entry.removed.items()):
                if ended is not None and ended < started:
                    del entry.removed[key]  # this load saw what the DDL left
            snap = without_columns(snap, frozenset(entry.removed))
        if entry.unread:
            started = snap.loaded_at
            for name, ended in list(entry.unread.items()):
                if ended is not None and ended < started:
                    del entry.unread[name]  # this load read its source as committed
            if entry.unread:
                code = frozenset(entry.unread)
                snap = replace(snap, ddl_functions=snap.ddl_functions | code,
                               names_functions=snap.names_functions | code)  # fmt: skip
        if entry.code_ended is not None and entry.code_ended < snap.loaded_at:
            entry.code_ended = float("-inf")  # this load read what that code left
        snap = with_defined(snap, entry.defined)
        entry.snapshot = snap
        _notify(entry)
        return snap

    def invalidate(
        self,
        database: str,
        defined: dict[str, frozenset[str]] | None = None,
        removed: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        """DDL went through: until reloaded, unknown names count as calls. ``defined``:
        the functions it defined (bare name -> "schema.name"), shadows from now on;
        ``removed``: the columns it renamed or dropped ("schema.table", column), not
        columns from now on (``without_columns``)."""
        entry = self.entries.get(database)
        if entry is None:
            if not defined and not removed:
                return
            entry = self.entries.setdefault(database, _Entry())
        entry.defined = merge_defined(entry.defined, defined)
        if defined:
            # unread while a block that may have defined them is open (the session counts
            # its block before its DDL), else from now (another worker's, or offline)
            ended = None if entry.blocks_open > 0 else time.monotonic()
            for name in (*defined, *frozenset().union(*defined.values())):
                entry.unread[name] = ended
        entry.invalidated_at = time.monotonic()
        entry.epoch += 1
        for key in removed:  # (each session passes a key once until it settles it)
            entry.removed[key] = None  # until the DDL's transaction has ended (``settle``)
            entry.holders[key] = entry.holders.get(key, 0) + 1
        s = entry.snapshot
        if s is not None and (not s.stale or defined or removed):
            entry.snapshot = without_columns(with_defined(s, defined or {}, stale=True), removed)
        if s is not None:
            _notify(entry)  # what the DDL changed, the snapshot may not know

    def settle(self, database: str, removed) -> None:
        """The transactions that renamed or dropped ``removed`` ended (committed or not):
        a load that starts from now on shows the columns as they are."""
        entry = self.entries.get(database)
        if entry is None:
            return
        now = time.monotonic()
        for key in removed:
            held = entry.holders.get(key, 0) - 1
            if held > 0:
                entry.holders[key] = held  # another session's transaction still holds it
                continue
            entry.holders.pop(key, None)
            if key in entry.removed and entry.removed[key] is None:
                entry.removed[key] = now

    def listen(self, database: str, target) -> ChangeListener:
        """Call ``target.catalog_changed()`` whenever the database's snapshot changes, for
        as long as the caller keeps the listener returned (held weakly here: a session's
        policy keeps its own, and both go when the session does)."""
        listener = ChangeListener(target)
        self.entry(database).listeners.add(listener)
        return listener

    def due(self, database: str) -> bool:
        snap = self.get(database)
        return (
            snap is None
            or snap.stale
            or time.monotonic() - snap.loaded_at >= self.refresh_after
        )

    def entry(self, database: str) -> _Entry:
        """The database's entry, the same object for good (entries are never removed or
        replaced: the catalog loader reads each session's snapshot straight from it)."""
        return self.entries.setdefault(database, _Entry())


class ChangeListener:
    """``CatalogCache.listen``'s handle (a compiled policy cannot be weakly referenced)."""

    __slots__ = ("__weakref__", "target")

    def __init__(self, target) -> None:
        self.target = target

    def catalog_changed(self) -> None:
        self.target.catalog_changed()
