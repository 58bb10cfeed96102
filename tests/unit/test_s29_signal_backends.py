"""pg_terminate_backend / pg_cancel_backend of the grant's own sessions' backends (session
29): both readings render one backend's call (``catalogue.signal_target``), the policy
decides its pid against ``StatementPolicy.own_backends`` (a literal's at every check,
never cached; a bare parameter's at each Bind), and every other form stays refused.
tests/integration/test_s29_signal_backends.py runs it against the server."""

from __future__ import annotations

import struct

import pytest

from policy import StatementPolicy, parse_scopes
from policy.classify import classify
from policy.classify.metadata import bound_pid

OWN = frozenset({4242, 777})


def _policy(own=OWN) -> StatementPolicy:
    p = StatementPolicy(parse_scopes("read:public.*"), task="t")
    p.own_backends = (lambda: own) if own is not None else None
    return p


@pytest.mark.parametrize(
    "sql, rendered",
    [
        ("select pg_terminate_backend(4242)", "pg_terminate_backend:4242"),
        ("SELECT PG_TERMINATE_BACKEND(04242)", "pg_terminate_backend:4242"),
        ("select pg_catalog.pg_cancel_backend(7)", "pg_cancel_backend:7"),
        ("select pg_terminate_backend(4242, 500)", "pg_terminate_backend:4242"),
        ("select pg_terminate_backend($1)", "pg_terminate_backend:$"),
        ("select pg_terminate_backend($1, $2)", "pg_terminate_backend:$"),
        ("select pg_terminate_backend(pg_backend_pid())", "pg_terminate_backend:self"),
        ("select pg_cancel_backend(PG_BACKEND_PID())", "pg_cancel_backend:self"),
        # any other form: the plain call, refused (dangerous)
        ("select pg_terminate_backend(-5)", "pg_terminate_backend"),
        ("select pg_terminate_backend($1::int)", "pg_terminate_backend"),
        ("select pg_cancel_backend(5, 100)", "pg_cancel_backend"),
        ("select pg_terminate_backend(pid) from pg_stat_activity", "pg_terminate_backend"),
        ("select pg_terminate_backend(4242, now()::int)", "pg_terminate_backend"),
        ("select pg_terminate_backend(pg_backend_pid() + 1)", "pg_terminate_backend"),
    ],
)
def test_both_readings_render_one_backend(sql, rendered):
    (c,) = classify(sql)
    assert rendered in c.functions, c
    assert not any(f.startswith("pg_") and f != rendered and ":" in f for f in c.functions)


@pytest.mark.parametrize(
    "sql",
    [
        "select pg_terminate_backend((4242))",  # read differently: refused
        "select pg_terminate_backend(99999999999)",
        "select pg_terminate_backend(1.5)",
        'select "pg_terminate_backend:4242"()',  # a user's function named like the rendering
        'select "pg_cancel_backend:self"()',
    ],
)
def test_a_reading_that_does_not_agree_is_refused(sql):
    v = _policy().check_query(sql)
    assert not v.allowed


def test_a_literal_pid_is_decided_against_the_grants_backends():
    p = _policy()
    assert p.check_query("select pg_terminate_backend(4242)").allowed
    assert p.check_query("select pg_cancel_backend(777)").allowed
    assert p.check_query("select pg_terminate_backend(pg_backend_pid())").allowed
    v = p.check_query("select pg_terminate_backend(4243)")
    assert not v.allowed and "own sessions" in v.message
    v = p.check_query("select pg_terminate_backend(4242), pg_cancel_backend(1)")
    assert not v.allowed


def test_a_literal_pid_is_never_decided_from_a_cache():
    own = {4242}
    p = StatementPolicy(parse_scopes("read:public.*"), task="t")
    p.own_backends = lambda: frozenset(own)
    sql = "select pg_terminate_backend(4242)"
    assert p.check_query(sql).allowed
    own.clear()  # that session ended
    assert not p.check_query(sql).allowed
    own.add(4242)
    assert p.check_query(sql).allowed
    assert p.check_parse(sql).allowed
    own.clear()
    assert not p.check_parse(sql).allowed


def test_without_a_registry_only_the_session_itself():
    p = _policy(own=None)
    assert not p.check_query("select pg_terminate_backend(4242)").allowed
    assert p.check_query("select pg_terminate_backend(pg_backend_pid())").allowed


@pytest.mark.parametrize(
    "formats, value, expected",
    [
        ((), b"4242", 4242),
        ((0,), b" \t+4242\n", 4242),
        ((0,), b"-4242", -4242),
        ((1,), struct.pack("!i", 4242), 4242),
        ((1,), struct.pack("!h", 777), 777),
        ((1,), struct.pack("!q", 4242), None),  # int8: not what the call resolves to
        ((0,), b"4242.0", None),
        ((0,), b"0x10", None),
        ((0,), b"1_000", None),
        ((0,), b"\xd9\xa4", None),  # an Arabic-Indic digit: no int4in digit
        ((0,), None, None),
        ((2,), b"4242", None),
    ],
)
def test_bound_pid_reads_what_the_server_reads(formats, value, expected):
    spec = '["pg_terminate_backend", 1]'
    assert bound_pid(spec, formats, (value,), "utf-8") == expected


def test_bound_pid_out_of_range_parameters():
    assert bound_pid('["pg_cancel_backend", 2]', (), (b"1",), "utf-8") is None
    assert bound_pid('["pg_cancel_backend", 2]', (0, 0, 1), (b"1", b"4242"), "utf-8") == 4242
    assert bound_pid('["pg_cancel_backend", 3]', (0, 1), (b"1", b"2", b"3"), "utf-8") is None


def test_a_parameter_is_decided_at_each_bind():
    p = _policy()
    assert p.check_parse("select pg_terminate_backend($1)", name="k").allowed
    assert p.check_bind("k", (), (b"4242",), "utf-8").allowed
    v = p.check_bind("k", (), (b"4243",), "utf-8")
    assert not v.allowed and "own sessions" in v.message
    assert not p.check_bind("k", (), (None,), "utf-8").allowed
    assert p.check_bind("k", (1,), (struct.pack("!i", 777),), "utf-8").allowed


@pytest.mark.parametrize(
    "sql",
    [
        "PREPARE k AS select pg_terminate_backend($1)",
        "CREATE FUNCTION public.k(int) RETURNS bool LANGUAGE sql AS "
        "'select pg_terminate_backend($1)'",
    ],
)
def test_a_parameter_that_is_not_the_binds_is_refused(sql):
    p = StatementPolicy(parse_scopes("read:public.* ddl:public.*"), task="t")
    p.own_backends = lambda: OWN
    assert not p.check_query(sql).allowed
