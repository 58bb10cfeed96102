"""Settings a parameter names, end to end (session 28), the server the judge: psycopg's
``current_setting(%s)`` and ``set_config(%s, %s, false)`` (server-side binding) work through
the proxy for settings the grant may read or change, and a custom setting planted for the
database (``ALTER DATABASE app SET app.s28_secret = ...``, which every session of the
database may read directly) never reaches the client, whatever protocol shape carries the
name. An encoding set by parameter is checked as ``SET client_encoding``'s is, and
statements pipelined behind it wait for the server's answer as they do after a SET.
Sans-IO: tests/unit/test_s28_settings_by_parameter.py."""

from __future__ import annotations

import struct

import psycopg
import pytest

from common.wire.errors import frame
from tests.support import planted
from tests.support.rawpg import SYNC, bind, execute, parse

pytestmark = pytest.mark.timeout(120)

AGENT = "s28-settings"
SECRET = "s28-planted-jwt-4f1e0c"
SCOPES = "read:public.* set:work_mem"
SETUP = f"ALTER DATABASE app SET app.s28_secret = '{SECRET}';"
TEARDOWN = "ALTER DATABASE app RESET app.s28_secret;"
READ = "SELECT current_setting($1)"


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "s28set", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


def connect(handle) -> psycopg.Connection:
    return psycopg.connect(host=handle.host, port=handle.port, user=AGENT, password=handle.token,
                           dbname="app", autocommit=True)  # fmt: skip


def test_the_planted_setting_is_readable_directly(pg, px):
    """What the refusals below keep from the client: any session of the database reads it."""
    assert pg.psql("SELECT current_setting('app.s28_secret')", db="app").strip() == SECRET


def test_psycopg_reads_and_sets_settings_by_parameter(px):
    with connect(px) as conn:
        assert conn.execute("SELECT current_setting(%s)", ["transaction_isolation"]).fetchone() == (
            "read committed",
        )
        assert conn.execute("SELECT current_setting(%s, true)", ["TimeZone"]).fetchone()[0]
        conn.execute("SELECT set_config(%s, %s, false)", ["work_mem", "3MB"])
        assert conn.execute("SHOW work_mem").fetchone() == ("3MB",)
        conn.execute("SELECT set_config(%s, %s, false)", ["statement_timeout", "7s"])
        assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)


@pytest.mark.parametrize(
    ("sql", "params", "shown"),
    [
        ("SELECT current_setting(%s)", ["app.s28_secret"], None),
        ("SELECT current_setting(%s, true)", ["APP.S28_SECRET"], None),
        ("SELECT set_config(%s, %s, false)", ["search_path", "pg_temp, public"], "search_path"),
        ("SELECT set_config(%s, %s, false)", ["random_page_cost", "1"], "random_page_cost"),
        ("SELECT set_config(%s, %s, false)", ["client_encoding", "SJIS"], "client_encoding"),
        ("SELECT set_config('client_encoding', %s, false)", ["BIG5"], "client_encoding"),
    ],
)
def test_psycopg_is_refused_what_the_grant_may_not_read_or_change(px, sql, params, shown):
    with connect(px) as conn:
        before = conn.execute(f"SHOW {shown}").fetchone() if shown else None
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            conn.execute(sql, params)
        assert SECRET not in str(err.value)
        if shown:
            assert conn.execute(f"SHOW {shown}").fetchone() == before, "the server's is unchanged"
        assert conn.execute("SELECT 1").fetchone() == (1,), "the session goes on"


def test_psycopg_sets_its_encoding_by_parameter(px):
    with connect(px) as conn:
        conn.execute("SELECT set_config('client_encoding', %s, false)", ["LATIN1"])
        assert conn.info.encoding == "iso8859-1", "the server reported it"
        assert conn.execute("SELECT %s::text || 'ü'", ["é"]).fetchone() == ("éü",)
        conn.execute("SELECT set_config(%s, %s, false)", ["client_encoding", "UTF8"])
        assert conn.execute("SELECT 'ñ'").fetchone() == ("ñ",)


def _bind_text(name: str, *values: str, fmt: int = 0) -> bytes:
    return bind("", name, [v.encode() for v in values], (fmt,))


# the name reaches the server in every shape a client may send it; none may return the value
SHAPES = {
    "named": [(parse("s", READ), _bind_text("s", "app.s28_secret"), execute(), SYNC)],
    "unnamed": [(parse("", READ), _bind_text("", "app.s28_secret"), execute(), SYNC)],
    "binary": [(parse("s", READ), _bind_text("s", "app.s28_secret", fmt=1), execute(), SYNC)],
    "rebound-in-one-group": [
        (
            parse("s", READ),
            _bind_text("s", "jit"),
            execute(),
            _bind_text("s", "app.s28_secret"),
            execute(),
            SYNC,
        )
    ],  # fmt: skip
    "rebound-later": [
        (parse("s", READ), _bind_text("s", "jit"), execute(), SYNC),
        (_bind_text("s", "app.s28_secret"), execute(), SYNC),
    ],  # fmt: skip
    "text-cast": [
        (
            parse("", "SELECT current_setting($1::text, true)"),
            _bind_text("", "app.s28_secret"),
            execute(),
            SYNC,
        )
    ],  # fmt: skip
    "second-parameter": [
        (
            parse("", "SELECT $1::text AS a, current_setting($2) AS b"),
            _bind_text("", "jit", "app.s28_secret"),
            execute(),
            SYNC,
        )
    ],  # fmt: skip
    "described-first": [
        (parse("s", READ), frame(b"D", b"Ss\x00"), SYNC),
        (_bind_text("s", "app.s28_secret"), execute(), SYNC),
    ],  # fmt: skip
    "declared-cursor": [
        (
            parse("", "DECLARE c28 CURSOR WITH HOLD FOR SELECT current_setting($1)"),
            _bind_text("", "app.s28_secret"),
            execute(),
            SYNC,
        ),
        (parse("", "FETCH ALL c28"), bind(), execute(), SYNC),
    ],  # fmt: skip
    "sql-prepare": [
        (parse("", "PREPARE p28(text) AS SELECT current_setting($1)"), bind(), execute(), SYNC),
        (parse("", "EXECUTE p28('app.s28_secret')"), bind(), execute(), SYNC),
    ],  # fmt: skip
}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_planted_value_never_reaches_the_client(pg, px, shape):
    steps = SHAPES[shape]
    directly = planted.text(planted.direct_frames(pg, steps))
    assert SECRET in directly, ("the server would answer with it", directly[-300:])
    got = planted.text(planted.proxied_frames(px, steps))
    assert SECRET not in got, (shape, got[-400:])
    assert "42501" in got, (shape, got[-400:])


def test_an_allowed_value_answers_as_the_server_does(pg, px):
    steps = [(parse("s", READ), _bind_text("s", "DateStyle"), execute(),
              _bind_text("s", "transaction_isolation", fmt=1), execute(), SYNC)]  # fmt: skip
    assert planted.text(planted.proxied_frames(px, steps)) == planted.text(
        planted.direct_frames(pg, steps)
    )


def _latin1_parse(sql: str) -> bytes:
    return frame(b"P", b"\x00" + sql.encode("latin-1") + b"\x00" + struct.pack("!h", 0))


def test_a_statement_pipelined_behind_an_encoding_set_by_parameter_waits_for_the_answer(px):
    """As after ``SET client_encoding``: a non-ASCII statement sent before the server said
    which encoding it now reads (here UTF-8 bytes, which LATIN1 reads as other characters:
    red-team round 33) is refused (55000); once answered, it is read in the new one."""
    setter = "SELECT set_config('client_encoding', $1, false)"
    with planted.session(px) as c:
        got = planted.text(planted.run_frames(c, [(
            parse("", setter), _bind_text("", "LATIN1"), execute(),
            parse("", "SELECT 'caf\u00e9' AS x"), bind(), execute(), SYNC,
        )]))  # fmt: skip
        assert "55000" in got, got[-300:]
        # (the refusal failed the group: its implicit transaction took the change back)
        assert c.scalar("SHOW client_encoding") == "UTF8"
        planted.run_frames(c, [(parse("", setter), _bind_text("", "LATIN1"), execute(), SYNC)])
        assert c.scalar("SHOW client_encoding") == "LATIN1"
        after = b"".join(planted.run_frames(c, [(_latin1_parse("SELECT 'caf\u00e9' AS x"), bind(),
                                                  execute(), SYNC)]))  # fmt: skip
        assert "caf\u00e9".encode("latin-1") in after, after


def test_an_encoding_that_can_hide_quotes_is_refused_in_every_shape(px):
    for steps in (
        [(parse("", "SELECT set_config('client_encoding', $1, false)"), _bind_text("", "SJIS"),
          execute(), SYNC)],
        [(parse("", "SELECT set_config($2, $1, true)"), _bind_text("", "GBK", "Client_Encoding"),
          execute(), SYNC)],
        [(parse("", "SELECT set_config('client_encoding', $1, false)"),
          _bind_text("", "shift jis", fmt=1), execute(), SYNC)],
    ):  # fmt: skip
        with planted.session(px) as c:
            got = planted.text(planted.run_frames(c, steps))
            assert "42501" in got, got[-300:]
            assert c.scalar("SHOW client_encoding") == "UTF8"
