"""Red-team round 62 (attacks on 0a3a774: a simple Query refused for CASCADE alone runs as
RESTRICT, the proxy sending the text with each CASCADE keyword blanked), time-boxed; the
server the judge.

Grant (agent ``r62-bot``): ``read:r62.* write:r62.* ddl:r62.* truncate:r62.*``; the dry-run
probe issues the same scopes to the same agent with enforce false. Planted (owner ``pgwitness``):
``r62.t (k, c, d)`` with ``r62x.v`` a view over ``r62.t.c``; ``r62.s (a, b)`` with an
extended statistics object ``r62x.st ON a, b FROM r62.s`` (the statistics object lives in
``r62x``, outside the grant); ``STATE`` lists ``r62x``'s relations, view definitions and
statistics objects with their columns. Each probe is live: run by the owner directly (in a
transaction rolled back) its CASCADE form changes ``STATE``.

Leak, fixed the same session (``Snapshot.statistics``, STATISTICS_SQL: DDL of a relation
with an extended statistics object in a schema outside the grant's ddl scope is refused;
the strict xfail failed before the fix):

* ``DROP TABLE r62.s CASCADE`` (and ``ALTER TABLE r62.s DROP COLUMN b CASCADE``) is run as
  ``DROP TABLE r62.s`` / ``ALTER TABLE r62.s DROP COLUMN b``: the server's RESTRICT drops
  ``r62x.st`` all the same (a statistics object depends on its table and columns
  automatically, not normally: RESTRICT does not protect it, and it may live in any schema).
  Not the rewrite's own: the plain ``DROP TABLE r62.s`` / ``ALTER TABLE r62.s DROP COLUMN b``
  is allowed and does the same (``_beyond_its_objects`` knows partitions, inheritance
  children, typed columns and views; not statistics objects). ``r62x`` changed through the
  proxy by statements naming only ``r62``.

Held (plain tests): over the simple protocol every CASCADE form was sent as RESTRICT and the
server refused what ``r62x.v`` depends on (2BP01), ``r62x`` unchanged: a plain ``DROP TABLE
r62.t CASCADE``, ``ALTER TABLE r62.t DROP COLUMN c CASCADE``, CASCADE beside decoys (a
comment, a nested comment, a standard string, an E'' string with ``\\'``, a dollar quote, a
quoted ``"cascade"`` identifier: each decoy's text comes back unchanged; a
``U&"\\0063ascade"`` identifier is refused whatever it is beside, deny.unknown), after a
granted statement, before one, in ``BEGIN ... COMMIT``, with a view made first in the same
Query (``CREATE VIEW r62.w ...; ALTER TABLE r62.t DROP COLUMN d CASCADE``: the view
survives, the Query rolls back), after ``SET client_encoding`` to LATIN1, WIN1252 and EUC_JP
with non-ASCII text before and after the keyword (the literals come back as sent), longer
than the off-loop threshold (a parked Query, 70 KB), pipelined behind a granted Query, after
a CREATE of the table it drops and before a refused one in the same TCP write (the DDL's
follower decided on the stale snapshot's terms), psql's ``\\;`` joining. The word as a name
beside the keyword (``SELECT 1 AS cascade; DROP ...``), ``ON DELETE CASCADE`` or ``CREATE
EXTENSION ... CASCADE`` beside it: 42501, not rewritten (a Parse too, until session 30 ran
it as RESTRICT as well: ``test_a_parse_runs_as_restrict_too``). The client sees the
tags of the statements run (``DROP TABLE``). A dry-run grant does not rewrite (the client's
text goes upstream, as every dry-run statement does: the server runs CASCADE; by design).
EUC_JP ``0x8F 0xA2 0xB7`` (Python's codec: ``~``; the server: untranslatable, 22P05) in a
Query with CASCADE: the rewritten frame carried the proxy's reading (``~``), which the
policy decided and the server ran, where the same Query without CASCADE is the server's
22P05 (not a leak; fixed for transparency: a text that does not encode back to the client's
bytes is not rewritten, 42501).
``standard_conforming_strings`` cannot be switched off (``SET``, ``set_config``, beside a
CASCADE): 42501, still ``on``. Also checked offline: the fingerprints of ``DROP TABLE t``
and ``DROP TABLE t CASCADE`` differ (no cached decision of the one serves the other).
"""

from __future__ import annotations

import asyncio

import pytest

from common.wire import messages as m
from common.wire.errors import frame
from tests.support import planted
from tests.support.proxies import issue as grant_issue
from tests.support.rawpg import RawClient, error_fields

pytestmark = pytest.mark.timeout(300)

AGENT = "r62-bot"
SCOPES = "read:r62.* write:r62.* ddl:r62.* truncate:r62.*"
SETUP = """
SET ROLE pgwitness;
CREATE SCHEMA r62; CREATE SCHEMA r62x;
CREATE TABLE r62.t (k int PRIMARY KEY, c int, d int); INSERT INTO r62.t VALUES (1, 1, 1);
CREATE VIEW r62x.v AS SELECT c FROM r62.t;
CREATE TABLE r62.s (a int, b int);
CREATE STATISTICS r62x.st ON a, b FROM r62.s;
RESET ROLE;
"""
TEARDOWN = "DROP SCHEMA IF EXISTS r62, r62x CASCADE;"

# everything of r62x a drop could change (one line)
STATE = """
SELECT coalesce(string_agg(x, ' | ' ORDER BY x), '') FROM (
  SELECT 'rel:' || c.relname || ':' || c.relkind::text
    || coalesce(':' || pg_get_viewdef(c.oid), '') FROM pg_class c
    WHERE c.relnamespace = 'r62x'::regnamespace
  UNION ALL SELECT 'stat:' || stxname || ':' || stxrelid::regclass || ':' || stxkeys::text
    FROM pg_statistic_ext WHERE stxnamespace = 'r62x'::regnamespace
) s(x);"""

# leaks: the statement sent, and what the server ran
LEAKS = {
    "stats-drop-table": "DROP TABLE r62.s CASCADE",
    "stats-drop-column": "ALTER TABLE r62.s DROP COLUMN b CASCADE",
    "stats-drop-table-plain": "DROP TABLE r62.s",
}

# sent as RESTRICT, refused by the server (2BP01): r62x.v depends on r62.t.c
DECOYS = (
    "/* CASCADE /* nested CASCADE */ */ SELECT 'CASCADE' AS a, E'\\' CASCADE' AS b, "
    '$c$ CASCADE $c$ AS c, 1 AS "cascade"'
)
RESTRICTED = {
    "drop-table": "DROP TABLE r62.t CASCADE",
    "drop-column": "ALTER TABLE r62.t DROP COLUMN c CASCADE",
    "decoys-before": f"{DECOYS}; DROP TABLE r62.t /* CASCADE */ CaScAdE",
    "decoys-after": f"DROP TABLE r62.t CASCADE; {DECOYS}",
    "after-granted": "SELECT 1; ALTER TABLE r62.t DROP COLUMN c CASCADE",
    "before-granted": "ALTER TABLE r62.t DROP COLUMN c CASCADE; SELECT 1",
    "block": "BEGIN; DROP TABLE r62.t CASCADE; COMMIT",
    "two-cascades": "DROP TABLE IF EXISTS r62.nope CASCADE; DROP TABLE r62.t CASCADE",
    "psql-backslash-semicolon": "SELECT 1 ; DROP TABLE r62.t\nCASCADE",
}

# refused by the policy (42501), not rewritten
REFUSED = {
    "word-as-alias": "SELECT 1 AS cascade; DROP TABLE r62.t CASCADE",
    "word-as-column": "SELECT k AS x FROM r62.t cascade; DROP TABLE r62.t CASCADE",
    "fk-action": (
        "CREATE TABLE r62.fk (k int REFERENCES r62.t ON DELETE CASCADE); DROP TABLE r62.t CASCADE"
    ),
    "create-extension": "CREATE EXTENSION IF NOT EXISTS hstore CASCADE; DROP TABLE r62.t CASCADE",
    "outside": "DROP VIEW r62x.v CASCADE",
}


def _state(pg) -> str:
    return planted.state(pg, STATE)


def _directly(pg, sql: str) -> str:
    """``STATE`` after the owner ran ``sql`` in a transaction rolled back (or the error)."""
    return planted.state_after(pg, sql, STATE)


def _restore(pg, handle) -> None:
    if (
        _state(pg) != handle.state
        or pg.psql(
            "SELECT to_regclass('r62.t') IS NULL OR to_regclass('r62.s') IS NULL", db="app"
        ).strip()
        == "t"
    ):
        pg.psql(TEARDOWN + SETUP, db="app")
        planted.renew(handle)
    pg.psql("DROP TABLE IF EXISTS r62.lone, r62.n1, r62.fk; DROP VIEW IF EXISTS r62.w", db="app")
    assert _state(pg) == handle.state


@pytest.fixture(scope="module")
def handle(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r62", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as h:  # fmt: skip
        h.state = _state(pg)
        assert "rel:v:v:" in h.state and "stat:st:r62.s:1 2" in h.state, h.state
        yield h


@pytest.fixture
def fresh(pg, handle):
    _restore(pg, handle)
    yield handle
    _restore(pg, handle)


def _lone(pg) -> None:
    pg.psql("SET ROLE pgwitness; CREATE TABLE r62.lone (k int); RESET ROLE;", db="app")


def _gone(pg, name: str) -> bool:
    return pg.psql(f"SELECT to_regclass('{name}') IS NULL", db="app").strip() == "t"


def _encoded(c: RawClient, sql: str, encoding: str) -> list[bytes]:
    c.send(frame(b"Q", sql.encode(encoding) + b"\x00"))
    return c.frames_until_ready()


def _sqlstates(frames: list[bytes]) -> list[str]:
    return [error_fields(f).get("C", "") for f in frames if f[:1] == b"E"]


def _tags(frames: list[bytes]) -> list[str]:
    return [f[5:-1].decode() for f in frames if f[:1] == b"C"]


# -- the harm is real -------------------------------------------------------------------


@pytest.mark.parametrize("key", list(LEAKS) + list(RESTRICTED))
def test_probe_changes_r62x_directly(pg, handle, key):
    sql = (LEAKS | RESTRICTED)[key]
    if key == "block":
        sql = "DROP TABLE r62.t CASCADE"
    changed = _directly(pg, sql)
    assert not changed.startswith("error"), changed
    assert changed != handle.state, key
    assert _state(pg) == handle.state


def test_restrict_alone_leaves_the_view_directly(pg, handle):
    got = _directly(pg, "DROP TABLE r62.t")
    assert "2BP01" in got or "depend" in got, got


# -- leaks ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(LEAKS))  # (fixed in session 29: Snapshot.statistics)
def test_leak_statistics_object_outside_the_grant(pg, fresh, key):
    got = planted.simple(fresh, [LEAKS[key]])[0]
    assert got.startswith("error 42501") and "statistics object r62x.st" in got, got[:300]
    assert _state(pg) == fresh.state, (got[:200], _state(pg))


# -- held -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(RESTRICTED))
def test_run_as_restrict_the_server_refuses(pg, fresh, key):
    got = planted.simple(fresh, [RESTRICTED[key], "ROLLBACK"])[0]
    assert got.startswith("error 2BP01"), got
    assert _state(pg) == fresh.state


@pytest.mark.parametrize("key", list(REFUSED))
def test_refused_not_rewritten(pg, fresh, key):
    got = planted.simple(fresh, [REFUSED[key]])[0]
    assert got.startswith("error 42501"), got
    assert _state(pg) == fresh.state and not _gone(pg, "r62.t")


@pytest.mark.parametrize("mode", ["extended", "prepared"])
def test_a_parse_runs_as_restrict_too(pg, fresh, mode):
    """(Refused until session 30: a Parse is run as RESTRICT as a Query is.)"""
    got = asyncio.run(planted.attempt(fresh, "DROP TABLE r62.t CASCADE", mode))
    assert got.startswith("error 2BP01"), got
    assert _state(pg) == fresh.state and not _gone(pg, "r62.t")


def test_decoys_come_back_unchanged_and_the_tag_is_the_drops(pg, fresh):
    _lone(pg)
    with RawClient.session(fresh.host, fresh.port, AGENT, fresh.token) as c:
        frames = c.query(f"{DECOYS}; DROP TABLE r62.lone CASCADE")
    text = planted.result(frames)
    assert not _sqlstates(frames), text
    for decoy in ("CASCADE", "' CASCADE", " CASCADE "):
        assert decoy in text, text
    assert _tags(frames) == ["SELECT 1", "DROP TABLE"], _tags(frames)
    assert _gone(pg, "r62.lone")


def test_a_view_made_first_in_the_query_survives(pg, fresh):
    got = planted.simple(
        fresh,
        ["CREATE VIEW r62.w AS SELECT d FROM r62.t; ALTER TABLE r62.t DROP COLUMN d CASCADE"],
    )[0]
    assert got.startswith("error 2BP01"), got
    assert (
        pg.psql(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'r62.t'::regclass AND attname = 'd'",
            db="app",
        ).strip()
        == "1"
    )


@pytest.mark.parametrize(
    "encoding,text",
    [("LATIN1", "ñé¡ÿ"), ("WIN1252", "€‚ƒ„…†"), ("EUC_JP", "日本語カスケード")],
)
def test_client_encodings(pg, fresh, encoding, text):
    codec = {"LATIN1": "latin-1", "WIN1252": "cp1252", "EUC_JP": "euc_jp"}[encoding]
    _lone(pg)
    with RawClient.session(fresh.host, fresh.port, AGENT, fresh.token) as c:
        assert not _sqlstates(c.query(f"SET client_encoding TO '{encoding}'"))
        refused = _encoded(c, f"SELECT '{text}'; DROP TABLE r62.t /*{text}*/ CASCADE; "
                              f"SELECT '{text}'", codec)  # fmt: skip
        ran = _encoded(c, f"SELECT '{text}' AS x; DROP TABLE r62.lone CASCADE /*{text}*/; "
                          f"SELECT '{text}cascade' AS cascade_", codec)  # fmt: skip
    assert _sqlstates(refused) == ["2BP01"], planted.result(refused)
    assert not _sqlstates(ran), planted.result(ran)
    body = b"".join(f for f in ran if f[:1] == b"D")
    assert text.encode(codec) in body and (text + "cascade").encode(codec) in body, body
    assert _state(pg) == fresh.state and _gone(pg, "r62.lone")


def test_euc_jp_untranslatable_runs_as_read(pg, fresh):
    """0x8FA2B7: Python's EUC_JP ``~``, the server's 22P05. With CASCADE the frame would be
    the proxy's reading (the operator ``~``), not the client's bytes but for the keyword:
    since session 29 a text that does not encode back to the bytes sent is not rewritten
    (``relay.NOT_ROUND_TRIP``, 42501), and nothing runs."""
    _lone(pg)
    tilde = b"\x8f\xa2\xb7"
    with RawClient.session(fresh.host, fresh.port, AGENT, fresh.token) as c:
        assert not _sqlstates(c.query("SET client_encoding TO 'EUC_JP'"))
        c.send(frame(b"Q", b"SELECT 'ab' " + tilde + b" 'b'\x00"))
        plain = c.frames_until_ready()
        c.send(frame(b"Q", b"SELECT 'ab' " + tilde + b" 'b'; DROP TABLE r62.lone CASCADE\x00"))
        rewritten = c.frames_until_ready()
    assert _sqlstates(plain) == ["22P05"], planted.result(plain)
    assert _sqlstates(rewritten) == ["42501"], planted.result(rewritten)
    assert not _gone(pg, "r62.lone")


def test_longer_than_the_off_loop_threshold(pg, fresh):
    _lone(pg)
    pad = "x" * 70_000
    got = planted.simple(
        fresh,
        [
            f"SELECT '{pad}'; DROP TABLE r62.t CASCADE",
            f"SELECT length('{pad}'); DROP TABLE r62.lone CASCADE",
            f"SELECT '{pad}' AS cascade; DROP TABLE r62.t CASCADE",
        ],
    )
    assert got[0].startswith("error 2BP01"), got[0][:200]
    assert not got[1].startswith("error") and _gone(pg, "r62.lone"), got[1][:200]
    assert got[2].startswith("error 42501"), got[2][:200]
    assert _state(pg) == fresh.state


def test_pipelined_in_one_write(pg, fresh):
    _lone(pg)
    with RawClient.session(fresh.host, fresh.port, AGENT, fresh.token) as c:
        c.send(
            m.query("SELECT 'CASCADE'"),
            m.query("DROP TABLE r62.lone CASCADE"),
            m.query("SELECT 'CASCADE' AS after"),
            m.query("DROP TABLE r62.t CASCADE"),
            m.query("SELECT 1 AS cascade; DROP TABLE r62.t CASCADE"),
            m.query("CREATE TABLE r62.n1 (k int)"),
            m.query("DROP TABLE r62.n1 CASCADE"),
            m.query("ALTER TABLE r62.t DROP COLUMN c CASCADE"),
        )
        outs = [c.frames_until_ready() for _ in range(8)]
    states = [_sqlstates(o) for o in outs]
    assert states == [[], [], [], ["2BP01"], ["42501"], [], [], ["2BP01"]], states
    assert b"CASCADE" in b"".join(outs[2])
    assert _gone(pg, "r62.lone") and _gone(pg, "r62.n1")
    assert _state(pg) == fresh.state


def test_dry_run_is_not_rewritten(pg, fresh):
    """A dry run lets the client's own text through (as every dry-run statement): the
    server runs CASCADE; nothing is rewritten."""
    token = grant_issue(fresh, agent=AGENT, task="R62-DRY", scopes=SCOPES, enforce=False)[1]
    got = planted.simple(fresh, ["DROP TABLE r62.t CASCADE"], token=token)[0]
    assert not got.startswith("error"), got
    assert "rel:v:" not in _state(pg)


@pytest.mark.parametrize(
    "sql",
    [
        "SET standard_conforming_strings TO off",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SET SESSION standard_conforming_strings = 'off'; DROP TABLE r62.lone CASCADE",
    ],
)
def test_standard_conforming_strings_stays_on(pg, fresh, sql):
    """Off, ``'\\' CASCADE'`` would end at the backslash's quote for the server and not
    for the scanner the rewrite trusts: never switched (refused)."""
    _lone(pg)
    got = planted.simple(fresh, [sql, "SHOW standard_conforming_strings"])
    assert got[0].startswith("error 42501"), got
    assert "on" in got[1] and not _gone(pg, "r62.lone"), got
