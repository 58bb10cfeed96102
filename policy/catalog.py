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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "COLUMNS_SQL",
    "FUNCTIONS_SQL",
    "ROLE_SCHEMAS_SQL",
    "USER_FUNCTIONS_SQL",
    "USER_OPERATORS_SQL",
    "CatalogCache",
    "Snapshot",
    "attribute_calls",
    "shadowing_calls",
    "with_defined",
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

# User-written functions (any language but C and internal, which only a superuser can add)
# outside the system schemas, by name. PostgreSQL resolves an unqualified call by the best
# match of argument types across the whole search path, not by the first schema: lower(1)
# runs public.lower(int) if one exists, since pg_catalog.lower(text) would need a cast. So a
# call spelled like a built-in is a call of every user function of that name (temporary
# schemas excepted: unqualified calls never look there).
USER_FUNCTIONS_SQL = """
SELECT n.nspname, p.proname
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE l.lanname NOT IN ('c', 'internal')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
"""
# Operators outside the system schemas whose function is user-written: an unqualified
# operator (1 || 2) may resolve to one as a function call does, by argument types.
USER_OPERATORS_SQL = """
SELECT o.oprname, fn.nspname, p.proname
FROM pg_catalog.pg_operator o
JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode
JOIN pg_catalog.pg_namespace fn ON fn.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE l.lanname NOT IN ('c', 'internal')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND fn.nspname NOT IN ('pg_catalog', 'information_schema')
"""

# Can "$user" in a per-grant role's search_path resolve anywhere, now or by a grant's doing?
# Only if a schema named like a per-grant role exists, or a per-grant role may create
# schemas: pgwitness gives them CREATE on schemas only, never on the database, so only
# PUBLIC (every role's floor) or a DBA's own GRANT can.
ROLE_SCHEMAS_SQL = """
SELECT NOT has_database_privilege('public', current_database(), 'CREATE')
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname LIKE 'pgw\\_g\\_%')
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname LIKE 'pgw\\_g\\_%'
                   AND has_database_privilege(r.oid, current_database(), 'CREATE'))
"""


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

    @property
    def user_schema_safe(self) -> bool:
        """May a per-grant role's session read ``"$user", public``? Only from a fresh
        snapshot that saw no way for ``"$user"`` to resolve (stale: DDL since; unknown)."""
        return self.role_schemas_absent and not self.stale


def attribute_calls(
    attributes: frozenset[str], relations: frozenset[str], snapshot: Snapshot | None
) -> frozenset[str]:
    """The column-syntax names of a statement that PostgreSQL may resolve as calls.

    ``relations``: every relation the statement touches. A name is a column (not a call)
    only if every one of them has a column of that name: the policy does not map aliases
    to relations, so ``c.fn`` is taken for a call unless no relation could make it one."""
    if not attributes:
        return frozenset()
    if snapshot is None:
        return attributes
    out = set()
    for name in attributes:
        if name in snapshot.functions or snapshot.stale:
            cols = [snapshot.columns.get(rel) for rel in relations]
            if not cols or any(c is None or name not in c for c in cols):
                out.add(name)
    return frozenset(out)


def shadowing_calls(
    functions: frozenset[str], operators: frozenset[str], snapshot: Snapshot
) -> dict[str, str]:
    """The user-written functions PostgreSQL may run for a statement's unqualified calls
    and operators: ``{"schema.fn": "what in the statement may resolve to it"}``.

    ``functions`` and ``operators`` as classify renders them: bare for unqualified calls
    (a qualified one names its function and is decided as written). The policy decides
    each function found like a call of it (an execute scope)."""
    out: dict[str, str] = {}
    if snapshot.user_functions:
        for fn in functions:
            for target in snapshot.user_functions.get(fn, ()):
                out.setdefault(target, f"{fn}(...)")
    if snapshot.user_operators:
        for op in operators:
            for target in snapshot.user_operators.get(op, ()):
                out.setdefault(target, f"operator {op}")
    return out


def with_defined(snapshot: Snapshot, defined: dict[str, frozenset[str]]) -> Snapshot:
    """``snapshot`` with functions defined since (bare name -> "schema.name") known."""
    return Snapshot(
        snapshot.functions, snapshot.columns, snapshot.loaded_at, snapshot.stale,
        snapshot.role_schemas_absent, _merged(snapshot.user_functions, defined),
        snapshot.user_operators,
    )  # fmt: skip


def _merged(a: dict[str, frozenset[str]], b) -> dict[str, frozenset[str]]:
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
    # functions defined through the proxy (bare name -> "schema.name"), kept for good: a
    # reload that ran before their transaction committed would not show them
    defined: dict[str, set[str]] = field(default_factory=dict)


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
    ) -> Snapshot:
        entry = self.entries.setdefault(database, _Entry())
        snap = Snapshot(
            frozenset(functions), dict(columns), time.monotonic(), False, role_schemas_absent,
            _merged(user_functions or {}, entry.defined), dict(user_operators or {}),
        )  # fmt: skip
        entry.snapshot = snap
        return snap

    def invalidate(self, database: str, defined: dict[str, frozenset[str]] | None = None) -> None:
        """DDL went through: until reloaded, unknown names count as calls. ``defined``:
        the functions it defined (bare name -> "schema.name"), shadows from now on."""
        entry = self.entries.get(database)
        if entry is None:
            if not defined:
                return
            entry = self.entries.setdefault(database, _Entry())
        for name, targets in (defined or {}).items():
            entry.defined.setdefault(name, set()).update(targets)
        s = entry.snapshot
        if s is not None and (not s.stale or defined):
            entry.snapshot = Snapshot(
                s.functions, s.columns, s.loaded_at, True, s.role_schemas_absent,
                _merged(s.user_functions, entry.defined), s.user_operators,
            )  # fmt: skip

    def due(self, database: str) -> bool:
        snap = self.get(database)
        return (
            snap is None
            or snap.stale
            or time.monotonic() - snap.loaded_at >= self.refresh_after
        )

    def entry(self, database: str) -> _Entry:
        return self.entries.setdefault(database, _Entry())
