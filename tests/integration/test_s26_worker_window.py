"""The code window across workers (session 26; round 47 read it, unrun): with
``proxy.workers > 1`` (the deployments' ``"auto"``), code that may run DDL in a session of
one worker opens the window (``policy.catalog.code_ran``) in every worker, so a session
of another worker checks its statement names with the server before its next Bind.

Round 46's cross-session redefinition, with the two sessions on different workers: session
A holds ``s26f`` = ``SELECT s26w.f()`` (harmless plpgsql) and ``s26x1`` (a harmless
statement); session B, on the other worker, runs ``s26w.redef()``, code that replaces
``f`` with a body that DEALLOCATEs ``s26x1`` and PREPAREs it as a read of the vault (its
words built from pieces). A then binds ``s26f`` and ``s26x1`` in one pipeline: the server
is the judge, the vault's marker must not reach A. Before session 26 only B's worker
opened the window (``_Entry`` is per worker; the others heard ``ddl`` news, which opens
none), and A read the vault.

A's worker hears of B's code as catalog news through the supervisor, asynchronously: the
test waits for it on the metric the news moves (``pgwitness_ddl_code_runs_total`` with
``origin="other_worker"``), not for a fixed time. A statement A's worker decided before
the news came is round 47's residue (``pre-window``), not this.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.support.planted import run_steps, shows
from tests.support.rawpg import SYNC, RawClient, bind, execute, parse

pytestmark = pytest.mark.timeout(240)

AGENT = "s26-bot"
MARK = "S26-VAULT-71c4"
VAULT = "SELECT s26_secret AS v FROM s26x.vault"
OK = "SELECT 'ok'::text AS v"
BASE = "read:s26w.* write:s26w.* execute:s26w.f"
MIGRATOR = "read:s26w.* write:s26w.* ddl:s26w.* execute:s26w.f,s26w.redef"
HARMLESS_F = (
    "CREATE OR REPLACE FUNCTION s26w.f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$"
)
SETUP = (
    "SET ROLE pgwitness;\n"
    "CREATE SCHEMA s26w; CREATE SCHEMA s26x;\n"
    f"CREATE TABLE s26x.vault (s26_secret text); INSERT INTO s26x.vault VALUES ('{MARK}');\n"
    f"{HARMLESS_F};\n"
    "CREATE TABLE s26w.src (body text);\n"
    "INSERT INTO s26w.src VALUES ($src$CREATE OR REPLACE FUNCTION s26w.f() RETURNS int "
    "LANGUAGE plpgsql AS $f$ BEGIN EXECUTE 'DEALLOC' || 'ATE s26x1'; "
    f"EXECUTE 'PREP' || 'ARE s26x1 AS {VAULT}'; RETURN 2; END $f$$src$);\n"
    "CREATE FUNCTION s26w.redef() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
    "EXECUTE (SELECT body FROM s26w.src); RETURN 1; END $$;\n"
    "RESET ROLE;\n"
)
TEARDOWN = "DROP SCHEMA IF EXISTS s26w, s26x CASCADE;\n"
ADMIN = "admin-token-for-the-s26-window-01"
HOLD = [(parse("s26f", "SELECT s26w.f()"), parse("s26x1", OK), SYNC)]
RUN = [
    (parse("", "SELECT s26w.f()"), bind(), execute(), bind("", "s26f"), execute(),
     bind("", "s26x1"), execute(), SYNC),
]  # fmt: skip
OTHER = ("pgwitness_ddl_code_runs_total", (("origin", "other_worker"),))
THIS = ("pgwitness_ddl_code_runs_total", (("origin", "this_worker"),))


def _issue(p, scopes: str, task: str) -> str:
    body = json.dumps({"agent": AGENT, "task": task, "reason": "s26 window", "database": "app",
                       "scopes": scopes, "ttl": "10m"}).encode()  # fmt: skip
    req = urllib.request.Request(
        f"http://127.0.0.1:{p.admin_port}/v1/grants", data=body, method="POST",
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["token"]


def _worker_of(p, c: RawClient) -> int:
    """The worker process holding the proxy's end of ``c``'s connection."""
    return p.worker_of(c.sock.getsockname()[1])


def _direct(pg) -> str:
    """The attack straight against Postgres: the marker shows (the precondition)."""
    with RawClient.direct(pg) as owner, RawClient.direct(pg) as a:
        owner.query(HARMLESS_F)
        run_steps(a, HOLD)
        owner.query("SELECT s26w.redef()")
        got = run_steps(a, RUN)
        owner.query(HARMLESS_F)
    return got


@pytest.fixture
def planted(pg):
    pg.psql(TEARDOWN, db="app")
    pg.psql(SETUP, db="app")
    yield
    pg.psql(TEARDOWN, db="app")


def _news_arrived(p, before: float, at_most: float = 10.0) -> bool:
    deadline = time.monotonic() + at_most
    while time.monotonic() < deadline:
        if p.metrics().get(OTHER, 0.0) > before:
            return True
        time.sleep(0.02)
    return False


def test_code_in_one_workers_session_opens_the_window_in_the_others(spawn, tmp_path, pg, planted):
    direct = _direct(pg)
    if not shows(direct, MARK):
        raise RuntimeError(("precondition: no marker directly", direct[-600:]))
    # the loads paced (30 s): A's worker's snapshot still shows the old f when A binds
    p = spawn(workers=2, admin_token=ADMIN, catalog_min_interval=30.0,
              config=f'[grants]\nstore = "sqlite:///{tmp_path}/grants.db"\n')  # fmt: skip
    base, migrator = _issue(p, BASE, "S26-A"), _issue(p, MIGRATOR, "S26-B")
    with RawClient.session(p.host, p.port, AGENT, base) as a:
        run_steps(a, HOLD)
        with RawClient.session(p.host, p.port, AGENT, migrator) as b:
            if _worker_of(p, a) == _worker_of(p, b):
                raise RuntimeError("precondition: the two sessions share a worker")
            before = p.metrics().get(OTHER, 0.0)
            out = b.query("SELECT s26w.redef()")
            assert not any(f[:1] == b"E" for f in out), out
            assert p.metrics().get(THIS, 0.0) >= 1, p.metrics()
            assert _news_arrived(p, before), (
                "the other worker never heard of the code",
                {k: v for k, v in p.metrics().items() if k[0].startswith("pgwitness_ddl")},
            )
        got = run_steps(a, RUN)
    assert not shows(got, MARK), ("LEAK", got[-600:])
    assert "26000" in got, got[-600:]  # deny.replaced: the server's check refused the Bind
