"""Casts by user-written functions a statement does not write (red-team rounds 26 and 28):
decided on the snapshot's ``relation_casts``, ``global_casts`` and ``function_types``
(``StatementPolicy._casts``, ``_function_types``), without a server: the integration
rounds (tests/integration/test_redteam_r26_fresh.py, test_redteam_r28_casts.py) show each
leak with the server as the judge."""

from __future__ import annotations

import pytest

from policy import StatementPolicy, parse_scopes
from policy.catalog import CatalogCache


def policy(scopes: str, **snapshot) -> StatementPolicy:
    cache = CatalogCache()
    cache.put("db", ["getmood"], {"public.t": frozenset({"id", "mood"})}, **snapshot)
    p = StatementPolicy(parse_scopes(scopes), task="T", shared=None)
    p.catalog = lambda: cache.get("db")
    return p


MOOD = {"user_types": {"public.mood": frozenset({"public.moodtext"})},
        "user_functions": {"getmood": frozenset({"public.getmood"})},
        "function_types": {"public.getmood": frozenset({"public.mood"})}}  # fmt: skip


@pytest.mark.parametrize("sql", ["SELECT public.getmood()::text", "SELECT getmood()::text",
                                 "SELECT m FROM getmood() m"])  # fmt: skip
def test_a_functions_result_type_runs_what_the_type_runs(sql):
    assert not policy("execute:public.getmood", **MOOD).check_query(sql).allowed
    assert policy("execute:public.getmood,public.moodtext", **MOOD).check_query(sql).allowed


def test_a_relations_values_bring_their_casts():
    casts = {"relation_casts": {"public.t": frozenset({"public.moodtext"})}}
    v = policy("read:public.t", **casts).check_query("SELECT id FROM public.t")
    assert not v.allowed and "public.moodtext" in v.message
    assert policy("read:public.t execute:public.moodtext", **casts).check_query(
        "SELECT mood::text FROM public.t").allowed


@pytest.mark.parametrize(
    ("sql", "exempt"),
    [
        ("SELECT 1", True),
        ("SELECT 'x', 2.5", True),
        ("SELECT 7::smallint::pg_catalog.text", False),
        ("SELECT CAST(7 AS smallint)", False),
        ("SELECT $1", False),
        ("SELECT 1 + 2", False),
        ("SELECT id FROM public.t", False),
    ],
)
def test_a_cast_between_system_types_counts_unless_constants_alone(sql, exempt):
    p = policy("read:public.t", global_casts=["public.castleak"])
    assert p.check_query(sql).allowed is exempt, sql


def test_row_security_of_the_logins_own_relations_counts_for_a_session_of_its_own_role():
    """Session 27 (round 53's residue): a policy of a relation the proxy's login owns does
    not apply to that login (``relation_casts`` leaves it out), but a session that logs in
    as a role of its own (``db_role``) owns nothing: for it, every policy's functions count
    (``relation_casts_role``)."""
    snapshot = {"relation_casts_role": {"public.t": frozenset({"public.peek"})}}
    cache = CatalogCache()
    cache.put("db", [], {"public.t": frozenset({"id"})}, **snapshot)
    sql = "SELECT id FROM public.t"
    for own_login, allowed in ((False, True), (True, False)):
        p = StatementPolicy(parse_scopes("read:public.t"), task="T", shared=None,
                            own_login=own_login)  # fmt: skip
        p.catalog = lambda: cache.get("db")
        v = p.check_query(sql)
        assert v.allowed is allowed, (own_login, v.message)
        if not allowed:
            assert "public.peek" in v.message and "row security" in v.message
    p = StatementPolicy(parse_scopes("read:public.t execute:public.peek"), task="T",
                        shared=None, own_login=True)  # fmt: skip
    p.catalog = lambda: cache.get("db")
    assert p.check_query(sql).allowed
