"""Database roles for grants: names, markers, and the privileges a grant's scopes mean.

The statement policy is the first wall; a per-grant database role is the second. This
module says, without any I/O, what that role is called, how pgwitness recognises roles it
made, and which ``GRANT`` statements give it exactly what its scopes name
(``proxy.provision`` looks the names up in the catalog and runs them).

Scope → privilege (``privilege_statements``):

========== ===================================================================
read       SELECT (sequences: SELECT)
insert     INSERT, USAGE on the sequences the table's serial/identity columns own
update     UPDATE, SELECT (PostgreSQL needs SELECT for WHERE and RETURNING)
delete     DELETE, SELECT (likewise)
write      insert + update + delete
truncate   TRUNCATE
ddl        CREATE on the target's schema (new objects are the role's own),
           REFERENCES and TRIGGER on named existing tables. Altering or dropping an
           existing table needs its ownership, which PostgreSQL cannot grant per table.
execute    EXECUTE on every overload of the named functions (``s.*``: all in schema)
========== ===================================================================

Every schema a target names gets USAGE; the grant's database gets CONNECT. Nothing is
granted in ``pg_catalog``, ``information_schema`` or ``pg_temp``: catalogs are readable
through PUBLIC as always, and a grant never widens them.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field

from policy.scopes import Scopes

__all__ = [
    "ROLE_MARKER",
    "ROLE_PREFIX",
    "Catalog",
    "is_reserved_role",
    "privilege_statements",
    "role_comment",
    "role_for_grant",
    "role_password",
    "validate_db_role",
]

ROLE_PREFIX = "pgw_g_"
ROLE_MARKER = "pgwitness:"  # role comment: "pgwitness:<grant id> store:<store id>"
_GRANT_ID_RE = re.compile(r"gr_[0-9a-f]{16}")
_ROLE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$.-]{0,62}")
_SKIPPED_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_temp"})
_SEQUENCE = "S"

Target = tuple[str, str | None]


def role_for_grant(grant_id: str) -> str:
    """``gr_3f1c…`` → ``pgw_g_3f1c…``; refuses anything that is not a grant id."""
    if not _GRANT_ID_RE.fullmatch(grant_id):
        raise ValueError(f"not a grant id: {grant_id!r}")
    return ROLE_PREFIX + grant_id[3:]


def role_comment(grant_id: str, store_id: str) -> str:
    """The marker on a per-grant role: its grant, and the grant store that grant lives in
    (two deployments on one database server never take each other's roles for orphans)."""
    return f"{ROLE_MARKER}{grant_id} store:{store_id}"


def grant_of_role(name: str, comment: str | None, store_id: str) -> str | None:
    """The grant id a role was made for, if pgwitness made it for grants in this store
    (name *and* comment agree); None for every other role."""
    if not name.startswith(ROLE_PREFIX) or not comment:
        return None
    grant_id = "gr_" + name[len(ROLE_PREFIX) :]
    if not _GRANT_ID_RE.fullmatch(grant_id) or comment != role_comment(grant_id, store_id):
        return None
    return grant_id


def is_reserved_role(name: str) -> bool:
    return name.startswith(ROLE_PREFIX)


def validate_db_role(value: object) -> str:
    """A mapped grant's database role: a plain role name, never a per-grant one."""
    from .model import GrantError

    if not isinstance(value, str) or not value:
        raise GrantError("db_role", "is required (the database role the grant logs in as)")
    if not _ROLE_NAME_RE.fullmatch(value):
        raise GrantError("db_role", f"{value[:70]!r} is not a role name (1-63 of A-Za-z0-9_$.-)")
    if is_reserved_role(value):
        raise GrantError(
            "db_role", f"{value!r}: roles named {ROLE_PREFIX}* belong to per-grant grants"
        )
    if value.lower() in ("postgres", "rds_superuser", "rdsadmin", "public"):
        raise GrantError("db_role", f"{value!r} is not a role a grant may log in as")
    return value


def role_password(key: bytes, grant_id: str) -> str:
    """The per-grant role's password: HMAC-SHA256(key, grant id), 256 bits as hex.

    Derived, not stored: every proxy holding the key logs in as the role, and nothing in
    the grant store (or any listing) lets anyone else do so.
    """
    return hmac.digest(key, b"pgwitness-role-password\0" + grant_id.encode(), "sha256").hex()


# ---- privileges -----------------------------------------------------------------------


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rel(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


@dataclass
class Catalog:
    """What ``privilege_statements`` needs to know about the database.

    ``relations``: (schema, name) → relkind for the relations the scopes name, or every
    relation of a schema a wildcard names. ``sequences``: (schema, table) → the sequences
    its columns own. ``functions``: (schema, name) → ``regprocedure`` texts (one per
    overload). ``schemas``: the schemas that exist.
    """

    relations: dict[tuple[str, str], str] = field(default_factory=dict)
    sequences: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    functions: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    schemas: set[str] = field(default_factory=set)


# A write scope alone is no SELECT: what PostgreSQL needs SELECT for (a WHERE, RETURNING,
# SET naming a column, ON CONFLICT's update or target, MERGE's conditions) the statement
# policy refuses without a read scope too (pgparse._observes_target).
_TABLE_PRIVILEGES = {
    "read": ("SELECT",),
    "insert": ("INSERT",),
    "update": ("UPDATE",),
    "delete": ("DELETE",),
    "write": ("INSERT", "UPDATE", "DELETE"),
    "truncate": ("TRUNCATE",),
    "ddl": ("REFERENCES", "TRIGGER"),
}
_SEQUENCE_PRIVILEGES = {
    "read": ("SELECT",),
    "insert": ("USAGE",),
    "update": ("USAGE", "UPDATE"),
    "write": ("USAGE", "UPDATE", "SELECT"),
}
_INSERTING = frozenset({"insert", "write"})


def scope_schemas(scopes: Scopes) -> set[str]:
    """Every schema a relation or function target names (minus the system ones)."""
    out = {s for targets in scopes.relations.values() for s, _ in targets}
    out |= {s for s, _ in scopes.execute}
    return out - _SKIPPED_SCHEMAS


def scope_relations(scopes: Scopes) -> set[Target]:
    return {t for targets in scopes.relations.values() for t in targets if t[0] not in _SKIPPED_SCHEMAS}


def privilege_statements(scopes: Scopes, role: str, database: str, catalog: Catalog) -> list[str]:
    """The GRANT statements that give ``role`` exactly what ``scopes`` name (pure).

    Targets that do not exist are skipped (a statement on them fails anyway); a wildcard
    covers what the schema holds now, as ``GRANT ... ON ALL TABLES IN SCHEMA`` does.
    """
    r = quote_ident(role)
    out = [f"GRANT CONNECT ON DATABASE {quote_ident(database)} TO {r}"]
    schemas = sorted(scope_schemas(scopes) & catalog.schemas)
    for schema in schemas:
        out.append(f"GRANT USAGE ON SCHEMA {quote_ident(schema)} TO {r}")
    # relation → privileges, built per relation so each gets one statement
    wanted: dict[tuple[str, str], set[str]] = {}
    ddl_schemas: set[str] = set()
    for op, targets in scopes.relations.items():
        for schema, name in targets:
            if schema in _SKIPPED_SCHEMAS or schema not in catalog.schemas:
                continue
            if op == "ddl":
                ddl_schemas.add(schema)
            if name is None:
                names = [n for (s, n) in catalog.relations if s == schema]
            else:
                names = [name] if (schema, name) in catalog.relations else []
            for n in names:
                kind = catalog.relations[(schema, n)]
                if kind == _SEQUENCE:
                    privs = _SEQUENCE_PRIVILEGES.get(op, ())
                else:
                    privs = _TABLE_PRIVILEGES[op]
                    if op in _INSERTING:
                        for seq in catalog.sequences.get((schema, n), ()):
                            wanted.setdefault(seq, set()).add("USAGE")
                if privs:
                    wanted.setdefault((schema, n), set()).update(privs)
    for schema in sorted(ddl_schemas):
        out.append(f"GRANT CREATE ON SCHEMA {quote_ident(schema)} TO {r}")
    for (schema, name), granted in sorted(wanted.items()):
        kind = catalog.relations.get((schema, name), _SEQUENCE)
        what = "SEQUENCE" if kind == _SEQUENCE else "TABLE"
        if kind == _SEQUENCE:
            granted = granted & {"USAGE", "SELECT", "UPDATE"}
        out.append(f"GRANT {', '.join(sorted(granted))} ON {what} {_rel(schema, name)} TO {r}")
    for schema, name in sorted(scopes.execute, key=lambda t: (t[0], t[1] or "")):
        if schema in _SKIPPED_SCHEMAS or schema not in catalog.schemas:
            continue
        if name is None:
            out.append(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {quote_ident(schema)} TO {r}")
            continue
        for signature in catalog.functions.get((schema, name), ()):
            out.append(f"GRANT EXECUTE ON FUNCTION {signature} TO {r}")
    return out
