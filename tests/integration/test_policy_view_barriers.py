"""Views that hide rows are walls only as security barriers: the server as the judge.

A grant may name a view over a table it may not read (``read:public.my_accounts``, a view
``SELECT id, pin FROM hidden.accounts WHERE <only mine>``). PostgreSQL flattens a view
that is not a ``security_barrier`` into the statement reading it and orders the
conditions by cost: a cheap condition of the statement's own (``WHERE pin::int > 0``)
runs before the view's costlier one, on the rows the view hides, and the cast's error
quotes their value (``invalid input syntax for type integer: "<secret>"``). Every probe
here leaked the planted secret over the simple and the extended protocol before the
policy refused such views (``test_the_view_leaks_when_asked_directly`` shows the server
doing it to the proxy's own upstream login).

The policy now refuses a statement naming a view that hides rows of a relation the
grant may not read unless the view is a security barrier, through nested views too
(``policy.catalog.view_exposure``, ``pgparse.view_hides_rows``); views that hide no rows,
barrier views and views over readable relations stay readable.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support import planted
from tests.support.pg import direct_dsn
from tests.support.planted import assert_no_leak, received
from tests.support.rawpg import UPSTREAM_USER

pytestmark = pytest.mark.timeout(180)

SECRET = "vb-hidden-secret-5d2e"
MINE = "4242"
# A filter costlier than the probes' casts: PostgreSQL runs the cheaper condition first.
ONLY_MINE = "lower(upper(lower(owner))) = 'me'"
SETUP = f"""
CREATE SCHEMA vb_hidden;
CREATE TABLE vb_hidden.accounts (id int, owner text, pin text);
INSERT INTO vb_hidden.accounts VALUES (1, 'me', '{MINE}'), (2, 'other', '{SECRET}');
CREATE TABLE public.vb_shared (id int, pin text);
INSERT INTO public.vb_shared VALUES (1, '{MINE}'), (2, '{SECRET}');
CREATE VIEW public.vb_mine AS SELECT id, pin FROM vb_hidden.accounts WHERE {ONLY_MINE};
CREATE VIEW public.vb_mine_barrier WITH (security_barrier = on) AS
    SELECT id, pin FROM vb_hidden.accounts WHERE {ONLY_MINE};
CREATE VIEW public.vb_ids AS SELECT id FROM vb_hidden.accounts;
CREATE VIEW public.vb_over_mine AS SELECT id, pin FROM public.vb_mine;
CREATE VIEW public.vb_joined AS
    SELECT a.id, a.pin FROM vb_hidden.accounts a JOIN public.vb_shared s USING (id);
CREATE VIEW public.vb_barrier_over_mine WITH (security_barrier) AS SELECT id, pin FROM public.vb_mine;
CREATE VIEW public.vb_shared_mine AS SELECT id, pin FROM public.vb_shared WHERE id = 1;
ALTER SCHEMA vb_hidden OWNER TO {UPSTREAM_USER};
ALTER TABLE vb_hidden.accounts OWNER TO {UPSTREAM_USER};
"""
SETUP += f"""
CREATE FUNCTION public.vb_rows() RETURNS TABLE (id int, pin text) LANGUAGE sql STABLE
    AS $$ SELECT id, pin FROM vb_hidden.accounts WHERE {ONLY_MINE} $$;
CREATE FUNCTION public.vb_rows_atomic() RETURNS TABLE (id int, pin text) LANGUAGE sql STABLE
    BEGIN ATOMIC SELECT id, pin FROM vb_hidden.accounts WHERE {ONLY_MINE}; END;
CREATE FUNCTION public.vb_rows_volatile() RETURNS TABLE (id int, pin text) LANGUAGE sql
    AS $$ SELECT id, pin FROM vb_hidden.accounts WHERE {ONLY_MINE} $$;
CREATE FUNCTION public.vb_rows_of_view() RETURNS TABLE (id int, pin text) LANGUAGE sql STABLE
    AS $$ SELECT id, pin FROM public.vb_ids JOIN public.vb_shared USING (id) $$;
"""
FUNCTIONS = ("vb_rows()", "vb_rows_atomic()", "vb_rows_volatile()", "vb_rows_of_view()")
VIEWS = ("vb_mine", "vb_mine_barrier", "vb_ids", "vb_over_mine", "vb_joined",
         "vb_barrier_over_mine", "vb_shared_mine")  # fmt: skip
SETUP += "".join(f"ALTER VIEW public.{v} OWNER TO {UPSTREAM_USER};\n" for v in VIEWS)
SETUP += f"ALTER TABLE public.vb_shared OWNER TO {UPSTREAM_USER};\n"
SETUP += "".join(f"ALTER FUNCTION public.{f} OWNER TO {UPSTREAM_USER};\n" for f in FUNCTIONS)
TEARDOWN = (
    "".join(f"DROP VIEW IF EXISTS public.{v} CASCADE;" for v in VIEWS)
    + "".join(f"DROP FUNCTION IF EXISTS public.{f};" for f in FUNCTIONS)
    + "DROP TABLE IF EXISTS public.vb_shared; DROP SCHEMA IF EXISTS vb_hidden CASCADE;"
)
SCOPES = ("read:" + ",".join(f"public.{v}" for v in VIEWS) + ",public.vb_shared execute:"
          + ",".join(f"public.{f[:-2]}" for f in FUNCTIONS))  # fmt: skip


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "viewbarriers", agent="vb-bot", scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


LEAKY = [
    "SELECT * FROM public.vb_mine WHERE pin::int > 0",
    "SELECT * FROM public.vb_mine WHERE pin::numeric > 0",
    "SELECT count(*) FROM public.vb_mine WHERE pin::int > 0",
    "SELECT * FROM vb_mine m WHERE m.pin::int = 1",
    "SELECT * FROM public.vb_mine JOIN (SELECT 1) z ON pin::int > 0",
    "SELECT id FROM public.vb_over_mine WHERE pin::int > 0",
    "SELECT id FROM public.vb_joined WHERE pin::int > 0",
    # a SQL function PostgreSQL inlines is a view without a barrier
    "SELECT * FROM public.vb_rows() WHERE pin::int > 0",
    "SELECT * FROM vb_rows() r WHERE r.pin::int > 0",
    "SELECT * FROM public.vb_rows_atomic() WHERE pin::int > 0",
]


ORACLE = "SELECT * FROM public.vb_mine WHERE 1 / (CASE WHEN pin LIKE '{prefix}%' THEN 0 ELSE 1 END) = 1"


def test_the_view_leaks_when_asked_directly(px, pg):
    """The server, asked as the proxy's upstream login, quotes a hidden row: every probe
    below could leak. The barrier view does not."""
    with psycopg.connect(direct_dsn(pg), autocommit=True) as conn:
        for sql in LEAKY:
            with pytest.raises(psycopg.errors.InvalidTextRepresentation) as err:
                conn.execute(sql).fetchall()
            assert SECRET in str(err.value), sql
        # and a yes/no question about the hidden rows: an error answers yes
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute(ORACLE.format(prefix="vb-hidden")).fetchall()
        assert conn.execute(ORACLE.format(prefix="nothing-like-it")).fetchall() == [(1, MINE)]
        with pytest.raises(psycopg.errors.DataError) as err:
            conn.execute("SELECT * FROM public.vb_mine_barrier WHERE pin::date IS NULL").fetchall()
        assert SECRET not in str(err.value) and MINE in str(err.value)


@pytest.mark.parametrize("sql", [*LEAKY, ORACLE.format(prefix="vb-hidden")])
def test_a_view_hiding_rows_without_a_barrier_is_refused(px, sql):
    got = received(px, sql)
    assert_no_leak(got, [SECRET], sql)
    for mode, text in got.items():
        assert "42501" in text and ("security barrier" in text or "inline" in text), (
            mode, sql, text[-400:])


@pytest.mark.parametrize("sql", [
    "SELECT * FROM public.vb_mine_barrier WHERE pin::int > 0",
    "SELECT * FROM public.vb_barrier_over_mine WHERE pin::int > 0",
])  # fmt: skip
def test_a_barrier_view_keeps_the_hidden_rows_out_of_reach(px, sql):
    """Allowed: PostgreSQL runs the view's condition first, so the cast meets only the
    row it shows, and that row comes back."""
    got = received(px, sql)
    assert_no_leak(got, [SECRET], sql)
    for mode, text in got.items():
        assert "ERROR" not in text and MINE in text, (mode, sql, text[-400:])


def test_a_function_postgresql_does_not_inline_is_not_refused(px, pg):
    """VOLATILE: run on its own, its WHERE first: the caller's row only, through the proxy
    too. A function over relations the grant reads (vb_ids hides no rows, vb_shared is
    granted, its second row holds the marker too) is inlined and allowed: what a condition
    meets there, the grant may read anyway."""
    sql = "SELECT * FROM public.vb_rows_volatile() WHERE pin::int > 0"
    with psycopg.connect(direct_dsn(pg), autocommit=True) as conn:
        assert conn.execute(sql).fetchall() == [(1, MINE)]
    for mode, text in received(px, sql).items():
        assert "ERROR" not in text and MINE in text, (mode, text[-400:])
    sql = "SELECT * FROM public.vb_rows_of_view() WHERE pin::int > 0"
    for mode, text in received(px, sql).items():
        assert "42501" not in text and "22P02" in text, (mode, text[-400:])


@pytest.mark.parametrize("sql, shown", [
    ("SELECT id FROM public.vb_ids WHERE id::text::int > 0 ORDER BY id", "2"),
    ("SELECT pin FROM public.vb_shared_mine WHERE pin::int > 0", MINE),
    ("SELECT pin FROM public.vb_mine_barrier", MINE),
])  # fmt: skip
def test_views_that_hide_nothing_unreadable_stay_readable(px, sql, shown):
    """A view hiding no rows (columns left out), one over a relation the grant reads
    anyway, and a barrier view: rows come back."""
    got = received(px, sql)
    for mode, text in got.items():
        assert "ERROR" not in text and shown in text, (mode, sql, text[-400:])


def test_the_barrier_the_message_names_closes_it(px, pg, tmp_path_factory):
    """Made a barrier (as the message says), the view is readable from the next catalog
    load (a proxy started now), and the server keeps the hidden row out of reach."""
    sql = "SELECT * FROM public.vb_over_mine WHERE pin::int > 0"
    assert "security barrier" in received(px, sql)["simple"]
    pg.psql("ALTER VIEW public.vb_over_mine SET (security_barrier = true)", db="app")
    try:
        with planted.running(pg, tmp_path_factory, "viewbarriers2", agent="vb-bot", scopes=SCOPES,
                             setup="SELECT 1", teardown="SELECT 1") as handle:  # fmt: skip
            got = received(handle, sql)
    finally:
        pg.psql("ALTER VIEW public.vb_over_mine RESET (security_barrier)", db="app")
    assert_no_leak(got, [SECRET], sql)
    for mode, text in got.items():
        assert "ERROR" not in text and MINE in text, (mode, text[-400:])
