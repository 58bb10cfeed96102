"""Names given as text to built-ins: the policy's list (``pgparse._NAME_ARGUMENTS``) is
PostgreSQL 15's, derived again on the server.

``tests/support/name_arguments.py`` holds the derivation (``DERIVED``) and
``tests/unit/test_s19_name_arguments.py`` compares the policy's list with it; this
derives it on the server and compares it with the one the unit test holds, so a PostgreSQL whose catalog has another function that looks a name up
fails here, and the unit test then fails until the policy decides it:

* by the signature: every ``pg_catalog`` function with an input argument of a reg* type
  (a literal there becomes that type by the function's signature, looked up by name);
* by the server's answer: every overload the policy allows (``is_builtin_function``, and
  the catalog-state and definition functions an execute scope allows) with a ``text``,
  ``name`` or ``text[]`` argument, called by a role without USAGE on a schema with a name
  in that schema at that argument (and plain values at the others): "permission denied
  for schema" means PostgreSQL looks that argument up as a schema-qualified name.
"""

from __future__ import annotations

import itertools

import psycopg
import pytest

from policy.classify.catalogue import (
    DEFINITION_FUNCTIONS,
    is_builtin_function,
    is_catalog_state_function,
)
from tests.support.name_arguments import DERIVED, REG_TYPES

pytestmark = pytest.mark.timeout(300)

HIDDEN = "s19_hidden"
ROLE = "s19_name_probe"

# the name in the hidden schema, by the argument's type (the forms PostgreSQL parses:
# a qualified name, a function or operator signature, a name list or a type in an array)
TARGETS = {
    "text": [f"{HIDDEN}.x", f"{HIDDEN}.x(integer)", f"{HIDDEN}.x(integer,integer)"],
    "name": [f"{HIDDEN}.x"],
    "text[]": [f"{{{HIDDEN}.x}}", f"{{{HIDDEN},x}}", f"{{{HIDDEN},x,y}}", f"{{btree,{HIDDEN},x,1}}"],
}
# plain values for the other arguments, by type: SQL expressions
OTHER = {
    "text": ["'postgres'", "'SELECT'", "'USAGE'", "'type'", "'table'", "'function'",
             "'cast'", "'english'", "'table column'", "'operator of access method'"],
    "name": ["'postgres'"],
    "text[]": ["'{}'::text[]", "'{integer}'::text[]"],
    "integer": ["1"], "bigint": ["1"], "smallint": ["1::int2"], "boolean": ["true"],
    "oid": ["10::oid"], "json": ["'{}'::json"], "jsonb": ["'{}'::jsonb"], "xml": ["'<a/>'::xml"],
    "tsquery": ["'a'::tsquery"], "tsvector": ["'a'::tsvector"], "bytea": ["'\\x00'::bytea"],
    "regclass": ["'pg_class'::regclass"], "regconfig": ["'english'::regconfig"],
    "regtype": ["'integer'::regtype"], "regrole": ["'postgres'::regrole"],
    "anyarray": ["ARRAY[1]"], '"any"': ["1"], "anyelement": ["1"], "date": ["current_date"],
    "interval": ["'1 day'::interval"], "numeric": ["1::numeric"], "real": ["1::real"],
    "double precision": ["1::float8"], '"char"': ["'A'::\"char\""],
    "time with time zone": ["current_time"], "time without time zone": ["localtime"],
    "timestamp with time zone": ["now()"], "timestamp without time zone": ["localtimestamp"],
}  # fmt: skip
SIGNATURES = """
SELECT p.proname, array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) t)
FROM pg_proc p
WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind IN ('f', 'a', 'w')
  AND p.pronargs > 0
ORDER BY 1, 2
"""


def derive(conn) -> set[tuple[str, int, int, str]]:
    """(function, number of arguments, position, argument type) of every name argument."""
    rows = conn.execute(SIGNATURES).fetchall()
    found: set[tuple[str, int, int, str]] = set()
    for name, types in rows:
        for position, typ in enumerate(types):
            if typ in REG_TYPES and typ != "regrole":
                found.add((name, len(types), position, typ))
    conn.execute(f"DROP SCHEMA IF EXISTS {HIDDEN} CASCADE; CREATE SCHEMA {HIDDEN}")
    conn.execute(f"DROP ROLE IF EXISTS {ROLE}; CREATE ROLE {ROLE}")
    conn.execute(f"SET ROLE {ROLE}")
    try:
        for name, types in rows:
            allowed = (is_builtin_function(name) or is_catalog_state_function(name)
                       or name in DEFINITION_FUNCTIONS)  # fmt: skip
            if not allowed:
                continue
            for position, typ in enumerate(types):
                if typ not in TARGETS:
                    continue
                choices = []
                for i, other in enumerate(types):
                    if i == position:
                        choices.append([f"'{v}'::{typ}" for v in TARGETS[typ]])
                    else:
                        choices.append(OTHER.get(other, ["NULL"]))
                if _refused_for_the_schema(conn, name, choices):
                    found.add((name, len(types), position, typ))
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"DROP SCHEMA {HIDDEN} CASCADE; DROP ROLE {ROLE}")
    return found


def _refused_for_the_schema(conn, name: str, choices: list[list[str]]) -> bool:
    for combo in itertools.product(*choices):
        try:
            conn.execute(f"SELECT pg_catalog.{name}({', '.join(combo)})")
        except psycopg.errors.InsufficientPrivilege as exc:
            if f"schema {HIDDEN}" in str(exc):
                return True
        except psycopg.Error:
            continue
    return False


def test_the_name_arguments_are_the_servers(pg):
    """The derivation the unit test holds is the server's: a function PostgreSQL adds (or
    an overload) that looks a name up in a schema fails here."""
    conn = psycopg.connect(host=str(pg.socket_dir), port=pg.port, user="postgres",
                           dbname="postgres", autocommit=True)  # fmt: skip
    try:
        got = derive(conn)
    finally:
        conn.close()
    assert got == DERIVED, {"missing from DERIVED": sorted(got - DERIVED),
                            "not on the server": sorted(DERIVED - got)}  # fmt: skip
