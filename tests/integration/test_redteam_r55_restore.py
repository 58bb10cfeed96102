"""Red-team round 55 (attacks on fb4d9cf: a name check restores a statement, Close and the
client's own Parse in a Sync group of the proxy's own, instead of querying), time-boxed;
the server the judge.

Grant (agent ``r55-bot``): ``read:r55.*,public.r55src write:r55.* ddl:r55.*
execute:r55.*,public.r55_dyn set:lock_timeout,client_encoding listen:r55ch``. Planted
(schema owner): ``r55x.vault`` (outside the grant; column ``vcol55``) holds the marker;
``r55.swap(n)`` (``DEALLOCATE n; PREPARE n AS SELECT vcol55 FROM r55x.vault``);
``public.r55_dyn()`` (dynamic SQL: opens the check window); ``r55.shadow()`` (a temporary
view ``r55src`` reading the vault), ``r55.recur()`` / ``r55.opencur()`` (plpgsql ``OPEN`` of
a refcursor named ``r55c`` / ``r55d`` on the vault); a deferred constraint trigger on
``r55.trg`` calling ``swap('r55_z')``. Every probe runs directly as the upstream login first
and must show the marker (or the vault's column name, for a Describe) there; through the
proxy neither may reach the client, and the session must still answer ``SELECT 1``.

Held (the restore's own code paths: ``Relay._check_name``, ``Denials.inject_restore``, the
restore branch of ``Relay.from_server``, ``Relay._restored``, ``Relay._restorable``):

* A, ``test_swapped_restorable_kind``: each restorable kind the grant allows (SET
  TRANSACTION ISOLATION / READ ONLY, SET SESSION CHARACTERISTICS, CREATE INDEX, CREATE TABLE
  AS, SELECT INTO, CREATE MATERIALIZED VIEW, SHOW, SAVEPOINT, COMMIT, BEGIN, LISTEN, SET
  lock_timeout, SET CONSTRAINTS, DISCARD TEMP; LOCK, VACUUM and ANALYZE are refused by the
  grant, ``deny.utility``; search_path cannot be granted) swapped by code, then Bind,
  Describe, Describe+Bind, Bind+Describe(portal)+Execute, Describe+Flush then Bind,
  Describe+Sync+Bind pipelined, and the swap Query pipelined with the Bind: the client gets
  its own statement back (restored) or 26000 ``deny.replaced`` (checked), never the read.
* A', ``test_transparent_restorable_kind``: with no attack (dynamic SQL ran) every kind
  above, bound or described then bound, answers as directly (tags, rows, NoData, the
  isolation level SHOW reads after): the restore's CloseComplete/ParseComplete/ReadyForQuery
  never reach the client, nothing shifts.
* B, ``test_interleaving``: Describe (restored) then, in the same group, a portal that runs
  the swap, then Bind of the restored name (``groups.ran`` ends ``_restored``'s shortcut:
  checked, 26000); the same across a Flush; a portal bound before without its Execute
  (refused, ``deny.catalog``); SET CONSTRAINTS ALL IMMEDIATE (restored) firing a deferred
  trigger's swap of the next name bound in its group (checked); two swapped names in one
  group; ROLLBACK TO by Query or unnamed extended message then Bind in the same write out of
  a failed transaction (checked: not idle); the restorable statement being the ROLLBACK TO
  itself; client_encoding LATIN1 before and after the Parse; a non-ASCII name (checked);
  declared parameter OIDs; the 256 cap (the two oldest of 258 checked, the newest
  restored); a NotificationResponse from another session arriving at the restore (passed
  on, answers in place).

Leaked (neither is the restore's own, the simple protocol leaks alike, but the restore
re-Parses into both):

* Shadowing (strict xfails until session 31, which pinned ``pg_temp``
  last again, with temporary objects of names the catalog holds refused, ``deny.temp``:
  plain tests since): ``CREATE TABLE r55.sh AS SELECT id FROM
  r55src`` (prepared, after ``SELECT r55.shadow()``; also a simple ``SELECT id FROM r55src``
  and a simple CTAS): the policy reads the unqualified ``r55src`` as ``public.r55src``
  (granted); the server reads ``pg_temp.r55src``, the temporary view code in the grant's
  execute scope made over the vault (PostgreSQL searches ``pg_temp`` first). The code's
  scope is trusted with what it does (it could return the vault's rows itself), as for
  cursors below. Tried and reverted in session 27: pinning ``search_path`` with ``pg_temp``
  last closed it, but a client's own temporary table then no longer shadowed a permanent
  one of its name, and ``DROP TABLE t`` dropped the permanent table (the drivers'
  differential: pg8000's suite with such tables planted).
  With the session's temporary schema made before the client's Parse, the server alone
  keeps its analysed statement, while the restore's fresh Parse read the temporary view: a
  leak of the restore's own, fixed in session 27 (statements PostgreSQL analyses at their
  Parse, ``CREATE TABLE ... AS`` and kin, are checked with the query, not restored:
  ``proxy.relay._ANALYSED_AT_PARSE``); that probe holds.
* ``CURSOR_WHY``: a cursor the client declared over ``r55.t``, reopened by ``r55.recur()``
  on the vault, then ``FETCH ALL r55c`` (simple, or server-prepared: restored, its Describe
  names ``vcol55``: the residue policy/portals.py names); a cursor ``r55d`` the client
  never declared (held since session 32: a session reads only the portals it made), opened by
  ``r55.opencur()``, then ``FETCH ALL r55d`` or a protocol ``Execute`` of portal ``r55d``:
  the vault's rows. Fix guess: after code that may run DDL or open cursors, refuse FETCH,
  MOVE and protocol Executes of portals the client did not bind or declare since, or check
  them against ``pg_cursors`` (the statement text of the portal) as names are checked
  against ``pg_prepared_statements``.

Not leaks: a CTAS of a granted view that code redefined over the vault (also a plain
``SELECT`` of it, in and out of a block) returns the marker, but reading a granted view is
allowed whatever it reads (a view planted over the vault is read the same): by design.

Transparency differences:

* Fixed in session 27 (the probes hold now): a restore whose Parse fails (CTAS source
  dropped) in the client's block gave the client's Bind 26000 "prepared statement does not
  exist" instead of 42P01; a transient ``lock_timeout`` (55P03) at the restore's Parse
  destroyed the client's statement (26000, then 42501 on the retry; directly 55P03 once,
  then it works). The restore's own error now answers the client's message (which fails
  for want of the statement) and the name stays to be restored at its next Bind.
* Strict xfail, * ``SECOND_WHY`` (F2's residue): ``BEGIN`` and ``SET TRANSACTION ISOLATION LEVEL
  SERIALIZABLE``, both server-prepared, bound in one group after dynamic SQL (a driver's
  transaction start), or SET TRANSACTION READ ONLY then ISOLATION in one group: the second
  is checked with a query (not idle once the first restore went), 25001. Fix guess: look
  ahead in the client's batch and restore every restorable name it binds or describes in
  the one restore group sent before it (Close+Parse each), while idle.
"""

from __future__ import annotations

import pytest

from common.wire.errors import frame
from tests.support import planted
from tests.support.planted import direct_frames, proxied_frames
from tests.support.rawpg import FLUSH, SYNC, RawClient, bind, error_fields, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r55-bot"
MARK = "R55-VAULT-7d3a"
COL = "vcol55"  # the vault's column: a Describe of the swapped statement names it
SCOPES = (
    "read:r55.*,public.r55src write:r55.* ddl:r55.* execute:r55.*,public.r55_dyn "
    "set:lock_timeout,client_encoding listen:r55ch"
)
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r55; CREATE SCHEMA r55x;\n"
    "CREATE TABLE r55.t (id int); INSERT INTO r55.t VALUES (1);\n"
    "CREATE TABLE r55.src (id text); INSERT INTO r55.src VALUES ('src-ok');\n"
    "CREATE TABLE public.r55src (id text); INSERT INTO public.r55src VALUES ('src-ok');\n"
    "CREATE VIEW r55.v AS SELECT 'view-ok'::text AS id;\n"
    f"CREATE TABLE r55x.vault ({COL} text); INSERT INTO r55x.vault VALUES ('{MARK}');\n"
    "CREATE FUNCTION public.r55_dyn() RETURNS int LANGUAGE plpgsql AS $$ DECLARE r int; "
    "BEGIN EXECUTE 'SELECT ' || '1' INTO r; RETURN r; END $$;\n"
    # replaces whatever statement the session holds under the name with a vault read
    "CREATE FUNCTION r55.swap(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'DEALLOCATE ' || quote_ident(n); "
    f"EXECUTE 'PREPARE ' || quote_ident(n) || ' AS SELECT {COL} FROM r55x.vault'; "
    "RETURN 1; END $$;\n"
    # a temporary view named like the planted source table, reading the vault
    "CREATE FUNCTION r55.shadow() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    f"EXECUTE 'CREATE OR REPLACE TEMP VIEW r55src AS SELECT {COL} AS id FROM r55x.vault'; "
    "RETURN 1; END $$;\n"
    "CREATE FUNCTION r55.unshadow() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'DROP VIEW IF EXISTS pg_temp.r55src'; RETURN 1; END $$;\n"
    # the planted view redefined as a vault read
    "CREATE FUNCTION r55.review() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    f"EXECUTE 'CREATE OR REPLACE VIEW r55.v AS SELECT {COL} AS id FROM r55x.vault'; "
    "RETURN 1; END $$;\n"
    # the session's cursor r55c reopened on the vault
    "CREATE FUNCTION r55.recur() RETURNS int LANGUAGE plpgsql AS $$ DECLARE r refcursor "
    f":= 'r55c'; BEGIN CLOSE r; OPEN r FOR EXECUTE 'SELECT {COL} FROM r55x.vault'; "
    "RETURN 1; END $$;\n"
    # a cursor r55d the client never declared, opened on the vault
    "CREATE FUNCTION r55.opencur() RETURNS int LANGUAGE plpgsql AS $$ DECLARE r refcursor "
    f":= 'r55d'; BEGIN OPEN r FOR EXECUTE 'SELECT {COL} FROM r55x.vault'; RETURN 1; END $$;\n"
    # a deferred constraint trigger whose code replaces the statement r55_z
    "CREATE TABLE r55.trg (id int);\n"
    "CREATE FUNCTION r55.trg_swap() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM r55.swap('r55_z'); RETURN NULL; END $$;\n"
    "CREATE CONSTRAINT TRIGGER r55_trg AFTER INSERT ON r55.trg DEFERRABLE INITIALLY DEFERRED "
    "FOR EACH ROW EXECUTE FUNCTION r55.trg_swap();\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r55, r55x CASCADE;\nDROP FUNCTION IF EXISTS public.r55_dyn();\n"
    "DROP TABLE IF EXISTS public.r55src;\n"
)
DYN = (query("SELECT public.r55_dyn()"),)
SET_TX = "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"


def describe_s(name: str) -> bytes:
    return frame(b"D", b"S" + name.encode() + b"\x00")


def describe_p(portal: str) -> bytes:
    return frame(b"D", b"P" + portal.encode() + b"\x00")


def swap(name: str) -> tuple:
    return (query(f"SELECT r55.swap('{name}')"),)


def text(frames: list[bytes]) -> str:
    return b"".join(frames).decode("utf-8", "replace")


def shape(frames: list[bytes]) -> list[str]:
    """What a client reads: tags, rows, errors' codes, descriptions; no async noise."""
    out = []
    for f in frames:
        t = f[:1]
        if t == b"C":
            out.append("C:" + f[5:-1].decode())
        elif t == b"D":
            out.append("D:" + f[7:].decode("utf-8", "replace"))
        elif t == b"E":
            fields = error_fields(f)
            out.append(f"E:{fields.get('C')}:{fields.get('M', '')[:70]}")
        elif t in (b"T",):
            out.append("T:" + f[7:].split(b"\x00")[0].decode())
        elif t in (b"1", b"2", b"3", b"n", b"t", b"s", b"I", b"Z"):
            out.append(chr(t[0]) + (f[5:].decode() if t == b"Z" else ""))
    return out


def leaked(t: str) -> bool:
    return MARK in t or COL in t


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r55", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


# kind -> (text, needs a transaction block); {tag}: objects made once per run
KINDS = {
    "set-tx": (SET_TX, True),
    "set-tx-read-only": ("SET TRANSACTION READ ONLY", True),
    "set-session-chars": (
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        False,
    ),
    "create-index": ("CREATE INDEX r55i_{tag} ON r55.t (id)", False),
    "ctas": ("CREATE TABLE r55.c_{tag} AS SELECT id FROM r55.src", False),
    "select-into": ("SELECT id INTO r55.si_{tag} FROM r55.src", False),
    "matview": ("CREATE MATERIALIZED VIEW r55.mv_{tag} AS SELECT id FROM r55.src", False),
    "show": ("SHOW transaction_isolation", False),
    "savepoint": ("SAVEPOINT r55sp", True),
    "listen": ("LISTEN r55ch", False),
    "set-lock-timeout": ("SET lock_timeout = '5s'", False),
    "begin": ("BEGIN", False),
    "commit": ("COMMIT", True),
    "set-constraints": ("SET CONSTRAINTS ALL IMMEDIATE", True),
    "discard-temp": ("DISCARD TEMP", False),
}
MODES = {
    "bind": lambda x: [(bind("", x), execute(), SYNC)],
    "describe": lambda x: [(describe_s(x), SYNC)],
    "describe-bind": lambda x: [(describe_s(x), bind("", x), execute(), SYNC)],
    "bind-describe-portal": lambda x: [(bind("p55", x), describe_p("p55"), execute("p55"), SYNC)],
    "describe-flush-bind": lambda x: [(describe_s(x), FLUSH), 0.2, (bind("", x), execute(), SYNC)],
    "describe-sync-bind": lambda x: [(describe_s(x), SYNC, bind("", x), execute(), SYNC)],
    "pipelined": None,  # the swap and the Bind in one write
}


def _attack(kind: str, mode: str, tag: str) -> list:
    sql, block = KINDS[kind]
    x = f"r55_{kind.replace('-', '_')}"
    steps: list = [(parse(x, sql.format(tag=tag)), SYNC)]
    if block:
        steps.append((query("BEGIN"),))
    if mode == "pipelined":
        steps.append((query(f"SELECT r55.swap('{x}')"), bind("", x), execute(), SYNC))
    else:
        steps.append(swap(x))
        steps += MODES[mode](x)
    if block:
        steps.append((query("ROLLBACK"),))
    return steps


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", list(KINDS))
def test_swapped_restorable_kind(px, pg, kind, mode):
    direct = text(direct_frames(pg, _attack(kind, mode, f"d_{mode[:4]}")))
    assert leaked(direct), ("the payload works directly", direct[-400:])
    got = text(proxied_frames(px, _attack(kind, mode, f"p_{mode[:4]}")))
    assert not leaked(got), ("LEAK", got[-600:])


def _plain(kind: str, tag: str, described: bool) -> list:
    sql, block = KINDS[kind]
    x = f"r55_{kind.replace('-', '_')}"
    steps: list = [(parse(x, sql.format(tag=tag)), SYNC), DYN]
    if block:
        steps.append((query("BEGIN"),))
    use = (describe_s(x),) if described else ()
    steps += [(*use, bind("", x), execute(), SYNC), (query("SHOW transaction_isolation"),)]
    if block:
        steps.append((query("COMMIT"),))
    return steps


@pytest.mark.parametrize("described", [False, True], ids=["bind", "describe-bind"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_transparent_restorable_kind(px, pg, kind, described):
    """No attack (code that may run DDL ran, nothing replaced): what the client reads through
    the proxy (tags, rows, the isolation level after) is what it reads directly."""
    tag = "t" + ("d" if described else "b")
    direct = shape(direct_frames(pg, _plain(kind, tag + "d", described)))
    got = shape(proxied_frames(px, _plain(kind, tag + "p", described)))
    assert got == direct, (direct, got)


SHOW = "SHOW transaction_isolation"


def _same_group_code(tag: str, pg=None) -> list:
    """Describe X (restored), then in the same group a portal of ours runs the swap, then
    Bind X: ``_restored`` must not spare it its check."""
    return [
        (parse("r55_x", SHOW), parse("r55_y", "SELECT r55.swap('r55_x')"), SYNC),
        swap("r55_x"),
        (
            describe_s("r55_x"),
            bind("py", "r55_y"),
            execute("py"),
            bind("", "r55_x"),
            execute(),
            SYNC,
        ),
    ]


def _flush_then_code(tag: str, pg=None) -> list:
    return [
        (parse("r55_x", SHOW), parse("r55_y", "SELECT r55.swap('r55_x')"), SYNC),
        swap("r55_x"),
        (describe_s("r55_x"), FLUSH),
        0.3,
        (bind("py", "r55_y"), execute("py"), bind("", "r55_x"), execute(), SYNC),
    ]


def _open_portal_then_code(tag: str, pg=None) -> list:
    """A portal bound before (in the block), executed after the restore in the same group."""
    return [
        (parse("r55_x", SET_TX), parse("r55_y", "SELECT r55.swap('r55_x')"), SYNC),
        (query("BEGIN"),),
        (bind("py", "r55_y"), SYNC),
        swap("r55_x"),
        (describe_s("r55_x"), execute("py"), bind("", "r55_x"), execute(), SYNC),
        (query("ROLLBACK"),),
    ]


def _deferred_trigger(tag: str, pg=None) -> list:
    """SET CONSTRAINTS ALL IMMEDIATE (restored) fires a deferred trigger that swaps r55_z,
    bound next in the same group."""
    return [
        (parse("r55_sc", "SET CONSTRAINTS ALL IMMEDIATE"), parse("r55_z", SHOW), SYNC),
        (query("BEGIN"),),
        (query("INSERT INTO r55.trg VALUES (1)"),),
        swap("r55_sc"),  # (the window opened; r55_sc a vault read: restored)
        (query("SELECT r55.swap('r55_sc')"),),
        (bind("", "r55_sc"), execute(), bind("", "r55_z"), execute(), SYNC),
        (query("ROLLBACK"),),
    ]


def _deferred_trigger_described(tag: str, pg=None) -> list:
    return [
        (parse("r55_sc", "SET CONSTRAINTS ALL IMMEDIATE"), parse("r55_z", SHOW), SYNC),
        (query("BEGIN"),),
        (query("INSERT INTO r55.trg VALUES (1)"),),
        DYN,
        (describe_s("r55_z"), bind("", "r55_sc"), execute(), bind("", "r55_z"), execute(), SYNC),
        (query("ROLLBACK"),),
    ]


def _two_names(tag: str, pg=None) -> list:
    """Two swapped names in one group: the first restored, the second checked."""
    return [
        (parse("r55_a", SHOW), parse("r55_b", SHOW), SYNC),
        swap("r55_a"),
        swap("r55_b"),
        (
            describe_s("r55_a"),
            describe_s("r55_b"),
            bind("", "r55_a"),
            execute(),
            bind("", "r55_b"),
            execute(),
            SYNC,
        ),
    ]


def _rollback_to_then_bind(tag: str, pg=None) -> list:
    return [
        (parse("r55_x", SHOW), SYNC),
        (query("BEGIN"),),
        (query("SAVEPOINT a"),),
        swap("r55_x"),
        (query("SELECT 1/0"),),
        (query("ROLLBACK TO SAVEPOINT a"), bind("", "r55_x"), execute(), SYNC),
        (query("ROLLBACK"),),
    ]


def _rollback_to_extended_then_bind(tag: str, pg=None) -> list:
    return [
        (parse("r55_x", SHOW), SYNC),
        (query("BEGIN"),),
        (query("SAVEPOINT a"),),
        swap("r55_x"),
        (query("SELECT 1/0"),),
        (
            parse("", "ROLLBACK TO SAVEPOINT a"),
            bind(),
            execute(),
            describe_s("r55_x"),
            bind("", "r55_x"),
            execute(),
            SYNC,
        ),
        (query("ROLLBACK"),),
    ]


def _named_rollback_to(tag: str, pg=None) -> list:
    """The restorable statement is itself the ROLLBACK TO that ends the failure."""
    return [
        (parse("r55_rt", "ROLLBACK TO SAVEPOINT a"), SYNC),
        (query("BEGIN"),),
        (query("SAVEPOINT a"),),
        swap("r55_rt"),
        (query("SELECT 1/0"),),
        (query("ROLLBACK TO SAVEPOINT a"),),
        (describe_s("r55_rt"), bind("", "r55_rt"), execute(), SYNC),
        (query("ROLLBACK"),),
    ]


def _latin1(tag: str, pg=None) -> list:
    return [
        (query("SET client_encoding TO 'LATIN1'"),),
        (parse("r55_x", SHOW), SYNC),
        swap("r55_x"),
        (bind("", "r55_x"), execute(), SYNC),
    ]


def _latin1_after_parse(tag: str, pg=None) -> list:
    return [
        (parse("r55_x", SHOW), SYNC),
        (query("SET client_encoding TO 'LATIN1'"),),
        swap("r55_x"),
        (describe_s("r55_x"), bind("", "r55_x"), execute(), SYNC),
    ]


def _non_ascii_name(tag: str, pg=None) -> list:
    return [
        (parse("r55_\u00e9", SHOW), SYNC),
        swap("r55_\u00e9"),
        (describe_s("r55_\u00e9"), bind("", "r55_\u00e9"), execute(), SYNC),
    ]


def _param_oids(tag: str, pg=None) -> list:
    return [
        (parse("r55_x", SHOW, oids=(23, 25)), SYNC),
        swap("r55_x"),
        (describe_s("r55_x"), bind("", "r55_x", params=(b"1", b"a")), execute(), SYNC),
    ]


def _cap(tag: str, pg=None) -> list:
    names = [f"r55_cap_{i:03d}" for i in range(258)]
    return [
        tuple(parse(n, SHOW) for n in names) + (SYNC,),
        swap(names[0]),
        swap(names[1]),
        swap(names[-1]),
        (bind("", names[0]), execute(), SYNC),
        (describe_s(names[1]), bind("", names[1]), execute(), SYNC),
        (bind("", names[-1]), execute(), SYNC),
    ]


def _notify(tag: str, pg=None) -> list:
    def other(c):
        with RawClient.direct(pg) as o:
            o.query("NOTIFY r55ch, 'r55-note'")

    return [
        (query("LISTEN r55ch"),),
        (parse("r55_x", SHOW), SYNC),
        swap("r55_x"),
        other,
        0.2,
        (describe_s("r55_x"), bind("", "r55_x"), execute(), SYNC),
        (query("SELECT 42"),),
    ]


PROBES = {
    "same-group-code-after-restore": (_same_group_code, "C26000", False),
    "flush-then-code": (_flush_then_code, "C26000", False),
    "open-portal-then-code": (_open_portal_then_code, "C42501", False),
    "set-constraints-fires-deferred-swap": (_deferred_trigger, "C26000", False),
    "described-then-deferred-swap": (_deferred_trigger_described, "C26000", False),
    "two-names-one-group": (_two_names, "C26000", False),
    "rollback-to-then-bind": (_rollback_to_then_bind, "C26000", False),
    "rollback-to-extended-then-bind": (_rollback_to_extended_then_bind, "C26000", False),
    "named-rollback-to": (_named_rollback_to, "ROLLBACK", False),
    "latin1": (_latin1, "read committed", False),
    "latin1-after-parse": (_latin1_after_parse, "read committed", False),
    "non-ascii-name": (_non_ascii_name, "C26000", False),
    "param-oids": (_param_oids, "read committed", False),
    "cap-256": (_cap, "read committed", False),
    "notify-mid-restore": (_notify, "r55-note", False),
}


@pytest.mark.parametrize("probe", planted.cases(PROBES))
def test_interleaving(px, pg, probe):
    steps, expect, _why = PROBES[probe]
    direct = text(direct_frames(pg, steps("d", pg)))
    assert leaked(direct), ("the payload works directly", direct[-400:])
    got = text(proxied_frames(px, steps("p", pg)))
    assert not leaked(got), ("LEAK", got[-600:])
    assert expect in got, (expect, got[-600:])  # and the client's own answers came


# --- family C: what the restore's fresh Parse resolves, and cursors code reopened -------

CURSOR_WHY = (
    "LEAK (not the restore's own: the simple protocol leaks alike): a cursor code (re)opened "
    "(plpgsql OPEN of a refcursor named like the client's cursor, or a new name) is read by "
    "FETCH or a protocol Execute of its portal; FETCH is decided on the cursor's name "
    "(UTILITY), an Execute not at all, never on what the server's portal of that name reads "
    "now (names_unknown forgets SQL-level prepared names, not cursors)"
)


def _shadow_ctas(tag: str, pg=None) -> list:
    """CTAS of an unqualified source, restored after code made a temporary view of that name
    reading the vault (the restore's fresh Parse resolves to it; directly the server's
    statement is analysed again, the temporary schema being new, and reads it too)."""
    return [
        (parse("r55_x", f"CREATE TABLE r55.sh_{tag} AS SELECT id FROM r55src"), SYNC),
        (query("SELECT r55.shadow()"),),
        (bind("", "r55_x"), execute(), SYNC),
        (query(f"SELECT id FROM r55.sh_{tag}"),),
    ]


def _shadow_ctas_temp_first(tag: str, pg=None) -> list:
    """The same with the session's temporary schema made before the client's Parse."""
    return [
        (query("SELECT r55.shadow()"),),
        (query("SELECT r55.unshadow()"),),
        (parse("r55_x", f"CREATE TABLE r55.sh2_{tag} AS SELECT id FROM r55src"), SYNC),
        (query("SELECT r55.shadow()"),),
        (bind("", "r55_x"), execute(), SYNC),
        (query(f"SELECT id FROM r55.sh2_{tag}"),),
    ]


def _shadow_simple(tag: str, pg=None) -> list:
    return [(query("SELECT r55.shadow()"),), (query("SELECT id FROM r55src"),)]


def _shadow_ctas_simple(tag: str, pg=None) -> list:
    return [
        (query("SELECT r55.shadow()"),),
        (query(f"CREATE TABLE r55.shs_{tag} AS SELECT id FROM r55src"),),
        (query(f"SELECT id FROM r55.shs_{tag}"),),
    ]


def _fetch_reopened(tag: str, pg=None) -> list:
    """A server-prepared FETCH (UTILITY: restored) of a cursor code reopened on the vault."""
    return [
        (query("BEGIN"),),
        (query("DECLARE r55c CURSOR FOR SELECT id FROM r55.t"),),
        (parse("r55_f", "FETCH ALL r55c"), SYNC),
        (query("SELECT r55.recur()"),),
        (describe_s("r55_f"), bind("", "r55_f"), execute(), SYNC),
        (query("ROLLBACK"),),
    ]


def _fetch_reopened_simple(tag: str, pg=None) -> list:
    return [
        (query("BEGIN"),),
        (query("DECLARE r55c CURSOR FOR SELECT id FROM r55.t"),),
        (query("SELECT r55.recur()"),),
        (query("FETCH ALL r55c"),),
        (query("ROLLBACK"),),
    ]


def _opencur_fetch(tag: str, pg=None) -> list:
    return [
        (query("BEGIN"),),
        (query("SELECT r55.opencur()"),),
        (query("FETCH ALL r55d"),),
        (query("ROLLBACK"),),
    ]


def _opencur_execute(tag: str, pg=None) -> list:
    return [
        (query("BEGIN"),),
        (query("SELECT r55.opencur()"),),
        (execute("r55d"), SYNC),
        (query("ROLLBACK"),),
    ]


# (the middle flag: whether the payload works directly, the precondition)
LEAKS = {
    "shadow-restored-ctas": (_shadow_ctas, True, False),  # (held since session 31: pg_temp pinned last)
    # directly the server keeps its analysed statement (the temporary schema existed
    # already); a restore's fresh Parse resolved pg_temp's view and leaked where the server
    # alone does not (fixed: such statements are checked, not restored): no precondition
    "shadow-restored-ctas-temp-schema-first": (_shadow_ctas_temp_first, False, False),
    "shadow-simple-read": (_shadow_simple, True, False),  # (held since session 31: pg_temp pinned last)
    "shadow-simple-ctas": (_shadow_ctas_simple, True, False),  # (held since session 31: pg_temp pinned last)
    "fetch-reopened-restored": (_fetch_reopened, True, CURSOR_WHY),
    "fetch-reopened-simple": (_fetch_reopened_simple, True, CURSOR_WHY),
    # (held since session 32: a session reads only the portals its client made)
    "cursor-opened-by-code-fetch": (_opencur_fetch, True, False),
    "cursor-opened-by-code-execute-portal": (_opencur_execute, True, False),
}


@pytest.mark.parametrize("probe", planted.cases(LEAKS))
def test_leak(px, pg, probe):
    steps, precondition, _why = LEAKS[probe]
    direct = text(direct_frames(pg, steps("d", pg)))
    if precondition and not leaked(direct):
        raise RuntimeError(("precondition: the payload works directly", direct[-400:]))
    got = text(proxied_frames(px, steps("p", pg)))
    assert not leaked(got), ("LEAK", got[-600:])


# --- family D: transparency of a restore that fails, or is not made --------------------


def _failed_restore_in_block(tag: str, pg=None) -> list:
    """The restore's Parse fails (the CTAS source dropped) inside the client's block."""
    return [
        (query(f"CREATE TABLE r55.gone_{tag} (id int)"),),
        (parse("r55_x", f"CREATE TABLE r55.fr_{tag} AS SELECT id FROM r55.gone_{tag}"), SYNC),
        (query(f"DROP TABLE r55.gone_{tag}"),),
        (query("BEGIN"),),
        (query("INSERT INTO r55.t VALUES (55)"),),
        DYN,
        (bind("", "r55_x"), execute(), SYNC),
        (query("COMMIT"),),
        (query("SELECT 42"),),
    ]


def _lock_timeout(tag: str, pg=None) -> list:
    """A transient lock timeout at the restore's Parse (another session holds the CTAS
    source): directly the Bind fails once and the statement stays; the retry works."""
    holder: list = []

    def lock(c):
        o = RawClient.direct(pg)
        o.query("BEGIN")
        o.query("LOCK TABLE r55.src IN ACCESS EXCLUSIVE MODE")
        holder.append(o)

    def unlock(c):
        o = holder.pop()
        o.query("ROLLBACK")
        o.close()

    return [
        (parse("r55_x", f"CREATE TABLE r55.lt_{tag} AS SELECT id FROM r55.src"), SYNC),
        (query("SET lock_timeout = '300ms'"),),
        DYN,
        lock,
        (bind("", "r55_x"), execute(), SYNC),
        unlock,
        (bind("", "r55_x"), execute(), SYNC),
    ]


def _two_set_tx(tag: str, pg=None) -> list:
    """Two server-prepared transaction settings bound in one group after code that may run
    DDL: the first is restored, the second (not idle any more) checked with a query."""
    return [
        (parse("r55_ro", "SET TRANSACTION READ ONLY"), parse("r55_si", SET_TX), SYNC),
        DYN,
        (query("BEGIN"),),
        (bind("", "r55_ro"), execute(), bind("", "r55_si"), execute(), SYNC),
        (query("SHOW transaction_isolation"),),
        (query("COMMIT"),),
    ]


def _begin_then_set_tx(tag: str, pg=None) -> list:
    """A prepared BEGIN and SET TRANSACTION pipelined in one group (a driver's start)."""
    return [
        (parse("r55_bg", "BEGIN"), parse("r55_si", SET_TX), SYNC),
        DYN,
        (bind("", "r55_bg"), execute(), bind("", "r55_si"), execute(), SYNC),
        (query("SHOW transaction_isolation"),),
        (query("COMMIT"),),
    ]


def _restore_in_block_then_set_tx(tag: str, pg=None) -> list:
    """BEGIN by a Query, then a described SET TRANSACTION (its Describe restores it) and
    its Bind in one group: the control for ``_two_set_tx``."""
    return [
        (parse("r55_si", SET_TX), SYNC),
        DYN,
        (query("BEGIN"),),
        (describe_s("r55_si"), bind("", "r55_si"), execute(), SYNC),
        (query("SHOW transaction_isolation"),),
        (query("COMMIT"),),
    ]


SECOND_WHY = (
    "TRANSPARENCY (F2's residue): a second restorable name in the same group is not restored "
    "(SyncGroups.idle is false once the first went) but checked with a query "
    "(Denials.inject_check), so a server-prepared SET TRANSACTION ISOLATION after another "
    "prepared statement in its group fails with 25001"
)
DIFFS = {
    # (fixed in session 27: the restore's error answers the client's message, and the name
    # is restored again at its next Bind)
    "failed-restore-in-block": (_failed_restore_in_block, False),
    "lock-timeout-at-restore": (_lock_timeout, False),
    "two-set-tx-one-group": (_two_set_tx, SECOND_WHY),
    "begin-then-set-tx": (_begin_then_set_tx, SECOND_WHY),
    "described-set-tx-in-block": (_restore_in_block_then_set_tx, False),
}


@pytest.mark.parametrize("probe", planted.cases(DIFFS))
def test_transparency(px, pg, probe):
    steps = DIFFS[probe][0]
    direct = [x.replace('_d"', '_"') for x in shape(direct_frames(pg, steps("d", pg)))]
    got = [x.replace('_p"', '_"') for x in shape(proxied_frames(px, steps("p", pg)))]
    assert got == direct, (direct, got)  # (the tag that names each run's tables left out)
