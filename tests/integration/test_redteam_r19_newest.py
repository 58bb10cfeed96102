"""Red-team round 19: the three mechanisms added last: withholding (errors and notices
reduced to severity + SQLSTATE once a session writes a relation it may not read:
``StatementPolicy.writes_unreadable``, ``proxy.redaction.withhold_message``), the catalog
wait (a statement whose object-text decision rests on the catalog being complete is
parked, the catalog reloaded, and decided again: ``StatementPolicy._describe_refusal``,
``Relay._park_at`` / ``resume``) and ``lastval()`` refused.

Grant: ``read:`` + ``write:`` on ``public.r19_orders r19_ruled r19_v`` (``r19_v`` a view
over a secret table showing one column of two) and ``write:`` (never ``read:``) on
``public.r19_wc r19_wo``. A second grant adds ``execute:secret.r19_fn`` (a function with
an argument default: every defaulted function the proxy's first snapshot knows is then
the grant's), a third ``execute:secret.r19_late`` too. Planted outside the grants: rows of
secret tables whose CHECK casts a stored text column (``kind <> 'n' OR val::numeric > 0``)
and are written by a trigger of ``r19_orders``, a rule of ``r19_ruled``, the view
``r19_v``; a secret sequence feeding ``r19_wo``'s id; and, made by another session once
the proxy loaded its catalog, ``secret.r19_late`` with an argument default.

Each marker probe is first run directly as the upstream login (the server shows its
marker), then through the proxy by a raw client over the simple protocol, the extended
one and a named prepared statement (set-up statements over the simple protocol in the
same session): no byte received may hold a marker. The wire tests pipeline frames behind
a parked statement themselves and ask the server what ran.

Leaks found, all closed the same session (regression tests now; ``leak``'s reason says
what leaked): writes to a relation with triggers or rules, or through a view, turn
withholding on (``StatementPolicy._writes_reach_unseen``: ``Snapshot.triggered``,
``ruled``, ``view_names``), and the catalog loader skips other sessions' temporary views
and gives up on a lock after 2 s (``lock_timeout``). What leaked (all three protocols;
COPY FROM by the simple one): a write the grant may make that
reaches an unreadable relation by a trigger (INSERT, INSERT ... SELECT, a data-modifying
CTE, COPY FROM), a rule (DO ALSO UPDATE) or an auto-updatable view over a secret table
never turns withholding on (``writes_unreadable`` follows the statement's own write_ops and
foreign-key cascades only), so the secret table's CHECK cast quotes its stored value
(22P02, no table field). A trigger's NOTICE with a secret row: documented, kept as the
family's boundary. Misbehaviour: one agent's open transaction holding an AccessExclusive
lock on its own temporary view (CREATE OR REPLACE TEMP VIEW) stalls every catalog load,
so every parked statement of every grant waits 10 s and is refused.

Held: withholding for write-only UPDATE / UPDATE ONLY / MERGE / PREPARE + EXECUTE / first
statement of a session / in a transaction, foreign-key ON DELETE SET NULL into a secret
table; ON CONFLICT DO UPDATE on a write-only table (refused); every lastval() spelling and
route (quoted, qualified, spaced, comment, FROM, scalar subquery, COPY, PREPARE, cursor,
temp table DEFAULT, ALTER ... SET DEFAULT, temp view, temp SQL/plpgsql function,
query_to_xml, DO); the catalog wait (late function default by every reader, a 70 KB
statement, a schema made after the load under a schema.* grant; refused statements never
run, nor what their Sync group holds; Terminate, COPY data, second parked statements and a
pinned Bind behind a parked one; 30 parked statements pipelined).
"""

from __future__ import annotations

import time

import pytest

from common.wire import messages as m
from common.wire.errors import frame
from tests.support import planted
from tests.support.planted import shows
from tests.support.proxies import issue as grant_issue
from tests.support.rawpg import RawClient, bind, error_fields

pytestmark = pytest.mark.timeout(180)

AGENT = "r19-bot"
SCOPES = (
    "read:public.r19_orders write:public.r19_orders read:public.r19_ruled "
    "write:public.r19_ruled read:public.r19_v write:public.r19_v write:public.r19_wc "
    "write:public.r19_wo read:public.r19_parent write:public.r19_parent "
    "read:public.r19_tt truncate:public.r19_tt"
)
SCOPES_FN = SCOPES + " execute:secret.r19_fn"  # every defaulted function the first snapshot knows
SCOPES_ALL = SCOPES_FN + " execute:secret.r19_late"  # and the late one
# names every schema the first snapshot knows with schema.*: covers the database until the
# late schema exists
SCOPES_WILD = "read:public.* write:secret.*"

R = {  # outside the grant: must never come back through the proxy
    "trgval": "r19-trgval-7a01",
    "ruleval": "r19-ruleval-7a02",
    "viewval": "r19-viewval-7a03",
    "wcval": "r19-wcval-7a04",
    "seq": "91919000",  # the secret sequence's values: 9191900000, 9191900001, ...
    "latedefault": "r19-latedefault-7a05",
    "notice": "r19-notice-7a06",
    "copyval": "r19-copyval-7a07",
    "fkval": "r19-fkval-7a08",
    "lateschema": "r19-lateschema-7a09",
    "truncval": "r19-truncval-7a0a",
}
SECRETS = list(R.values())
CHECK = "CHECK (kind <> 'n' OR val::numeric > 0)"

SETUP = f"""
SET ROLE pgwitness;
-- a granted table with an audit-like trigger: an 'n' note marks a secret row
CREATE TABLE public.r19_orders (id int, note text);
INSERT INTO public.r19_orders VALUES (1, 'r19-ok');
CREATE TABLE secret.r19_vault (kind text, val text, {CHECK});
INSERT INTO secret.r19_vault VALUES ('t', '{R["trgval"]}');
CREATE FUNCTION secret.r19_touch() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN IF NEW.note = 'n' THEN UPDATE secret.r19_vault SET kind = 'n'; END IF;
    RETURN NEW; END$$;
CREATE TRIGGER r19_touch AFTER INSERT ON public.r19_orders
    FOR EACH ROW EXECUTE FUNCTION secret.r19_touch();
-- a granted table with a rule writing a secret table
CREATE TABLE public.r19_ruled (k text);
CREATE TABLE secret.r19_rv (kind text, val text, {CHECK});
INSERT INTO secret.r19_rv VALUES ('t', '{R["ruleval"]}');
CREATE RULE r19_rule AS ON INSERT TO public.r19_ruled WHERE NEW.k = 'n'
    DO ALSO UPDATE secret.r19_rv SET kind = 'n';
-- a granted, auto-updatable view showing one column of a secret table
CREATE TABLE secret.r19_vv (kind text, val text, {CHECK});
INSERT INTO secret.r19_vv VALUES ('t', '{R["viewval"]}');
CREATE VIEW public.r19_v AS SELECT kind FROM secret.r19_vv;
-- a write-only table with the CHECK (round 17's, for the withholding regressions)
CREATE TABLE public.r19_wc (k int PRIMARY KEY, kind text, val text, {CHECK});
INSERT INTO public.r19_wc VALUES (1, 't', '{R["wcval"]}');
-- a write-only table whose id comes from a secret sequence
CREATE SEQUENCE secret.r19_seq START 9191900000;
CREATE TABLE public.r19_wo (id bigint DEFAULT nextval('secret.r19_seq'), note text);
-- a function the second grant may execute, with an argument default
CREATE FUNCTION secret.r19_fn(a text DEFAULT 'r19-fn-ok') RETURNS text
    LANGUAGE sql AS $$SELECT a$$;
-- a secret table a granted table's trigger reads into a NOTICE
CREATE TABLE secret.r19_nv (s text);
INSERT INTO secret.r19_nv VALUES ('{R["notice"]}');
CREATE FUNCTION secret.r19_say() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN IF NEW.k = 'say' THEN RAISE NOTICE 'r19: %', (SELECT s FROM secret.r19_nv);
    END IF; RETURN NEW; END$$;
CREATE TRIGGER r19_say BEFORE INSERT ON public.r19_ruled
    FOR EACH ROW EXECUTE FUNCTION secret.r19_say();
-- a secret table written by COPY into a granted one's trigger
CREATE TABLE secret.r19_cv (kind text, val text, {CHECK});
INSERT INTO secret.r19_cv VALUES ('t', '{R["copyval"]}');
CREATE FUNCTION secret.r19_copytouch() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN IF NEW.note = 'c' THEN UPDATE secret.r19_cv SET kind = 'n'; END IF;
    RETURN NEW; END$$;
CREATE TRIGGER r19_copytouch AFTER INSERT ON public.r19_orders
    FOR EACH ROW EXECUTE FUNCTION secret.r19_copytouch();
-- a granted table a secret one references ON DELETE SET NULL (round 17's cascades)
CREATE TABLE public.r19_parent (id int PRIMARY KEY);
INSERT INTO public.r19_parent VALUES (1);
CREATE TABLE secret.r19_child (pid int REFERENCES public.r19_parent ON DELETE SET NULL,
    val text, CHECK (pid IS NOT NULL OR val::numeric > 0));
INSERT INTO secret.r19_child VALUES (1, '{R["fkval"]}');
-- a granted table whose ON TRUNCATE trigger updates a secret one (session 17's own check)
CREATE TABLE public.r19_tt (id int);
CREATE TABLE secret.r19_tv (kind text, val text, {CHECK});
INSERT INTO secret.r19_tv VALUES ('t', '{R["truncval"]}');
CREATE FUNCTION secret.r19_trunc() RETURNS trigger LANGUAGE plpgsql AS
    $$BEGIN UPDATE secret.r19_tv SET kind = 'n'; RETURN NULL; END$$;
CREATE TRIGGER r19_trunc BEFORE TRUNCATE ON public.r19_tt
    FOR EACH STATEMENT EXECUTE FUNCTION secret.r19_trunc();
RESET ROLE;
"""
TEARDOWN = """
DROP SCHEMA IF EXISTS r19_ls CASCADE;
DROP TABLE IF EXISTS secret.r19_child, public.r19_parent, public.r19_tt, secret.r19_tv;
DROP FUNCTION IF EXISTS secret.r19_trunc();
DROP VIEW IF EXISTS public.r19_v;
DROP TABLE IF EXISTS public.r19_orders, public.r19_ruled, public.r19_wc, public.r19_wo;
DROP TABLE IF EXISTS secret.r19_vault, secret.r19_rv, secret.r19_vv, secret.r19_nv,
    secret.r19_cv;
DROP FUNCTION IF EXISTS secret.r19_touch(), secret.r19_say(), secret.r19_copytouch(),
    secret.r19_fn(text), secret.r19_late(text);
DROP SEQUENCE IF EXISTS secret.r19_seq;
"""
# made by another session once the proxy has loaded its catalog
LATE = f"""
SET ROLE pgwitness;
CREATE FUNCTION secret.r19_late(a text DEFAULT '{R["latedefault"]}') RETURNS text
    LANGUAGE sql AS $$SELECT a$$;
CREATE SCHEMA r19_ls;
CREATE TABLE r19_ls.t (s text DEFAULT '{R["lateschema"]}');
RESET ROLE;
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r19newest", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        handle.oids = {}
        handle.fn_token = grant_issue(handle, agent=AGENT, task="R19FN", scopes=SCOPES_FN)[1]
        handle.all_token = grant_issue(handle, agent=AGENT, task="R19ALL", scopes=SCOPES_ALL)[1]
        handle.wild_token = grant_issue(handle, agent=AGENT, task="R19W", scopes=SCOPES_WILD)[1]
        # the proxy has loaded its catalog (a session ran); then another session plants
        assert not planted.simple(handle, ["SELECT 1"])[0].startswith("error")
        pg.psql(LATE, db="app")
        got = pg.psql("SELECT 'LF=' || 'secret.r19_late(text)'::regprocedure::oid", db="app")
        handle.oids.update(row.split("=", 1) for row in got.split())
        yield handle


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


P, leak = planted.probe, planted.closed  # a probe; one that leaked when found, held since


# --- 1. withholding: writes reaching an unreadable relation, and errors quoting its rows --

TRG = (
    "leak: a granted INSERT into public.r19_orders (read+write) fires its trigger, which "
    "UPDATEs secret.r19_vault; that table's CHECK (kind <> 'n' OR val::numeric > 0) casts "
    "the stored, unreadable val: 22P02 'invalid input syntax for type numeric: \"<val>\"' "
    "(no table field, so redact_error keeps it; strip_code drops only the CONTEXT). "
    "writes_unreadable looks at the statement's own write_ops and at foreign-key "
    "cascades (Snapshot.cascades) only, never at triggers, so withholding stays off"
)

PROBES = [
    # an ON TRUNCATE trigger updating a secret table whose CHECK casts its stored value
    leak("TRUNCATE public.r19_tt", "truncval",
         "the trigger's UPDATE of secret.r19_tv made its CHECK quote val (22P02): TRUNCATE "
         "was no row write, so withholding stayed off (found by the coordinator, session 17)"),
    # a trigger of a granted table updating a secret table whose CHECK casts a stored value
    leak("INSERT INTO public.r19_orders (id, note) VALUES (2, 'n')", "trgval", TRG),
    leak(
        "WITH i AS (INSERT INTO public.r19_orders (id, note) VALUES (2, 'n') RETURNING id) "
        "SELECT 1",
        "trgval",
        "leak: the same, the INSERT in a data-modifying CTE",
    ),  # fmt: skip
    leak(
        "INSERT INTO public.r19_orders (id, note) SELECT 2, 'n'",
        "trgval",
        "leak: the same, INSERT ... SELECT",
    ),  # fmt: skip
    # a rule of a granted table: DO ALSO UPDATE secret...
    leak(
        "INSERT INTO public.r19_ruled VALUES ('n')",
        "ruleval",
        "leak: a granted INSERT into public.r19_ruled (read+write) runs its rule's DO ALSO "
        "UPDATE secret.r19_rv, whose CHECK casts the stored val: 22P02 quotes it. The "
        "snapshot knows the relation has rules (Snapshot.ruled, used for EXPLAIN only), "
        "but writes_unreadable does not consult it",
    ),
    # an auto-updatable view over a secret table: the hidden column cast by its CHECK
    leak(
        "UPDATE public.r19_v SET kind = 'n'",
        "viewval",
        "leak: public.r19_v (read+write granted) shows only kind of secret.r19_vv; an "
        "UPDATE through it makes the base table's CHECK cast val, a column the view does "
        "not show: 22P02 quotes it. writes_unreadable checks the view's name only "
        "(Snapshot.views knows its base relation)",
    ),
    # a trigger of a granted table reading a secret table into a NOTICE
    leak(
        "INSERT INTO public.r19_ruled VALUES ('say')",
        "notice",
        "leak (documented: docs/policy.md 'A trigger on a granted table that RAISEs with "
        "another table's data is still the trigger's to choose'): the trigger's NOTICE "
        "carries secret.r19_nv's row; kept as the boundary of the family",
    ),
    # a granted table a secret one references ON DELETE SET NULL: withheld (round 17)
    P("DELETE FROM public.r19_parent", "fkval"),
    # write-only table: SQL-level PREPARE, then EXECUTE (the PREPARE must withhold)
    P("EXECUTE r19p", "wcval", "PREPARE r19p AS UPDATE public.r19_wc SET kind = 'n'"),
    P("EXECUTE r19p('n')", "wcval", "PREPARE r19p AS UPDATE public.r19_wc SET kind = $1"),
    P(
        "INSERT INTO public.r19_wc (k, kind) VALUES (1, 'x') ON CONFLICT (k) DO UPDATE "
        "SET kind = 'n'",
        "wcval",
    ),  # fmt: skip
    P(
        "INSERT INTO public.r19_wc (k, kind) VALUES (1, 'x') ON CONFLICT ON CONSTRAINT "
        "r19_wc_pkey DO UPDATE SET kind = 'n'",
        "wcval",
    ),  # fmt: skip
    P("UPDATE public.r19_wc SET kind = 'n'", "wcval"),
    P("UPDATE ONLY public.r19_wc SET kind = 'n'", "wcval"),
    P(
        "MERGE INTO public.r19_wc USING (SELECT 1) s ON true WHEN MATCHED THEN "
        "UPDATE SET kind = 'n'",
        "wcval",
    ),  # fmt: skip
    # the write statement is the first of the session, in a transaction, pipelined after it
    P("UPDATE public.r19_wc SET kind = 'n'", "wcval", "BEGIN"),
    # 3. lastval() and the same value by other routes (the sequence's value after a
    # write-only INSERT took it)
    P("SELECT lastval()", "seq", "INSERT INTO public.r19_wo (note) VALUES ('x')"),
    P('SELECT "pg_catalog"."lastval"()', "seq", "INSERT INTO public.r19_wo (note) VALUES ('x')"),
    P("SELECT PG_CATALOG . LASTVAL ( )", "seq", "INSERT INTO public.r19_wo (note) VALUES ('x')"),
    P('SELECT U&"\\006castval"()', "seq", "INSERT INTO public.r19_wo (note) VALUES ('x')"),
    P("SELECT lastval/**/()", "seq", "INSERT INTO public.r19_wo (note) VALUES ('x')"),
    P("SELECT v FROM lastval() AS t(v)", "seq", "INSERT INTO public.r19_wo (note) VALUES ('x')"),
    P("SELECT (SELECT lastval())", "seq", "INSERT INTO public.r19_wo (note) VALUES ('x')"),
    P("COPY (SELECT lastval()) TO STDOUT", "seq", "INSERT INTO public.r19_wo (note) VALUES ('x')"),
    P(
        "EXECUTE r19lv",
        "seq",
        "PREPARE r19lv AS SELECT lastval()",
        "INSERT INTO public.r19_wo (note) VALUES ('x')",
    ),  # fmt: skip
    P(
        "FETCH ALL FROM r19c",
        "seq",
        "BEGIN",
        "DECLARE r19c CURSOR FOR SELECT lastval()",
        "INSERT INTO public.r19_wo (note) VALUES ('x')",
    ),  # fmt: skip
    P(
        "INSERT INTO pg_temp.r19_t DEFAULT VALUES RETURNING v",
        "seq",
        "CREATE TEMP TABLE pg_temp.r19_t (v bigint DEFAULT lastval())",
        "INSERT INTO public.r19_wo (note) VALUES ('x')",
    ),  # fmt: skip
    P(
        "INSERT INTO pg_temp.r19_t2 DEFAULT VALUES RETURNING v",
        "seq",
        "CREATE TEMP TABLE pg_temp.r19_t2 (v bigint)",
        "ALTER TABLE pg_temp.r19_t2 ALTER v SET DEFAULT pg_catalog.lastval()",
        "INSERT INTO public.r19_wo (note) VALUES ('x')",
    ),  # fmt: skip
    P(
        "SELECT * FROM pg_temp.r19_tv",
        "seq",
        "CREATE TEMP VIEW r19_tv AS SELECT lastval() AS v",
        "INSERT INTO public.r19_wo (note) VALUES ('x')",
    ),  # fmt: skip
    P(
        "SELECT pg_temp.r19_f()",
        "seq",
        "CREATE FUNCTION pg_temp.r19_f() RETURNS bigint LANGUAGE sql AS 'SELECT lastval()'",
        "INSERT INTO public.r19_wo (note) VALUES ('x')",
    ),  # fmt: skip
    P(
        "SELECT pg_temp.r19_g()",
        "seq",
        "CREATE FUNCTION pg_temp.r19_g() RETURNS bigint LANGUAGE plpgsql AS "
        "$$DECLARE r bigint; BEGIN EXECUTE 'SELECT last' || 'val()' INTO r; RETURN r; END$$",
        "INSERT INTO public.r19_wo (note) VALUES ('x')",
    ),  # fmt: skip
    P(
        "SELECT query_to_xml('SELECT lastval()', true, false, '')",
        "seq",
        "INSERT INTO public.r19_wo (note) VALUES ('x')",
    ),  # fmt: skip
    P(
        "DO $$BEGIN RAISE NOTICE '%', lastval(); END$$",
        "seq",
        "INSERT INTO public.r19_wo (note) VALUES ('x')",
    ),  # fmt: skip
    P(
        "SELECT currval('secret.r19_seq'::regclass)",
        "seq",
        "INSERT INTO public.r19_wo (note) VALUES ('x')",
    ),  # fmt: skip
    P(
        "SELECT currval(c.oid) FROM pg_catalog.pg_class c WHERE c.relname = 'r19_seq'",
        "seq",
        "INSERT INTO public.r19_wo (note) VALUES ('x')",
    ),  # fmt: skip
]


def test_each_probe_reaches_its_marker_directly(px, pg):
    silent = planted.silent_directly(pg, px.oids, PROBES, R.__getitem__)
    assert not silent, "\n".join(map(repr, silent))


@pytest.mark.parametrize(("sql", "key", "before"), PROBES, ids=planted.ids(PROBES))
def test_probe_shows_no_marker_through_the_proxy(px, sql, key, before):
    bad = planted.leaks(px, sql, leaked, before)
    assert not bad, ("LEAK", sorted(bad), sql, bad)


def test_copy_from_into_granted_table_whose_trigger_writes_a_secret_one(px, pg):
    """COPY FROM STDIN (the copy sub-protocol) into r19_orders: its trigger updates a
    secret table whose CHECK casts a stored value."""
    with RawClient.direct(pg) as c:
        direct = planted.text(_copy_in(c, "COPY public.r19_orders (id, note) FROM STDIN",
                                       b"3\tc\n"))  # fmt: skip
    assert shows(direct, R["copyval"]), direct[-300:]
    with planted.session(px) as c:
        got = planted.text(_copy_in(c, "COPY public.r19_orders (id, note) FROM STDIN", b"3\tc\n"))
        assert any(f[:1] == b"D" for f in c.query("SELECT 1"))
    assert not leaked(got), ("LEAK", got[-500:])


def _copy_in(c: RawClient, sql: str, data: bytes) -> list[bytes]:
    c.send(m.query(sql))
    frames = []
    while True:
        f = c.read_frame()
        assert f is not None, planted.text(frames)
        frames.append(f)
        if f[:1] == b"G":
            c.send(frame(b"d", data), frame(b"c"))
        if f[:1] == b"Z":
            return frames


# --- 2. the catalog wait: statements parked for a reload, and what is pipelined behind ---

LATE_READ = (
    "SELECT pg_get_function_arguments(p.oid) FROM pg_catalog.pg_proc p WHERE p.proname = 'r19_late'"
)
FN_READ = (
    "SELECT pg_get_function_arguments(p.oid) FROM pg_catalog.pg_proc p WHERE p.proname = 'r19_fn'"
)


def _writer(n: int, proname: str) -> str:
    """A statement that parks (unpinned argument defaults) and, if it runs, writes row n."""
    return (
        f"INSERT INTO public.r19_orders (id, note) SELECT {n}, pg_get_function_arguments(p.oid) "
        f"FROM pg_catalog.pg_proc p WHERE p.proname = '{proname}'"
    )


def _rows(pg, n: int) -> int:
    return int(pg.psql(f"SELECT count(*) FROM public.r19_orders WHERE id = {n}", db="app").strip())


def _frames_until_ready(c: RawClient, count: int) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(count):
        out += c.frames_until_ready()
    return out


def _types(frames: list[bytes]) -> str:
    return "".join(f[:1].decode() for f in frames)


def _errors(frames: list[bytes]) -> list[str]:
    return [error_fields(f).get("C", "") for f in frames if f[:1] == b"E"]


PARKED = [
    P(LATE_READ, "latedefault"),
    P(
        "SELECT pg_get_function_arg_default(p.oid, 1) FROM pg_catalog.pg_proc p "
        "WHERE p.proname = 'r19_late'",
        "latedefault",
    ),  # fmt: skip
    P(
        "SELECT p.proargdefaults FROM pg_catalog.pg_proc p WHERE p.proname = 'r19_late'",
        "latedefault",
    ),  # fmt: skip
    P(
        "SELECT pg_get_expr(p.proargdefaults, 0) FROM pg_catalog.pg_proc p "
        "WHERE p.proname = 'r19_late'",
        "latedefault",
    ),  # fmt: skip
    # a statement of 70 KB: classified off the event loop first, then parked
    P(LATE_READ + " /*" + "x" * 70_000 + "*/", "latedefault"),
    # behind a statement of the same session that parked (and was refused)
    P(LATE_READ, "latedefault", FN_READ),
]


@pytest.mark.parametrize(("sql", "key", "before"), PARKED, ids=planted.ids(PARKED))
def test_parked_statement_decided_on_the_reloaded_catalog(px, sql, key, before):
    got = planted.received(px, sql, before=before, token=px.fn_token)
    bad = {mode: t[-400:] for mode, t in got.items() if leaked(t)}
    assert not bad, ("LEAK", sorted(bad), sql[:120], bad)
    for mode, t in got.items():
        assert "42501" in t, (mode, t[-300:])


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d",
        "SELECT column_default FROM information_schema.columns",
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d "
        "JOIN pg_catalog.pg_class c ON c.oid = d.adrelid WHERE c.relname = 't'",
    ],
)
def test_schema_made_after_the_load_is_outside_a_schema_star_grant(px, pg, sql):
    """A grant naming every schema with schema.* reads unpinned object text: parked, and
    decided on a snapshot that lists the schema another session made since."""
    with RawClient.direct(pg) as c:
        assert shows(planted.text(c.query(sql)), R["lateschema"])
    got = planted.received(px, sql, token=px.wild_token)
    bad = {mode: t[-400:] for mode, t in got.items() if leaked(t)}
    assert not bad, ("LEAK", sorted(bad), sql, bad)


def test_parked_then_allowed_runs_once(px, pg):
    """A parked statement the reloaded catalog allows runs, once, and its answer comes
    before what was pipelined behind it."""
    with planted.session(px, px.all_token) as c:
        c.send(m.query(_writer(920, "r19_fn")), m.query("SELECT 'r19-behind'"))
        frames = _frames_until_ready(c, 2)
    assert _errors(frames) == [], planted.text(frames)
    assert _types(frames).count("Z") == 2
    text = planted.text(frames)
    assert text.index("INSERT 0 1") < text.index("r19-behind"), text
    assert _rows(pg, 920) == 1


def test_refused_after_the_wait_never_runs_nor_what_its_sync_group_holds(px, pg):
    """Extended protocol: the parked Parse is refused after the reload; the Execute
    behind it in the same Sync group is skipped, as the server skips the rest of a group
    after an error; the next group runs."""
    with planted.session(px, px.fn_token) as c:
        c.send(
            m.parse("", _writer(921, "r19_late")), m.bind_no_params(), m.execute(),
            m.parse("", "INSERT INTO public.r19_orders (id, note) VALUES (922, 'x')"),
            m.bind_no_params(), m.execute(), m.SYNC,
            m.query("INSERT INTO public.r19_orders (id, note) VALUES (923, 'x')"),
        )  # fmt: skip
        frames = _frames_until_ready(c, 2)
    assert not leaked(planted.text(frames)), planted.text(frames)
    assert _errors(frames) == ["42501"], planted.text(frames)
    assert (_rows(pg, 921), _rows(pg, 922), _rows(pg, 923)) == (0, 0, 1)


def test_refused_after_the_wait_with_terminate_behind(px, pg):
    with planted.session(px, px.fn_token) as c:
        c.send(m.query(_writer(924, "r19_late")), m.TERMINATE)
        frames = c.frames_until_eof()
        c.terminate_on_close = False
    assert not leaked(planted.text(frames))
    time.sleep(0.3)
    assert _rows(pg, 924) == 0


def test_two_parked_statements_and_copy_data_behind(px, pg):
    """Two parked statements back to back, then COPY FROM STDIN with its data, all in one
    write: each decided on a reloaded catalog, in order, the copy rows written."""
    with planted.session(px, px.all_token) as c:
        c.send(
            m.query(_writer(925, "r19_fn")), m.query(_writer(926, "r19_late")),
            m.query("COPY public.r19_orders (id, note) FROM STDIN"),
            frame(b"d", b"927\tcopied\n"), frame(b"c"),
            m.query(_writer(928, "r19_fn")),
        )  # fmt: skip
        frames = _frames_until_ready(c, 4)
    assert _errors(frames) == [], planted.text(frames)
    assert [_rows(pg, n) for n in (925, 926, 927, 928)] == [1, 1, 1, 1]


def test_two_parked_statements_second_refused(px, pg):
    with planted.session(px, px.fn_token) as c:
        c.send(
            m.query(_writer(930, "r19_fn")), m.query(_writer(931, "r19_late")),
            m.query("INSERT INTO public.r19_orders (id, note) VALUES (932, 'x')"),
        )  # fmt: skip
        frames = _frames_until_ready(c, 3)
    assert not leaked(planted.text(frames))
    # after the reload the snapshot lists r19_late: r19_fn's default is refused too
    assert _errors(frames) == ["42501", "42501"], planted.text(frames)
    assert [_rows(pg, n) for n in (930, 931, 932)] == [0, 0, 1]


def test_bind_of_a_pinned_statement_behind_a_parked_one(px, pg):
    """A statement whose pin is a parameter, prepared first; then a parked statement and
    a Bind of it naming the late function's OID, pipelined: refused, no default shown."""
    lf = px.oids["LF"]
    with planted.session(px, px.fn_token) as c:
        c.send(m.parse("r19pin", "SELECT pg_get_function_arguments($1::oid)"), m.SYNC)
        first = c.frames_until_ready()
        c.send(
            m.query(FN_READ),
            bind(statement="r19pin", params=(lf.encode(),)), m.execute(), m.SYNC,
        )  # fmt: skip
        frames = first + _frames_until_ready(c, 2)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1"))
    assert not leaked(planted.text(frames)), planted.text(frames)[-500:]


def test_many_parked_statements_pipelined(px, pg):
    """A reload per parked statement (a storm from one session): every one answered, in
    order, within the time limit."""
    n = 30
    start = time.monotonic()
    with planted.session(px, px.fn_token) as c:
        c.send(*(m.query(LATE_READ if i % 2 else FN_READ) for i in range(n)))
        frames = _frames_until_ready(c, n)
    took = time.monotonic() - start
    assert not leaked(planted.text(frames))
    assert _types(frames).count("Z") == n
    assert len(_errors(frames)) == n, _errors(frames)
    assert took < 30, took


def test_a_lock_on_a_view_stalls_every_catalog_wait(px):
    with planted.session(px) as locker:
        for sql in ("CREATE TEMP VIEW r19_lk AS SELECT 1 AS n", "BEGIN",
                    "CREATE OR REPLACE TEMP VIEW r19_lk AS SELECT 2 AS n"):  # fmt: skip
            assert not planted.result(locker.query(sql)).startswith("error"), sql
        try:
            start = time.monotonic()
            with planted.session(px, px.all_token) as c:  # r19_fn's default: allowed
                frames = c.query(FN_READ)
            took = time.monotonic() - start
        finally:
            locker.query("ROLLBACK")
    assert _errors(frames) == [] and took < 5, (took, planted.result(frames))
