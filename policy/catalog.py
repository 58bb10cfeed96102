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
    "CatalogCache",
    "Snapshot",
    "attribute_calls",
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


@dataclass
class _Entry:
    snapshot: Snapshot | None = None
    loading: asyncio.Task[None] | None = None  # the proxy's in-flight load, if any


@dataclass
class CatalogCache:
    """Snapshots per database, refreshed by the proxy (``refresh_after`` seconds, or at
    once after DDL: ``invalidate``). The cache holds no I/O: the proxy loads and ``put``s."""

    refresh_after: float = 300.0
    entries: dict[str, _Entry] = field(default_factory=dict)

    def get(self, database: str) -> Snapshot | None:
        entry = self.entries.get(database)
        return entry.snapshot if entry is not None else None

    def put(self, database: str, functions, columns, role_schemas_absent: bool = False) -> Snapshot:
        snap = Snapshot(
            frozenset(functions), dict(columns), time.monotonic(), False, role_schemas_absent
        )
        self.entries.setdefault(database, _Entry()).snapshot = snap
        return snap

    def invalidate(self, database: str) -> None:
        """DDL went through: until reloaded, unknown names count as calls."""
        entry = self.entries.get(database)
        if entry is not None and entry.snapshot is not None and not entry.snapshot.stale:
            s = entry.snapshot
            entry.snapshot = Snapshot(
                s.functions, s.columns, s.loaded_at, True, s.role_schemas_absent
            )

    def due(self, database: str) -> bool:
        snap = self.get(database)
        return (
            snap is None
            or snap.stale
            or time.monotonic() - snap.loaded_at >= self.refresh_after
        )

    def entry(self, database: str) -> _Entry:
        return self.entries.setdefault(database, _Entry())
