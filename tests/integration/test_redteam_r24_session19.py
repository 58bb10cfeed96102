"""Red-team round 24: this session's changes (session 19), with the server as the judge.

Attacked: inheritance children followed (eec970b), function definitions needing execute
(36f0219), lowering a barrier refused (ee34c02), names given as text decided (82407f8), and
decisions DDL outruns (f905179, f5a599d).

Grants (agent ``r24-bot``) name tables in ``public``; planted by the schema owner
(``pgwitness``, the proxy's upstream login) outside every grant: a secret inheritance child
of a granted table (``secret.r24_kid``, ``secret.r24_deep`` two levels down,
``secret.r24_rakid``), a function reading a marker named like a column
(``public.r24_pin(public.r24_cf2)``), another owner's row behind a barrier view
(``secret.r24_acc``), and objects of schema ``secret`` for name oracles. Each marker probe
runs directly as the upstream login first (the server shows its marker), then through the
proxy by a raw client: no byte received may hold a marker. Leaks are
``xfail(strict=True, raises=AssertionError, reason="LEAK: ...")``.

Leaks found:

1. A relation renamed through the proxy keeps its old name in the catalog snapshot until a
   load after the rename committed: ``_after_definitions`` and ``CatalogCache.invalidate``
   follow the functions a DDL defines and the columns it renames or drops
   (``pgparse.removed_columns``), not ``ALTER TABLE/VIEW ... RENAME TO`` (nor ``SET
   SCHEMA``), and a load during the renaming transaction cannot see it. So the rest of
   the message, the rest of the pipeline, every statement of the open transaction and a
   statement prepared before and decided again at its Bind (``_decided_again``, on that
   snapshot) are decided on the old names:

   * inheritance: ``ALTER TABLE ONLY public.r24_ra RENAME TO r24_rb`` (ONLY: the rename
     does not recurse, so ``_through_inheritance`` asks nothing of the child) and ``SELECT
     v FROM public.r24_rb``, a name the snapshot gives no descendants, returns the rows of
     ``secret.r24_rakid`` (the same grant is refused ``SELECT v FROM public.r24_ra``);
   * column syntax: ``public.r24_cf`` renamed away and ``public.r24_cf2`` renamed onto its
     name, ``o.r24_pin`` is still a column to the snapshot, and PostgreSQL calls
     ``public.r24_pin(o)`` (no execute scope), which returns its marker;
   * security barriers: the barrier view renamed away and a view hiding the same rows
     without a barrier renamed onto its name, ``WHERE pin::int > 0`` runs on another
     owner's row (22P02 quotes it).

2. Lowering a barrier is refused by the reading of the value, but the decision is
   fingerprint-cached: once ``ALTER VIEW v SET (security_barrier = 'true')`` was allowed
   (by any session of the worker: the shared fingerprint cache keeps its classification,
   and the lowering check is part of the classification), ``... = 'false'`` (a string
   literal: the fingerprint and ``token_signature`` leave its value out) is a hit, allowed
   without being read, and the statement after it (same Query, a later Query, a statement
   prepared before and decided again at its Bind) filters the rows the view hides.
   ``pgparse._lowers_a_barrier`` depends on a literal without marking the statement
   uncacheable (``pgparse.LITERAL``). A pipelined Parse is not fingerprint-decided
   (``_check_parse_text``) and holds.

3. Name oracles the session-19 list misses (names and OIDs, no values: lower severity):
   a named-notation argument (``pg_get_object_address(object_args => ..., object_names =>
   '{secret,t}', type => 'table')``, ``pg_partition_tree(rootrelid => 'secret.t')``:
   ``_name_argument_schemas`` takes arguments by position and skips a ``NamedArgExpr``),
   and a name literal cast to a reg* type through a text type
   (``'secret.t'::text::regclass``: the cast of a literal is decided, the cast of a cast is
   not).

Held (regression tests below): every way tried of reaching a child through its parent
(subqueries, CTEs, LATERAL, ``TABLE``, ``t*``, a catalog-qualified name, MERGE with a WHEN
condition or an INSERT only, ``DELETE ... USING``, ``UPDATE ... FROM``, ``INSERT ... SELECT``,
``COPY (query)``, ``CREATE TABLE AS``, ``EXPLAIN ANALYZE``, cursors, ``FOR UPDATE``,
``UPDATE ... RETURNING``, ``ALTER TABLE ... ADD CHECK``, ``CREATE VIEW``, multi-level
inheritance, ``ONLY`` cached before the same text without it), ``INHERIT``/``NO
INHERIT``; code reached with ddl alone (``CREATE OR REPLACE AGGREGATE`` with another
``SFUNC``, ``ALTER FUNCTION ... SET search_path``, ``CREATE OR REPLACE FUNCTION/PROCEDURE``);
every spelling of lowering a barrier not primed by the cache (quoted, upper-case and
namespaced option names, ``RESET``, several options, ``ALTER TABLE``, ``CREATE OR REPLACE
VIEW`` without the option); ``ALTER TYPE ... RENAME ATTRIBUTE`` and a composite field's
column syntax; ``PREPARE`` then a column rename and ``EXECUTE`` in one message; the unnamed
statement Bound after a rename.
"""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.planted import shows
from tests.support.rawpg import RawClient

pytestmark = pytest.mark.timeout(180)

AGENT = "r24-bot"
SCOPES = "read:public.r24_orders write:public.r24_orders"
GRANTS = {
    "inh": "read:public.r24_par write:public.r24_par ddl:public.r24_par",
    "multi": "read:public.r24_top read:public.r24_mid",
    "pv": "read:public.r24_par read:public.r24_pv ddl:public.r24_pv",
    "kid": "read:public.r24_par ddl:public.r24_mine",
    "ren": "read:public.r24_ra ddl:public.r24_ra read:public.r24_rb ddl:public.r24_rb",
    "swap": "read:public.r24_cf ddl:public.r24_cf read:public.r24_cf2 ddl:public.r24_cf2 "
    "read:public.r24_cfx ddl:public.r24_cfx",
    "bvs": "read:public.r24_bv ddl:public.r24_bv ddl:public.r24_nbv ddl:public.r24_bvx",
    "bv": "read:public.r24_bv ddl:public.r24_bv",
    "hv": "read:public.r24_hv ddl:public.r24_hv",
    "ct": "read:public.r24_ct ddl:public.r24_comp",
    "rc": "read:public.r24_rc ddl:public.r24_rc",
    "fsp": "read:public.r24_v2 ddl:public.r24_fmt2",
    "agg": "read:public.r24_av ddl:public.r24_agg",
}

R = {  # markers: must never come back through the proxy
    "kid": "r24-kidval-7e01",
    "deep": "r24-deepval-7e02",
    "rakid": "r24-rakidval-7e03",
    "swap": "r24-swapval-7e04",
    "ct": "r24-ctval-7e05",
    "rc": "r24-rcval-7e06",
    "fsp": "r24-fspval-7e07",
    "agg": "r24-aggval-7e08",
    "barrier": "r24-barrierval-7e09",
}
SECRETS = list(R.values())
ONLY_MINE = "lower(upper(lower(owner))) = 'me'"  # dearer than the probe's cast: runs later
HIDDEN = f"SELECT owner, pin FROM secret.r24_acc WHERE {ONLY_MINE}"

SETUP = f"""
SET ROLE pgwitness;
CREATE TABLE public.r24_orders (id int PRIMARY KEY, note text);
INSERT INTO public.r24_orders VALUES (1, 'r24-ok');
-- 1. inheritance: a secret child, a secret grandchild, a parent to rename
CREATE TABLE public.r24_par (id int, v text);
INSERT INTO public.r24_par VALUES (1, 'r24-par-ok');
CREATE TABLE secret.r24_kid (extra text) INHERITS (public.r24_par);
INSERT INTO secret.r24_kid VALUES (2, '{R["kid"]}', 'x');
CREATE TABLE public.r24_top (id int, v text);
CREATE TABLE public.r24_mid () INHERITS (public.r24_top);
CREATE TABLE secret.r24_deep () INHERITS (public.r24_mid);
INSERT INTO secret.r24_deep VALUES (3, '{R["deep"]}');
CREATE TABLE public.r24_ra (id int, v text);
CREATE TABLE secret.r24_rakid () INHERITS (public.r24_ra);
INSERT INTO secret.r24_rakid VALUES (4, '{R["rakid"]}');
CREATE TABLE public.r24_mine (id int, v text);
-- column syntax: o.r24_pin is a column of r24_cf, a call on a row of r24_cf2
CREATE TABLE public.r24_cf (id int, r24_pin text);
INSERT INTO public.r24_cf VALUES (1, 'r24-ok-cf');
CREATE TABLE public.r24_cf2 (id int);
INSERT INTO public.r24_cf2 VALUES (1);
CREATE FUNCTION public.r24_pin(r public.r24_cf2) RETURNS text LANGUAGE sql
  AS $$ SELECT '{R["swap"]}'::text $$;
CREATE TYPE public.r24_comp AS (r24_cpin text);
CREATE TABLE public.r24_ct (id int, c public.r24_comp);
INSERT INTO public.r24_ct VALUES (1, ROW('r24-ok-ct'));
CREATE FUNCTION public.r24_cpin(r public.r24_comp) RETURNS text LANGUAGE sql
  AS $$ SELECT '{R["ct"]}'::text $$;
CREATE TABLE public.r24_rc (id int, r24_rpin text);
INSERT INTO public.r24_rc VALUES (1, 'r24-ok-rc');
CREATE FUNCTION public.r24_rpin(r public.r24_rc) RETURNS text LANGUAGE sql
  AS $$ SELECT '{R["rc"]}'::text $$;
-- 2. code granted views already call
CREATE TABLE public.r24_lab (k text, label text);
INSERT INTO public.r24_lab VALUES ('a', 'r24-ok-lab');
CREATE TABLE secret.r24_lab (k text, label text);
INSERT INTO secret.r24_lab VALUES ('a', '{R["fsp"]}');
CREATE FUNCTION public.r24_fmt2(t text) RETURNS text LANGUAGE sql
  AS $$ SELECT label FROM r24_lab WHERE k = t $$;
CREATE VIEW public.r24_v2 AS SELECT id, public.r24_fmt2('a') AS note FROM public.r24_orders;
CREATE FUNCTION public.r24_oksf(s text, x text) RETURNS text LANGUAGE sql
  AS $$ SELECT coalesce(s, '') || x $$;
CREATE FUNCTION public.r24_leaksf(s text, x text) RETURNS text LANGUAGE sql
  AS $$ SELECT '{R["agg"]}'::text $$;
CREATE AGGREGATE public.r24_agg(text) (SFUNC = public.r24_oksf, STYPE = text);
CREATE VIEW public.r24_av AS SELECT public.r24_agg(note) AS note FROM public.r24_orders;
-- 3. barrier views hiding another owner's row, and one hiding it without a barrier
CREATE TABLE secret.r24_acc (owner text, pin text);
INSERT INTO secret.r24_acc VALUES ('me', '73917391'), ('other', '{R["barrier"]}');
CREATE VIEW public.r24_bv WITH (security_barrier = true) AS {HIDDEN};
CREATE VIEW public.r24_hv WITH (security_barrier = true) AS {HIDDEN};
CREATE VIEW public.r24_nbv AS {HIDDEN};
-- 4. objects of a schema the grants name nothing in
CREATE TABLE secret.r24_vault (id int PRIMARY KEY, val text);
CREATE TYPE secret.r24_mood AS ENUM ('calm');
RESET ROLE;
"""
TEARDOWN = """
DROP VIEW IF EXISTS public.r24_bv, public.r24_hv, public.r24_nbv, public.r24_bvx,
  public.r24_av, public.r24_v2, public.r24_pv;
DROP TABLE IF EXISTS secret.r24_acc, secret.r24_vault, secret.r24_lab, public.r24_lab;
DROP AGGREGATE IF EXISTS public.r24_agg(text);
DROP FUNCTION IF EXISTS public.r24_oksf(text, text), public.r24_leaksf(text, text),
  public.r24_fmt2(text);
DROP TABLE IF EXISTS public.r24_rc, public.r24_ct, public.r24_cf, public.r24_cf2,
  public.r24_cfx CASCADE;
DROP TYPE IF EXISTS public.r24_comp CASCADE;
DROP TABLE IF EXISTS public.r24_ra, public.r24_rb, public.r24_top, public.r24_par,
  public.r24_mine, public.r24_orders CASCADE;
DROP TYPE IF EXISTS secret.r24_mood;
"""


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r24s19", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN, grants=GRANTS) as handle:  # fmt: skip
        yield handle


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if shows(text, s)]


# --- 1. inheritance: every way through a parent to its children ---------------------------

INHERITED = [
    # (grant, sql): each reaches a secret child directly; the proxy refuses it
    ("inh", "SELECT v FROM public.r24_par"),
    ("inh", "SELECT b.v FROM ONLY public.r24_par a, public.r24_par b"),
    ("inh", "WITH x AS (SELECT v FROM public.r24_par) SELECT v FROM x"),
    ("inh", "SELECT (SELECT string_agg(v, ',') FROM r24_par)"),
    ("inh", "SELECT v FROM PUBLIC.R24_PAR*"),
    ("inh", "SELECT v FROM app.public.r24_par"),
    ("inh", "TABLE public.r24_par"),
    (
        "inh",
        "SELECT * FROM ONLY public.r24_par p, "
        "LATERAL (SELECT v FROM public.r24_par q WHERE q.id > p.id) l",
    ),  # fmt: skip
    (
        "inh",
        "MERGE INTO public.r24_par p USING (VALUES (2)) s(i) ON p.id = s.i "
        "WHEN MATCHED AND p.v::int > 0 THEN DO NOTHING",
    ),  # fmt: skip
    (
        "inh",
        "UPDATE ONLY public.r24_par SET v = k.v FROM public.r24_par k WHERE k.id = 2 "
        "RETURNING r24_par.v",
    ),  # fmt: skip
    ("inh", "INSERT INTO public.r24_par SELECT id, v FROM public.r24_par RETURNING v"),
    ("inh", "COPY (SELECT v FROM public.r24_par) TO STDOUT"),
    ("inh", "EXPLAIN ANALYZE SELECT v::int FROM public.r24_par WHERE id = 2"),
    ("inh", "UPDATE public.r24_par SET v = v RETURNING v"),
    ("inh", "SELECT tableoid::regclass, v FROM public.r24_par"),
    ("multi", "SELECT v FROM public.r24_top"),
    ("multi", "SELECT v FROM public.r24_mid"),
]
INHERITED_QUIET = [
    # reach a child without showing its values here (a count, a copy, a definition): refused
    ("inh", "SELECT count(*) FROM public.r24_par"),
    (
        "inh",
        "MERGE INTO public.r24_par p USING (VALUES (2)) s(i) ON p.id = s.i "
        "WHEN NOT MATCHED THEN INSERT VALUES (9, 'x')",
    ),  # fmt: skip
    ("inh", "DELETE FROM ONLY public.r24_par USING public.r24_par k WHERE k.v::int > 0"),
    ("inh", "CREATE TEMP TABLE r24_t AS SELECT v FROM public.r24_par"),
    ("inh", "DECLARE r24_c CURSOR WITH HOLD FOR SELECT v FROM public.r24_par"),
    ("inh", "SELECT v FROM public.r24_par LIMIT 1 FOR UPDATE"),
    ("inh", "ALTER TABLE public.r24_par ADD CONSTRAINT r24_chk CHECK (v::int > 0)"),
    ("pv", "CREATE VIEW public.r24_pv AS SELECT v FROM public.r24_par"),
    ("kid", "ALTER TABLE public.r24_mine INHERIT public.r24_par"),
    ("kid", "ALTER TABLE secret.r24_kid NO INHERIT public.r24_par"),
]


def test_inherited_probes_reach_their_children_directly(px, pg):
    silent = []
    for grant, sql in INHERITED:
        with RawClient.direct(pg) as c:
            c.query("BEGIN")
            got = planted.text(c.query(sql))
            c.query("ROLLBACK")
        if not leaked(got):
            silent.append((grant, sql, got[-200:]))
    assert not silent, silent


@pytest.mark.parametrize(("grant", "sql"), INHERITED + INHERITED_QUIET,
                         ids=[f"{i:02d}" for i in range(len(INHERITED + INHERITED_QUIET))])  # fmt: skip
def test_a_parent_without_only_is_refused(px, grant, sql):
    got = planted.received(px, sql, after=("ROLLBACK", "CLOSE ALL"), token=px.tokens[grant])
    planted.assert_denied(got, sql)
    assert not leaked("".join(got.values()))


def test_only_reads_the_parent_alone_and_its_cached_decision_is_not_reused(px):
    """``FROM ONLY`` is allowed; the same text without ONLY, decided after it (the
    fingerprint keeps the keyword), is refused."""
    with planted.session(px, px.tokens["inh"]) as c:
        alone = planted.text(c.query("SELECT v FROM ONLY public.r24_par WHERE id = 1"))
        whole = planted.text(c.query("SELECT v FROM public.r24_par WHERE id = 2"))
    assert "r24-par-ok" in alone, alone[-300:]
    assert "42501" in whole and not leaked(whole), whole[-300:]


def test_inheritance_held_changed_nothing(px, pg):
    got = pg.psql(
        "SELECT (SELECT count(*) FROM pg_inherits WHERE inhrelid = 'public.r24_mine'::regclass)"
        " || ',' || (SELECT count(*) FROM pg_inherits WHERE inhrelid = 'secret.r24_kid'::regclass)"
        " || ',' || (SELECT count(*) FROM pg_class WHERE relname = 'r24_pv')"
        " || ',' || (SELECT count(*) FROM pg_constraint WHERE conname = 'r24_chk')"
        " || ',' || (SELECT count(*) FROM public.r24_par)",
        db="app",
    ).strip()  # fmt: skip
    assert got == "0,1,0,0,2", got


# --- DDL the snapshot does not follow: relations renamed -----------------------------------


class Renamed:
    """``away`` (renames the grant may run) makes ``probe`` reach ``key``'s marker while the
    snapshot still has the old names; every mode runs in a transaction block it rolls back."""

    def __init__(self, grant, away, probe, key, before_ok=None):
        self.grant, self.away, self.probe, self.key, self.before_ok = (
            grant, away, probe, key, before_ok)  # fmt: skip


RENAMED = {
    # ONLY: the rename does not recurse, so it is decided on the parent alone
    "inheritance": Renamed(
        "ren",
        ("ALTER TABLE ONLY public.r24_ra RENAME TO r24_rb",),
        "SELECT v FROM public.r24_rb",
        "rakid",
    ),
    "column": Renamed(
        "swap",
        (
            "ALTER TABLE public.r24_cf RENAME TO r24_cfx",
            "ALTER TABLE public.r24_cf2 RENAME TO r24_cf",
        ),
        "SELECT o.r24_pin FROM public.r24_cf o",
        "swap",
        before_ok="r24-ok-cf",
    ),  # fmt: skip
    "barrier": Renamed(
        "bvs",
        (
            "ALTER VIEW public.r24_bv RENAME TO r24_bvx",
            "ALTER VIEW public.r24_nbv RENAME TO r24_bv",
        ),
        "SELECT owner, pin FROM public.r24_bv WHERE pin::int > 0",
        "barrier",
        before_ok="73917391",
    ),  # fmt: skip
}


_pipeline, _bind, _parse = planted.pipelined, planted.bound, planted.parsed


def _renamed_simple(c, case):
    return c.query("BEGIN") + c.query("; ".join((*case.away, case.probe)))


def _renamed_extended(c, case):
    return c.query("BEGIN") + _pipeline(c, (*case.away, case.probe))


def _renamed_in_block(c, case):
    """The probe in a later message of the block that renamed (a new named statement)."""
    frames = c.query("BEGIN") + [f for sql in case.away for f in c.query(sql)]
    return frames + _parse(c, "r24_after", case.probe) + _bind(c, "r24_after")


def _renamed_rebound(c, case):
    """Prepared (and run) before the rename, bound after it: decided again at the Bind."""
    frames = _parse(c, "r24_before", case.probe) + _bind(c, "r24_before")
    frames += c.query("BEGIN") + [f for sql in case.away for f in c.query(sql)]
    return frames + _bind(c, "r24_before")


RENAMED_MODES = {
    "simple": _renamed_simple,
    "extended": _renamed_extended,
    "in_block": _renamed_in_block,
    "rebound": _renamed_rebound,
}


def test_renames_reach_their_markers_directly(px, pg):
    for case in RENAMED.values():
        with RawClient.direct(pg) as c:
            got = planted.text(_renamed_simple(c, case))
            c.query("ROLLBACK")
        assert shows(got, R[case.key]), (case.probe, got[-300:])


def test_renamed_probes_are_refused_or_harmless_before_the_rename(px):
    """Precondition: with nothing renamed, the plain ways to the markers are refused (the
    parent without ONLY, the call by name, the filter on a view without a barrier) and the
    probes that exist are harmless."""
    for grant, sql in (
        ("ren", "SELECT v FROM public.r24_ra"),
        ("swap", "SELECT public.r24_pin(o) FROM public.r24_cf2 o"),
        ("swap", "SELECT o.r24_pin FROM public.r24_cf2 o"),
    ):  # fmt: skip
        got = planted.received(px, sql, token=px.tokens[grant])
        planted.assert_denied(got, sql)
        assert not leaked("".join(got.values()))
    for case in RENAMED.values():
        if case.before_ok is not None:
            with planted.session(px, px.tokens[case.grant]) as c:
                got = planted.text(c.query(case.probe))
            assert case.before_ok in got and not leaked(got), (case.probe, got[-300:])


# All three leaked until session 19's fix (every mode): ALTER TABLE ONLY parent RENAME TO a
# granted name was not followed by the snapshot (its descendants stayed under the old name:
# the child's rows came back); two tables swapped by RENAME TO (the snapshot still listed
# the column: PostgreSQL called public.r24_pin(o)); a view without a barrier renamed onto
# a barrier view's name (the probe's cast ran on the rows it hides). Now a relation renamed
# or moved in a transaction that may still be open is refused where what the snapshot
# knows by name decides (engine._through_renames), until a load after it ended.
@pytest.mark.parametrize("name", ["inheritance", "column", "barrier"])
def test_a_rename_does_not_outrun_the_snapshot(px, name):
    case = RENAMED[name]
    bad = {}
    for mode, run in RENAMED_MODES.items():
        if mode == "rebound" and case.before_ok is None:
            continue  # the probe names a relation that does not exist before the rename
        with planted.session(px, px.tokens[case.grant]) as c:
            try:
                got = planted.text(run(c, case))
            finally:
                c.query("ROLLBACK")
                c.query("DEALLOCATE ALL")
        if leaked(got):
            bad[mode] = got[-300:]
        assert "42501" in got, (mode, got[-300:])  # refused, not merely harmless
    assert not bad, ("LEAK", sorted(bad), bad)


# --- 2. a barrier lowered through the fingerprint cache ------------------------------------

PRIME = "ALTER VIEW public.r24_bv SET (security_barrier = 'true')"
BARRIER_PROBE = "SELECT owner, pin FROM public.r24_bv WHERE pin::int > 0"


def _lower(value: str) -> str:
    return f"ALTER VIEW public.r24_bv SET (security_barrier = '{value}')"


def _cached_simple(c):
    return c.query("BEGIN") + c.query(PRIME) + c.query(f"{_lower('false')}; {BARRIER_PROBE}")


def _cached_alone(c):
    return c.query("BEGIN") + c.query(PRIME) + c.query(_lower("no")) + c.query(BARRIER_PROBE)


def _cached_extended(c):
    return c.query("BEGIN") + c.query(PRIME) + _pipeline(c, (_lower("f"), BARRIER_PROBE))


def _cached_rebound(c):
    frames = _parse(c, "r24_bvp", BARRIER_PROBE) + _bind(c, "r24_bvp")
    frames += c.query("BEGIN") + c.query(PRIME) + c.query(_lower("off"))
    return frames + _bind(c, "r24_bvp")


def test_the_lowering_reaches_its_marker_directly(px, pg):
    with RawClient.direct(pg) as c:
        got = planted.text(c.query("BEGIN") + c.query(f"{_lower('false')}; {BARRIER_PROBE}"))
        c.query("ROLLBACK")
    assert shows(got, R["barrier"]), got[-300:]


# Leaked until session 19's fix: SET (security_barrier = 'false') was a fingerprint-cache
# hit of an allowed SET (security_barrier = 'true') (the shared fingerprint cache kept the
# classification the lowering check is part of); the barrier was lowered and the next
# statement's cast quoted another owner's pin. Now a statement naming security_barrier is
# classified afresh for every value (pgparse: LITERAL), and a lowering is refused by
# every grant, unknown:* included (decide: BARRIER_LOWERED).
def test_a_cached_raise_does_not_allow_a_lowering(px):
    bad = {}
    modes = {
        "simple": _cached_simple,
        "alone": _cached_alone,
        "rebound": _cached_rebound,
    }
    for mode, run in modes.items():
        with planted.session(px, px.tokens["bv"]) as c:
            try:
                got = planted.text(run(c))
            finally:
                c.query("ROLLBACK")
                c.query("DEALLOCATE ALL")
        if leaked(got):
            bad[mode] = got[-300:]
        assert "security_barrier" in got and "42501" in got, (mode, got[-300:])
    assert not bad, ("LEAK", sorted(bad), bad)


def test_a_cached_raise_does_not_allow_a_pipelined_lowering(px):
    """Held: a Parse is never decided by fingerprint (``_check_parse_text``), so the
    pipelined lowering is refused after the same priming."""
    with planted.session(px, px.tokens["bv"]) as c:
        try:
            got = planted.text(_cached_extended(c))
        finally:
            c.query("ROLLBACK")
    assert not leaked(got), got[-300:]
    assert "42501" in got and "security_barrier" in got, got[-300:]


LOWERINGS = [
    # on a view no cached raise primed: refused, the view keeps its barrier
    "ALTER VIEW public.r24_hv SET (security_barrier = 'f')",
    "ALTER VIEW public.r24_hv SET (security_barrier = 'of')",
    "ALTER VIEW public.r24_hv SET (security_barrier = off)",
    "ALTER VIEW public.r24_hv SET (security_barrier = 0)",
    "ALTER TABLE public.r24_hv SET (security_barrier = false)",
    "ALTER TABLE ONLY public.r24_hv SET (security_barrier = false)",
    "ALTER VIEW public.r24_hv RESET (security_barrier)",
    "ALTER VIEW IF EXISTS public.r24_hv RESET (security_barrier)",
    'ALTER VIEW public.r24_hv SET ("security_barrier" = false)',
    "ALTER VIEW public.r24_hv SET (SECURITY_BARRIER = false)",
    'ALTER VIEW public.r24_hv SET (U&"security\\005fbarrier" = false)',
    "ALTER VIEW public.r24_hv SET (check_option = local, security_barrier = false)",
    'ALTER VIEW public.r24_hv SET (security_barrier = "false")',
    "ALTER VIEW public.r24_hv SET (security_barrier = true), RESET (security_barrier)",
    "ALTER TABLE public.r24_hv RESET (security_barrier), SET (check_option = local)",
    f"CREATE OR REPLACE VIEW public.r24_hv AS {HIDDEN}",
]


@pytest.mark.parametrize("sql", LOWERINGS, ids=[f"{i:02d}" for i in range(len(LOWERINGS))])
def test_lowering_a_barrier_is_refused(px, sql):
    got = planted.received(px, f"{sql}; SELECT owner, pin FROM public.r24_hv WHERE pin::int > 0",
                           token=px.tokens["hv"])  # fmt: skip
    planted.assert_denied(got, sql)
    assert not leaked("".join(got.values()))


def test_lowerings_changed_nothing(px, pg):
    got = pg.psql(
        "SELECT array_to_string(reloptions, ',') FROM pg_class "
        "WHERE oid IN ('public.r24_hv'::regclass, 'public.r24_bv'::regclass) ORDER BY relname",
        db="app",
    ).split()  # fmt: skip
    assert got == ["security_barrier=true", "security_barrier=true"], got


# --- 3. name oracles ------------------------------------------------------------------------

# The first three answered until session 19's fix (named-notation arguments were not read
# by _name_argument_schemas; a literal cast to regclass through text was not decided): now a
# name given in named notation to such a built-in counts as a name in a schema no grant
# names, and a regclass cast through a text cast decides the literal's schema.
ORACLES = [
    pytest.param("SELECT pg_get_object_address(object_args => '{}', "
                 "object_names => '{secret,r24_vault}', type => 'table')"),
    pytest.param("SELECT pg_partition_tree(rootrelid => 'secret.r24_vault')"),
    pytest.param("SELECT 'secret.r24_vault'::text::regclass"),
    pytest.param("SELECT pg_relation_size('secret.r24_vault' COLLATE \"C\")"),
    pytest.param("SELECT pg_get_object_address('table', ARRAY['secret','r24_vault'], '{}')"),
    pytest.param("SELECT pg_relation_size($$secret.r24_vault$$)"),
    pytest.param("SELECT pg_relation_size('secret.r24_vault'::varchar(40))"),
    pytest.param("SELECT pg_relation_size(regclass 'secret.r24_vault')"),
    pytest.param("SELECT ' secret . r24_vault '::regclass"),
    pytest.param("SELECT 'app.secret.r24_vault'::regclass"),
    pytest.param("SELECT to_regtype('secret.r24_mood ARRAY[2]')"),
    pytest.param("SELECT pg_get_object_address('type', ARRAY['secret.r24_mood'], '{}')"),
]  # fmt: skip


def test_oracles_are_valid_probes(px, pg):
    for param in ORACLES:
        sql = param.values[0]
        with RawClient.direct(pg) as c:
            present = planted.result(c.query(sql))
            absent = planted.result(c.query(sql.replace("r24_", "r24_absent_")))
        assert not present.startswith("error"), (sql, present)
        assert present != absent, (sql, present, absent)


@pytest.mark.parametrize("sql", ORACLES, ids=[f"{i:02d}" for i in range(len(ORACLES))])
def test_names_in_unnamed_schemas_are_refused(px, sql):
    planted.assert_denied(planted.received(px, sql), sql)


# --- held: code reached with ddl alone, column syntax after DDL ----------------------------

CODE = [
    # (grant, away, probe, key): directly, away makes the probe show the marker
    ("fsp", "ALTER FUNCTION public.r24_fmt2(text) SET search_path = secret",
     "SELECT note FROM public.r24_v2", "fsp"),
    ("fsp", "ALTER ROUTINE public.r24_fmt2(text) SET search_path TO secret",
     "SELECT note FROM public.r24_v2", "fsp"),
    ("agg", "CREATE OR REPLACE AGGREGATE public.r24_agg(text) "
            "(SFUNC = public.r24_leaksf, STYPE = text)",
     "SELECT note FROM public.r24_av", "agg"),
    ("ct", "ALTER TYPE public.r24_comp RENAME ATTRIBUTE r24_cpin TO r24_gone",
     "SELECT (o.c).r24_cpin FROM public.r24_ct o", "ct"),
    ("ct", "ALTER TYPE public.r24_comp DROP ATTRIBUTE r24_cpin",
     "SELECT (o.c).r24_cpin FROM public.r24_ct o", "ct"),
]  # fmt: skip


def test_code_probes_reach_their_markers_directly(px, pg):
    for _grant, away, probe, key in CODE:
        with RawClient.direct(pg) as c:
            got = planted.text(c.query("BEGIN") + c.query(away) + c.query(probe))
            c.query("ROLLBACK")
        assert shows(got, R[key]), (away, got[-300:])


@pytest.mark.parametrize(("grant", "away", "probe", "key"), CODE,
                         ids=[f"{i:02d}" for i in range(len(CODE))])  # fmt: skip
def test_code_changes_with_ddl_alone_are_refused(px, grant, away, probe, key):
    got = planted.received(px, f"{away}; {probe}", token=px.tokens[grant])
    planted.assert_denied(got, away)
    assert not leaked("".join(got.values())), key


DEFINITIONS = [
    ("fsp", "CREATE OR REPLACE FUNCTION public.r24_fmt2(t text) RETURNS text LANGUAGE sql "
            "AS $$ SELECT 'x'::text $$"),
    ("fsp", "CREATE OR REPLACE PROCEDURE public.r24_fmt2() LANGUAGE sql AS $$ SELECT 1 $$"),
    ("fsp", 'CREATE FUNCTION public.r24_fmt2() RETURNS "trigger" LANGUAGE plpgsql '
            "AS $$ BEGIN RETURN NEW; END $$"),
    ("fsp", "CREATE OR REPLACE FUNCTION PUBLIC.R24_FMT2(t text) RETURNS text "
            "RETURN 'x'::text"),
]  # fmt: skip


@pytest.mark.parametrize(("grant", "sql"), DEFINITIONS,
                         ids=[f"{i:02d}" for i in range(len(DEFINITIONS))])  # fmt: skip
def test_definitions_with_ddl_alone_are_refused(px, grant, sql):
    got = planted.received(px, sql, token=px.tokens[grant])
    planted.assert_denied(got, sql)


def test_code_held_changed_nothing(px, pg):
    got = pg.psql(
        "SELECT (SELECT count(*) FROM pg_proc WHERE proname = 'r24_fmt2') || ',' || "
        "(SELECT coalesce(array_to_string(proconfig, ','), '-') FROM pg_proc "
        "WHERE oid = 'public.r24_fmt2(text)'::regprocedure) || ',' || "
        "(SELECT aggtransfn::text FROM pg_aggregate "
        "WHERE aggfnoid = 'public.r24_agg(text)'::regprocedure) || ',' || "
        "(SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.r24_comp'::regclass "
        "AND attname = 'r24_cpin' AND NOT attisdropped)",
        db="app",
    ).strip()  # fmt: skip
    assert got == "1,-,r24_oksf,1", got


def test_prepare_then_a_rename_and_execute_in_one_message_is_refused(px, pg):
    """``PREPARE`` while r24_rpin is a column, then ``RENAME COLUMN; EXECUTE`` in one Query:
    the server analyses the statement again (a call now); the proxy refuses the EXECUTE."""
    with RawClient.direct(pg) as c:
        c.query("BEGIN")
        c.query("PREPARE r24_p AS SELECT o.r24_rpin FROM public.r24_rc o")
        direct = planted.text(
            c.query("ALTER TABLE public.r24_rc RENAME COLUMN r24_rpin TO r24_gone; EXECUTE r24_p")
        )
        c.query("ROLLBACK")
    assert shows(direct, R["rc"]), direct[-300:]
    with planted.session(px, px.tokens["rc"]) as c:
        frames = c.query("BEGIN")
        frames += c.query("PREPARE r24_p AS SELECT o.r24_rpin FROM public.r24_rc o")
        frames += c.query("ALTER TABLE public.r24_rc RENAME COLUMN r24_rpin TO r24_gone; "
                          "EXECUTE r24_p")  # fmt: skip
        frames += c.query("ROLLBACK")
        frames += c.query("BEGIN")  # the unnamed statement, Bound after the rename
        frames += _parse(c, "", "SELECT o.r24_rpin FROM public.r24_rc o")
        frames += c.query("ALTER TABLE public.r24_rc RENAME COLUMN r24_rpin TO r24_gone")
        frames += _bind(c, "")
        frames += c.query("ROLLBACK")
    got = planted.text(frames)
    assert not leaked(got), got[-400:]
    assert got.count("42501") >= 2, got[-600:]
