"""DDL run by code a grant may execute (session 22; red-team round 34's residue), the server
the judge.

Round 34 left one strict xfail: ``SELECT public.r34_attach()`` (a granted function whose
body runs ``CREATE TRIGGER``) was no DDL to the policy, so the catalog snapshot learned of
the trigger only at the next periodic reload (``refresh_after``, 300 s), and another
grant's writes to the table showed the trigger's ``RAISE`` (a vault value) whole. Now the
catalog names the functions that may run DDL (``DDL_CODE_SQL``: DDL words or dynamic
``EXECUTE`` in the source, a procedural language it cannot read, or a call of such a
function, to a fixed point) and a statement that may run one counts as DDL
(``StatementPolicy._runs_ddl_code``): the snapshot is stale at once, and stale again when
its transaction ends, so the writer's INSERT waits for a load that shows the trigger and
its error is withheld.

Grants (agent ``s22-bot``): ``writer`` = ``read:s22w.t write:s22w.t``; ``migrator`` =
``read:s22w.* write:s22w.* ddl:s22w.*`` and ``execute`` on the planted functions.
Planted (schema owner): ``s22x.vault`` (outside every grant) holds the marker;
``public.s22_loud()`` a trigger function raising it; ``public.s22_attach()`` (plpgsql:
``DROP TRIGGER IF EXISTS``, ``CREATE TRIGGER s22_trg BEFORE INSERT ON s22w.t ... EXECUTE
FUNCTION public.s22_loud()``); ``public.s22_outer()`` (SQL: calls ``s22_attach``, no DDL
word of its own); ``public.s22_dyn()`` (plpgsql: the same trigger by dynamic ``EXECUTE``);
``s22w.q`` with an AFTER INSERT trigger running ``public.s22_on_q()``, which calls
``s22_attach``. Every probe first shows the marker directly (a ``RuntimeError``
otherwise), and each starts from a snapshot that knows no trigger on ``s22w.t`` (dropped
directly, then DDL through the proxy and a load)."""

from __future__ import annotations

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, parse, query
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(180)

AGENT = "s22-bot"
SCOPES = "read:s22w.t"
FUNCTIONS = (
    "public.s22_attach,public.s22_outer,public.s22_dyn,public.s22_loud,public.s22_on_q,"
    "public.s22_purge,public.s22_on_kid"
)
GRANTS = {
    "writer": "read:s22w.t write:s22w.t",
    "migrator": f"read:s22w.* write:s22w.* ddl:s22w.* execute:{FUNCTIONS}",
}
MARKER = "S22-TRG-7a41"

ATTACH_BODY = (
    "DROP TRIGGER IF EXISTS s22_trg ON s22w.t; "
    "CREATE TRIGGER s22_trg BEFORE INSERT OR UPDATE ON s22w.t "
    "FOR EACH ROW EXECUTE FUNCTION public.s22_loud();"
)
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA s22w; CREATE SCHEMA s22x;\n"
    "CREATE TABLE s22x.vault (val text);\n"
    f"INSERT INTO s22x.vault VALUES ('{MARKER}');\n"
    "CREATE TABLE s22w.t (k int); CREATE TABLE s22w.q (k int);\n"
    "CREATE FUNCTION public.s22_loud() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'loud: %', (SELECT val FROM s22x.vault); END $$;\n"
    "CREATE FUNCTION public.s22_attach() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    f"{ATTACH_BODY} RETURN 1; END $$;\n"
    "CREATE FUNCTION public.s22_outer() RETURNS int LANGUAGE sql AS "
    "$$ SELECT public.s22_attach() $$;\n"
    "CREATE FUNCTION public.s22_dyn() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'DROP TRIGGER IF EXISTS s22_trg ON s22w.t'; "
    "EXECUTE format('CREATE TRIGGER s22_trg BEFORE INSERT OR UPDATE ON s22w.t "
    "FOR EACH ROW EXECUTE FUNCTION %s()', 'public.s22_loud'); RETURN 1; END $$;\n"
    "CREATE FUNCTION public.s22_on_q() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.s22_attach(); RETURN NEW; END $$;\n"
    "CREATE TRIGGER s22_q AFTER INSERT ON s22w.q FOR EACH ROW EXECUTE FUNCTION public.s22_on_q();\n"
    # a foreign-key cascade from a table a function names to a triggered one it does not
    "CREATE TABLE s22w.par_y (id int PRIMARY KEY);\n"
    "CREATE TABLE s22w.kid_table_x (id int REFERENCES s22w.par_y ON DELETE CASCADE);\n"
    "CREATE FUNCTION public.s22_on_kid() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.s22_attach(); RETURN OLD; END $$;\n"
    "CREATE TRIGGER s22_kid AFTER DELETE ON s22w.kid_table_x FOR EACH ROW "
    "EXECUTE FUNCTION public.s22_on_kid();\n"
    "CREATE FUNCTION public.s22_purge() RETURNS int LANGUAGE sql AS "
    "$$ DELETE FROM s22w.par_y; SELECT 1 $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS s22w, s22x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.s22_loud(), public.s22_attach(), public.s22_outer(), "
    "public.s22_dyn(), public.s22_on_q(), public.s22_on_kid(), public.s22_purge() CASCADE;\n"
)
DETACH = "DROP TRIGGER IF EXISTS s22_trg ON s22w.t"
WRITE = "INSERT INTO s22w.t VALUES (1)"
CALL = "SELECT public.s22_attach()"
SEED = (
    "INSERT INTO s22w.par_y VALUES (1) ON CONFLICT DO NOTHING; "
    "INSERT INTO s22w.kid_table_x VALUES (1)"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s22", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def _error(text: str) -> bool:
    """Did an ErrorResponse come back (its severity field; a notice's is NOTICE)?"""
    return "SERROR\x00" in text or "SFATAL\x00" in text


def _precondition(pg) -> None:
    with RawClient.direct(pg) as c:  # the probe proves something: the marker directly
        c.query("SELECT public.s22_attach()")
        direct = planted.text(c.query(WRITE))
        c.query(DETACH)
    if not shows(direct, MARKER):
        raise RuntimeError(("precondition: no marker directly", direct[-300:]))


def _unseen(px, pg, mig: RawClient) -> None:
    """No trigger on s22w.t, and the proxy's snapshot says so: dropped directly (the
    proxy does not see it), then DDL through the proxy and the load it starts."""
    with RawClient.direct(pg) as c:
        c.query(DETACH)
    got = planted.text(mig.query("COMMENT ON TABLE s22w.t IS 's22'"))
    assert not _error(got), got[-300:]
    cache = px.runtime.server.catalogs.cache  # the load after that DDL has run
    wait_for(lambda: (s := cache.get("app")) is not None and not s.stale, 20, "a fresh snapshot")
    # and a load that read what the code run before may have redefined (session 25)
    wait_for(lambda: not cache.entry("app").code_window(), 20, "the code window closed")


# (steps before the snapshot is made to forget the trigger, steps after: the attack)
CALLS = {
    "simple": ([], [(query(CALL),)]),
    "extended": ([], [(parse("", CALL), bind(), m.execute(), SYNC)]),
    "block": ([], [(query("BEGIN"),), (query(CALL),), (query("COMMIT"),)]),
    # a driver's unnamed statements: Parse, Bind, Execute in one Sync group, twice, the
    # unnamed statement held before (drivers send every query so)
    "extended-again": (
        [(parse("", "SELECT 1"), bind(), m.execute(), SYNC)],
        [(parse("", CALL), bind(), m.execute(), SYNC), (parse("", CALL), bind(), m.execute(), SYNC),
         (parse("", CALL), bind(), m.execute(), parse("", CALL), bind(), m.execute(), SYNC)],
    ),
    "named-twice-in-a-pipeline": (
        [(parse("s22n", CALL), SYNC)],
        [(bind("", "s22n"), m.execute(), bind("", "s22n"), m.execute(), SYNC)],
    ),
    # parsed once (that Parse counted), run again by a Bind alone
    "bind-only": (
        [(parse("s22p", CALL), bind("", "s22p"), m.execute(), SYNC)],
        [(bind("", "s22p"), m.execute(), SYNC)],
    ),
    "sql-execute": (
        [(query(f"PREPARE s22q AS {CALL}"),), (query("EXECUTE s22q"),)],
        # (a SQL-level name is forgotten once code that may replace statements ran: it is
        # prepared again, session 25)
        [(query("DEALLOCATE s22q"),), (query(f"PREPARE s22q AS {CALL}"),), (query("EXECUTE s22q"),)],
    ),
    "transitive": ([], [(query("SELECT public.s22_outer()"),)]),
    "dynamic": ([], [(query("SELECT public.s22_dyn()"),)]),
    "row-trigger": ([], [(query("INSERT INTO s22w.q VALUES (1)"),)]),
    "cascade-in-a-function": (
        [(query(SEED),)],
        [(query("SELECT public.s22_purge()"),)],
    ),
    "cascade-delete": ([(query(SEED),)], [(query("DELETE FROM s22w.par_y"),)]),
}


@pytest.mark.parametrize("how", list(CALLS))
def test_ddl_run_by_granted_code_is_followed(px, pg, how):
    _precondition(pg)
    before, attack = CALLS[how]
    entry = px.runtime.server.catalogs.cache.entry("app")
    # (an earlier test's code window: a SQL-level EXECUTE waits for it to close, session 25)
    wait_for(lambda: not entry.code_window(), 20, "the code window closed")
    with planted.session(px, px.tokens["migrator"]) as mig:
        got = run_steps(mig, before)
        assert not _error(got), got[-300:]
        _unseen(px, pg, mig)
        got = run_steps(mig, attack)
        assert not _error(got), got[-300:]
        try:
            out = planted.writes_every_mode(px, px.tokens["writer"], WRITE)
        finally:
            with RawClient.direct(pg) as c:
                c.query(DETACH)
    planted.assert_trigger_withheld(out, lambda t: shows(t, MARKER), how)


def test_other_code_does_not_reload(px, pg):
    """A call of code that runs no DDL (the writer's plain INSERT, a read) is no DDL: the
    snapshot stays fresh (no catalog load per statement)."""
    loader = px.runtime.server.catalogs
    with planted.session(px, px.tokens["migrator"]) as mig:
        _unseen(px, pg, mig)
        snap = loader.cache.get("app")
        assert snap is not None and not snap.stale
        for _ in range(5):
            assert not _error(planted.text(mig.query("SELECT k FROM s22w.t")))
            assert not _error(planted.text(mig.query("INSERT INTO s22w.t VALUES (2)")))
        assert loader.cache.get("app") is snap  # no DDL: the same snapshot
        mig.query("DELETE FROM s22w.t")
