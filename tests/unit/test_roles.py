"""``policy.grants.roles``: role names, markers, and scope → privilege mapping (pure)."""

from __future__ import annotations

import pytest

from policy.grants.model import GrantError
from policy.grants.roles import (
    Catalog,
    grant_of_role,
    privilege_statements,
    role_comment,
    role_for_grant,
    role_password,
    validate_db_role,
)
from policy.scopes import parse_scopes

CATALOG = Catalog(
    relations={
        ("public", "orders"): "r",
        ("public", "customers"): "r",
        ("public", "orders_id_seq"): "S",
        ("public", "customers_id_seq"): "S",
        ("public", "v_orders"): "v",
        ("sales", "q1"): "r",
        ("sales", "q2"): "p",
    },
    sequences={
        ("public", "orders"): [("public", "orders_id_seq")],
        ("public", "customers"): [("public", "customers_id_seq")],
    },
    functions={("public", "refund"): ["public.refund(integer)", "public.refund(integer,text)"]},
    schemas={"public", "sales"},
)


def grants(scopes: str, catalog: Catalog = CATALOG) -> list[str]:
    return privilege_statements(parse_scopes(scopes), "pgw_g_1", "app", catalog)


def test_read_is_select_and_nothing_else():
    assert grants("read:public.orders") == [
        'GRANT CONNECT ON DATABASE "app" TO "pgw_g_1"',
        'GRANT USAGE ON SCHEMA "public" TO "pgw_g_1"',
        'GRANT SELECT ON TABLE "public"."orders" TO "pgw_g_1"',
    ]


def test_insert_only_stays_insert_only_and_gets_its_sequence():
    out = grants("insert:public.customers")
    assert 'GRANT INSERT ON TABLE "public"."customers" TO "pgw_g_1"' in out
    assert 'GRANT USAGE ON SEQUENCE "public"."customers_id_seq" TO "pgw_g_1"' in out
    assert not any("SELECT" in s or "UPDATE" in s or "DELETE" in s for s in out), out


def test_write_is_insert_update_delete_without_select():
    out = grants("write:public.orders")
    assert 'GRANT DELETE, INSERT, UPDATE ON TABLE "public"."orders" TO "pgw_g_1"' in out
    assert not any("SELECT" in s for s in out), out
    both = grants("read:public.orders write:public.orders")
    assert 'GRANT DELETE, INSERT, SELECT, UPDATE ON TABLE "public"."orders" TO "pgw_g_1"' in both
    assert 'GRANT USAGE ON SEQUENCE "public"."orders_id_seq" TO "pgw_g_1"' in out
    assert not any("customers" in s or "TRUNCATE" in s for s in out), out


def test_truncate_ddl_and_wildcards():
    out = grants("truncate:public.orders ddl:sales.* read:sales.*")
    assert 'GRANT TRUNCATE ON TABLE "public"."orders" TO "pgw_g_1"' in out
    assert 'GRANT CREATE ON SCHEMA "sales" TO "pgw_g_1"' in out
    assert 'GRANT REFERENCES, SELECT, TRIGGER ON TABLE "sales"."q1" TO "pgw_g_1"' in out
    assert 'GRANT REFERENCES, SELECT, TRIGGER ON TABLE "sales"."q2" TO "pgw_g_1"' in out
    assert not any('CREATE ON SCHEMA "public"' in s for s in out), out


def test_execute_grants_every_overload_and_wildcards_a_schema():
    out = grants("execute:public.refund,sales.*")
    assert "GRANT EXECUTE ON FUNCTION public.refund(integer) TO \"pgw_g_1\"" in out
    assert "GRANT EXECUTE ON FUNCTION public.refund(integer,text) TO \"pgw_g_1\"" in out
    assert 'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA "sales" TO "pgw_g_1"' in out


def test_missing_objects_and_system_schemas_get_nothing():
    out = grants("read:public.nope,nosuch.t,pg_catalog.pg_class execute:pg_catalog.pg_read_file,public.gone")
    assert out == [
        'GRANT CONNECT ON DATABASE "app" TO "pgw_g_1"',
        'GRANT USAGE ON SCHEMA "public" TO "pgw_g_1"',
    ]


def test_sequence_targets_get_sequence_privileges():
    out = grants("read:public.orders_id_seq write:public.customers_id_seq")
    assert 'GRANT SELECT ON SEQUENCE "public"."orders_id_seq" TO "pgw_g_1"' in out
    assert 'GRANT SELECT, UPDATE, USAGE ON SEQUENCE "public"."customers_id_seq" TO "pgw_g_1"' in out


def test_quoted_names_are_quoted():
    cat = Catalog(relations={('We"ird', "T x"): "r"}, schemas={'We"ird'})
    out = grants('read:"We""ird"."T x"', cat)
    assert 'GRANT SELECT ON TABLE "We""ird"."T x" TO "pgw_g_1"' in out


def test_role_names_and_markers():
    role = role_for_grant("gr_0123456789abcdef")
    assert role == "pgw_g_0123456789abcdef"
    comment = role_comment("gr_0123456789abcdef", "store1")
    assert grant_of_role(role, comment, "store1") == "gr_0123456789abcdef"
    assert grant_of_role(role, comment, "store2") is None  # another deployment's role
    assert grant_of_role(role, None, "store1") is None  # our prefix, not our comment
    assert grant_of_role("reporting", comment, "store1") is None  # our comment, not our prefix
    assert grant_of_role(role, role_comment("gr_fedcba9876543210", "store1"), "store1") is None
    for bad in ("gr_x", "pgw_g_0123456789abcdef", "gr_0123456789ABCDEF"):
        with pytest.raises(ValueError):
            role_for_grant(bad)


def test_role_password_is_keyed_and_per_grant():
    k1, k2 = b"k" * 32, b"j" * 32
    assert role_password(k1, "gr_1") == role_password(k1, "gr_1")
    assert len({role_password(k1, "gr_1"), role_password(k1, "gr_2"), role_password(k2, "gr_1")}) == 3
    assert len(role_password(k1, "gr_1")) == 64


@pytest.mark.parametrize(
    "name, why",
    [("pgw_g_0123456789abcdef", "per-grant"), ("postgres", "not a role"), ("a b", "not a role name"),
     ("", "is required"), ("x" * 64, "not a role name")],
)  # fmt: skip
def test_mapped_role_names_are_checked(name, why):
    with pytest.raises(GrantError) as info:
        validate_db_role(name)
    assert info.value.field == "db_role" and why in str(info.value)
    assert validate_db_role("reporting_ro") == "reporting_ro"
