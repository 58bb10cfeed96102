"""Red-team round 23: fresh eyes on the statement policy, with the server as the judge.

Grants (agent ``r23-bot``): ``read:public.r23_orders write:public.r23_orders`` (base);
``read:public.r23_tr write:public.r23_tr ddl:public.r23_touch`` (a ddl scope on the
function a granted table's trigger runs, no execute scope); ``read:public.r23_v
ddl:public.r23_fmt`` (a granted view, and ddl on the function it calls); ``read:public.r23_cf
ddl:public.r23_cf`` (a table the grant may read and alter); ``read:public.r23_mine
write:public.r23_mine ddl:public.r23_mine`` (DDL side effects). Planted by the schema owner
(``pgwitness``, the proxy's upstream login) outside every grant: rows of
``secret.r23_vault`` (one marker per probe), ``public.r23_pin(public.r23_cf)`` (a function
reading it, named like a column of ``r23_cf``), another owner's row of ``secret.r23_acc``
(hidden by the views), an enum ``secret.r23_mood`` and a text search configuration
``secret.r23_cfg``.

Each marker probe is first run directly as the upstream login (the server shows its
marker), then through the proxy by a raw client over the simple protocol, the extended one
(unnamed) and a named prepared statement (set-up statements over the simple protocol in the
same session): no byte received may hold a marker. Leaks are kept as
``xfail(strict=True, raises=AssertionError, reason="LEAK: ...")``.

Leaks found:

1. A ``ddl`` scope on a function is an ``execute`` scope on arbitrary SQL wherever that
   function is already called: ``CREATE OR REPLACE FUNCTION`` is decided on the function's
   name alone (its body is never read), and the code that calls it (a granted table's
   trigger, a granted view, a column default, another function) names nothing the policy
   decides on at run time. A grant with ``ddl:public.r23_touch`` and a write scope on the
   table whose trigger runs it, or with ``ddl:public.r23_fmt`` and a read scope on the view
   that calls it, reads ``secret.r23_vault`` (all three protocols). docs/policy.md says
   ``ddl`` + ``execute`` is arbitrary SQL; ``engine._defines_a_built_in_name`` asks for the
   execute scope only when the name is a built-in's.
2. Decisions on a catalog snapshot the same message makes stale: DDL the grant may run,
   earlier in the same Query message, the same extended-protocol pipeline, or before the
   Bind/``EXECUTE`` of a statement prepared earlier (protocol-level or SQL ``PREPARE``:
   never checked again; the server analyses or plans it again after the DDL), changes what
   a later statement does after the policy decided it on the old snapshot:

   * column syntax (``policy.catalog.attribute_calls``): ``o.r23_pin`` is taken for a
     column because the snapshot lists one; ``ALTER TABLE public.r23_cf RENAME COLUMN
     r23_pin TO ...`` (``ddl:public.r23_cf`` alone) removes it, and PostgreSQL resolves
     ``o.r23_pin`` as the call ``public.r23_pin(o)``: a user function the grant has no
     execute scope for (refused when called by name), reading ``secret.r23_vault``;
   * security barriers (``StatementPolicy._through_views``): ``ALTER VIEW public.r23_bv SET
     (security_barrier = false)`` (``ddl:public.r23_bv``) and the statement's cheap
     ``pin::int`` runs on the rows the view hides, the 22P02 quoting another owner's pin
     (the same statement on a view that is no barrier is ``deny.view``).

   All four modes, deterministic (no race with the reload).
3. Existence/name oracles in a schema the grant names nothing in (docs/policy.md: "a name
   given as text to a built-in that looks it up ... is refused"; ``pgparse._NAME_ARGUMENTS``
   lacks these): ``pg_relation_is_publishable('secret.t')``, ``has_type_privilege
   ('secret.type', ...)``, ``pg_get_object_address('type', '{secret.type}', ...)`` (the
   object's OID), a ``regconfig`` argument (``to_tsvector('secret.cfg', ...)``). Names and
   OIDs, no values: lower severity.

Held (regression tests below): DDL reaching objects the grant does not name
(``SET SCHEMA``, a foreign key to a secret table, ``CREATE STATISTICS``, ``CREATE INDEX
CONCURRENTLY`` / ``REFRESH MATERIALIZED VIEW`` of a secret relation, ``CREATE RULE`` with a
secret action, ``CREATE PUBLICATION``, ``SECURITY LABEL``, ``CREATE POLICY``, ``ALTER
SEQUENCE ... OWNED BY``, a rename onto another relation's name, a column default reading a
secret sequence, ``CREATE TRIGGER`` of an unscoped function, ``CREATE OR REPLACE VIEW`` over
a secret table, the function called by name); a ``WITH HOLD`` cursor over a secret table,
``cursor_to_xml``, ``pg_notify``, ``NOTIFY``, ``LISTEN``, ``COPY ... WHERE (subquery)``,
``U&`` identifiers, an E-string hiding a second statement.
"""

from __future__ import annotations

import time

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import shows
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(180)

AGENT = "r23-bot"
SCOPES = "read:public.r23_orders write:public.r23_orders"
GRANTS = {
    "trig": "read:public.r23_tr write:public.r23_tr ddl:public.r23_touch",
    "view": "read:public.r23_v ddl:public.r23_fmt",
    "cf": "read:public.r23_cf ddl:public.r23_cf",
    "ddl": "read:public.r23_mine write:public.r23_mine ddl:public.r23_mine",
    "bv": "read:public.r23_bv ddl:public.r23_bv read:public.r23_nbv",
}

R = {  # rows of secret.r23_vault: must never come back through the proxy
    "trig": "r23-trigval-6d01",
    "view": "r23-viewval-6d02",
    "pin": "r23-pinval-6d03",
    "barrier": "r23-barrierval-6d04",  # a row of secret.r23_acc a barrier view hides
}
SECRETS = list(R.values())
VAULT_ID = {"trig": 1, "view": 2, "pin": 3}
ONLY_MINE = "lower(upper(lower(owner))) = 'me'"  # dearer than the probe's cast: runs later

TOUCH = (
    'CREATE OR REPLACE FUNCTION public.r23_touch() RETURNS "trigger" LANGUAGE plpgsql AS '
    "$$ BEGIN NEW.note := {body}; RETURN NEW; END $$"
)
FMT = "CREATE OR REPLACE FUNCTION public.r23_fmt(t text) RETURNS text LANGUAGE sql AS $$ {body} $$"
TOUCH_OK = TOUCH.format(body="coalesce(NEW.note, 'n')")
FMT_OK = FMT.format(body="SELECT upper(t)")

SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE TABLE public.r23_orders (id int PRIMARY KEY, note text);\n"
    "INSERT INTO public.r23_orders VALUES (1, 'r23-ok');\n"
    "CREATE TABLE secret.r23_vault (id int PRIMARY KEY, val text);\n"
    "INSERT INTO secret.r23_vault VALUES "
    + ", ".join(f"({i}, '{R[k]}')" for k, i in VAULT_ID.items())
    + ";\n"
    # 1. a trigger of a granted table, a view the grant reads: each calls a function
    "CREATE TABLE public.r23_tr (id int, note text);\n"
    f"{TOUCH_OK};\n"
    "CREATE TRIGGER r23_touch BEFORE INSERT OR UPDATE ON public.r23_tr FOR EACH ROW "
    "EXECUTE FUNCTION public.r23_touch();\n"
    f"{FMT_OK};\n"
    "CREATE VIEW public.r23_v AS SELECT id, public.r23_fmt(note) AS note FROM public.r23_orders;\n"
    # 2. a function named like a column of a table the grant may read and alter
    "CREATE TABLE public.r23_cf (id int, r23_pin text);\n"
    "INSERT INTO public.r23_cf VALUES (1, 'r23-ok-cf');\n"
    "CREATE FUNCTION public.r23_pin(r public.r23_cf) RETURNS text LANGUAGE sql AS "
    "$$ SELECT val FROM secret.r23_vault WHERE id = 3 $$;\n"
    # 2b. a security barrier view hiding another owner's row (and the same view without)
    "CREATE TABLE secret.r23_acc (owner text, pin text);\n"
    f"INSERT INTO secret.r23_acc VALUES ('me', '73917391'), ('other', '{R['barrier']}');\n"
    "CREATE VIEW public.r23_bv WITH (security_barrier = true) AS "
    f"SELECT owner, pin FROM secret.r23_acc WHERE {ONLY_MINE};\n"
    f"CREATE VIEW public.r23_nbv AS SELECT owner, pin FROM secret.r23_acc WHERE {ONLY_MINE};\n"
    # 3. objects of a schema the grants name nothing in
    "CREATE TYPE secret.r23_mood AS ENUM ('calm');\n"
    "CREATE TEXT SEARCH CONFIGURATION secret.r23_cfg (COPY = english);\n"
    # held: DDL side effects
    "CREATE TABLE public.r23_mine (id serial PRIMARY KEY, v text);\n"
    "CREATE SEQUENCE secret.r23_seq;\n"
    "CREATE MATERIALIZED VIEW secret.r23_mv AS SELECT id FROM secret.r23_vault;\n"
    "RESET ROLE;\n"
)
TEARDOWN = (
    "DROP TABLE IF EXISTS public.r23_cf CASCADE;\n"
    "DROP VIEW IF EXISTS public.r23_v;\n"
    "DROP FUNCTION IF EXISTS public.r23_fmt(text);\n"
    "DROP TABLE IF EXISTS public.r23_tr, public.r23_orders, public.r23_mine;\n"
    "DROP TABLE IF EXISTS secret.r23_mine;\n"
    "DROP FUNCTION IF EXISTS public.r23_touch();\n"
    "DROP MATERIALIZED VIEW IF EXISTS secret.r23_mv;\n"
    "DROP VIEW IF EXISTS public.r23_bv, public.r23_nbv;\n"
    "DROP TABLE IF EXISTS secret.r23_vault, secret.r23_acc;\n"
    "DROP SEQUENCE IF EXISTS secret.r23_seq;\n"
    "DROP TYPE IF EXISTS secret.r23_mood;\n"
    "DROP TEXT SEARCH CONFIGURATION IF EXISTS secret.r23_cfg;\n"
    "DROP PUBLICATION IF EXISTS r23_pub;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r23fresh", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        handle.oids = {}
        yield handle


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


def _rows(frames: list[bytes]) -> str:
    return planted.text([f for f in frames if f[:1] == b"D"])


def leak(*values, reason: str):
    return pytest.param(
        *values, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)
    )


# --- 1. a ddl scope on a function already called by granted code ------------------------

# Leaked until session 19: CREATE OR REPLACE FUNCTION was allowed by ddl:<fn> alone (the
# body is never read; engine._defines_a_built_in_name asked for an execute scope only for
# built-in names), and a trigger or a granted view calls it without naming it, so the new
# body ran as the upstream login. Defining a function now needs the execute scope on it
# (engine._defines_code).


def _vault(key: str) -> str:
    return f"(SELECT val FROM secret.r23_vault WHERE id = {VAULT_ID[key]})"


REPLACED = [
    pytest.param(
        "trig",
        "SELECT note FROM public.r23_tr WHERE id = 7",
        (TOUCH.format(body=_vault("trig")), "BEGIN", "INSERT INTO public.r23_tr VALUES (7, 'x')"),
        ("ROLLBACK",),
        TOUCH_OK,
    ),
    pytest.param(
        "view",
        "SELECT note FROM public.r23_v",
        (FMT.format(body=f"SELECT {_vault('view')}"),),
        (),
        FMT_OK,
    ),
]


def test_replaced_bodies_reach_their_markers_directly(px, pg):
    for param in REPLACED:
        key, sql, before, after, restore = param.values
        try:
            with RawClient.direct(pg) as c:
                frames = [f for s in before for f in c.query(s)]
                got = planted.text(frames + c.query(sql))
                for s in after:
                    c.query(s)
        finally:
            pg.psql(restore, db="app")
        assert shows(got, R[key]), (sql, got[-300:])


@pytest.mark.parametrize(("key", "sql", "before", "after", "restore"), REPLACED,
                         ids=[p.values[0] for p in REPLACED])  # fmt: skip
def test_ddl_on_a_called_function_reads_nothing_outside_the_grant(
    px, pg, key, sql, before, after, restore
):
    fn = {"trig": "r23_touch", "view": "r23_fmt"}[key]
    try:
        got = planted.received(px, sql, before=before, after=after, token=px.tokens[key])
        body = pg.psql(f"SELECT prosrc FROM pg_proc WHERE proname = '{fn}'", db="app")
    finally:
        pg.psql(restore, db="app")
    bad = {mode: t[-400:] for mode, t in got.items() if leaked(t)}
    assert not bad, ("LEAK", sorted(bad), sql, bad)
    assert "r23_vault" not in body, body  # the replacement was refused, not merely harmless
    assert all("defining it is running it" in t for t in got.values()), got


HELD_FUNCTIONS = [
    # (grant, sql): refused, the function keeps its body
    ("view", "SELECT public.r23_fmt('a')"),  # called by name: needs the execute scope
    ("trig", "SELECT public.r23_touch()"),
    ("view", "CREATE OR REPLACE VIEW public.r23_v AS SELECT id, val AS note FROM secret.r23_vault"),
    (
        "trig",
        "CREATE TRIGGER r23_t2 BEFORE INSERT ON public.r23_tr FOR EACH ROW "
        "EXECUTE FUNCTION public.r23_fmt()",
    ),
]


@pytest.mark.parametrize(("grant", "sql"), HELD_FUNCTIONS)
def test_calls_by_name_and_view_bodies_are_refused(px, pg, grant, sql):
    got = planted.received(px, sql, token=px.tokens[grant])
    planted.assert_denied(got, sql)
    assert not leaked("".join(got.values()))
    defs = pg.psql(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'r23_t2'; "
        "SELECT pg_get_viewdef('public.r23_v'::regclass)",
        db="app",
    )  # fmt: skip
    assert "r23_vault" not in defs and defs.split()[0] == "0", defs


# --- 2. decisions on a snapshot the message itself makes stale -----------------------------


class Stale:
    """A decision resting on the catalog snapshot, and the DDL that changes what it rests on:
    ``away`` (allowed by the grant's ddl scope) makes ``probe`` reach ``key``'s marker;
    ``back`` undoes it; ``ok`` is the probe's harmless answer while nothing changed."""

    def __init__(self, grant, away, probe, back, ok, key):
        self.grant, self.away, self.probe, self.back, self.ok, self.key = (
            grant, away, probe, back, ok, key)  # fmt: skip


STALE = {
    # column syntax: o.r23_pin is the column while it exists, else the call r23_pin(o)
    "column": Stale(
        "cf",
        "ALTER TABLE public.r23_cf RENAME COLUMN r23_pin TO r23_gone",
        "SELECT o.r23_pin FROM public.r23_cf o",
        "ALTER TABLE public.r23_cf RENAME COLUMN r23_gone TO r23_pin",
        "r23-ok-cf",
        "pin",
    ),
    # a security barrier view: the statement's cheap cast runs after the view's filter only
    # while the view is a barrier (else deny.view refuses the statement)
    "barrier": Stale(
        "bv",
        "ALTER VIEW public.r23_bv SET (security_barrier = false)",
        "SELECT owner, pin FROM public.r23_bv WHERE pin::int > 0",
        "ALTER VIEW public.r23_bv SET (security_barrier = true)",
        "73917391",
        "barrier",
    ),
}


def _session(px, case: Stale) -> RawClient:
    return planted.session(px, px.tokens[case.grant])


def _undo(px, pg, case: Stale) -> None:
    """Undo ``away`` through the proxy (its catalog reloads after DDL), then wait (up to 5
    s) until the proxy allows the probe again and it shows its harmless answer."""
    with _session(px, case) as c:
        c.query("ROLLBACK")
        c.query(case.back)  # an error when nothing is to undo: harmless
    deadline = time.monotonic() + 5
    while True:
        with _session(px, case) as c:
            got = planted.text(c.query(case.probe))
        if case.ok in got or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert case.ok in got, ("precondition: the probe is allowed", case.probe, got[-300:])


def _stale_simple(c: RawClient, case: Stale) -> list[bytes]:
    return c.query(f"{case.away}; {case.probe}")


def _stale_extended(c: RawClient, case: Stale) -> list[bytes]:
    c.send(
        m.parse("", case.away), m.bind_no_params(), m.execute(),
        m.parse("", case.probe), m.bind_no_params(), m.execute(), m.SYNC,
    )  # fmt: skip
    return c.frames_until_ready()


def _stale_prepared(c: RawClient, case: Stale) -> list[bytes]:
    c.send(m.parse("r23_stale", case.probe), m.SYNC)
    frames = c.frames_until_ready()
    frames += c.query(case.away)
    c.send(m.bind_no_params(statement="r23_stale"), m.execute(), m.SYNC)
    return frames + c.frames_until_ready()


def _stale_sql_prepare(c: RawClient, case: Stale) -> list[bytes]:
    frames = c.query(f"PREPARE r23_stale_p AS {case.probe}")
    frames += c.query(case.away)
    return frames + c.query("EXECUTE r23_stale_p")


STALE_MODES = {
    "simple": _stale_simple,
    "extended": _stale_extended,
    "prepared": _stale_prepared,
    "sql_prepare": _stale_sql_prepare,
}


def test_stale_snapshot_preconditions(px, pg):
    """Directly, ``away`` makes each probe show its marker; through the proxy, with nothing
    changed, the probe is allowed (and harmless), and the plain way to the marker refused:
    the call by name, the filter on a view that is no barrier."""
    for case in STALE.values():
        try:
            with RawClient.direct(pg) as c:
                got = planted.text(c.query(f"{case.away}; {case.probe}"))
        finally:
            pg.psql(case.back, db="app")
        assert shows(got, R[case.key]), (case.probe, got[-300:])
    for case in STALE.values():
        _undo(px, pg, case)
    called = planted.received(px, "SELECT public.r23_pin(o) FROM public.r23_cf o",
                              token=px.tokens["cf"])  # fmt: skip
    planted.assert_denied(called, "public.r23_pin(o)")
    plain = planted.received(px, "SELECT owner, pin FROM public.r23_nbv WHERE pin::int > 0",
                             token=px.tokens["bv"])  # fmt: skip
    planted.assert_denied(plain, "public.r23_nbv")
    assert not leaked("".join([*called.values(), *plain.values()]))


# Both leaked until session 19, in all four modes. "column": policy.catalog.attribute_calls
# took o.r23_pin for a column of public.r23_cf because the snapshot (loaded before the
# statement's DDL ran) still listed it; after ALTER TABLE ... RENAME COLUMN (ddl alone) in
# the same Query, the same pipeline, or before the Bind/EXECUTE of a statement prepared
# while the column existed, PostgreSQL resolved it as the call public.r23_pin(o), which
# reads secret.r23_vault. Now the columns a DDL renames or drops are gone from the snapshot
# at once, for the rest of its message too, until a load that started after its
# transaction ended (CatalogCache.settle), and a prepared statement is decided again at its
# first Bind or EXECUTE after the catalog changed (StatementPolicy.catalog_changed).
# "barrier": ALTER VIEW ... SET (security_barrier = false) let a statement decided while
# the view was a barrier filter the rows it hides (22P02 quoted another owner's pin);
# lowering a barrier is refused now (pgparse._lowers_a_barrier).


@pytest.mark.parametrize("name", list(STALE))
def test_ddl_in_the_same_message_does_not_outrun_the_snapshot(px, pg, name):
    case = STALE[name]
    bad = {}
    for mode, run in STALE_MODES.items():
        _undo(px, pg, case)
        try:
            with _session(px, case) as c:
                got = planted.text(run(c, case))
                c.query("DEALLOCATE ALL")
        finally:
            _undo(px, pg, case)
        if leaked(got):
            bad[mode] = got[-300:]
    assert not bad, ("LEAK", sorted(bad), bad)


def test_a_statement_another_session_prepared_is_decided_again_after_the_ddl(px, pg):
    """Session 19: a statement one session prepared while r23_pin was a column, bound after
    another session of the worker renamed it: the server analyses it again (a call now), so
    the proxy decides it again at that Bind, without a statement of its own in between."""
    case = STALE["column"]
    _undo(px, pg, case)
    try:
        with _session(px, case) as other, _session(px, case) as renamer:
            other.send(m.parse("r23_other", case.probe), m.SYNC)
            assert b"1" in [f[:1] for f in other.frames_until_ready()]  # ParseComplete
            renamer.query(case.away)
            other.send(m.bind_no_params(statement="r23_other"), m.execute(), m.SYNC)
            got = planted.text(other.frames_until_ready())
    finally:
        _undo(px, pg, case)
    assert not leaked(got), got[-300:]
    assert "42501" in got and "decided again at its Bind" in got, got[-400:]


def test_a_rename_inside_an_open_transaction_is_not_forgotten_by_a_reload(px, pg):
    """A catalog load on another connection does not see a rename its transaction has not
    committed: the column stays gone for the proxy until the block ended (ReadyForQuery
    'I') and a load started after that, however many loads ran in between."""
    case = STALE["column"]
    _undo(px, pg, case)
    try:
        with _session(px, case) as c:
            c.query("BEGIN")
            c.query(case.away)
            planted.wait_catalog_quiet(px, 1.0)  # the reload after the DDL ran, saw the old column
            got = planted.text(c.query(case.probe))
            c.query("ROLLBACK")
    finally:
        _undo(px, pg, case)  # (and the probe is allowed again once the block ended)
    assert not leaked(got), got[-300:]
    assert "42501" in got, got[-300:]


# --- 3. names of objects in a schema the grant names nothing in --------------------------

ORACLES = [
    pytest.param("SELECT pg_relation_is_publishable('secret.r23_vault')"),
    pytest.param("SELECT has_type_privilege('secret.r23_mood', 'USAGE')"),
    pytest.param("SELECT pg_get_object_address('type', '{secret.r23_mood}', '{}')"),
    pytest.param("SELECT to_tsvector('secret.r23_cfg', 'calm')"),
]


def test_oracles_are_valid_probes(pg):
    for param in ORACLES:
        sql = param.values[0]
        with RawClient.direct(pg) as c:
            present = planted.result(c.query(sql))
            absent = planted.result(c.query(sql.replace("r23_", "r23_absent_")))
        assert not present.startswith("error"), (sql, present)
        assert absent.startswith("error"), (sql, absent)


@pytest.mark.parametrize("sql", ORACLES, ids=[p.values[0][7:40] for p in ORACLES])
def test_names_in_unnamed_schemas_are_refused(px, sql):
    planted.assert_denied(planted.received(px, sql), sql)


# --- held: DDL and utilities reaching what the grant does not name ------------------------

HELD = [
    # (grant, sql)
    ("ddl", "ALTER TABLE public.r23_mine SET SCHEMA secret"),
    ("ddl", "ALTER TABLE public.r23_mine ADD COLUMN vid int REFERENCES secret.r23_vault(id)"),
    (
        "ddl",
        "ALTER TABLE public.r23_mine ADD CONSTRAINT r23_fk FOREIGN KEY (id) "
        "REFERENCES secret.r23_vault(id)",
    ),
    ("ddl", "CREATE STATISTICS secret.r23_st ON id, v FROM public.r23_mine"),
    ("ddl", "CREATE INDEX CONCURRENTLY r23_i ON secret.r23_vault (val)"),
    ("ddl", "REFRESH MATERIALIZED VIEW secret.r23_mv"),
    ("ddl", "REFRESH MATERIALIZED VIEW CONCURRENTLY secret.r23_mv"),
    (
        "ddl",
        "CREATE RULE r23_r AS ON INSERT TO public.r23_mine DO ALSO DELETE FROM secret.r23_vault",
    ),
    ("ddl", "CREATE PUBLICATION r23_pub FOR TABLE secret.r23_vault"),
    ("ddl", "SECURITY LABEL ON TABLE secret.r23_vault IS 'x'"),
    ("ddl", "CREATE POLICY r23_p ON secret.r23_vault USING (true)"),
    ("ddl", "ALTER SEQUENCE secret.r23_seq OWNED BY public.r23_mine.id"),
    ("ddl", "ALTER TABLE public.r23_mine RENAME TO r23_vault"),
    ("ddl", "ALTER TABLE public.r23_mine ALTER COLUMN v SET DEFAULT currval('secret.r23_seq')"),
    ("base", "DECLARE r23_c CURSOR WITH HOLD FOR SELECT val FROM secret.r23_vault"),
    ("base", "SELECT cursor_to_xml('r23_c', 10, false, false, '')"),
    ("base", "SELECT pg_notify('r23_ch', 'x')"),
    ("base", "NOTIFY r23_ch, 'x'"),
    ("base", "LISTEN r23_ch"),
    (
        "base",
        "COPY public.r23_orders FROM STDIN WHERE id = (SELECT count(*) FROM secret.r23_vault)",
    ),
    ("base", 'SELECT * FROM U&"secret".r23_vault'),
    ("base", "SELECT e'\\\\' ; SELECT val FROM secret.r23_vault --'"),
]


@pytest.mark.parametrize(("grant", "sql"), HELD, ids=[f"{i:02d}" for i in range(len(HELD))])
def test_held_statements_are_refused(px, grant, sql):
    got = planted.received(px, sql, token=px.tokens[grant])
    planted.assert_denied(got, sql)
    assert not leaked("".join(got.values()))


def test_held_statements_changed_nothing(px, pg):
    """Run after the refusals above: the server shows none of their effects."""
    got = pg.psql(
        "SELECT (SELECT count(*) FROM pg_class WHERE relname = 'r23_mine' "
        "AND relnamespace = 'public'::regnamespace) || ',' || "
        "(SELECT count(*) FROM pg_statistic_ext WHERE stxname = 'r23_st') || ',' || "
        "(SELECT count(*) FROM pg_publication WHERE pubname = 'r23_pub') || ',' || "
        "(SELECT count(*) FROM pg_rewrite WHERE rulename = 'r23_r') || ',' || "
        "(SELECT count(*) FROM pg_policy WHERE polname = 'r23_p') || ',' || "
        "(SELECT count(*) FROM pg_constraint WHERE conname = 'r23_fk') || ',' || "
        "(SELECT count(*) FROM pg_class WHERE relname = 'r23_i') || ',' || "
        "(SELECT count(*) FROM pg_depend WHERE objid = 'secret.r23_seq'::regclass "
        "AND deptype = 'a') || ',' || (SELECT count(*) FROM secret.r23_vault)",
        db="app",
    ).strip()  # fmt: skip
    assert got == f"1,0,0,0,0,0,0,0,{len(VAULT_ID)}", got
