"""Red-team round 36 (attacks on ec31c68 and 301bcfa..ec31c68, then families few rounds
tried), time-boxed; the server the judge.

Grants (agent ``r36-bot``): ``writer`` = ``read:r36w.* write:r36w.*`` (runs no function;
also the fixture's base grant); ``migrator`` = the writer's plus ``ddl:r36w.*
execute:public.r36_loud execute:public.r36_shout``; ``own`` = ``read:r36o.* write:r36o.*
ddl:r36o.*`` (a ddl scope on an own, empty schema; executes nothing).

Planted (schema owner; ``r36x`` outside every grant, ``r36x.vault`` holds the markers):
``public.r36_loud()`` (trigger) and ``public.r36_shout(int)`` raise a marker read from the
vault; ``public.r36_imm(int)`` (SQL, IMMUTABLE) and ``public.r36_pin(anyelement)`` (SQL,
polymorphic: column syntax ``o.r36_pin`` on a row without that column calls it) return
one; ``r36w.t``, ``r36w.ck``, ``r36w.df`` ``(k int)`` (empty, no code); ``r36w.cs (id int,
r36_pin text)``; ``r36x.tpl`` with a DEFAULT, a CHECK and a column comment holding markers.
Every probe runs directly as the upstream login first and must show its marker there
(``RuntimeError`` otherwise).

Leaks found (strict xfails when found; all three fixed in session 22, the same tests now
pass: a catalog count and the DDL blocks open make a write decided before another
session's DDL took effect have its errors withheld (``StatementPolicy.writes_moved``); a
write after own DDL and another's commit is withheld (``_own_epoch``); a statement name
the server might truncate is refused (``policy.prepared.name_too_long``)):

1. **A write decided while another grant's DDL block holds the table's lock.** The
   migrator: ``BEGIN``; ``CREATE TRIGGER r36_trg BEFORE INSERT OR UPDATE ON r36w.t FOR EACH
   ROW EXECUTE FUNCTION public.r36_loud()``; (0.6 s: the reload that DDL started has run,
   and saw no trigger: uncommitted). The writer: ``INSERT INTO r36w.t VALUES (1)`` (simple
   Query; or Parse/Bind/Execute/Sync; or a Bind/Execute of a statement parsed before the
   block): decided on a snapshot that is not stale, allowed, sent; the server makes it wait
   for the block's ShareRowExclusive lock. The migrator: ``COMMIT``. The write runs with the
   trigger: ``ERROR P0001 loud: <marker>`` reaches the writer whole (every mode). Same with
   ``ALTER TABLE r36w.ck ADD CONSTRAINT ... CHECK (public.r36_shout(k) > 0)`` and ``ALTER
   TABLE r36w.df ADD COLUMN r36_d int DEFAULT public.r36_shout(0)``. The round-33 fix
   (stale at the block's end, a write on a stale snapshot waits) cannot see a write decided
   *before* the end that runs *after* it.

2. **A write in a block that ran DDL of its own neither waits nor is withheld**
   (ec31c68). The writer: ``BEGIN``; ``CREATE TEMP TABLE IF NOT EXISTS r36tmp (i int)`` (no
   scope needed: ``ddl_open``). The migrator: ``BEGIN``; the ``CREATE TRIGGER`` above;
   ``COMMIT`` (the snapshot is stale until the reload the commit starts). The writer, the
   moment the COMMIT is answered: ``INSERT INTO r36w.t VALUES (1)`` (simple, extended,
   prepared; or ``CREATE TEMP TABLE ...; INSERT ...`` in one Query): ``_stale_write``
   returns early on ``ddl_open`` before setting ``_write_on_stale``, so the write is
   decided on the snapshot without the trigger and its error is passed whole. The same
   block without the temporary table waits and is withheld (held).

3. **Statement names the server truncates.** The server keys prepared statements by their
   first 63 bytes (``NAMEDATALEN - 1``: ``prepare.c``'s hash with ``keysize =
   NAMEDATALEN``); the policy by the whole protocol name. The migrator: ``Parse <63
   bytes>_a <SELECT o.r36_pin FROM r36w.cs o>`` / Sync (a column read: allowed);
   ``BEGIN``; ``ALTER TABLE r36w.cs RENAME COLUMN r36_pin TO r36_zz`` (``rebind`` holds
   ``..._a``); ``Bind "" <63 bytes>_b`` / Execute / Sync: a name the policy holds nothing
   of and has not forgotten, so the Bind is not looked at; the server binds ``..._a``,
   analyses it again, runs ``public.r36_pin(o)``: the marker as a row. Also the 63-byte
   name against a longer one either way, and SQL ``PREPARE <long>_a AS ...`` (the
   grammar truncates it) bound over the protocol as ``<long>_b``. SQL ``EXECUTE <long>_b``
   holds (the grammar truncates it too).

Held: the ``own`` grant's objects made from or reaching the vault (``LIKE ... INCLUDING
DEFAULTS/COMMENTS/CONSTRAINTS/ALL``, ``INHERITS`` a secret parent, into its schema or a
temporary table; a generated column, a DEFAULT or ``SET DEFAULT`` of a function; ``CREATE
RULE`` selecting or inserting the vault; a view, CTAS, a row security policy, ``ATTACH
PARTITION``, ``INHERIT``, ``SET SCHEMA``, ``COPY (query) TO STDOUT``, a ``WITH HOLD``
cursor over a view replaced afterwards); all refused. ``CREATE RULE`` on a granted table
is unrecognised (refused). Found on the way (fail closed, a transparency bug): ``ALTER
TABLE r36w.ck DROP CONSTRAINT IF EXISTS r36_ck`` is refused as ``may not change the
definition of public.r36_ck``.
"""

from __future__ import annotations

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import shows
from tests.support.rawpg import SYNC, RawClient, bind, parse, query

pytestmark = pytest.mark.timeout(240)

AGENT = "r36-bot"
SCOPES = "read:r36w.* write:r36w.*"
GRANTS = {
    "writer": "read:r36w.* write:r36w.*",
    "migrator": "read:r36w.* write:r36w.* ddl:r36w.* execute:public.r36_loud "
    "execute:public.r36_shout",
    "own": "read:r36o.* write:r36o.* ddl:r36o.*",
}
R = {
    "trg": "R36-TRG-5e01",
    "def": "R36-DEF-5e02",
    "com": "R36-COM-5e03",
    "chk": "R36-CHK-5e04",
    "imm": "R36-IMM-5e05",
    "row": "R36-ROW-5e06",
    "pin": "R36-PIN-5e07",
}
SECRETS = list(R.values())


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r36w; CREATE SCHEMA r36x; CREATE SCHEMA r36o;\n"
    "CREATE TABLE r36x.vault (key text PRIMARY KEY, val text);\n"
    "INSERT INTO r36x.vault VALUES " + ", ".join(f"('{k}', '{v}')" for k, v in R.items()) + ";\n"
    "CREATE FUNCTION public.r36_loud() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'loud: %', (SELECT val FROM r36x.vault WHERE key = 'trg'); END $$;\n"
    "CREATE FUNCTION public.r36_shout(int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'shout: %', (SELECT val FROM r36x.vault WHERE key = 'trg'); END $$;\n"
    "CREATE FUNCTION public.r36_imm(int) RETURNS text LANGUAGE sql IMMUTABLE AS "
    "$$ SELECT val FROM r36x.vault WHERE key = 'imm' $$;\n"
    "CREATE TABLE r36w.t (k int); CREATE TABLE r36w.ck (k int); CREATE TABLE r36w.df (k int);\n"
    "CREATE FUNCTION public.r36_pin(anyelement) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM r36x.vault WHERE key = 'pin' $$;\n"
    "CREATE TABLE r36w.cs (id int, r36_pin text); INSERT INTO r36w.cs VALUES (1, 'ok');\n"
    f"CREATE TABLE r36x.tpl (id int, v text DEFAULT '{R['def']}' "
    f"CHECK (v IS DISTINCT FROM '{R['chk']}'));\n"
    f"COMMENT ON COLUMN r36x.tpl.v IS '{R['com']}';\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r36w, r36x, r36o CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r36_loud(), public.r36_imm(int), "
    "public.r36_shout(int) CASCADE;\n"
    "DROP FUNCTION IF EXISTS public.r36_pin(anyelement) CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r36", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


# --- 1. another grant's trigger, committed while a write waits or after own DDL ------------

ATTACH = (
    "CREATE TRIGGER r36_trg BEFORE INSERT OR UPDATE ON r36w.t "
    "FOR EACH ROW EXECUTE FUNCTION public.r36_loud()"
)
DETACH = "DROP TRIGGER IF EXISTS r36_trg ON r36w.t"
WRITE = "INSERT INTO r36w.t VALUES (1)"


def _send_write(mode: str, table: str = "r36w.t"):
    """(frames sent before the block, frames of the write, how many ReadyForQuery)."""
    if table != "r36w.t":
        assert mode == "simple"
        return (), (query(f"INSERT INTO {table} VALUES (1)"),), 1
    if mode == "simple":
        return (), (query(WRITE),), 1
    if mode == "extended":
        return (), (parse("", WRITE), bind(), m.execute(), SYNC), 1
    if mode == "prepared":  # parsed before any DDL, bound while the block is open
        return (parse("r36p", WRITE), SYNC), (bind("", "r36p"), m.execute(), SYNC), 1
    raise AssertionError(mode)


WRITE_MODES = ("simple", "extended", "prepared")


def _read(c: RawClient, n: int) -> str:
    out: list[bytes] = []
    for _ in range(n):
        out += c.frames_until_ready()
    return planted.text(out)


CODE = {
    # what the migrator attaches to r36w.t in its block, and how it is taken off again
    # (each on its own table: a table once counted as running code may stay counted)
    "trigger": ("r36w.t", ATTACH, DETACH),
    "check": (
        "r36w.ck",
        "ALTER TABLE r36w.ck ADD CONSTRAINT r36_ck CHECK (public.r36_shout(k) > 0)",
        # (with IF EXISTS the policy reads it as DDL of public.r36_ck: refused)
        "ALTER TABLE r36w.ck DROP CONSTRAINT r36_ck",
    ),
    "default": (
        "r36w.df",
        "ALTER TABLE r36w.df ADD COLUMN r36_d int DEFAULT public.r36_shout(0)",
        "ALTER TABLE r36w.df DROP COLUMN r36_d",
    ),
}
LOCK_WHY = (
    "LEAK: the write is decided while the migrator's block holds the table's lock, on a "
    "snapshot that is not stale (the reload the DDL started ran before the block "
    "committed): nothing withholds its messages; it runs after the COMMIT, with the code"
)
LOCK_CASES = {
    **{mode: ("trigger", mode, False) for mode in WRITE_MODES},
    "check": ("check", "simple", False),
    "default": ("default", "simple", False),
}


def _cases(cases: dict, why: str) -> list:
    """``cases``' names as params, strict xfails (``why``) where the last value is True."""
    marks = pytest.mark.xfail(strict=True, raises=AssertionError, reason=why)
    return [pytest.param(k, marks=marks) if v[-1] else k for k, v in cases.items()]


def _lock_wait(pg, mig: RawClient, wr: RawClient, mode: str, kind: str = "trigger") -> str:
    """The migrator attaches the trigger in an open block (the reload its DDL starts sees
    none); the writer's write is decided meanwhile and waits on the server for the
    table's lock; the block commits: the write runs the trigger."""
    table, attach, detach = CODE[kind]
    pre, write, n = _send_write(mode, table)
    if pre:
        wr.send(*pre)
        _read(wr, 1)
    mig.query("BEGIN")
    made = planted.result(mig.query(attach))
    assert "error" not in made, made
    planted.wait_catalog_quiet(mig, 0.6)  # the reload the DDL started is done (nothing new)
    wr.send(*write)
    planted.wait_lock_waiter(pg, 0.4)  # decided, sent, waiting on the server for the lock
    mig.query("COMMIT")
    got = _read(wr, n)
    undone = planted.result(mig.query(detach))
    assert "error" not in undone, undone
    return got


@pytest.mark.parametrize("case", _cases(LOCK_CASES, LOCK_WHY))
def test_write_waiting_on_the_ddl_lock(px, pg, case):
    kind, mode, _ = LOCK_CASES[case]
    with RawClient.direct(pg) as mig, RawClient.direct(pg) as wr:
        direct = _lock_wait(pg, mig, wr, mode, kind)
    if not shows(direct, R["trg"]):
        raise RuntimeError(("precondition: no marker directly", direct[-300:]))
    planted.wait_catalog_quiet(px, 1.0)  # earlier tests' reloads have run
    with (
        planted.session(px, px.tokens["migrator"]) as mig,
        planted.session(px, px.tokens["writer"]) as wr,
    ):
        got = _lock_wait(pg, mig, wr, mode, kind)
        assert any(f[:1] == b"D" for f in wr.query("SELECT 1")), "the session goes on"
    assert "P0001" in got, got[-300:]  # the code ran
    assert not leaked(got), ("LEAK", case, got[-400:])


OWN_DDL = "CREATE TEMP TABLE IF NOT EXISTS r36tmp (i int)"


def _after_own_ddl(mig: RawClient, wr: RawClient, mode: str, joined: bool | None) -> str:
    """The writer's block ran DDL of its own (a temporary table: no scope needed); the
    migrator attaches the trigger in a block and commits; the writer writes the moment
    the COMMIT is answered, while the reload it started runs (``ddl_open``: no wait)."""
    pre, write, n = _send_write(mode)
    if pre:
        wr.send(*pre)
        _read(wr, 1)
    wr.query("BEGIN")
    if joined is False:
        assert "error" not in planted.result(wr.query(OWN_DDL))
    mig.query("BEGIN")
    assert "error" not in planted.result(mig.query(ATTACH))
    planted.wait_catalog_quiet(mig, 0.6)  # the reload the DDL started is done (no trigger)
    mig.query("COMMIT")  # settles: the snapshot is stale until the reload it starts
    if joined:
        wr.send(query(f"{OWN_DDL}; {WRITE}"))
    else:
        wr.send(*write)
    got = _read(wr, n)
    wr.query("ROLLBACK")
    mig.query(DETACH)
    return got


OWN_WHY = (
    "LEAK: _stale_write returns early while ddl_open (ec31c68): a write in a block that "
    "ran any DDL (a temporary table) neither waits for the reload another grant's "
    "committed DDL started nor is withheld (_write_on_stale is never set)"
)
OWN_CASES = {
    "simple": ("simple", False, False),
    "extended": ("extended", False, False),
    "prepared": ("prepared", False, False),
    "same-query": ("simple", True, False),
}
OWN_HELD = {"block-without-ddl": ("simple", None, False)}  # the control: the write waits


@pytest.mark.parametrize("case", _cases(OWN_CASES, OWN_WHY))
def test_write_after_own_ddl_in_block(px, pg, case):
    mode, joined, _ = OWN_CASES[case]
    with RawClient.direct(pg) as mig, RawClient.direct(pg) as wr:
        direct = _after_own_ddl(mig, wr, mode, joined)
    if not shows(direct, R["trg"]):
        raise RuntimeError(("precondition: no marker directly", direct[-300:]))
    planted.wait_catalog_quiet(px, 1.0)  # earlier tests' reloads have run
    with (
        planted.session(px, px.tokens["migrator"]) as mig,
        planted.session(px, px.tokens["writer"]) as wr,
    ):
        got = _after_own_ddl(mig, wr, mode, joined)
        assert any(f[:1] == b"D" for f in wr.query("SELECT 1")), "the session goes on"
    assert "P0001" in got, got[-300:]
    assert not leaked(got), ("LEAK", case, got[-400:])


@pytest.mark.parametrize("case", list(OWN_HELD))
def test_write_in_block_without_own_ddl(px, pg, case):
    mode, joined, _ = OWN_HELD[case]
    with RawClient.direct(pg) as mig, RawClient.direct(pg) as wr:
        direct = _after_own_ddl(mig, wr, mode, joined)
    if not shows(direct, R["trg"]):
        raise RuntimeError(("precondition: no marker directly", direct[-300:]))
    planted.wait_catalog_quiet(px, 1.0)  # earlier tests' reloads have run
    with (
        planted.session(px, px.tokens["migrator"]) as mig,
        planted.session(px, px.tokens["writer"]) as wr,
    ):
        got = _after_own_ddl(mig, wr, mode, joined)
    assert "P0001" in got, got[-300:]
    assert not leaked(got), ("LEAK", case, got[-400:])


# --- 2. a ddl scope on an own schema: objects made from, or reaching, what is outside ------

OWN_PROBES = {
    # name: (token, marker, statements in one block)
    "like-including-defaults": ("own", "def", [
        "CREATE TABLE r36o.l1 (LIKE r36x.tpl INCLUDING DEFAULTS)",
        "INSERT INTO r36o.l1 (id) VALUES (1)",
        "SELECT v FROM r36o.l1",
    ]),
    "like-including-comments": ("own", "com", [
        "CREATE TABLE r36o.l2 (LIKE r36x.tpl INCLUDING COMMENTS)",
        "SELECT col_description('r36o.l2'::regclass, 2)",
    ]),
    "like-including-constraints": ("own", "chk", [
        "CREATE TABLE r36o.l3 (LIKE r36x.tpl INCLUDING CONSTRAINTS)",
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'r36o.l3'::regclass",
    ]),
    "like-including-all-default-text": ("own", "def", [
        "CREATE TABLE r36o.l4 (LIKE r36x.tpl INCLUDING ALL)",
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'r36o.l4'::regclass",
    ]),
    "inherits-secret-parent-default": ("own", "def", [
        "CREATE TABLE r36o.c1 () INHERITS (r36x.tpl)",
        "INSERT INTO r36o.c1 (id) VALUES (1)",
        "SELECT v FROM ONLY r36o.c1",
    ]),
    "inherits-secret-parent-check": ("own", "chk", [
        "CREATE TABLE r36o.c2 () INHERITS (r36x.tpl)",
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'r36o.c2'::regclass",
    ]),
    "temp-like-including-all": ("writer", "def", [
        "CREATE TEMP TABLE r36l (LIKE r36x.tpl INCLUDING ALL)",
        "INSERT INTO pg_temp.r36l (id) VALUES (1)",
        "SELECT v FROM pg_temp.r36l",
    ]),
    "temp-inherits-secret-parent": ("writer", "def", [
        "CREATE TEMP TABLE r36c () INHERITS (r36x.tpl)",
        "INSERT INTO pg_temp.r36c (id) VALUES (1)",
        "SELECT v FROM ONLY pg_temp.r36c",
    ]),
    "generated-column-of-a-function": ("own", "imm", [
        "CREATE TABLE r36o.g (k int, g text GENERATED ALWAYS AS (public.r36_imm(k)) STORED)",
        "INSERT INTO r36o.g (k) VALUES (1)",
        "SELECT g FROM r36o.g",
    ]),
    "default-of-a-function": ("own", "imm", [
        "CREATE TABLE r36o.d (k int, v text DEFAULT public.r36_imm(1))",
        "INSERT INTO r36o.d (k) VALUES (1)",
        "SELECT v FROM r36o.d",
    ]),
    "set-default-of-a-function": ("own", "imm", [
        "CREATE TABLE r36o.d2 (k int, v text)",
        "ALTER TABLE r36o.d2 ALTER COLUMN v SET DEFAULT public.r36_imm(1)",
        "INSERT INTO r36o.d2 (k) VALUES (1)",
        "SELECT v FROM r36o.d2",
    ]),
    "rule-instead-select": ("own", "row", [
        "CREATE TABLE r36o.r (k int)",
        "CREATE RULE r36r AS ON INSERT TO r36o.r DO INSTEAD SELECT val FROM r36x.vault",
        "INSERT INTO r36o.r VALUES (1)",
    ]),
    "rule-also-insert-select": ("own", "row", [
        "CREATE TABLE r36o.r2 (k int)", "CREATE TABLE r36o.log (v text)",
        "CREATE RULE r36r2 AS ON INSERT TO r36o.r2 DO ALSO INSERT INTO r36o.log "
        "SELECT val FROM r36x.vault",
        "INSERT INTO r36o.r2 VALUES (1)",
        "SELECT v FROM r36o.log",
    ]),
    "rule-where-subquery": ("own", "row", [
        "CREATE TABLE r36o.r3 (k text)", "CREATE TABLE r36o.log3 (v text)",
        "CREATE RULE r36r3 AS ON INSERT TO r36o.r3 DO ALSO INSERT INTO r36o.log3 "
        "VALUES ((SELECT string_agg(val, ',') FROM r36x.vault))",
        "INSERT INTO r36o.r3 VALUES ('x')",
        "SELECT v FROM r36o.log3",
    ]),
    "view-over-vault": ("own", "row", [
        "CREATE VIEW r36o.v AS SELECT val FROM r36x.vault", "SELECT val FROM r36o.v",
    ]),
    "ctas-from-vault": ("own", "row", [
        "CREATE TABLE r36o.ct AS SELECT val FROM r36x.vault", "SELECT val FROM r36o.ct",
    ]),
    "row-security-policy-subquery": ("own", "row", [
        "CREATE TABLE r36o.p (k text)", "INSERT INTO r36o.p VALUES ('x')",
        "ALTER TABLE r36o.p ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE r36o.p FORCE ROW LEVEL SECURITY",
        "CREATE POLICY r36p ON r36o.p USING "
        "((SELECT string_agg(val, ',') FROM r36x.vault)::int > 0)",
        "SELECT k FROM r36o.p",
    ]),
    "attach-vault-as-partition": ("own", "row", [
        "CREATE TABLE r36o.pt (key text, val text) PARTITION BY LIST (key)",
        "ALTER TABLE r36x.vault DROP CONSTRAINT vault_pkey",
        "ALTER TABLE r36o.pt ATTACH PARTITION r36x.vault DEFAULT",
        "SELECT val FROM r36o.pt",
    ]),
    "attach-partition-alone": ("own", "row", [
        "CREATE TABLE r36o.pt2 (key text, val text) PARTITION BY LIST (key)",
        "ALTER TABLE r36o.pt2 ATTACH PARTITION r36x.vault DEFAULT",
        "SELECT val FROM r36o.pt2",
    ]),
    "inherit-own-parent": ("own", "row", [
        "CREATE TABLE r36o.ip (key text, val text)",
        "ALTER TABLE r36x.vault INHERIT r36o.ip",
        "SELECT val FROM r36o.ip",
    ]),
    "set-schema-into-own": ("own", "row", [
        "ALTER TABLE r36x.vault SET SCHEMA r36o", "SELECT val FROM r36o.vault",
    ]),
    "copy-query-to-stdout": ("own", "row", [
        "COPY (SELECT val FROM r36x.vault) TO STDOUT",
    ]),
    "cursor-with-hold-over-view-replaced": ("own", "row", [
        "CREATE TABLE r36o.base (val text)",
        "CREATE VIEW r36o.cv AS SELECT val FROM r36o.base",
        "DECLARE r36cur CURSOR WITH HOLD FOR SELECT val FROM r36o.cv",
        "CREATE OR REPLACE VIEW r36o.cv AS SELECT val FROM r36x.vault",
        "FETCH ALL FROM r36cur",
        "SELECT val FROM r36o.cv",
    ]),
}  # fmt: skip


def _own(px, pg, name: str) -> dict[str, str]:
    token, marker, sqls = OWN_PROBES[name]
    direct = planted.direct_block(pg, sqls)
    if not shows(direct, R[marker]):
        raise RuntimeError(("precondition: no marker directly", name, direct[-300:]))
    got = planted.every_block_mode(px, px.tokens[token], sqls)
    return {mode: t[-400:] for mode, t in got.items() if leaked(t)}


@pytest.mark.parametrize("name", list(OWN_PROBES))
def test_own_schema_ddl(px, pg, name):
    bad = _own(px, pg, name)
    assert not bad, ("LEAK", name, bad)


# --- 3. statement names the server truncates to 63 bytes ----------------------------------

LONG = "r36_" + "n" * 59  # 63 bytes: what the server keeps of a longer name
PIN_READ = "SELECT o.r36_pin FROM r36w.cs o"
RENAME = "ALTER TABLE r36w.cs RENAME COLUMN r36_pin TO r36_zz"
ALIAS_WHY = (
    "LEAK: the server keys prepared statements by their first 63 bytes (NAMEDATALEN - 1), "
    "the policy by the whole protocol name: a Bind of an alias is not in rebind, not "
    "forgotten, so not checked, and runs the statement the server analyses again"
)
ALIAS_STEPS = {
    # (name made, name used, leaks): one statement to the server, two to the policy
    "parse-long-bind-other-long": (LONG + "_a", LONG + "_b", False),
    "parse-long-bind-63": (LONG + "_a", LONG, False),
    "parse-63-bind-long": (LONG, LONG + "_b", False),
    "sql-prepare-long-bind-other-long": ("PREPARE " + LONG + "_a", LONG + "_b", False),
    # held: the grammar truncates both SQL names alike
    "parse-long-sql-execute-other-long": (LONG + "_a", "EXECUTE " + LONG + "_b", False),
}


def _alias(c: RawClient, parsed_as: str, bound_as: str) -> str:
    made = (
        (query(f"{parsed_as} AS {PIN_READ}"),)
        if parsed_as.startswith("PREPARE ")
        else (parse(parsed_as, PIN_READ), SYNC)
    )
    used = (
        (query(bound_as),)
        if bound_as.startswith("EXECUTE ")
        else (bind("", bound_as), m.execute(), SYNC)
    )
    # the server analyses the statement again after the rename: o.r36_pin is a call
    steps = [made, (query("BEGIN"),), (query(RENAME),), used]
    got = planted.run_steps(c, steps)
    c.query("ROLLBACK")
    return got


@pytest.mark.parametrize("name", _cases(ALIAS_STEPS, ALIAS_WHY))
def test_statement_name_truncated(px, pg, name):
    parsed_as, bound_as, _ = ALIAS_STEPS[name]
    with RawClient.direct(pg) as c:
        direct = _alias(c, parsed_as, bound_as)
    if not shows(direct, R["pin"]):
        raise RuntimeError(("precondition: no marker directly", direct[-300:]))
    with planted.session(px, px.tokens["migrator"]) as c:
        got = _alias(c, parsed_as, bound_as)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    assert not leaked(got), ("LEAK", name, got[-400:])
