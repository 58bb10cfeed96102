"""Red-team round 56 (attacks on 2d3d536, 4f892e1, f269ff0), time-boxed; the server the
judge.

Grant (agent ``r56-bot``): ``read:r56.*,public.r56src write:r56.* ddl:r56.*
execute:r56.*,public.r56_dyn``. Planted (schema owner): ``r56x.vault`` (column ``vcol56``,
outside the grant) holds the marker; ``r56.swap(n)`` (DEALLOCATE n; PREPARE n AS a vault
read), ``public.r56_dyn()`` (dynamic SQL: opens the name check), ``r56.shadow()`` /
``r56.unshadow()`` (a temporary view ``r56src`` over the vault); DROP targets outside the
ddl scope (``r56x.vd``, ``r56x."Vd"``, ``r56x.vf(int)``, ``r56x.vp(int)``, ``r56x.ov(int)``,
``r56x."r56.ov"(int)``) and r56 objects the vault's objects depend on (domain
``r56.used_d``: a column of ``r56x.uses``; ``r56.arg_d``: ``r56x.takes``' argument;
``r56.deffn``: its default; ``r56.trigfn``: its trigger; ``r56.polfn``: its row policy).

Leaked, fixed the same session (the probes hold now):

* The restore's own (f269ff0's fix was incomplete): ``EXPLAIN ANALYZE CREATE TABLE r56.x AS
  SELECT id FROM r56src`` and ``EXPLAIN (ANALYZE) SELECT id INTO r56.x FROM r56src``,
  prepared after the session's temporary schema exists, then ``SELECT r56.shadow()`` (code
  in the execute scope makes ``pg_temp.r56src`` over the vault), then Bind: directly the
  server keeps its Parse-time analysis (public.r56src, ``src-ok``); through the proxy the
  statement was *restored* (its command ``EXPLAIN ANALYZE``, class DDL, was not in
  ``proxy.relay._ANALYSED_AT_PARSE``), the fresh Parse read the temporary view and ``SELECT
  id FROM r56.x`` returned the marker. No EXPLAIN is restored now (PostgreSQL's
  transformExplainStmt analyses the explained query at Parse); the ``EXPLAIN ANALYZE CREATE
  MATERIALIZED VIEW`` variant's 0A000 (re-analysed: "materialized views must not use
  temporary tables or views") is gone with it.
* Transparency, not a leak: a denial's injected statement (the Bind of a name the proxy
  does not know) stayed in ``pg_prepared_statements`` when the check injected after it in
  the same group was skipped (``Denials._last_deny_statement`` then named the never-made
  check statement). Every injected statement the server may still hold is now closed by
  the next injection until one that closed it is answered (``Denials._unclosed``).

Held:

* Family A (``DROP FUNCTION/PROCEDURE f(i int)`` and ``DROP DOMAIN`` decided on
  PostgreSQL's reading, ``crosscheck._from_pg_alone``), simple and extended protocol, in a
  block and committed: the vault's domains and routines by plain, quoted, upper-case and
  dotted names, ``IF EXISTS`` / ``RESTRICT`` lists mixing granted and not, an unnamed
  argument first then a named one, unqualified (resolves to the search path's schemas),
  ``/* x */ cascade`` lower-case, ``IN``/``OUT`` arguments, two statements in one text: all
  42501. Granted objects the vault's depend on (column type, argument type, default,
  trigger, row policy): the server's RESTRICT refuses (2BP01); nothing outside the grant
  was dropped (pg_type/pg_proc/pg_class/pg_trigger/pg_policy compared). A routine dropped
  (named argument) and re-created as code that swaps the client's statement is followed:
  the next Bind is checked (26000 ``deny.replaced``), no vault row. Not a leak:
  ``DROP FUNCTION IF EXISTS r56.nope(i r56x.vault.vcol56%TYPE)`` tells the column's type
  in a NOTICE, which a plain read of pg_attribute joined by relname tells anyway.
* Family B (the check's Close, ``Injection.passed``): the client's own Close before and
  after the checked Bind in its group, three checks in one group, Describe+Bind of one name
  twice, an error or a failing Execute before the check (skipped), a failed check then more
  groups, failed and passing checks pipelined in one write, checks in a failed transaction
  and inside a block, a row-limited portal then the rest, Flush between Bind and Execute,
  dynamic SQL pipelined between groups: every answer as directly (frame types compared),
  the client's statements listed as directly, no vault row; psycopg with
  ``prepare_threshold=0`` around dynamic SQL: the same rows and the same prepared names.
* Family C: CREATE TABLE AS, SELECT INTO, CREATE MATERIALIZED VIEW swapped by code then
  Bound (or Described and Bound): 26000 ``deny.replaced``; their EXPLAIN ANALYZE forms
  (restored) run the client's own statement; no marker. The temp-schema-first shadowing
  of a plain CTAS holds (checked).
"""

from __future__ import annotations

import psycopg
import pytest

from common.wire import messages as m
from common.wire.errors import frame
from policy.grants.model import make_dsn
from tests.support import planted
from tests.support.planted import direct_frames, proxied_frames, run_frames
from tests.support.rawpg import FLUSH, SYNC, UPSTREAM_USER, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r56-bot"
MARK = "R56-VAULT-b41c"
COL = "vcol56"
SCOPES = "read:r56.*,public.r56src write:r56.* ddl:r56.* execute:r56.*,public.r56_dyn"
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r56; CREATE SCHEMA r56x;\n"
    "CREATE TABLE r56.t (id int); INSERT INTO r56.t VALUES (1);\n"
    "CREATE TABLE r56.src (id text); INSERT INTO r56.src VALUES ('src-ok');\n"
    "CREATE TABLE public.r56src (id text); INSERT INTO public.r56src VALUES ('src-ok');\n"
    f"CREATE TABLE r56x.vault ({COL} text); INSERT INTO r56x.vault VALUES ('{MARK}');\n"
    "CREATE FUNCTION public.r56_dyn() RETURNS int LANGUAGE plpgsql AS $$ DECLARE r int; "
    "BEGIN EXECUTE 'SELECT ' || '1' INTO r; RETURN r; END $$;\n"
    "CREATE FUNCTION r56.swap(n text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'DEALLOCATE ' || quote_ident(n); "
    f"EXECUTE 'PREPARE ' || quote_ident(n) || ' AS SELECT {COL} FROM r56x.vault'; "
    "RETURN 1; END $$;\n"
    "CREATE FUNCTION r56.shadow() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    f"EXECUTE 'CREATE OR REPLACE TEMP VIEW r56src AS SELECT {COL} AS id FROM r56x.vault'; "
    "RETURN 1; END $$;\n"
    "CREATE FUNCTION r56.unshadow() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE 'DROP VIEW IF EXISTS pg_temp.r56src'; RETURN 1; END $$;\n"
    # --- what DROPs aim at: the vault's own, and r56's that the vault's objects use ---
    'CREATE DOMAIN r56x.vd AS int; CREATE DOMAIN r56x."Vd" AS int;\n'
    "CREATE FUNCTION r56x.vf(i int) RETURNS int LANGUAGE sql AS 'SELECT i';\n"
    "CREATE PROCEDURE r56x.vp(i int) LANGUAGE sql AS 'SELECT 1';\n"
    "CREATE FUNCTION r56.ov(i int) RETURNS int LANGUAGE sql AS 'SELECT i';\n"
    "CREATE FUNCTION r56x.ov(i int) RETURNS int LANGUAGE sql AS 'SELECT i';\n"
    "CREATE FUNCTION r56x.\"r56.ov\"(i int) RETURNS int LANGUAGE sql AS 'SELECT i';\n"
    "CREATE DOMAIN r56.used_d AS int; CREATE DOMAIN r56.arg_d AS int;\n"
    "CREATE FUNCTION r56.deffn(i int) RETURNS int LANGUAGE sql AS 'SELECT i';\n"
    "CREATE FUNCTION r56.polfn(i int) RETURNS boolean LANGUAGE sql AS 'SELECT true';\n"
    "CREATE FUNCTION r56.trigfn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RETURN NEW; END $$;\n"
    "CREATE TABLE r56x.uses (a r56.used_d DEFAULT r56.deffn(1));\n"
    "CREATE TRIGGER r56trg BEFORE INSERT ON r56x.uses FOR EACH ROW EXECUTE FUNCTION r56.trigfn();\n"
    "CREATE POLICY r56pol ON r56x.uses USING (r56.polfn(a));\n"
    "CREATE FUNCTION r56x.takes(x r56.arg_d) RETURNS int LANGUAGE sql AS 'SELECT 1';\n"
    "CREATE FUNCTION r56.gone(i int) RETURNS int LANGUAGE sql AS 'SELECT i';\n"
    "CREATE DOMAIN r56.gone_d AS int;\n"
    "CREATE FUNCTION r56.redef(i int) RETURNS int LANGUAGE sql AS 'SELECT i';\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP SCHEMA IF EXISTS r56, r56x CASCADE;\nDROP FUNCTION IF EXISTS public.r56_dyn();\n"
    "DROP TABLE IF EXISTS public.r56src;\n"
)
DYN = (query("SELECT public.r56_dyn()"),)
# what must still stand after every probe (planted objects outside the grant's ddl scope,
# and r56's objects the vault's depend on)
KEPT = (
    "SELECT string_agg(coalesce(n.nspname, '-') || '.' || x.name, ',' ORDER BY 1) FROM ("
    "SELECT typnamespace AS ns, typname::text AS name FROM pg_type WHERE typtype = 'd' "
    "UNION ALL SELECT pronamespace, proname::text FROM pg_proc "
    "UNION ALL SELECT relnamespace, relname::text FROM pg_class WHERE relkind = 'r' "
    "UNION ALL SELECT 0, tgname::text FROM pg_trigger WHERE tgname = 'r56trg' "
    "UNION ALL SELECT 0, polname::text FROM pg_policy WHERE polname = 'r56pol') x "
    "LEFT JOIN pg_namespace n ON n.oid = x.ns "
    "WHERE n.nspname IN ('r56x') OR x.name IN ('used_d', 'arg_d', 'deffn', 'polfn', 'trigfn', "
    "'r56trg', 'r56pol')"
)


def describe_s(name: str) -> bytes:
    return frame(b"D", b"S" + name.encode() + b"\x00")


def close_s(name: str) -> bytes:
    return m.close_statement(name)


def text(frames: list[bytes]) -> str:
    return b"".join(frames).decode("utf-8", "replace")


def kinds(frames: list[bytes]) -> str:
    """The frame types a client reads, no asynchronous ones."""
    return "".join(chr(f[0]) for f in frames if f[:1] not in (b"N", b"S", b"A"))


def leaked(t: str) -> bool:
    return MARK in t or COL in t


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r56", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


# --- family A: DROPs decided on PostgreSQL's reading (2d3d536) --------------------------

# key -> (statement, must be refused by the policy); either way nothing in KEPT may go
DROPS = {
    "vault-domain": ("DROP DOMAIN r56x.vd", True),
    "vault-domain-quoted": ('DROP DOMAIN "r56x"."Vd"', True),
    "vault-domain-upper": ("DROP DOMAIN R56X.VD", True),
    "vault-domain-comment-cascade": ("DROP DOMAIN r56x.vd /* x */ cascade", True),
    "vault-domain-if-exists-restrict": (
        "DROP DOMAIN IF EXISTS r56.nodomain, r56x.vd RESTRICT",
        True,
    ),
    "mixed-domains": ("DROP DOMAIN r56.gone_d, r56x.vd", True),
    "vault-function": ("DROP FUNCTION r56x.vf(i int)", True),
    "vault-function-quoted": ('DROP FUNCTION "r56x"."vf"(i int)', True),
    "vault-function-dotted-name": ('DROP FUNCTION r56x."r56.ov"(i int)', True),
    "vault-procedure": ("DROP PROCEDURE r56x.vp(i int)", True),
    "mixed-functions": ("DROP FUNCTION IF EXISTS r56.nofunc(i int), r56x.vf(i int)", True),
    "mixed-unnamed-arg-first": ("DROP FUNCTION r56.ov(int), r56x.ov(i int)", True),
    "vault-function-unqualified": ("DROP FUNCTION vf(i int)", True),
    # refused by the protocol, run as RESTRICT by a simple Query since session 29 and by a
    # Parse since session 30 (the function is the grant's; nothing outside depends on it)
    "vault-function-cascade-lower": ("DROP FUNCTION r56.gone(i int) cascade", "restrict"),
    "vault-function-variadic-out": ("DROP FUNCTION r56x.vf(IN i int, OUT o int)", True),
    "two-statements": ("DROP DOMAIN r56.gone_d; DROP DOMAIN r56x.vd", True),
    "two-statements-function": (
        "DROP FUNCTION r56.gone(i int); DROP FUNCTION r56x.vf(i int)",
        True,
    ),
    # in scope, but the vault's objects depend on them: RESTRICT fails at the server
    "used-domain-column": ("DROP DOMAIN r56.used_d", False),
    "used-domain-argument": ("DROP DOMAIN r56.arg_d RESTRICT", False),
    "default-function": ("DROP FUNCTION r56.deffn(i int)", False),
    "policy-function": ("DROP FUNCTION r56.polfn(i int)", False),
    "trigger-function": ("DROP FUNCTION r56.trigfn(OUT o int)", False),
    "overload-own-schema": ("DROP FUNCTION r56.ov(i int)", False),
}


def _drop_steps(sql: str, mode: str) -> list:
    if mode == "simple":
        return [(query(sql),)]
    return [(parse("", sql), bind(), execute(), SYNC)]


@pytest.mark.parametrize("mode", ["simple", "extended"])
def test_drops_reach_nothing_outside_the_ddl_scope(px, pg, mode):
    with RawClient.direct(pg) as c:
        before = c.scalar(KEPT)
    assert "r56x.vd" in before and "-.r56trg" in before, before
    refused, allowed = [], []
    with planted.session(px) as c:
        for key, (sql, denied) in DROPS.items():
            got = text(
                run_frames(c, [(query("BEGIN"),), *_drop_steps(sql, mode), (query("ROLLBACK"),)])
            )
            (refused if planted.refused(got) else allowed).append(key)
            if denied is True:
                assert planted.refused(got), (key, got[-500:])
            else:
                assert "C2BP01" in got or "DROP FUNCTION" in got, (key, got[-500:])
        assert any(f[:1] == b"D" for f in c.query("SELECT 1"))
    with RawClient.direct(pg) as c:
        assert c.scalar(KEPT) == before
    assert len(refused) == sum(1 for _sql, denied in DROPS.values() if denied is True), allowed


def test_drops_committed_reach_nothing_outside_the_ddl_scope(px, pg):
    """The same, committed one by one (no block)."""
    with RawClient.direct(pg) as c:
        before = c.scalar(KEPT)
    with planted.session(px) as c:
        for key, (sql, denied) in DROPS.items():
            if key == "overload-own-schema" or denied == "restrict":
                continue  # (committed, it would drop the grant's own planted function)
            got = text(run_frames(c, [(query(sql),)]))
            assert not denied or planted.refused(got), (key, got[-500:])
    with RawClient.direct(pg) as c:
        assert c.scalar(KEPT) == before


# --- family C: statements analysed at their Parse, checked not restored (f269ff0) -------

PARSE_ANALYSED = {
    "ctas": "CREATE TABLE r56.c_{tag} AS SELECT id FROM r56.src",
    "select-into": "SELECT id INTO r56.si_{tag} FROM r56.src",
    "matview": "CREATE MATERIALIZED VIEW r56.mv_{tag} AS SELECT id FROM r56.src",
    "explain-analyze-ctas": "EXPLAIN ANALYZE CREATE TABLE r56.ec_{tag} AS SELECT id FROM r56.src",
    "explain-analyze-select-into": "EXPLAIN (ANALYZE) SELECT id INTO r56.es_{tag} FROM r56.src",
    "explain-analyze-matview": (
        "EXPLAIN ANALYZE CREATE MATERIALIZED VIEW r56.em_{tag} AS SELECT id FROM r56.src"
    ),
}


@pytest.mark.parametrize("described", [False, True])
@pytest.mark.parametrize("kind", list(PARSE_ANALYSED))
def test_swapped_parse_analysed_statement(px, pg, kind, described):
    x = f"r56_{kind.replace('-', '_')}"
    tag = f"{'d' if described else 'b'}"

    def steps(via: str) -> list:
        first = (describe_s(x), bind("", x)) if described else (bind("", x),)
        return [
            (parse(x, PARSE_ANALYSED[kind].format(tag=via + tag)), SYNC),
            (query(f"SELECT r56.swap('{x}')"),),
            (*first, execute(), SYNC),
            (query("SELECT 1"),),
        ]

    direct = text(direct_frames(pg, steps("d")))
    if not leaked(direct):
        raise RuntimeError(("precondition: the swap works directly", direct[-400:]))
    got = text(proxied_frames(px, steps("p")))
    assert not leaked(got), ("LEAK", got[-600:])
    assert "C26000" in got and "deny.replaced" in got or "C\x00" in got, got[-600:]


SHADOWED = {
    "ctas": ("CREATE TABLE r56.sh_{tag} AS SELECT id FROM r56src", "r56.sh_{tag}", False),
    "explain-analyze-ctas": (
        "EXPLAIN ANALYZE CREATE TABLE r56.shx_{tag} AS SELECT id FROM r56src",
        "r56.shx_{tag}",
        False,  # (fixed: EXPLAIN is never restored)
    ),
    "explain-analyze-select-into": (
        "EXPLAIN (ANALYZE, COSTS OFF) SELECT id INTO r56.shi_{tag} FROM r56src",
        "r56.shi_{tag}",
        False,  # (fixed: EXPLAIN is never restored)
    ),
    "explain-analyze-matview": (
        "EXPLAIN ANALYZE CREATE MATERIALIZED VIEW r56.shm_{tag} AS SELECT id FROM r56src",
        "r56.shm_{tag}",
        # no leak, but the fresh Parse shows it resolved again: 0A000 "materialized views
        # must not use temporary tables or views" where directly it works (transparency)
        False,
    ),
}


@pytest.mark.parametrize("kind", planted.cases(SHADOWED))
def test_temp_schema_first_then_shadowed_source(px, pg, kind):
    """Red-team round 55's ``shadow-restored-ctas-temp-schema-first`` for each statement
    analysed at its Parse: directly the server keeps its analysis (public.r56src)."""
    sql, made, _why = SHADOWED[kind]

    def steps(tag: str) -> list:
        return [
            (query("SELECT r56.shadow()"),),
            (query("SELECT r56.unshadow()"),),
            (parse("r56_sh", sql.format(tag=tag)), SYNC),
            (query("SELECT r56.shadow()"),),
            (bind("", "r56_sh"), execute(), SYNC),
            (query(f"SELECT id FROM {made.format(tag=tag)}"),),
        ]

    direct = text(direct_frames(pg, steps("d")))
    if "src-ok" not in direct or leaked(direct):
        raise RuntimeError(("precondition: directly the planted source is read", direct[-400:]))
    got = text(proxied_frames(px, steps("p")))
    assert not leaked(got), ("LEAK", got[-600:])


# --- family B: the check's own Close in its group (4f892e1) ------------------------------

PREPARED = [(parse("r56a", "SELECT id FROM r56.t"), parse("r56b", "SELECT 2"),
             parse("r56c", "SELECT id FROM r56.src"), SYNC)]  # fmt: skip
LIST = (query("SELECT name FROM pg_prepared_statements ORDER BY name"),)


def _ran(name: str, portal: str = "") -> tuple:
    return (bind(portal, name), execute(portal))


RELAY = {
    # the client's own Close of another name before the checked Bind, and of the bound name
    # after it, in the one group
    "client-closes-in-group": [
        *PREPARED, DYN,
        (close_s("r56a"), *_ran("r56b"), close_s("r56b"), SYNC),
        (parse("r56b", "SELECT 3"), *_ran("r56b"), SYNC), LIST,
    ],
    "three-checks-one-group": [
        *PREPARED, DYN, (*_ran("r56a"), *_ran("r56b"), *_ran("r56c"), SYNC), LIST,
    ],
    "same-name-twice-described": [
        *PREPARED, DYN,
        (describe_s("r56a"), *_ran("r56a"), describe_s("r56a"), *_ran("r56a"), SYNC), LIST,
    ],
    "error-before-the-check": [
        *PREPARED, DYN, (*_ran("r56nosuch"), *_ran("r56a"), SYNC), (*_ran("r56a"), SYNC), LIST,
    ],
    "failing-execute-before-the-check": [
        *PREPARED, (parse("r56z", "SELECT 1/0"), SYNC), DYN,
        (*_ran("r56z"), *_ran("r56a"), SYNC), (*_ran("r56b"), SYNC), LIST,
    ],
    "failed-check-then-more-groups": [
        *PREPARED, (query("SELECT r56.swap('r56a')"),),
        (*_ran("r56a"), SYNC), (*_ran("r56b"), SYNC), (*_ran("r56c"), *_ran("r56b"), SYNC),
        (*_ran("r56a"), SYNC), LIST,
    ],
    "failed-check-and-passing-in-one-write": [
        *PREPARED, (query("SELECT r56.swap('r56b')"),),
        (*_ran("r56a"), SYNC, *_ran("r56b"), SYNC, *_ran("r56c"), SYNC), LIST,
    ],
    "checks-in-a-failed-transaction": [
        *PREPARED, (query("BEGIN"),), DYN, (query("SELECT 1/0"),), (*_ran("r56a"), SYNC),
        (query("ROLLBACK"),), (*_ran("r56a"), SYNC), LIST,
    ],
    "checks-inside-a-block": [
        *PREPARED, (query("BEGIN"),), DYN, (*_ran("r56a"), SYNC), (*_ran("r56b"), SYNC),
        (query("COMMIT"),), LIST,
    ],
    "row-limited-portal-then-rest": [
        *PREPARED, DYN,
        (bind("p", "r56c"), execute("p", 1), execute("p", 0), *_ran("r56a"), SYNC), LIST,
    ],
    "flush-between-bind-and-execute": [
        *PREPARED, DYN, (bind("", "r56a"), FLUSH), (execute(), SYNC), LIST,
    ],
    "groups-pipelined-with-dynamic-sql": [
        *PREPARED,
        (query("SELECT public.r56_dyn()"), *_ran("r56a"), SYNC, query("SELECT public.r56_dyn()"),
         *_ran("r56b"), SYNC, *_ran("r56c"), SYNC),
        LIST,
    ],
}  # fmt: skip


def _count_q_s(step) -> int:
    return sum(1 for f in step if f[:1] in (b"Q", b"S"))


def _run_flush_aware(c: RawClient, steps) -> list[bytes]:
    out: list[bytes] = []
    for step in steps:
        c.send(*step)
        n = _count_q_s(step)
        if n == 0:  # a Flush: read what it gives, up to the BindComplete
            while True:
                f = c.read_frame()
                out.append(f)
                if f[:1] == b"2":
                    break
        for _ in range(n):
            out += c.frames_until_ready()
    return out


@pytest.mark.parametrize("probe", list(RELAY))
def test_answers_line_up_with_the_servers(px, pg, probe):
    steps = RELAY[probe]
    with RawClient.direct(pg) as c:
        direct = _run_flush_aware(c, steps[:-1])
        direct_list = text(run_frames(c, [LIST]))
    with planted.session(px) as c:
        got = _run_flush_aware(c, steps[:-1])
        got_list = text(run_frames(c, [LIST]))
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), "the session goes on"
    gt = text(got)
    assert not leaked(gt + got_list), ("LEAK", gt[-600:])
    for name in ("r56a", "r56b", "r56c"):
        assert (name in got_list) == (name in direct_list) or probe.startswith("failed"), got_list
    if probe.startswith("failed-check"):
        assert "deny.replaced" in gt, gt[-600:]
        return
    assert kinds(got) == kinds(direct), (kinds(direct), kinds(got), gt[-600:])


@pytest.mark.parametrize("probe", planted.cases({
    "error-before-the-check": (False,),  # (fixed: Denials._unclosed)
    "three-checks-one-group": (False,),
    "client-closes-in-group": (False,),
    "checks-in-a-failed-transaction": (False,),
    "groups-pipelined-with-dynamic-sql": (False,),
}))  # fmt: skip
def test_no_statement_of_the_proxys_is_left(px, pg, probe):
    with planted.session(px) as c:
        _run_flush_aware(c, RELAY[probe][:-1])
        got_list = text(run_frames(c, [LIST]))
    assert "pgw_" not in got_list, got_list


def test_psycopg_prepared_after_dynamic_sql(px, pg):
    """psycopg with every statement server-prepared (prepare_threshold=0), dynamic SQL in
    between: the same rows and the same prepared names as directly, none of the proxy's."""

    def session(conn) -> tuple[list, list]:
        rows = []
        with conn.cursor() as cur:
            for _i in range(3):
                rows.append(cur.execute("SELECT id FROM r56.t WHERE id = %s", (1,)).fetchall())
                rows.append(cur.execute("SELECT public.r56_dyn()").fetchall())
                rows.append(cur.execute("SELECT id FROM r56.src WHERE %s", (True,)).fetchall())
            names = cur.execute("SELECT name FROM pg_prepared_statements ORDER BY name").fetchall()
        return rows, names

    dsn = (f"host={pg.host} port={pg.port} user={UPSTREAM_USER} "
           f"password={pg.users[UPSTREAM_USER]} dbname=app")  # fmt: skip
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as conn:
        direct = session(conn)
    via = make_dsn(AGENT, px.token, px.host, px.port, "app")
    with psycopg.connect(via, autocommit=True, prepare_threshold=0) as conn:
        got = session(conn)
    assert got == direct, (direct, got)
    assert not any("pgw_" in n for (n,) in got[1])


# --- family A': the catalog follows a DROP read through the new path --------------------


@pytest.mark.parametrize("dropped", ["DROP FUNCTION r56.redef(i int)", "DROP FUNCTION r56.redef"])
def test_a_routine_redefined_after_its_drop_is_followed(px, pg, dropped):
    """``r56.redef`` is plain SQL when the catalog loads; dropped (argument named: decided
    on PostgreSQL's reading) and made again as code that replaces the client's statement
    ``r56_rd`` with a vault read: the next Bind of the name is checked (26000), never the
    read, and the code is not decided on the old body."""
    recreate = (
        "CREATE FUNCTION r56.redef(i int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM r56.swap('r56_rd'); RETURN i; END $$"
    )
    restore = (
        "SET ROLE pgwitness; DROP FUNCTION IF EXISTS r56.redef(int); CREATE FUNCTION "
        "r56.redef(i int) RETURNS int LANGUAGE sql AS 'SELECT i';"
    )
    steps = [
        (parse("r56_rd", "SELECT id FROM r56.t"), SYNC),
        (query(dropped),),
        (query(recreate),),
        (query("SELECT r56.redef(1)"),),
        (bind("", "r56_rd"), execute(), SYNC),
    ]
    direct = text(direct_frames(pg, steps))
    pg.psql(restore, db="app")
    if not leaked(direct):
        raise RuntimeError(("precondition", direct[-400:]))
    planted.wait_catalog_quiet(px, 10.0)
    with planted.session(px) as c:
        c.query("SELECT r56.redef(1)")  # the snapshot knows the plain SQL body
        got = text(run_frames(c, steps))
        assert any(f[:1] == b"D" for f in c.query("SELECT 1"))
    pg.psql(restore, db="app")
    assert "DROP FUNCTION" in got and "CREATE FUNCTION" in got, got[-600:]
    assert not leaked(got), ("LEAK", got[-600:])
    assert "deny.replaced" in got, got[-600:]
