"""Two-phase commit in the audit answer, through the recording proxy and a real PostgreSQL
with max_prepared_transactions > 0 (a cluster of this module's own: the session's ``pg`` has
it at 0). A dry-run grant lets PREPARE TRANSACTION through (enforcing grants refuse it,
``deny.two_phase``: tests/integration/test_proxy_two_phase.py). A prepared transaction's
statements are pending until COMMIT PREPARED or ROLLBACK PREPARED of its gid; the session's
end does not undo them. Judged by the server (the rows that landed, pg_prepared_xacts) and by
the audit rows (``recorder.audit.derive``); across sessions (prepared in one, decided in
another), by the index (``recorder.audit.index`` pairs them: ``recorder.audit.twophase``)
and its OCSF status."""

from __future__ import annotations

import pytest

from devtools.localpg import LocalCluster, build_app_cluster
from recorder.audit import index, ocsf
from tests.support.fixtures_proxy import ProxyHandle, proxy_config
from tests.support.outage import client, errors, rows_with
from tests.support.rawpg import describe
from tests.support.recording import (
    audit_rows,
    grants,
    issue_grant,
    one_live_session,
    public_key,
    recording,
    wait_status,
)

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


# --- across sessions: the index pairs a resolution with the PREPARE of another session ---


def session(h, *sqls: str) -> str:
    """One session of the grant's agent through the proxy running ``sqls``; its id, once its
    recording is closed (a prepared transaction outlives it)."""
    with client(h, AGENT) as c:
        sid = one_live_session(h)
        for sql in sqls:
            run(c, sql)
    wait_status(h.runtime.recorder.store, sid, public_key(h.tmp), "closed")
    return sid


def indexed(h) -> dict[tuple[str, str], tuple[str, str]]:
    """(session, text) -> (outcome, message) of every statement, from an index of the
    proxy's store updated now (as `pgwitness audit` updates it first)."""
    path = h.tmp / "audit.duckdb"
    index.update(path, h.runtime.recorder.store, [public_key(h.tmp)])
    con = index.connect(path, read_only=True)
    try:
        rows = con.execute("SELECT session_id, text, outcome, message FROM statements").fetchall()
        status = {(e["actor"]["session"]["uid"], e["query_info"]["query_string"]): e["status"]
                  for e in ocsf.events(con) if e["class_uid"] == 6005}  # fmt: skip
    finally:
        con.close()
    return {(s, t): (o, m, status[(s, t)]) for s, t, o, m in rows}


def prepared(v: int, gid: str) -> tuple[str, str, str]:
    return ("BEGIN", ins(v), f"PREPARE TRANSACTION '{gid}'")


def test_commit_or_rollback_prepared_in_another_session_decides_the_prepared_statements(h, tpg):
    a = session(h, *prepared(2311, "pgw_x1"))
    r = session(h, *prepared(2312, "pgw_x2"))
    pending = indexed(h)[(a, ins(2311))]
    b = session(h, "COMMIT PREPARED 'pgw_x1'")
    d = session(h, "ROLLBACK PREPARED 'pgw_x2'")
    assert [rows_with(tpg, TABLE, v) for v in (2311, 2312)] == [1, 0]
    got = indexed(h)
    # before the resolution was recorded, pending (OCSF Unknown); now decided (the same index)
    assert pending[0] == "prepared" and pending[2] == "Unknown", pending
    assert got[(a, ins(2311))][:1] == ("ok",) and got[(a, ins(2311))][2] == "Success"
    assert got[(a, ins(2311))][1].startswith(
        f"prepared for two-phase commit as 'pgw_x1', then committed by COMMIT PREPARED in "
        f"session {b} at 20"), got[(a, ins(2311))]  # fmt: skip
    assert got[(r, ins(2312))][0] == "rolled back" and got[(r, ins(2312))][2] == "Failure"
    assert got[(r, ins(2312))][1].startswith(
        f"prepared for two-phase commit as 'pgw_x2', then undone by ROLLBACK PREPARED in "
        f"session {d} at 20"), got[(r, ins(2312))]  # fmt: skip
    assert got[(b, "COMMIT PREPARED 'pgw_x1'")][1].startswith(
        f"committed the transaction prepared as 'pgw_x1' in session {a} (statement 3) at 20"
    )
    assert got[(d, "ROLLBACK PREPARED 'pgw_x2'")][1].startswith(
        f"rolled back the transaction prepared as 'pgw_x2' in session {r} (statement 3) at 20"
    )


def test_a_reused_gid_unresolved_and_prepared_outside_the_proxy(h, tpg):
    a = session(h, *prepared(2321, "pgw_r"))
    b = session(h, "COMMIT PREPARED 'pgw_r'")
    c = session(h, *prepared(2322, "pgw_r"))  # the gid again, once the first was decided
    d = session(h, "ROLLBACK PREPARED 'pgw_r'")
    e = session(h, *prepared(2323, "pgw_u"))  # never decided through the proxy
    try:
        # prepared outside the proxy as the grant's role (only it may finish it), then
        # committed through the proxy
        role = tpg.psql("SELECT owner FROM pg_prepared_xacts WHERE gid = 'pgw_u'", db="app")
        role = role.strip()
        tpg.psql(f'SET ROLE "{role}"; BEGIN; INSERT INTO {TABLE} VALUES (2324); '
                 "PREPARE TRANSACTION 'pgw_o'", db="app")  # fmt: skip
        f = session(h, "COMMIT PREPARED 'pgw_o'")
        assert prepared_xacts(tpg) == ["pgw_u"]
        assert [rows_with(tpg, TABLE, v) for v in (2321, 2322, 2323, 2324)] == [1, 0, 0, 1]
        got = indexed(h)
    finally:
        for gid in prepared_xacts(tpg):
            tpg.psql(f"ROLLBACK PREPARED '{gid}'", db="app")
    assert got[(a, ins(2321))][0] == "ok" and f"in session {b} at" in got[(a, ins(2321))][1]
    assert got[(c, ins(2322))][0] == "rolled back"
    assert f"in session {d} at" in got[(c, ins(2322))][1]
    assert f"in session {c} (statement 3)" in got[(d, "ROLLBACK PREPARED 'pgw_r'")][1]
    assert got[(e, ins(2323))] == (
        "prepared",
        "prepared for two-phase commit as 'pgw_u': neither committed nor rolled back until "
        "COMMIT PREPARED or ROLLBACK PREPARED 'pgw_u', which no recording in the index holds "
        "after it (one outside the proxy may yet decide it, or have decided it)",
        "Unknown",
    )
    assert got[(f, "COMMIT PREPARED 'pgw_o'")] == (
        "ok",
        "committed the transaction prepared as 'pgw_o', whose PREPARE TRANSACTION is in no "
        "recording in the index (prepared outside the proxy, or its recording is lost, not yet "
        "stored, or did not verify)",
        "Success",
    )
