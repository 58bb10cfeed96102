"""parse_scopes / Scopes: syntax, canonical text, errors that name the bad part."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.scopes import ScopeError, Scopes, parse_scopes


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("read:public.orders", "read:public.orders"),
        (
            "read:public.orders,public.customers write:public.orders",
            "read:public.customers,public.orders write:public.orders",
        ),
        ("write:public.orders read:public.orders", "read:public.orders write:public.orders"),
        ("READ:Public.Orders", "read:public.orders"),
        ('read:"Mixed".Orders', 'read:"Mixed".orders'),
        ('read:"mixed"."orders"', "read:mixed.orders"),
        ('read:"a b"."c,d"', 'read:"a b"."c,d"'),
        ('read:"we""ird".t', 'read:"we""ird".t'),
        ("read:public.*", "read:public.*"),
        ("read:public.orders,public.* read:public.x", "read:public.*"),
        ("read:a.x,a.x   read:a.x", "read:a.x"),
        ("  read:a.x\n\twrite:a.y  ", "read:a.x write:a.y"),
        (
            "insert:a.x update:a.x delete:a.x truncate:a.x ddl:a.*",
            "insert:a.x update:a.x delete:a.x truncate:a.x ddl:a.*",
        ),
        (
            "execute:public.my_fn,pg_catalog.pg_stat_get_live_tuples",
            "execute:pg_catalog.pg_stat_get_live_tuples,public.my_fn",
        ),
        (
            "set:work_mem,Random_Page_Cost set:myext.flag",
            "set:myext.flag,random_page_cost,work_mem",
        ),
        ("unknown:*", "unknown:*"),
        ("unknown:* read:s.t", "read:s.t unknown:*"),
        ("read:café.tëst", 'read:"café"."tëst"'),
    ],
)
def test_canonical_text(text, canonical):
    scopes = parse_scopes(text)
    assert scopes.text == canonical
    assert parse_scopes(scopes.text) == scopes
    assert parse_scopes(scopes.text).text == canonical


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("read", "'read' is not operation:target"),
        ("read:", "'read:' names no target"),
        ("select:public.t", "unknown operation 'select'"),
        ("read:orders", "'orders' in 'read:orders' must be schema-qualified"),
        ("read:public.orders,customers", "'customers'"),
        ("read:a.b.c", "too many parts"),
        ("read:*.t", "schema cannot be a wildcard"),
        ("read:public.", "malformed name 'public.'"),
        ("read:public..t", "malformed name"),
        ("read:public.t-x", "malformed name 'public.t-x'"),
        ("read:public.t,", "empty target"),
        ("read:,public.t", "empty target"),
        ('read:"unterminated.t', "unterminated quoted identifier"),
        ('read:"".t', "empty quoted identifier"),
        ("unknown:public.t", "the only target of unknown is '*'"),
        ("set:search_path", "setting 'search_path' in 'set:search_path' cannot be granted"),
        ("set:role", "cannot be granted"),
        ("set:session_authorization", "cannot be granted"),
        ("set:standard_conforming_strings", "cannot be granted"),
        ("set:work-mem", "malformed setting name 'work-mem'"),
        ("execute:my_fn", "must be schema-qualified"),
        ("read:public.t write", "'write' is not operation:target"),
        # listen: channel names (tests/unit/test_scopes_listen.py)
        ("listen:", "'listen:' names no target"),
        ("listen:public.jobs", "a channel is one name, not schema-qualified"),
        ("listen:*.jobs", "not schema-qualified"),
        ("listen:jobs-x", "malformed channel name 'jobs-x'"),
        ("listen:1jobs", "malformed channel name '1jobs'"),
        ('listen:""', "empty quoted identifier"),
        ('listen:"unterminated', "unterminated quoted identifier"),
        ("listen:jobs,", "empty target"),
        ("listen:**", "malformed channel name"),
        ("listn:jobs", "unknown operation 'listn'"),
    ],
)
def test_errors_name_the_bad_part(text, fragment):
    with pytest.raises(ScopeError) as err:
        parse_scopes(text)
    assert fragment in str(err.value)


def test_long_names_are_truncated_like_postgres():
    assert parse_scopes("read:public." + "a" * 70).text == "read:public." + "a" * 63


def test_to_dict_is_json_ready():
    scopes = parse_scopes("read:public.b,public.a write:public.a set:work_mem unknown:*")
    assert scopes.to_dict() == {
        "read": ["public.a", "public.b"],
        "write": ["public.a"],
        "set": ["work_mem"],
        "unknown": ["*"],
    }


@pytest.mark.parametrize(
    ("scopes", "op", "relation", "allowed"),
    [
        ("read:public.orders", "read", "public.orders", True),
        ("read:public.orders", "read", "public.customers", False),
        ("read:public.*", "read", "public.anything", True),
        ("read:public.*", "read", "other.anything", False),
        ("read:public.orders", "insert", "public.orders", False),
        ("write:public.orders", "insert", "public.orders", True),
        ("write:public.orders", "update", "public.orders", True),
        ("write:public.orders", "delete", "public.orders", True),
        ("write:public.orders", "lock", "public.orders", True),
        ("write:public.orders", "truncate", "public.orders", False),
        ("write:public.orders", "ddl", "public.orders", False),
        ("write:public.orders", "read", "public.orders", False),
        ("insert:public.orders", "insert", "public.orders", True),
        ("insert:public.orders", "update", "public.orders", False),
        ("update:public.orders", "lock", "public.orders", True),
        ("delete:public.orders", "delete", "public.orders", True),
        ("truncate:public.orders", "truncate", "public.orders", True),
        ("ddl:public.*", "ddl", "public.new_table", True),
        ("ddl:s.*", "ddl", "s.*", True),
        ("ddl:s.x", "ddl", "s.*", False),
        ('read:"Mixed".orders', "read", '"Mixed".orders', True),
        ('read:"Mixed".orders', "read", "mixed.orders", False),
        ('read:public."*"', "read", "public.x", False),
    ],
)
def test_allows_relation(scopes, op, relation, allowed):
    assert parse_scopes(scopes).allows_relation(op, relation) is allowed


def test_allows_function():
    scopes = parse_scopes("execute:public.my_fn,util.*")
    assert scopes.allows_function("public", "my_fn")
    assert scopes.allows_function("util", "anything")
    assert not scopes.allows_function("public", "other")


def test_scopes_are_hashable_and_comparable():
    a = parse_scopes("read:public.a write:public.b")
    b = parse_scopes("write:public.b   read:public.a")
    assert a == b and hash(a) == hash(b) and {a, b} == {a}
    assert a != parse_scopes("read:public.a")
    assert isinstance(a, Scopes) and str(a) == a.text


_ident = st.one_of(
    st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True),
    st.text(alphabet='abcXYZ ,.:"*-_é', min_size=1, max_size=6).map(
        lambda s: '"' + s.replace('"', '""') + '"'
    ),
)
_rel = st.tuples(_ident, st.one_of(_ident, st.just("*"))).map(lambda p: f"{p[0]}.{p[1]}")
_clause = st.one_of(
    st.tuples(
        st.sampled_from(
            ["read", "write", "insert", "update", "delete", "truncate", "ddl", "execute"]
        ),
        st.lists(_rel, min_size=1, max_size=4),
    ).map(lambda c: f"{c[0]}:{','.join(c[1])}"),
    st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), min_size=1, max_size=3)
    .filter(
        lambda names: (
            not {
                "role",
                "search_path",
                "session_authorization",
                "all",
                "standard_conforming_strings",
            }
            & set(names)
        )
    )
    .map(lambda names: "set:" + ",".join(names)),
    st.just("unknown:*"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_clause, min_size=1, max_size=6), st.sampled_from([" ", "\n", "  \t"]))
def test_roundtrip_property(clauses, sep):
    scopes = parse_scopes(sep.join(clauses))
    again = parse_scopes(scopes.text)
    assert again == scopes
    assert again.text == scopes.text
    assert again.to_dict() == scopes.to_dict()


def test_a_grant_text_is_parsed_once_and_bad_text_fails_every_time():
    """Logins share the parse of a grant's scope text; a bad text is refused on every call
    (nothing of a failure is kept), and the memo stays bounded however many texts come."""
    from policy import scopes as mod

    text = "read:public.orders write:public.orders"
    assert parse_scopes(text) is parse_scopes(text)
    assert parse_scopes(text) == parse_scopes("write:public.orders read:public.orders")
    for _ in range(2):
        with pytest.raises(ScopeError):
            parse_scopes("read:")
    assert "read:" not in mod._PARSED
    for i in range(3000):
        parse_scopes(f"read:public.t{i}")
    assert len(mod._PARSED) <= 1024
