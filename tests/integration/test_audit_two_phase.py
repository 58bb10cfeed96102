"""Two-phase commit in the audit answer, through the recording proxy and a real PostgreSQL
with max_prepared_transactions > 0 (a cluster of this module's own: the session's ``pg`` has
it at 0). A dry-run grant lets PREPARE TRANSACTION through (enforcing grants refuse it,
``deny.two_phase``: tests/integration/test_proxy_two_phase.py). A prepared transaction's
statements are pending until COMMIT PREPARED or ROLLBACK PREPARED of its gid; the session's
end does not undo them. Judged by the server (the rows that landed, pg_prepared_xacts) and by
the audit rows (``recorder.audit.derive``)."""

from __future__ import annotations

import pytest

from devtools.localpg import LocalCluster, build_app_cluster
from tests.support.fixtures_proxy import ProxyHandle, proxy_config
from tests.support.outage import client, errors, rows_with
from tests.support.rawpg import describe
from tests.support.recording import audit_rows, grants, issue_grant, one_live_session, recording

pytestmark = pytest.mark.timeout(240)

AGENT = "billing-bot"  # tests.support.recording.issue_grant's
TABLE = "public.s21_twophase"


@pytest.fixture(scope="module")
def tpg():
    cluster = LocalCluster(extra_conf={"max_prepared_transactions": "5"})
    try:
        cluster.start()
        build_app_cluster(cluster)
        cluster.psql(f"SET ROLE pgwitness; CREATE TABLE {TABLE} (v int)", db="app")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def h(tpg, tmp_path):
    handle = ProxyHandle(proxy_config(tpg, **recording(tmp_path), **grants(tmp_path))).start()
    _, handle.token = issue_grant(handle, scopes=f"read:{TABLE} write:{TABLE}", enforce=False)
    handle.tmp = tmp_path
    yield handle
    handle.stop()


def ins(v: int) -> str:
    return f"INSERT INTO {TABLE} VALUES ({v})"


def run(c, sql: str) -> None:
    got = c.query(sql)
    assert not errors(got), (sql, describe(got))


def prepared_xacts(pg) -> list[str]:
    return pg.psql("SELECT gid FROM pg_prepared_xacts ORDER BY gid", db="app").split()


def test_prepared_statements_are_pending_until_commit_or_rollback_prepared(h, tpg):
    implicit = f"{ins(2304)}; PREPARE TRANSACTION 'pgw_d'; {ins(2305)}"
    with client(h, AGENT) as c:
        sid = one_live_session(h)
        for v, gid, then in ((2301, "pgw_a", "COMMIT"), (2302, "pgw_b", "ROLLBACK"),
                             (2303, "pgw_c", None)):  # fmt: skip
            run(c, "BEGIN")
            run(c, ins(v))
            run(c, f"PREPARE TRANSACTION '{gid}'")
            if then:
                run(c, f"{then} PREPARED '{gid}'")
        run(c, implicit)
    try:
        # the session has ended: what it prepared and did not decide is still prepared
        assert prepared_xacts(tpg) == ["pgw_c", "pgw_d"]
        assert [rows_with(tpg, TABLE, v) for v in range(2301, 2306)] == [1, 0, 0, 0, 1]
        got = {r["text"]: (r["outcome"], r["message"]) for r in audit_rows(h, sid)}
    finally:
        tpg.psql("ROLLBACK PREPARED 'pgw_c'; ROLLBACK PREPARED 'pgw_d'", db="app")
    assert got[ins(2301)] == (
        "ok",
        "prepared for two-phase commit as 'pgw_a', then committed by COMMIT PREPARED later in "
        "this session",
    ), got
    assert got[ins(2302)] == (
        "rolled back",
        "prepared for two-phase commit as 'pgw_b', then undone by ROLLBACK PREPARED later in "
        "this session",
    ), got
    assert got[ins(2303)] == (
        "prepared",
        "prepared for two-phase commit as 'pgw_c': neither committed nor rolled back until "
        "COMMIT PREPARED or ROLLBACK PREPARED 'pgw_c', which this session's recording does not "
        "hold after it (another session's is not followed)",
    ), got
    assert got[implicit] == (
        "ok",
        "partly prepared: statement 1 (INSERT 0 1) prepared for two-phase commit as 'pgw_d' "
        "(pending)",
    ), got
