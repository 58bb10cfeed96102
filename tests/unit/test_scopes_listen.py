"""listen: scopes, and the LISTEN decisions they make (the red team's NOTIFY side channel).

LISTEN on a channel hands the session every payload anyone NOTIFYs there (a trigger's
``pg_notify('chan', NEW.secret)``), so it needs a ``listen:`` scope naming the channel. The
channel decided on must be the one PostgreSQL listens on: the scope parser, the classifier
and PostgreSQL's own parser must read every spelling alike (the server itself is asked in
tests/integration/test_policy_side_channels.py).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from policy.classify import StatementClass, classify, handlers
from policy.classify.crosscheck import DISAGREE
from policy.classify.pgparse import PgStatement, parse
from policy.decide import decide
from policy.engine import StatementPolicy
from policy.scopes import OPERATIONS, ScopeError, Scopes, parse_scopes

# -- syntax -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("listen:jobs", "listen:jobs"),
        ("listen:Orders_Changed,jobs", "listen:jobs,orders_changed"),
        ("LISTEN:Jobs listen:jobs", "listen:jobs"),
        ('listen:"Jobs",jobs', 'listen:"Jobs",jobs'),
        ('listen:"jobs"', "listen:jobs"),
        ('listen:"a b,c"', 'listen:"a b,c"'),
        ('listen:"we""ird"', 'listen:"we""ird"'),
        ("listen:*", "listen:*"),
        ("listen:jobs,* listen:other", "listen:*"),  # * covers every channel
        ('listen:"*"', 'listen:"*"'),  # a channel named *, not every channel
        ("listen:café", 'listen:"café"'),
        ("listen:ÉCOLE", 'listen:"École"'),  # ASCII letters fold, others do not
        ("listen:" + "A" * 70, "listen:" + "a" * 63),  # truncated to 63 bytes
        ('listen:"' + "z" * 62 + 'é"', "listen:" + "z" * 62),  # never half a character
        ("listen:chan$1", "listen:chan$1"),
        (
            "unknown:* listen:jobs set:work_mem execute:s.f read:s.t",
            "read:s.t execute:s.f set:work_mem listen:jobs unknown:*",
        ),
    ],
)
def test_canonical_text(text, canonical):
    scopes = parse_scopes(text)
    assert scopes.text == canonical
    assert parse_scopes(scopes.text) == scopes
    assert parse_scopes(scopes.text).text == canonical


def test_listen_is_an_operation_and_is_listed_in_errors():
    assert "listen" in OPERATIONS
    with pytest.raises(ScopeError) as err:
        parse_scopes("select:x")
    assert "listen" in str(err.value)


def test_to_dict_and_allows_listen():
    scopes = parse_scopes('read:public.a listen:jobs,"Jobs"')
    assert scopes.to_dict() == {"read": ["public.a"], "listen": ['"Jobs"', "jobs"]}
    assert scopes.allows_listen("jobs") and scopes.allows_listen("Jobs")
    assert not scopes.allows_listen("JOBS") and not scopes.allows_listen("other")
    every = parse_scopes("listen:*")
    assert every.to_dict() == {"listen": ["*"]}
    assert every.allows_listen("anything") and every.allows_listen("*")
    star = parse_scopes('listen:"*"')
    assert star.allows_listen("*") and not star.allows_listen("anything")
    assert not Scopes().allows_listen("jobs")


def test_scopes_differing_only_in_listen_are_different():
    """Decisions are kept per grant: two grants must never compare equal across a listen."""
    base = "read:public.orders"
    texts = [base, base + " listen:a", base + " listen:b", base + " listen:*", base + ' listen:"*"']
    parsed = [parse_scopes(t) for t in texts]
    assert len(set(parsed)) == len(texts)
    assert len({p.text for p in parsed}) == len(texts)


# -- decisions --------------------------------------------------------------------------------

GRANT = parse_scopes('read:public.orders listen:jobs,"Mixed"')
NO_LISTEN = parse_scopes("read:public.* write:public.* unknown:* execute:public.*")
EVERY = parse_scopes("read:public.orders listen:*")


@pytest.mark.parametrize(
    ("sql", "scopes", "allowed", "rule"),
    [
        ("LISTEN jobs", GRANT, True, "scope.listen"),
        ("LISTEN JOBS", GRANT, True, "scope.listen"),
        ('LISTEN "jobs"', GRANT, True, "scope.listen"),
        ('LISTEN "Jobs"', GRANT, False, "deny.listen"),
        ('LISTEN "Mixed"', GRANT, True, "scope.listen"),
        ("LISTEN Mixed", GRANT, False, "deny.listen"),  # folds to mixed
        ("LISTEN other", GRANT, False, "deny.listen"),
        ("LISTEN jobs", NO_LISTEN, False, "deny.listen"),  # unknown:* is no listen scope
        ("LISTEN anything", EVERY, True, "scope.listen"),
        ('LISTEN "Any Thing"', EVERY, True, "scope.listen"),
        # unreadable LISTENs: no channel to check, so not even unknown:* allows them
        ('LISTEN U&"jobs"', NO_LISTEN, False, "deny.listen"),
        ("LISTEN public.jobs", NO_LISTEN, False, "deny.listen"),
        ("LISTEN select", NO_LISTEN, False, "deny.listen"),  # a reserved word: a syntax error
        ("LISTEN", NO_LISTEN, False, "deny.listen"),
        ("LISTEN jobs, other", EVERY, False, "deny.listen"),
        # UNLISTEN never needs a scope (drivers' and pools' reset queries send UNLISTEN *)
        ("UNLISTEN *", NO_LISTEN, True, "default.listen"),
        ("UNLISTEN jobs", parse_scopes("read:public.t"), True, "default.listen"),
        ('UNLISTEN "Other"', parse_scopes("read:public.t"), True, "default.listen"),
        # NOTIFY stays denied whatever the listen scope
        ("NOTIFY jobs", EVERY, False, "deny.notify"),
        ("NOTIFY jobs, 'x'", GRANT, False, "deny.notify"),
    ],
)
def test_listen_decisions(sql, scopes, allowed, rule):
    (c,) = classify(sql)
    d = decide(c, scopes)
    assert (d.allowed, d.rule) == (allowed, rule), (c, d)


def test_the_denial_names_the_channel_and_the_scope():
    (c,) = classify('LISTEN "Secret Chan"')
    d = decide(c, GRANT)
    assert '"Secret Chan"' in d.reason and "listen:" in d.reason


def test_the_statement_policy_denies_a_listen_in_any_query():
    policy = StatementPolicy(parse_scopes("read:public.orders listen:jobs"), task="T", shared=None)
    assert policy.check_query("LISTEN jobs").allowed
    assert policy.check_parse("LISTEN jobs").allowed
    for sql in ("LISTEN orders_changed", "UNLISTEN *; LISTEN orders_changed", "SELECT 1; LISTEN x"):
        verdict = policy.check_query(sql)
        assert not verdict.allowed and "deny.listen" in verdict.message, (sql, verdict)
    assert not policy.check_parse("LISTEN orders_changed").allowed
    assert policy.check_query("UNLISTEN *").allowed


def test_a_channel_postgres_reads_differently_is_denied(monkeypatch):
    """If PostgreSQL's parser read another channel than the classifier, the statement is
    denied as a disagreement, which no scope lifts (not unknown:*, not listen:*)."""
    real = handlers.pg_reading

    def other_channel(sql):
        pg = real(sql)
        assert isinstance(pg, PgStatement)
        return PgStatement(
            pg.kind, pg.text, pg.relations, pg.functions, pg.operators, pg.attributes,
            pg.defines, {"conditionname": "somewhere_else"}, pg.flags,
        )  # fmt: skip

    monkeypatch.setattr(handlers, "pg_reading", other_channel)
    (c,) = classify("LISTEN jobs")
    assert c.cls is StatementClass.UNKNOWN and c.detail.startswith(DISAGREE), c
    d = decide(c, parse_scopes("listen:* unknown:*"))
    assert not d.allowed and d.rule == DISAGREE, d

    monkeypatch.setattr(handlers, "pg_reading", lambda sql: parse("UNLISTEN *")[0])
    (c,) = classify("LISTEN jobs")
    assert c.cls is StatementClass.UNKNOWN and c.detail.startswith(DISAGREE), c
    assert not decide(c, parse_scopes("listen:* unknown:*")).allowed


# -- one reading of every spelling ---------------------------------------------------------

_IDENT_START = st.sampled_from("abcxyzABCXYZ_éÉßЖжあ")
_IDENT_REST = st.sampled_from("abcxyzABCXYZ_09$éÉßЖжあ")
unquoted = st.builds(lambda a, b: a + "".join(b), _IDENT_START, st.lists(_IDENT_REST, max_size=80))
quoted = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=80,
).map(lambda s: '"' + s.replace('"', '""') + '"')


@settings(max_examples=400, deadline=None)
@given(spelling=st.one_of(unquoted, quoted))
@example(spelling="X" * 70)  # folded, then truncated to 63 bytes
@example(spelling='"' + "z" * 62 + 'é"')  # 64 bytes: truncated before the é
@example(spelling="Éé" + "A" * 70)
def test_scope_classifier_and_postgres_read_one_channel(spelling):
    try:
        pg = parse(f"LISTEN {spelling}")
    except Exception:  # noqa: BLE001 - e.g. a reserved word: PostgreSQL refuses it
        pg = None
    (c,) = classify(f"LISTEN {spelling}")
    if pg is None or pg[0].kind != "ListenStmt":
        assert not decide(c, parse_scopes("listen:* unknown:*")).allowed
        return
    server = pg[0].node["conditionname"]
    assert c.cls is StatementClass.UTILITY and c.detail == server, (spelling, c)
    scopes = parse_scopes(f"listen:{spelling}")
    assert scopes.listen == {server}, (spelling, scopes.listen, server)
    assert decide(c, scopes).allowed
    assert parse_scopes(scopes.text) == scopes
    changed = ("r" if server[0] == "q" else "q") + server[1:]  # no longer: no truncation
    other = parse_scopes('listen:"' + changed.replace('"', '""') + '"')
    assert other.listen == {changed} and not decide(c, other).allowed
