"""Protocol statements whose text prepares or removes statements (PREPARE, EXECUTE,
DEALLOCATE, DISCARD) are followed at each Bind (session 23, red-team round 38): the server
runs such a statement again at every Bind, so the policy decides it again and applies what
it changes again (``StatementPolicy.followed``, ``check_bind``). Through the proxy:
tests/integration/test_redteam_r38_recent.py (``test_names_changed_by_rebinding``)."""

from __future__ import annotations

from policy import StatementPolicy, parse_scopes
from policy.catalog import CatalogCache

PIN = "SELECT o.pin FROM public.t o"  # a column now; a call of pin(o) once it is gone
OK = "SELECT 1"


def _session() -> tuple[StatementPolicy, CatalogCache]:
    c = CatalogCache()
    c.put("db", ["pin"], {"public.t": frozenset({"id", "pin"})})
    p = StatementPolicy(parse_scopes("read:public.t"), task="T", shared=None)
    p.catalog = lambda: c.get("db")
    p.catalog_listener = c.listen("db", p)
    return p, c


def _lose_column(c: CatalogCache) -> None:
    """A reload after the table lost column pin: ``o.pin`` is now a call of function
    pin(o), which the grant may not execute."""
    c.put("db", ["pin"], {"public.t": frozenset({"id"})})


def _idle(p: StatementPolicy) -> None:
    p.answered(True)


def test_stateful_statements_are_followed_and_others_are_not():
    p, _c = _session()
    for name, sql in (("dd", "DEALLOCATE s"), ("pp", f"PREPARE s AS {PIN}"),
                      ("ex", "EXECUTE s"), ("da", "DISCARD ALL")):  # fmt: skip
        assert p.check_parse(sql, (), name).allowed, sql
        assert name in p.followed and p.bind_checked(name), name
    assert p.check_parse(OK, (), "plain").allowed
    assert "plain" not in p.followed and not p.bind_checked("plain")


def test_a_bind_of_a_protocol_prepare_applies_it_again():
    """Round 38's leak: DEALLOCATE and PREPARE parsed as protocol statements, the name
    parsed with harmless text after them, then both bound: the server's statement under the
    name is the PREPARE's, and after a catalog change its Bind is decided on that text."""
    p, c = _session()
    assert p.check_parse("DEALLOCATE s", (), "dd").allowed
    assert p.check_parse(f"PREPARE s AS {PIN}", (), "pp").allowed
    _idle(p)
    assert p.check_parse(OK, (), "s").allowed
    _idle(p)
    assert p.check_bind("dd", (), (), "utf-8").allowed
    assert p.check_bind("pp", (), (), "utf-8").allowed  # the server now holds the PREPARE's
    _idle(p)
    _lose_column(c)
    v = p.check_bind("s", (), (), "utf-8")
    assert not v.allowed, "decided on the Parse's harmless text, not the PREPARE's"


def test_without_the_rebinding_the_harmless_text_is_decided():
    """The control: the name's own Parse after the PREPARE's Parse, nothing bound again."""
    p, c = _session()
    assert p.check_parse(f"PREPARE s AS {PIN}", (), "pp").allowed
    _idle(p)
    assert p.check_parse(OK, (), "s").allowed
    _idle(p)
    _lose_column(c)
    v = p.check_bind("s", (), (), "utf-8")
    assert v.allowed, v.message


def test_a_bind_of_a_protocol_prepare_is_decided_again_on_the_current_catalog():
    p, c = _session()
    assert p.check_parse(f"PREPARE s AS {PIN}", (), "pp").allowed
    _idle(p)
    _lose_column(c)
    v = p.check_bind("pp", (), (), "utf-8")
    assert not v.allowed and "decided again at its Bind" in v.message, v.message


def test_a_bind_of_a_protocol_execute_follows_the_statement_prepared_now():
    """EXECUTE s parsed while s was harmless, s prepared again (SQL) with other text before
    the Bind: the Bind is decided on what s holds then."""
    p, c = _session()
    assert p.check_query(f"PREPARE s AS {OK}").allowed
    _idle(p)
    assert p.check_parse("EXECUTE s", (), "ex").allowed
    _idle(p)
    assert p.check_query("DEALLOCATE s").allowed
    assert p.check_query(f"PREPARE s AS {PIN}").allowed
    _idle(p)
    _lose_column(c)
    v = p.check_bind("ex", (), (), "utf-8")
    assert not v.allowed, v.message


def test_a_closed_stateful_statement_bound_before_the_answer_is_refused():
    """Closed (or parsed again) and not yet answered: the server may still hold it, and
    which names it changes is not known."""
    p, _c = _session()
    assert p.check_parse(f"PREPARE s AS {PIN}", (), "pp").allowed
    _idle(p)
    p.closed("pp")
    v = p.check_bind("pp", (), (), "utf-8")
    assert not v.allowed and "closed or replaced" in v.message, v.message
    _idle(p)  # answered without an error: the Close ran, the name is no longer followed
    assert "pp" not in p.followed


def test_the_unnamed_statement_parsed_again_in_the_bind_group_binds_the_new_text():
    """psycopg's pipeline: ``DEALLOCATE ALL`` then ``SELECT 1``, each Parse, Bind, Execute,
    Sync of the unnamed statement, nothing answered in between."""
    p, _c = _session()
    p.sending_group = 1
    assert p.check_parse("DEALLOCATE ALL", (), "").allowed
    assert p.check_bind("", (), (), "utf-8").allowed
    p.sending_group = 2
    assert p.check_parse(OK, (), "").allowed
    v = p.check_bind("", (), (), "utf-8")
    assert v.allowed, v.message


def test_a_parse_answered_ends_following_the_text_it_replaced():
    """asyncpg's Parse, Describe, Flush: once the server answered the Parse that replaced a
    followed statement (and everything else touching the name), it holds the new text."""
    p, _c = _session()
    p.sending_group = 1
    assert p.check_parse("DEALLOCATE ALL", (), "").allowed
    assert p.check_bind("", (), (), "utf-8").allowed
    p.sending_group = 2
    assert p.check_parse(OK, (), "").allowed  # then Flush: not yet a Sync
    assert "" in p.followed
    p.parse_answered("")  # the DEALLOCATE ALL's Parse
    assert "" in p.followed
    p.parse_answered("")  # this one's
    assert "" not in p.followed and not p.bind_checked("")


def test_a_stateful_bind_not_executed_at_once_is_refused():
    """Round 39: the change happens at the portal's Execute; bound now and executed after
    other messages, it would change names in an order the policy cannot follow."""
    p, _c = _session()
    assert p.check_parse(f"PREPARE s AS {PIN}", (), "pp").allowed
    assert p.check_parse(OK, (), "plain").allowed
    _idle(p)
    p.bind_at_once = False
    v = p.check_bind("pp", (), (), "utf-8")
    assert not v.allowed and "executing its portal at once" in v.message, v.message
    p.bind_at_once = True
    assert p.check_bind("pp", (), (), "utf-8").allowed


def _frames(*msgs: bytes) -> tuple[bytes, list]:
    from common.wire.framing import FrameReader

    return FrameReader().feed(b"".join(msgs))


def test_the_relay_sees_whether_a_bind_is_executed_at_once():
    from proxy.relay import _next_execute, _portal_of

    def _executed_at_once(run, frames, i, start):  # (what the relay sets bind_at_once to)
        return _next_execute(run, frames, i, _portal_of(run, start)) != 0

    from tests.support.rawpg import SYNC, bind, execute, frame, parse

    def describe_portal(name: str) -> bytes:
        return frame(b"D", b"P" + name.encode() + b"\x00")

    cases = [
        ((bind("p", "s"), execute("p"), SYNC), True),
        ((bind("p", "s"), describe_portal("p"), execute("p"), SYNC), True),
        ((bind("", "s"), execute(""), SYNC), True),
        ((bind("p", "s"), SYNC), False),  # executed later, if at all
        ((bind("p", "s"),), True),  # the batch ends: what follows is not seen here
        ((bind("p", "s"), execute("q"), SYNC), False),  # another portal
        ((bind("p", "s"), execute("pp"), SYNC), False),  # a longer name
        ((bind("pp", "s"), execute("p"), SYNC), False),
        ((bind("p", "s"), parse("s", "SELECT 1"), execute("p"), SYNC), False),
        ((bind("p", "s"), describe_portal("q"), execute("p"), SYNC), False),
        # a row limit runs the portal in parts, the rest at later Executes (round 43): at
        # once (the policy's ``lazy_names`` has every later Execute looked at)
        ((bind("p", "s"), execute("p", 1), SYNC), True),
        ((bind("", "s"), describe_portal(""), execute("", 100), SYNC), True),
    ]
    for msgs, expected in cases:
        run, frames = _frames(*msgs)
        _t, start, _end = frames[0]
        assert _executed_at_once(run, frames, 1, start) is expected, msgs


def test_a_bind_that_ends_a_read_is_looked_at_again_with_the_next():
    """``_next_execute``: 1 executed next, 0 another message first, -1 the read ended (then
    the relay looks at the next read's first frames: ``Relay._bind_pending``)."""
    from proxy.relay import _next_execute
    from tests.support.rawpg import SYNC, bind, execute, parse

    run, frames = _frames(bind("p", "s"))
    assert _next_execute(run, frames, 1, b"p\x00") == -1
    run, frames = _frames(execute("p"), SYNC)
    assert _next_execute(run, frames, 0, b"p\x00") == 1
    run, frames = _frames(execute("p", 1), SYNC)  # a row limit: the portal run in parts
    assert _next_execute(run, frames, 0, b"p\x00") == 1
    run, frames = _frames(parse("s", "SELECT 1"), execute("p"), SYNC)
    assert _next_execute(run, frames, 0, b"p\x00") == 0
