"""Red-team round 54 (attacks on 1167dc3, 16aa035, 8262780), time-boxed; the server the
judge.

Grant (agent ``r54-bot``): ``read:r54w.* execute:public.r54_swap``. Planted (schema
owner): ``r54x.vault`` (outside the grant) holds the marker; ``public.r54_swap()``
(plpgsql, spelled plainly, so names code: ``DEALLOCATE r54s; PREPARE r54s AS SELECT val
FROM r54x.vault``). Every probe runs directly as the upstream login first and must show
the marker there (``RuntimeError`` otherwise).

Family 1, ``names_unknown`` keeps protocol names and checks them (``verify_name``); a new
Parse of a name clears its mark (``_remember_statement``: ``_unverified.discard``):

* ``reparse-refused-then-bind``: ``Parse r54s OK`` / Sync; ``SELECT public.r54_swap()``
  (r54s is now the vault read, from_sql); then in one write ``Parse r54s OK`` / Sync /
  ``Bind r54s`` / Execute / Sync. The server refuses the Parse (42P05: the name exists)
  and binds the swapped statement in the next group.
* ``reparse-refused-then-bind-later``: the same, the Bind sent after the Parse's error
  was answered (control: ``answered`` drops the unconfirmed name).
* ``settled-*``: the same two after the call settled (2.5 s for the load, then two idle
  queries: ``at_rest`` turns ``lazy_code`` off, so only ``_unverified`` marks the name).

Leaked (strict xfails until fixed the same session, see ``FIXED``): ``settled-reparse-refused-then-bind`` (``REPARSE_WHY``): the
refused Parse cleared the mark at send time, the pipelined Bind went upstream unchecked
and returned the vault's row. Held: the unsettled ones (``lazy_code``: the injected check,
26000 ``deny.replaced``), the ``-later`` ones (42501 ``deny.catalog``: the name dropped at
the error's ReadyForQuery), and the failed-transaction one (the extended ROLLBACK TO's
Bind/Execute set ``SyncGroups.ran`` before the Bind of r54s, so the check is injected).
Fix guess: discard ``_unverified`` at ``parse_answered`` (ParseComplete), not at send.

Family 2, a read decided on a stale snapshot withheld for its own Sync group only
(``Policy.stale_read``, ``Relay._withhold_through``). A proxy of its own, catalog loads
paced to 30 s; A (``read:r54p.*``, enforcing) ``Parse r54b "SELECT id FROM r54p.s WHERE
pin::int > 0"`` / Sync, ``BEGIN``; another session through the proxy (a dry run of the
same scopes) ``DROP TABLE r54p.s; CREATE VIEW r54p.s AS SELECT id, pin FROM r54q.acct``
(the vault); then A:

* ``bind-execute-one-group``: ``Bind r54p_portal r54b`` / ``Execute r54p_portal`` / Sync:
  the 22P02 withheld (held).
* ``bind-then-execute-later``: ``Bind r54p_portal r54b`` / Sync, its ReadyForQuery, then
  ``Execute r54p_portal`` / Sync: ``22P02 invalid input syntax for type integer:
  "<marker>"`` whole (leak, ``STALE_PORTAL_WHY``). Sent in one write (both groups
  pipelined) it leaked in 1 run of 4 and was withheld in 3 (not committed: timing).
  Fix guess: withhold through the group of the portal's last Execute (track portals bound
  by a stale read until closed or the transaction ends), or refuse a stale read's Bind
  without an Execute in its own group (``bind_at_once``).
* ``failed-tx-rollback-to-then-bind``: ``Parse r54s OK`` / Sync; ``BEGIN``; ``SAVEPOINT
  a``; the swap; ``SELECT 1/0`` (ReadyForQuery 'E'); then in one write ``ROLLBACK TO
  SAVEPOINT a`` (extended, unnamed) / ``Bind r54s`` / Execute / Sync.
"""

from __future__ import annotations

import time

import pytest

from common.wire import messages as m
from tests.support import planted
from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse, query

pytestmark = pytest.mark.timeout(300)

AGENT = "r54-bot"
MARK = "R54-PIN-9c17"
SCOPES = "read:r54w.* execute:public.r54_swap"
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r54w; CREATE SCHEMA r54x;\n"
    "CREATE TABLE r54w.t (id int); INSERT INTO r54w.t VALUES (1);\n"
    f"CREATE TABLE r54x.vault (val text); INSERT INTO r54x.vault VALUES ('{MARK}');\n"
    "CREATE FUNCTION public.r54_swap() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "DEALLOCATE r54s; PREPARE r54s AS SELECT val FROM r54x.vault; RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = "DROP SCHEMA IF EXISTS r54w, r54x CASCADE;\nDROP FUNCTION IF EXISTS public.r54_swap();\n"

OK = "SELECT 'ok'::text AS val FROM r54w.t"
SWAP = (query("SELECT public.r54_swap()"),)
# a load reads the catalog after the call, then the session is at rest: ``lazy_code`` off
SETTLE = [2.5, (query("SELECT 1"),), (query("SELECT 1"),)]


@pytest.fixture(scope="module")
def px(pg, tmp_path_factory):
    with planted.running(pg, tmp_path_factory, "r54", agent=AGENT, scopes=SCOPES,
                         setup=SETUP, teardown=TEARDOWN) as handle:  # fmt: skip
        yield handle


def _one(name: str) -> tuple[bytes, ...]:
    return (bind("", name), m.execute(), SYNC)


# fixed in session 26 after b5c3f21: a re-Parse clears the name's check only once the
# server answered it (``parse_answered``); a stale read's answers are withheld until its
# transaction has ended (``Relay._withhold_tx``). Those probes pass now.
FIXED = False
REPARSE_WHY = (
    "LEAK: a Parse of a name the server already holds (42P05) clears its unverified mark "
    "when sent (StatementPolicy._remember_statement: _unverified.discard, policy/engine.py); "
    "with lazy_code off (a load read the catalog, the session at rest) a Bind of the name in "
    "the next Sync group, sent before the Parse's error is answered, is not bind_checked "
    "(not in _unverified, rebind, followed; _forgotten false: the name is held), so it "
    "goes upstream unchecked and binds the statement the names code prepared (the vault "
    "read): DataRow with the marker. answered() drops the name only after the Bind went"
)


NAMES: dict[str, tuple] = {
    "reparse-refused-then-bind": (
        [(parse("r54s", OK), SYNC), SWAP, (parse("r54s", OK), SYNC, *_one("r54s"))],
        False,
    ),
    "reparse-refused-then-bind-later": (
        [(parse("r54s", OK), SYNC), SWAP, (parse("r54s", OK), SYNC), _one("r54s")],
        False,
    ),
    "settled-reparse-refused-then-bind": (
        [(parse("r54s", OK), SYNC), SWAP, *SETTLE, (parse("r54s", OK), SYNC, *_one("r54s"))],
        REPARSE_WHY and FIXED,
    ),
    "settled-reparse-refused-then-bind-later": (
        [(parse("r54s", OK), SYNC), SWAP, *SETTLE, (parse("r54s", OK), SYNC), _one("r54s")],
        False,
    ),
    "failed-tx-rollback-to-then-bind": (
        [
            (parse("r54s", OK), SYNC),
            (query("BEGIN"),),
            (query("SAVEPOINT a"),),
            SWAP,
            (query("SELECT 1/0"),),
            (parse("", "ROLLBACK TO SAVEPOINT a"), bind("", ""), execute(), *_one("r54s")),
            (query("ROLLBACK"),),
        ],
        False,
    ),
}


@pytest.mark.parametrize("name", planted.cases(NAMES))
def test_names(px, pg, name):
    steps, _ = NAMES[name]
    with RawClient.direct(pg) as c:
        direct = run_steps(c, steps)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    with planted.session(px) as c:
        got = run_steps(c, steps)
        assert any(f[:1] == b"D" for f in c.query("SELECT 1")), name
    assert not shows(got, MARK), ("LEAK", name, got[-500:])


# --- family 2: a stale read withheld for its own Sync group only (8262780) ---------------

STALE_SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA r54p; CREATE SCHEMA r54q;\n"
    f"CREATE TABLE r54q.acct (id int, pin text); INSERT INTO r54q.acct VALUES (2, '{MARK}');\n"
    "CREATE TABLE r54p.s (id int, pin text); INSERT INTO r54p.s VALUES (7, '7');\n"
    "RESET ROLE;\n"
)
STALE_TEARDOWN = "DROP SCHEMA IF EXISTS r54p, r54q CASCADE;\n"
# another session's DDL (a dry run's: it refuses nothing) turns the readable name into a
# view of the vault; A's statement prepared before reads it again at its Bind
DROP_MAKE = "DROP TABLE r54p.s; CREATE VIEW r54p.s AS SELECT id, pin FROM r54q.acct"
COND = "SELECT id FROM r54p.s WHERE pin::int > 0"


@pytest.fixture
def paced(pg, tmp_path):
    from tests.support.fixtures_proxy import ProxyHandle, proxy_config
    from tests.support.proxies import issue as grant_issue
    from tests.support.proxies import sqlite_url

    pg.psql(STALE_TEARDOWN + STALE_SETUP, db="app")
    handle = ProxyHandle(
        proxy_config(pg, **{
            "grants.store": sqlite_url(tmp_path / "grants.db"),
            "upstream.catalog_min_interval": 30.0,
        })
    ).start()  # fmt: skip
    try:
        handle.agent = AGENT
        handle.token = grant_issue(handle, agent=AGENT, task="R54-BASE", scopes="read:r54p.*")[1]
        handle.tokens = {"base": handle.token}
        handle.tokens["dry"] = grant_issue(
            handle, agent=AGENT, task="R54-DRY", scopes="read:r54p.*", enforce=False
        )[1]
        with planted.session(handle) as c:
            c.query("SELECT 1")
        time.sleep(1.0)  # the first load
        yield handle
    finally:
        handle.stop()
        pg.psql(STALE_TEARDOWN, db="app")


STALE_PORTAL_WHY = (
    "LEAK: a Bind decided on a snapshot another session's DDL made stale sets "
    "Policy.stale_read, and Relay._withhold_through covers that Bind's own Sync group only "
    "(8262780); a named portal bound in a transaction block (Bind, no Execute, Sync) is "
    "executed in the next Sync group, which nothing decides (an Execute is not a statement) "
    "and nothing withholds: the view's 22P02 quotes the vault"
)
STALE: dict[str, tuple] = {
    "bind-execute-one-group": (
        [(bind("r54p_portal", "r54b"), m.execute("r54p_portal"), SYNC)],
        False,
    ),
    "bind-then-execute-later": (
        [(bind("r54p_portal", "r54b"), SYNC), (m.execute("r54p_portal"), SYNC)],
        STALE_PORTAL_WHY and FIXED,
    ),
}


def _stale_run(a: RawClient, b: RawClient, after) -> str:
    got = run_steps(a, [(parse("r54b", COND), SYNC), (query("BEGIN"),)])
    planted.text(b.query(DROP_MAKE))
    got += run_steps(a, after)
    a.query("ROLLBACK")
    assert any(f[:1] == b"D" for f in a.query("SELECT 1")), "the session goes on"
    return got


@pytest.mark.parametrize("name", planted.cases(STALE))
def test_stale_portal(pg, paced, name):
    after, _ = STALE[name]
    pg.psql(STALE_TEARDOWN + STALE_SETUP, db="app")
    with RawClient.direct(pg) as a, RawClient.direct(pg) as b:
        direct = _stale_run(a, b, after)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", name, direct[-600:]))
    pg.psql(STALE_TEARDOWN + STALE_SETUP, db="app")
    with planted.session(paced) as a, planted.session(paced, paced.tokens["dry"]) as b:
        got = _stale_run(a, b, after)
    assert not shows(got, MARK), ("LEAK", name, got[-500:])
