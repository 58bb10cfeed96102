"""Code that replaces statements, run later than the statement that reached it, and the
statement names it runs through (session 24, red-team round 43): a cursor's FETCH, a
suspended portal, the commit that fills a WITH HOLD cursor (``lazy_names``), ``EXECUTE q``
of such code (``_run_by``), a protocol Bind of a SQL-level ``q`` (followed), and
``DEALLOCATE "all"``. Through the proxy, the server the judge:
tests/integration/test_redteam_r43_followed.py."""

from __future__ import annotations

from tests.support.ddl_code import ddl_code_session

NAMES = ("public.attach", "attach")
READ = "SELECT id FROM public.t"


def _held(p, name: str) -> bool:
    """Does the policy hold ``name``'s text (its Binds go through unlooked at)?"""
    return not p.bind_checked(name)


def test_after_names_code_every_later_statement_of_the_transaction_checks_the_names():
    """Each statement after such code in the transaction may run it again: the protocol
    names are checked with the server before their next Bind (session 26: forgotten),
    the SQL-level ones forgotten."""
    p, _c, _calls = ddl_code_session(names_functions=NAMES)
    assert p.check_query("BEGIN").allowed
    assert not p.lazy_names
    assert p.check_query("DECLARE c CURSOR FOR SELECT public.attach() FROM public.t").allowed
    assert p.lazy_names
    assert p.check_parse(READ, (), "s").allowed  # learnt after the DECLARE
    assert p.check_query(f"PREPARE q AS {READ}").allowed
    p.answered(True)
    token = p.verify_name("s")
    p.verified("s", token)  # the server held it
    assert p.check_query("FETCH 1 FROM c").allowed  # may run the code again
    assert p.verify_name("s") is not None, "checked again after the FETCH"
    v = p.check_query("EXECUTE q")
    assert not v.allowed and "prepare" in v.message, v.message


def test_while_lazy_every_bind_is_looked_at_and_checks_after_it():
    p, _c, _calls = ddl_code_session(names_functions=NAMES)
    assert p.check_query("SELECT public.attach()").allowed
    assert p.binds_watched and p.bind_checked("anything")
    assert p.check_parse(READ, (), "s").allowed
    assert p.check_parse(READ, (), "u").allowed
    p.answered(True)
    assert p.check_bind("s", (), (), "utf-8").allowed  # held: decided, then checked again
    p.verified("u", p.verify_name("u"))
    assert p.check_bind("u", (), (), "utf-8").allowed
    assert p.verify_name("u") is not None, "the Bind before may have run the code"
    p.at_rest()  # the relay: idle outside a transaction
    assert p.check_parse(READ, (), "u").allowed
    p.parse_answered("u")  # (the server's ParseComplete: it holds the text now)
    p.answered(True)
    assert _held(p, "u")  # its Binds go through unlooked at again


def test_without_names_code_nothing_is_lazy():
    p, _c, calls = ddl_code_session()  # DDL code, but none that replaces statements
    assert p.check_query("SELECT public.attach()").allowed and calls
    assert not p.lazy_names
    assert p.check_parse(READ, (), "s").allowed
    p.answered(True)
    assert p.check_query("FETCH 1 FROM c").allowed
    assert "s" in p._statements


def test_execute_of_a_prepared_call_of_names_code_forgets_the_names():
    """``EXECUTE q`` runs what ``q`` prepared: its own classification names only its
    arguments' code (``_run_by``)."""
    p, _c, _calls = ddl_code_session(names_functions=NAMES)
    assert p.check_query("PREPARE q AS SELECT public.attach()").allowed
    assert not p.lazy_names, "a PREPARE runs nothing"
    assert p.check_query(f"PREPARE r AS {READ}").allowed
    p.answered(True)
    assert "r" in p._prepared_statements
    assert p.check_query("EXECUTE q").allowed
    assert "r" not in p._prepared_statements and p.lazy_names


def test_a_protocol_bind_of_a_sql_prepared_call_of_ddl_code_is_followed():
    p, _c, calls = ddl_code_session(names_functions=NAMES)
    assert p.check_query("PREPARE q AS SELECT public.attach()").allowed
    assert "q" in p.followed
    p.answered(True)
    p.ddl_open = False
    before = len(calls)
    p.bind_at_once = False
    assert not p.check_bind("q", (), (), "utf-8").allowed  # its portal run later: refused
    p.bind_at_once = True
    assert p.check_bind("q", (), (), "utf-8").allowed
    assert len(calls) == before + 1 and p.ddl_open and p.lazy_names  # DDL, names code


def test_a_sql_prepared_statement_without_such_code_is_not_followed():
    p, _c, _calls = ddl_code_session(names_functions=NAMES)
    assert p.check_query(f"PREPARE r AS {READ}").allowed
    assert "r" not in p.followed and _held(p, "r")


def test_deallocate_of_a_statement_named_all_is_refused_and_all_is_not():
    p, _c, _calls = ddl_code_session()
    assert p.check_parse(READ, (), "s1").allowed
    p.answered(True)
    v = p.check_query('DEALLOCATE "all"')
    assert not v.allowed, "the policy cannot tell it from DEALLOCATE ALL"
    assert "s1" in p._statements
    assert p.check_query('DEALLOCATE PREPARE "all"').allowed is False
    assert p.check_query('DEALLOCATE "ALL"').allowed  # another name
    assert p.check_query("DEALLOCATE ALL").allowed and "s1" not in p._statements


# --- the relay's part: every Execute and Sync while lazy, cleared when idle outside a block


def test_the_relay_forgets_names_at_each_execute_and_sync_while_lazy():
    from common.wire import messages as m
    from policy.engine import Verdict
    from proxy.relay import Relay
    from tests.support.fakes import PolicySeam
    from tests.support.rawpg import SYNC, bind, execute, frame

    class Lazy(PolicySeam):
        def __init__(self):
            self.lazy_names = True
            self.forgot = 0

        @property
        def binds_watched(self):
            return self.lazy_names

        def bind_checked(self, name):
            return self.lazy_names

        def check_bind(self, name, formats, values, encoding):
            return Verdict(True, (), "")

        def names_unknown(self):
            self.forgot += 1

        def answered(self, idle):
            pass

    policy = Lazy()
    relay = Relay(policy=policy)
    relay.tx_status = b"T"  # in a transaction (idle outside one, the relay clears the mark)
    relay.from_client(execute("c", 1) + SYNC)  # a cursor's portal by name, then its commit
    assert policy.forgot == 2
    relay.from_client(bind("p", "s") + execute("p") + SYNC)
    assert policy.forgot == 4  # the Execute and the Sync (the Bind: the policy's own)
    # the server answers: still in a transaction, then idle outside one
    relay.from_server(frame(b"C", b"FETCH 1\x00") + m.ready_for_query(b"T"))
    assert policy.lazy_names, "a cursor may still run the code"
    relay.from_server(frame(b"2") + frame(b"C", b"SELECT 1\x00") + m.ready_for_query(b"I"))
    assert not policy.lazy_names
    relay.from_client(execute("c") + SYNC)
    assert policy.forgot == 4  # not looked at any more


def test_a_bind_of_names_code_makes_every_later_execute_looked_at():
    """A portal of such code run with a row limit (asyncpg's fetchrow sends one) runs the
    rest at later Executes: the Bind ran the code, so ``lazy_names`` is set there, and the
    relay looks at each later Execute (round 43's suspended portal)."""
    p, _c, _calls = ddl_code_session(names_functions=NAMES)
    assert p.check_parse("SELECT public.attach() FROM public.t", (), "sw").allowed
    assert not p.lazy_names, "a Parse runs nothing"
    p.answered(True)
    p.lazy_names = False
    assert p.check_bind("sw", (), (), "utf-8").allowed
    assert p.lazy_names and p.binds_watched


def test_an_unhealthy_recorder_keeps_every_execute_looked_at_after_an_allowed_bind():
    """While the recorder cannot record, every Execute is refused. A Bind the server skips
    anyway (its group failed already) is decided, and its allowed verdict used to make the
    rest of the read look only at statements and Binds: an Execute of a portal bound
    before, in the next group, then went upstream unrecorded."""
    from types import SimpleNamespace

    from policy.engine import Verdict
    from proxy.relay import Relay
    from tests.support.fakes import PolicySeam
    from tests.support.rawpg import SYNC, bind, execute, parse

    class Watching(PolicySeam):
        binds_watched = True

        def bind_checked(self, name):
            return True

        def check_bind(self, name, formats, values, encoding):
            return Verdict(True, (), "")

    relay = Relay(policy=Watching(), health=SimpleNamespace(healthy=False))
    earlier = execute("earlier")
    to_server, _ = relay.from_client(
        parse("s", "SELECT 1") + bind("p", "s") + SYNC + earlier + SYNC
    )
    assert earlier not in to_server, "an Execute went upstream while nothing could record it"
