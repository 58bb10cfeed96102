"""Names given as text to built-ins that look them up (``pgparse._NAME_ARGUMENTS``): the
schema named in the text is decided as a cast's is (a schema the grant names nothing in is
refused: PostgreSQL asks USAGE on it), for every PostgreSQL 15 built-in that reads an
argument so, not only the ones red-team round 23 tried (``pg_relation_is_publishable``,
``has_type_privilege``, ``pg_get_object_address``, a ``regconfig`` the signature makes).

``DERIVED`` (tests/support/name_arguments.py) is PostgreSQL 15's list, derived on the server (and derived again there by
``tests/integration/test_s19_name_arguments.py``, which compares it with this one):
(function, number of arguments, position, argument type) for

* every ``pg_catalog`` function with an input argument of a reg* type but ``regrole``
  (``SELECT ... FROM pg_proc WHERE proargtypes`` has one): a literal there becomes that
  type by the function's signature, and is looked up by name;
* every overload the policy allows with a ``text``, ``name`` or ``text[]`` argument that
  PostgreSQL looks up as a schema-qualified name: called by a role without USAGE on a
  schema, with a name in that schema there, it raises "permission denied for schema".

Pure: no processes.
"""

from __future__ import annotations

import pytest

from policy import StatementPolicy, parse_scopes
from policy.classify import pgparse
from policy.classify.catalogue import SEQUENCE_FUNCTIONS, is_dangerous_function
from policy.classify.pgparse import LITERAL, parse
from tests.support.name_arguments import DERIVED, REG_TYPES

# How PostgreSQL reads the text arguments DERIVED lists (the reg type whose input
# function, or the lookup of the same grammar, it goes through): checked against the table.
TEXT_READ_AS = {
    **dict.fromkeys(
        ("has_table_privilege", "has_sequence_privilege", "has_any_column_privilege",
         "has_column_privilege", "pg_get_serial_sequence", "pg_get_viewdef", "to_regclass"),
        "regclass",
    ),
    "has_type_privilege": "regtype", "has_function_privilege": "regprocedure",
    "to_regtype": "regtype", "to_regproc": "regproc", "to_regprocedure": "regprocedure",
    "to_regoper": "regoper", "to_regoperator": "regoperator",
    "to_regcollation": "regcollation", "pg_get_object_address": "object_address",
}  # fmt: skip
# In the table though PostgreSQL asks no privilege for them: a schema by its own name,
# decided like 'secret'::regnamespace (an existence oracle of a schema the grant does not
# name); to_regnamespace and has_schema_privilege answer whether it exists.
SCHEMA_NAMES = {
    ("has_schema_privilege", 2, 0), ("has_schema_privilege", 3, 1), ("to_regnamespace", 1, 0)
}
# Decided otherwise: a sequence function's argument is a use of that sequence (read or
# update, SEQUENCE_FUNCTIONS); a dangerous function is refused whatever its argument.
OTHERWISE = frozenset(SEQUENCE_FUNCTIONS)


def _table() -> dict[tuple[str, int, int], str]:
    return {
        (name, nargs, position): how
        for name, overloads in pgparse._NAME_ARGUMENTS.items()
        for nargs, found in overloads.items()
        for position, how in found
    }


def test_every_name_argument_postgres_reads_is_decided():
    """A function missing from the policy's list (or an overload, or a position) fails."""
    table = _table()
    missing = []
    for name, nargs, position, typ in sorted(DERIVED):
        if name in OTHERWISE or is_dangerous_function(name):
            continue
        how = table.get((name, nargs, position))
        expected = typ if typ in REG_TYPES else TEXT_READ_AS.get(name)
        if how is None or how != expected:
            missing.append((name, nargs, position, typ, how, expected))
    assert not missing, missing


def test_the_list_holds_nothing_postgres_does_not_read_as_a_name():
    derived = {(name, nargs, position) for name, nargs, position, _typ in DERIVED}
    extra = set(_table()) - derived - SCHEMA_NAMES
    assert not extra, sorted(extra)
    assert set(_table()) >= SCHEMA_NAMES


def test_roles_and_other_global_objects_are_not_names_in_a_schema():
    """``has_table_privilege('alice', 's.t', 'SELECT')``: the role is the first argument
    and the relation the second; a role, a database, a tablespace, a language, a server
    or a setting is nobody's schema object (none of them is in the list)."""
    names = set(pgparse._NAME_ARGUMENTS)
    for name in ("to_regrole", "pg_has_role", "has_database_privilege",
                 "has_tablespace_privilege", "has_language_privilege", "has_server_privilege",
                 "has_foreign_data_wrapper_privilege", "has_parameter_privilege",
                 "pg_database_size", "pg_tablespace_size"):  # fmt: skip
        assert name not in names, name
    (st,) = parse("SELECT has_table_privilege('secret', 'public.orders', 'SELECT')")
    assert ("schema", "public") in st.describes and ("schema", "secret") not in st.describes


# --- the schemas named, call by call ----------------------------------------------------


def _schemas(sql: str) -> set[str]:
    (st,) = parse(sql)
    return {name for kind, name in st.describes if kind == "schema"}


ROUND_23 = [
    "SELECT pg_relation_is_publishable('secret.r23_vault')",
    "SELECT has_type_privilege('secret.r23_mood', 'USAGE')",
    "SELECT pg_get_object_address('type', '{secret.r23_mood}', '{}')",
    "SELECT to_tsvector('secret.r23_cfg', 'calm')",
]


def _example(name: str, nargs: int, position: int, how: str) -> str:
    value = {
        "regnamespace": "secret", "regprocedure": "secret.f(int)",
        "regoperator": "secret.+(int,int)", "object_address": "{secret,t}",
    }.get(how, "secret.t")  # fmt: skip
    args = ["'x'"] * nargs
    args[position] = f"'{value}'"
    if how == "object_address":
        args = ["'table'", f"'{value}'", "'{}'"]
    return f"SELECT {name}({', '.join(args)})"


FAMILY = sorted(_table().items())


@pytest.mark.parametrize(
    ("key", "how"), FAMILY, ids=[f"{n}/{a}@{p}" for (n, a, p), _ in FAMILY]
)
def test_every_name_argument_in_a_schema_is_decided(key, how):
    sql = _example(*key, how)
    assert "secret" in _schemas(sql), sql
    (st,) = parse(sql)
    assert LITERAL in st.flags, sql  # another name, another decision: never fingerprint-cached
    assert "secret" in _schemas(sql.replace("SELECT ", "SELECT pg_catalog.", 1))


def _policy(scopes: str = "read:public.orders") -> StatementPolicy:
    return StatementPolicy(parse_scopes(scopes), task="T")


@pytest.mark.parametrize("sql", ROUND_23)
def test_round_23s_oracles_are_refused(sql):
    v = _policy().check_query(sql)
    assert not v.allowed and "schema secret" in v.message, v.message
    assert _policy("read:public.orders read:secret.t").check_query(sql).allowed


@pytest.mark.parametrize(
    ("sql", "schemas"),
    [
        # overloads: the object after a role, a column after the relation
        ("SELECT has_table_privilege('alice', 'secret.t', 'SELECT')", {"secret"}),
        ("SELECT has_table_privilege(10::oid, 'secret.t', 'SELECT')", {"secret"}),
        ("SELECT has_column_privilege('secret.t', 'c', 'SELECT')", {"secret"}),
        ("SELECT has_column_privilege('secret.t', 2::int2, 'SELECT')", {"secret"}),
        ("SELECT has_column_privilege('alice', 'secret.t', 'c', 'SELECT')", {"secret"}),
        ("SELECT has_any_column_privilege('alice', 'secret.t', 'SELECT')", {"secret"}),
        ("SELECT pg_relation_size('secret.t', 'main')", {"secret"}),
        ("SELECT ts_headline('secret.cfg', 'doc', to_tsquery('a'), 'MaxWords=5')", {"secret"}),
        ("SELECT pg_nextoid('a.t', 'oid', 'b.i')", {"a", "b"}),
        # how the text is read: a type by the grammar, a signature's argument types too
        ("SELECT has_type_privilege('secret.mood[]', 'USAGE')", {"secret"}),
        ("SELECT has_type_privilege('\"secret\" . mood ARRAY', 'USAGE')", {"secret"}),
        ("SELECT to_regtype('SECRET.mood(3)')", {"secret"}),
        ("SELECT has_function_privilege('public.f(secret.mood, int)', 'EXECUTE')",
         {"public", "secret"}),
        ("SELECT to_regoperator('public.=(secret.mood, secret.mood)')", {"public", "secret"}),
        ("SELECT to_regoper('secret.+')", {"secret"}),
        ("SELECT to_regclass('\"Secret\".\"t.x\"')", {"Secret"}),
        ("SELECT to_regclass('secret.x-y')", {"secret"}),
        ("SELECT to_regnamespace('secret')", {"secret"}),
        # a string constant under a cast to a text type is still the name
        ("SELECT pg_relation_size('secret.t'::text)", {"secret"}),
        ("SELECT pg_relation_size(CAST('secret.t' AS varchar) COLLATE \"C\")", {"secret"}),
        # pg_get_object_address: by the object type
        ("SELECT pg_get_object_address('table', '{secret,t}', '{}')", {"secret"}),
        ("SELECT pg_get_object_address('table', ARRAY['secret', 't'], '{}')", {"secret"}),
        ("SELECT pg_get_object_address('table column', '{public,t,c}', '{}')", {"public"}),
        ("SELECT pg_get_object_address('table column', '{t,c}', '{}')", set()),
        ("SELECT pg_get_object_address('function', '{public,f}', '{secret.mood}')",
         {"public", "secret"}),
        ("SELECT pg_get_object_address('cast', '{secret.mood}', '{text}')", {"secret"}),
        ("SELECT pg_get_object_address('operator class', '{btree,secret,c}', '{}')",
         {"secret"}),
        ("SELECT pg_get_object_address('operator class', '{btree,c}', '{}')", set()),
        ("SELECT pg_get_object_address('operator of access method', '{btree,s,f,1}', "
         "'{int4,int4}')", {"s"}),
        ("SELECT pg_get_object_address('schema', '{secret}', '{}')", {"secret"}),
        ("SELECT pg_get_object_address('role', '{secret}', '{}')", set()),
        ("SELECT pg_get_object_address('table', '{\" secret\", \"t\"}', '{}')", {" secret"}),
        ("SELECT pg_get_object_address('table', '{ secret , t }', '{}')", {"secret"}),
        ("SELECT pg_get_object_address('table', '{sec\\\\ret,t}', '{}')", {"sec\\ret"}),
        ("SELECT pg_get_object_address('table', '[1:2]={secret,t}', '{}')", {"secret"}),
        # an object type that is not written down: every name but the last (fail closed)
        ("SELECT pg_get_object_address($1, '{a,b,c}', '{}')", {"a", "b"}),
        # no name written down, or no schema in it
        ("SELECT pg_relation_size('orders')", set()),
        ("SELECT pg_relation_size($1)", set()),
        ("SELECT pg_relation_size(c.oid) FROM pg_class c", set()),
        ("SELECT to_tsvector('english', 'calm')", set()),
        ("SELECT to_tsvector('calm')", set()),
        ("SELECT has_table_privilege('secret.t'::regclass::oid, 'SELECT')", set()),
        ("SELECT pg_relation_size('pg_catalog.pg_class')", set()),
        ("SELECT has_type_privilege('timestamp with time zone', 'USAGE')", set()),
        ("SELECT has_type_privilege('int; secret.t', 'USAGE')", set()),
        # a user's function of the name is not the built-in: decided as a call of it
        ("SELECT public.to_tsvector('secret.cfg', 'calm')", set()),
    ],
)  # fmt: skip
def test_the_schemas_a_call_names(sql, schemas):
    assert _schemas(sql) == schemas, sql


# --- what drivers and psql call stays allowed ---------------------------------------------

DRIVERS = [
    "SELECT has_table_privilege('public.orders', 'SELECT')",
    "SELECT has_table_privilege('orders', 'SELECT')",
    # an OID is no name (bare columns: column syntax is decided on a catalog, not here)
    "SELECT has_table_privilege(oid, 'SELECT') FROM pg_catalog.pg_class",
    "SELECT pg_catalog.pg_table_is_visible(oid) FROM pg_catalog.pg_class",
    "SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute",
    "SELECT has_column_privilege('public.orders', 'id', 'SELECT')",
    "SELECT pg_relation_size('public.orders')",
    "SELECT pg_get_serial_sequence('public.orders', 'id')",
    "SELECT to_regclass('pg_catalog.pg_class')",
    "SELECT has_type_privilege('pg_catalog.int4', 'USAGE')",
    "SELECT has_type_privilege('int4[]', 'USAGE')",
    "SELECT to_tsvector('english', 'calm'), to_tsquery('pg_catalog.english', 'calm')",
    "SELECT ts_headline('english', 'a b', to_tsquery('a'))",
    "SELECT pg_get_object_address('table', '{public,orders}', '{}')",
    "SELECT has_schema_privilege('public', 'USAGE')",
    "SELECT has_table_privilege('alice', 'public.orders', 'SELECT')",
    "SELECT pg_has_role('alice', 'member')",
]


@pytest.mark.parametrize("sql", DRIVERS)
def test_granted_and_catalog_names_stay_allowed(sql):
    v = _policy().check_query(sql)
    assert v.allowed, (sql, v.message)


@pytest.mark.parametrize(
    "shape",
    ["SELECT to_tsvector('{}', 'calm')", "SELECT pg_relation_is_publishable('{}')",
     "SELECT has_type_privilege('{}', 'USAGE')", "SELECT ts_headline('{}', 'a', 'b'::tsquery)",
     "SELECT pg_get_object_address('type', '{{{}}}', '{{}}')"],
)  # fmt: skip
def test_an_allowed_name_caches_no_decision_for_another(shape):
    """The shape allowed for one name is decided again for the next (fingerprint cache)."""
    from policy.engine import SharedClassifications

    shared = SharedClassifications()
    scopes = parse_scopes("read:public.orders")
    for name in ("english", "public.t", "secret.t"):
        for task in ("T-1", "T-2"):
            got = StatementPolicy(scopes, task=task, shared=shared).check_query(
                shape.format(name)
            )
            assert got.allowed == (name != "secret.t"), (shape.format(name), got.message)
