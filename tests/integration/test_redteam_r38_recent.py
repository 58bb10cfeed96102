"""Red-team round 38 (attacks on 3b9fbf9, fdc6f1d, 97d4b6c and ``DDL_CODE_SQL``),
time-boxed; the server the judge.

Grants (agent ``r38-bot``): ``writer`` = ``read:r38w.* write:r38w.*`` (also the fixture's
base grant); ``migrator`` = ``read:r38w.* write:r38w.* ddl:r38w.*`` and ``execute`` on
``public.r38_attach``, ``r38_loud``, ``r38_atomic``, ``r38_viaview``.

Planted (schema owner; ``r38x`` outside every grant, ``r38x.vault`` holds the markers):
``public.r38_loud()`` (trigger function raising the vault's ``trg`` value);
``public.r38_attach()`` (plpgsql, ``DO E'... DROP TRIGGER IF EXISTS r38_trg ON r38w.t;
CREATE TRIGGER r38_trg BEFORE INSERT ON r38w.t ... \\105XECUTE FUNCTION
public.r38_loud()'``: no word ``execute`` in any source, so ``CODE_FLAGS_SQL`` does not
assume temporary relations everywhere, while ``DDL_CODE_SQL`` names it: the control);
``public.r38_on_hook()`` (trigger function: ``PERFORM public.r38_attach()``), run AFTER
INSERT on ``r38x.hook`` and on ``r38w.hooked``; ``public.r38_atomic()`` (SQL-standard
body: ``BEGIN ATOMIC INSERT INTO r38x.hook VALUES (1); SELECT 1; END``);
``r38x.hv`` (view over ``r38x.hook``) and ``public.r38_viaview()`` (plpgsql: ``INSERT
INTO r38x.hv VALUES (1)``); ``r38w.rls_guard`` (one row; row security enabled and forced,
policy ``USING / WITH CHECK (public.r38_attach() > 0)``); ``r38w.hv2`` (view over
``r38w.hooked``); ``public.r38_pin(anyelement)`` (SQL: the vault's ``pin`` value: column
syntax ``o.r38_pin`` on a row without that column calls it); ``r38w.pt_<i>_d/_p (id int,
r38_pin text)`` (one pair per probe: direct / through the proxy). Every probe runs
directly as the upstream login first and must show its marker there (``RuntimeError``
otherwise).

Leaks found (strict xfails when found; all fixed in session 23, the same tests now pass:
``DDL_CODE_SQL`` reads an SQL-standard body through the functions its tree calls and the
relations it depends on, and follows views, rules, inheritance parents and foreign-key
parents to any depth; its "relation" rows (``Snapshot.ddl_relations``) make a read or write
of a relation whose row security, triggers or rules run such code, or of a view over one,
count as DDL; a protocol statement whose text prepares or removes statements is followed
at each Bind, ``StatementPolicy.followed``: decided again, its change applied again):

1. **DDL run by code the policy does not see** (``DDL_CODE_SQL``; ``StatementPolicy.
   _runs_ddl_code``). The trigger is dropped directly, then ``COMMENT ON TABLE r38w.t``
   through the migrator and 0.6 s (a load without the trigger). The migrator (simple
   Query) runs one of:

   a. ``SELECT public.r38_atomic()``: an SQL-standard body's ``prosrc`` is empty and its
      pg_depend rows name the table ``r38x.hook``, not ``r38_on_hook``: the name match
      (``position(name IN src)``) and the "argument defaults or SQL-standard body call it"
      rule (a dependency on the flagged *function*) both miss it;
   b. ``SELECT public.r38_viaview()``: the source names the view ``r38x.hv`` only; the
      closure follows a trigger to its table's name (``hook``), never from a view to the
      tables it writes through;
   c. ``SELECT k FROM r38w.rls_guard`` and d. ``INSERT INTO r38w.rls_guard VALUES (2)``
      (granted table, a statement with no function named): its row-security policy calls
      ``r38_attach`` (named DDL code); ``_runs_ddl_code`` looks at calls, operators,
      types, triggered/ruled writes and view/ruled reads, never at ``pg_policy``;
   e. ``INSERT INTO r38w.hv2 VALUES (1)`` (granted view over the granted triggered
      ``r38w.hooked``): ``c.writes`` is the view, which is not ``triggered`` (that list
      has no views over triggered tables), nor a read of a view.

   Each runs ``CREATE TRIGGER r38_trg`` on ``r38w.t`` as no DDL to the policy (no
   ``on_ddl``, no epoch, no reload). The writer: ``INSERT INTO r38w.t VALUES (1)``
   (simple, extended, prepared): ``ERROR P0001 loud: <marker>`` whole. The control
   ``SELECT public.r38_attach()`` is withheld.

2. **Statement names changed by Binds the policy does not look at.** The policy follows
   ``DEALLOCATE`` / ``PREPARE`` at the *Parse* of a protocol statement with that text
   (``_commit_session_state``), but each *Bind* of such a statement runs it again on the
   server, and ``bind_checked`` looks at it only if it is in ``rebind``,
   ``_ddl_statements`` or ``bind_pins``. The migrator: ``Parse r38dd "DEALLOCATE r38s"``,
   ``Parse r38pp "PREPARE r38s AS SELECT o.r38_pin FROM r38w.pt o"`` / Sync (a column read:
   allowed); ``Parse r38s "SELECT 'ok'::text AS r38_pin"`` / Sync (the policy holds this
   text under ``r38s``); ``Bind r38dd`` / Execute / ``Bind r38pp`` / Execute / Sync (not
   looked at: the server drops the Parse's statement and prepares the pin under
   ``r38s``); ``BEGIN``; ``ALTER TABLE r38w.pt RENAME COLUMN r38_pin TO gone``; ``Bind
   r38s`` / Execute / Sync: decided again on the harmless text (``_decided_again``), the
   server analyses its own again and runs ``public.r38_pin(o)``: the marker as a row.
   Also (``rebound-in-the-parse-group``) with the Parse of ``r38s``, the two Binds, the
   rename (Parse/Bind/Execute) and the Bind of ``r38s`` in one Sync group: the name is
   unconfirmed and not fresh (the policy held it as the PREPARE's), and 3b9fbf9's rule
   (its Parse in this Bind's group, one touch) decides it on the Parse's text; and
   (``rebound-big-bind``, fdc6f1d) the last Bind carrying a 600 KiB value, streamed in
   parts: decided on the text, values unread, allowed.

Held: the control ``Parse r38s <pin>``, rename, ``Bind`` (refused, ``scope.execute``); the
same rebinding after the rename, behind a Flush (the Binds of ``r38dd``/``r38pp`` are in
``rebind``: decided again, ``r38pp``'s PREPARE refused); a 600 KiB Bind of a statement the
rename made a call of (refused; the session ends, ``08P01``, no marker);
``PREPARE TRANSACTION``, ``COMMIT PREPARED``, ``ROLLBACK PREPARED`` refused in every mode
and as a Parse alone (``deny.two_phase``: 97d4b6c's ``commits_prepared`` is reachable
only in a dry run).
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import FLUSH, SYNC, RawClient, bind, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r38-bot"
MARK = {"trg": "R38-TRG-5d01", "pin": "R38-PIN-5d02"}
HIDDEN = ("r38_atomic", "r38_viaview")
FUNCTIONS = ",".join(f"public.{f}" for f in ("r38_attach", "r38_loud", *HIDDEN))
SCOPES = "read:r38w.* write:r38w.*"
GRANTS = {
    "writer": SCOPES,
    "migrator": f"read:r38w.* write:r38w.* ddl:r38w.* execute:{FUNCTIONS}",
}

ATTACH = (
    "CREATE TRIGGER r38_trg BEFORE INSERT ON r38w.t FOR EACH ROW EXECUTE FUNCTION public.r38_loud()"
)
DETACH = "DROP TRIGGER IF EXISTS r38_trg ON r38w.t"
WRITE = "INSERT INTO r38w.t VALUES (1)"
BACKSLASH = "\\"

PIN_TABLES = [f"pt_{i}_{side}" for i in range(8) for side in "dp"]

SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r38w; CREATE SCHEMA r38x;\n"
    "CREATE TABLE r38x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r38x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in MARK.items()) + ";\n"
    "CREATE TABLE r38w.t (k int);\n"
    "CREATE FUNCTION public.r38_loud() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'loud: %', (SELECT val FROM r38x.vault WHERE key = 'trg'); END $$;\n"
    # (no word "execute" in any source: CODE_FLAGS_SQL would assume temporary relations
    # of any name, and every column syntax counts as a call; DDL_CODE_SQL still names it)
    "CREATE FUNCTION public.r38_attach() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    f"DO E'BEGIN {DETACH}; {ATTACH.replace('EXECUTE', BACKSLASH + '105XECUTE')}; END'; "
    "RETURN 1; END $$;\n"
    # a table whose AFTER INSERT trigger runs the named DDL function
    "CREATE FUNCTION public.r38_on_hook() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM public.r38_attach(); RETURN NEW; END $$;\n"
    "CREATE TABLE r38x.hook (k int);\n"
    "CREATE TRIGGER r38_hook_trg AFTER INSERT ON r38x.hook FOR EACH ROW "
    "EXECUTE FUNCTION public.r38_on_hook();\n"
    # (a) an SQL-standard body: prosrc is empty, its dependencies are the table's
    "CREATE FUNCTION public.r38_atomic() RETURNS int LANGUAGE sql BEGIN ATOMIC "
    "INSERT INTO r38x.hook VALUES (1); SELECT 1; END;\n"
    # (b) through an automatically updatable view: the source names the view only
    "CREATE VIEW r38x.hv AS SELECT k FROM r38x.hook;\n"
    "CREATE FUNCTION public.r38_viaview() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO r38x.hv VALUES (1); RETURN 1; END $$;\n"
    # (c) a row-level security policy calling the named DDL function (a granted table)
    "CREATE TABLE r38w.rls_guard (k int); INSERT INTO r38w.rls_guard VALUES (1);\n"
    "ALTER TABLE r38w.rls_guard ENABLE ROW LEVEL SECURITY;\n"
    "ALTER TABLE r38w.rls_guard FORCE ROW LEVEL SECURITY;\n"
    "CREATE POLICY r38_pol ON r38w.rls_guard USING (public.r38_attach() > 0) "
    "WITH CHECK (public.r38_attach() > 0);\n"
    # (d) a granted view over a granted table whose trigger runs the named DDL function
    "CREATE TABLE r38w.hooked (k int);\n"
    "CREATE TRIGGER r38_hooked_trg AFTER INSERT ON r38w.hooked FOR EACH ROW "
    "EXECUTE FUNCTION public.r38_on_hook();\n"
    "CREATE VIEW r38w.hv2 AS SELECT k FROM r38w.hooked;\n"
    # column syntax: o.r38_pin on a row without that column calls r38_pin(o)
    "CREATE FUNCTION public.r38_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r38x.vault WHERE key = 'pin' $$;\n"
    + "".join(
        f"CREATE TABLE r38w.{t} (id int, r38_pin text); INSERT INTO r38w.{t} VALUES (1, 'ok');\n"
        for t in PIN_TABLES
    )
    + "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r38w, r38x CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r38_loud(), public.r38_attach(), public.r38_on_hook(), "
    "public.r38_atomic(), public.r38_viaview(), public.r38_pin(anyelement) CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r38", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def _unseen(pg, mig: RawClient) -> None:
    """No trigger on r38w.t, and the proxy's snapshot says so: dropped directly, then DDL
    through the proxy and the load it starts."""
    with RawClient.direct(pg) as c:
        c.query(DETACH)
        c.query("DELETE FROM r38w.t; DELETE FROM r38x.hook; DELETE FROM r38w.hooked")
    got = planted.text(mig.query("COMMENT ON TABLE r38w.t IS 'r38'"))
    assert not planted.is_error(got), got[-300:]
    planted.wait_catalog_quiet(mig, 0.6)  # the load the DDL started is done


# --- 4. DDL run by code the load does not see -------------------------------------------

CALLS = {
    # name: (the migrator's statement, leaks: an xfail while it did)
    "control-named": ("SELECT public.r38_attach()", False),
    "sql-standard-body": ("SELECT public.r38_atomic()", False),
    "through-an-updatable-view": ("SELECT public.r38_viaview()", False),
    "row-security-read": ("SELECT k FROM r38w.rls_guard", False),
    "row-security-write": ("INSERT INTO r38w.rls_guard VALUES (2)", False),
    "insert-into-a-view-over-a-triggered-table": ("INSERT INTO r38w.hv2 VALUES (1)", False),
}
HIDDEN_WHY = (
    "LEAK: DDL run by code neither DDL_CODE_SQL nor _runs_ddl_code sees (an SQL-standard "
    "body, an INSERT through an updatable view, a row-security policy, a write to a view over "
    "a triggered table): the statement is no DDL, the snapshot stays without the trigger, "
    "and the writer's INSERT shows the trigger's RAISE whole"
)


def _cases(cases: dict, why: str) -> list:
    marks = pytest.mark.xfail(strict=True, raises=AssertionError, reason=why)
    return [pytest.param(k, marks=marks) if v[-1] else k for k, v in cases.items()]


@pytest.mark.parametrize("name", _cases(CALLS, HIDDEN_WHY))
def test_ddl_run_by_unseen_code(px, pg, name):
    planted.assert_hidden_ddl_withheld(
        px, pg, call=CALLS[name][0], caller="migrator", write=WRITE,
        reset=lambda c: c.query(DETACH), unseen=_unseen, marker=MARK["trg"], label=name,
    )  # fmt: skip


# --- 1. statement names changed by Binds the policy does not look at ----------------------

OK = "SELECT 'ok'::text AS r38_pin"  # harmless, of the same result type as the pin
BIND_S = (bind("", "r38s"), m.execute(), SYNC)


def pin(t: str) -> str:
    return f"SELECT o.r38_pin FROM r38w.{t} o"


def away(t: str) -> str:
    return f"ALTER TABLE r38w.{t} RENAME COLUMN r38_pin TO gone"


def _ext(sql: str) -> tuple[bytes, ...]:
    return (parse("", sql), bind(), m.execute())


REBOUND = {
    # name: (steps on table t, leaks: an xfail while it did)
    "control-parse": (
        lambda t: [
            (parse("r38s", pin(t)), SYNC),
            (query("BEGIN"),),
            (query(away(t)),),
            BIND_S,
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # DEALLOCATE and PREPARE parsed as protocol statements (followed at their Parse), the
    # name parsed after them; their Binds run them again, unlooked at
    "rebound-deallocate-prepare": (
        lambda t: [
            (
                parse("r38dd", "DEALLOCATE r38s"),
                parse("r38pp", f"PREPARE r38s AS {pin(t)}"),
                SYNC,
            ),  # fmt: skip
            (parse("r38s", OK), SYNC),
            (bind("", "r38dd"), m.execute(), bind("", "r38pp"), m.execute(), SYNC),
            (query("BEGIN"),),
            (query(away(t)),),
            BIND_S,
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # the same in the Parse's own Sync group, the rename in it too (3b9fbf9: a Bind in its
    # Parse's group is decided on that Parse's text)
    "rebound-in-the-parse-group": (
        lambda t: [
            (
                parse("r38dd", "DEALLOCATE r38s"),
                parse("r38pp", f"PREPARE r38s AS {pin(t)}"),
                SYNC,
            ),  # fmt: skip
            (query("BEGIN"),),
            (
                parse("r38s", OK),
                bind("", "r38dd"),
                m.execute(),
                bind("", "r38pp"),
                m.execute(),
                *_ext(away(t)),
                bind("", "r38s"),
                m.execute(),
                SYNC,
            ),  # fmt: skip
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # the rename first, then (a Flush between, as asyncpg's) the Parse and the Binds
    "rebound-after-the-rename-flush": (
        lambda t: [
            (
                parse("r38dd", "DEALLOCATE r38s"),
                parse("r38pp", f"PREPARE r38s AS {pin(t)}"),
                SYNC,
            ),  # fmt: skip
            (query("BEGIN"),),
            (query(away(t)),),
            (query(f"ALTER TABLE r38w.{t} RENAME COLUMN gone TO r38_pin"),),
            (parse("r38s", OK), FLUSH),
            0.3,
            (
                bind("", "r38dd"),
                m.execute(),
                bind("", "r38pp"),
                m.execute(),
                *_ext(away(t)),
                bind("", "r38s"),
                m.execute(),
                SYNC,
            ),  # fmt: skip
            (query("ROLLBACK"),),
        ],
        False,
    ),
    # as rebound-deallocate-prepare, the last Bind streamed in parts (fdc6f1d: decided on
    # the statement's text, its values unread)
    "rebound-big-bind": (
        lambda t: [
            (
                parse("r38dd", "DEALLOCATE r38s"),
                parse("r38pp", f"PREPARE r38s(text) AS {pin(t)} WHERE length($1) > 0"),
                SYNC,
            ),  # fmt: skip
            (parse("r38s", f"{OK} WHERE length($1::text) > 0"), SYNC),
            (bind("", "r38dd"), m.execute(), bind("", "r38pp"), m.execute(), SYNC),
            (query("BEGIN"),),
            (query(away(t)),),
            (bind("", "r38s", params=[BIG]), m.execute(), SYNC),
            # (no ROLLBACK: the proxy refuses the streamed Bind by ending the session)
        ],
        False,
    ),
}
BIG = b"x" * (600 * 1024)
REBOUND_WHY = (
    "LEAK: a Bind of a protocol statement whose text is DEALLOCATE / PREPARE runs it again "
    "unlooked at (bind_checked: none of rebind, _ddl_statements, bind_pins): the server's "
    "statement under the name is then the PREPARE's, the policy decides its own Parse's "
    "text at the Bind after the rename, and the server runs o.r38_pin as r38_pin(o)"
)


@pytest.mark.parametrize("name", _cases(REBOUND, REBOUND_WHY))
def test_names_changed_by_rebinding(px, pg, name):
    build, _ = REBOUND[name]
    i = list(REBOUND).index(name)
    with RawClient.direct(pg) as c:
        direct = run_steps(c, build(f"pt_{i}_d"))
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-400:]))
    with planted.session(px, px.tokens["migrator"]) as c:
        got = run_steps(c, build(f"pt_{i}_p"))
        if name != "rebound-big-bind":  # (a streamed Bind refused ends the session: below)
            assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name  # the session goes on
    assert not shows(got, MARK["pin"]), ("LEAK", name, got[-500:])


def test_big_bind_refused_after_a_rename_ends_the_session(px, pg):
    """fdc6f1d: a streamed Bind of a statement the rename made a call of is decided on its
    text and refused; the session ends (no marker)."""
    t = "pt_7_d"

    def steps(table: str) -> list:
        return [
            (parse("r38s", f"{pin(table)} WHERE length($1) > 0"), SYNC),
            (query("BEGIN"),),
            (query(away(table)),),
            (bind("", "r38s", params=[BIG]), m.execute(), SYNC),
        ]

    with RawClient.direct(pg) as c:
        direct = run_steps(c, [*steps(t), (query("ROLLBACK"),)])
    if not shows(direct, MARK["pin"]):
        raise RuntimeError(("precondition: no marker directly", direct[-400:]))
    with planted.session(px, px.tokens["migrator"]) as c:
        out = run_steps(c, steps("pt_7_p")[:3])
        c.send(*steps("pt_7_p")[3])
        frames = []
        try:
            while True:
                f = c.read_frame()
                if f is None:
                    break
                frames.append(f)
                if f[:1] == b"Z":
                    break
        except OSError:
            pass
        got = out + planted.text(frames)
    assert not shows(got, MARK["pin"]), ("LEAK", got[-500:])
    assert "08P01" in got and "streamed in parts" in got, got[-500:]


# --- 3. two-phase commit ------------------------------------------------------------------

TWO_PHASE = [
    "PREPARE TRANSACTION 'r38gid'",
    "COMMIT PREPARED 'r38gid'",
    "ROLLBACK PREPARED 'r38gid'",
]


@pytest.mark.parametrize("sql", TWO_PHASE)
def test_two_phase_is_refused(px, sql):
    """PREPARE TRANSACTION / COMMIT PREPARED / ROLLBACK PREPARED: refused (deny.two_phase)
    in every mode, a Parse alone too (so a later Bind cannot commit another's DDL)."""
    for mode, send in planted.RAW_MODES.items():
        with planted.session(px, px.tokens["migrator"]) as c:
            if sql.startswith("PREPARE"):
                c.query("BEGIN")
                c.query(f"CREATE TABLE r38w.tp_{mode} (k int)")
            got = planted.text(send(c, sql))
            c.query("ROLLBACK")
            assert "deny.two_phase" in got, (mode, got[-300:])
        with planted.session(px, px.tokens["migrator"]) as c:
            got = run_steps(c, [(parse("r38cp", sql), SYNC)])
            assert "deny.two_phase" in got, ("parse", got[-300:])
