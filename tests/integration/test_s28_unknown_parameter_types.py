"""A Parse naming a parameter type made after the proxy's catalog load (session 28), the
server the judge: psycopg makes a composite type and binds a value of it at once (the
drivers' differential: refused, "a type the proxy cannot read (made after the catalog was
loaded)"). Such a Parse now waits for a load that started after it arrived and is decided
on it: a plain type goes through, answered as the server answers it directly; a domain
whose CHECK calls a function the grant may not execute is still refused, now by name.
Sans-IO: tests/unit/test_s28_unknown_parameter_types.py."""

from __future__ import annotations

import pytest

from tests.support import planted
from tests.support.rawpg import SYNC, bind, execute, parse

pytestmark = pytest.mark.timeout(120)

AGENT = "s28-types"
SCOPES = "read:public.* write:public.* ddl:public.*"
SETUP = (
    "CREATE SCHEMA s28sec;\n"
    "CREATE FUNCTION s28sec.judge(i int) RETURNS bool LANGUAGE sql AS 'SELECT i > 0';\n"
    "GRANT USAGE ON SCHEMA s28sec TO PUBLIC;\n"
)
TEARDOWN = (
    "DROP TYPE IF EXISTS public.s28comp, public.s28made CASCADE;\n"
    "DROP DOMAIN IF EXISTS public.s28dom;\n"
    "DROP SCHEMA IF EXISTS s28sec CASCADE;\n"
)


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s28types", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


def _oid(pg, name: str) -> int:
    return int(pg.psql(f"SELECT '{name}'::regtype::oid", db="app").strip())


def _bound(oid: int, sql: str, value: str) -> list:
    return [(parse("", sql, (oid,)), bind("", "", [value.encode()]), execute(), SYNC)]


def test_a_type_the_session_just_made_is_bound_at_once(pg, px):
    with planted.session(px) as c:
        made = planted.text(c.query("CREATE TYPE public.s28comp AS (a int, b text)"))
        assert "CREATE TYPE" in made, made
        oid = _oid(pg, "public.s28comp")
        steps = _bound(oid, "SELECT ($1::public.s28comp).b AS b", "(1,hello)")
        got = planted.text(planted.run_frames(c, steps))
    assert "hello" in got and "42501" not in got, got[-300:]
    assert got == planted.text(planted.direct_frames(pg, steps))


def test_a_type_made_outside_the_proxy_after_its_load_is_decided_on_a_new_load(pg, px):
    with planted.session(px) as c:
        assert c.scalar("SELECT 1") == "1"  # the session's first load is done
        pg.psql("SET ROLE pgwitness; CREATE TYPE public.s28made AS (x int); RESET ROLE;", db="app")
        steps = _bound(_oid(pg, "public.s28made"), "SELECT ($1::public.s28made).x AS x", "(7)")
        got = planted.text(planted.run_frames(c, steps))
    assert "42501" not in got and got == planted.text(planted.direct_frames(pg, steps)), got[-300:]


def test_a_domain_whose_check_runs_code_outside_the_grant_is_still_refused(pg, px):
    with planted.session(px) as c:
        assert c.scalar("SELECT 1") == "1"
        pg.psql("SET ROLE pgwitness; CREATE DOMAIN public.s28dom AS int CHECK (s28sec.judge(VALUE));"
                " RESET ROLE;", db="app")  # fmt: skip
        steps = _bound(_oid(pg, "public.s28dom"), "SELECT $1::int AS v", "5")
        got = planted.text(planted.run_frames(c, steps))
        assert "42501" in got and "s28sec.judge" in got, got[-300:]
        assert c.scalar("SELECT 1") == "1", "the session goes on"
