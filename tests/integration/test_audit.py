"""The audit answer end to end: real clients through a recording proxy, the index built from
the verified recordings, and the answer checked against what the clients saw.

One task, two grants (one extended, one revoked), three sessions (allowed and denied
statements, a database error, a database refusal, COPY, an extended-protocol statement with
a parameter, a session ended by revocation and one by expiry) and a failed login.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
import uuid
from contextlib import redirect_stdout
from pathlib import Path

import asyncpg
import duckdb
import psycopg
import pytest

from policy.grants.model import make_dsn
from proxy.cli import main as cli_main
from recorder import chunks
from recorder.audit import index
from recorder.store.local import LocalStore
from tests.support.proxies import AGENT
from tests.support.recording import public_key, recording
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(120)

SCOPES = "read:public.orders,public.customers,public.{locked} write:public.orders"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli_main(list(argv))
    return rc, out.getvalue()


def store_args(tmp_path: Path, idx: str = "audit.duckdb") -> list[str]:
    return ["--store", str(tmp_path / "rec"), "--index", str(tmp_path / idx),
            "--public-key", str(tmp_path / "signing.key.pub")]


def answer(tmp_path: Path, *filters: str, idx: str = "audit.duckdb") -> tuple[int, dict]:
    rc, out = run("audit", *store_args(tmp_path, idx), "--format", "json", *filters)
    return rc, json.loads(out)


def sessions_done(handle) -> bool:
    async def n():
        return len(handle.server.connections)

    return handle.call(n()) == 0


@pytest.fixture(scope="module")
def scenario(pg, tmp_path_factory):
    """Runs the scenario once; returns what the clients saw, keyed by fact."""
    from tests.support.fixtures_proxy import ProxyHandle, proxy_config

    tmp_path = tmp_path_factory.mktemp("audit")
    locked = f"audit_locked_{uuid.uuid4().hex[:8]}"
    pg.psql(f"CREATE TABLE public.{locked} (v int); REVOKE ALL ON public.{locked} FROM PUBLIC;",
            db="app")
    handle = ProxyHandle(proxy_config(pg, **recording(
        tmp_path, **{"grants.store": f"sqlite:///{tmp_path / 'grants.db'}",
                     "grants.poll_interval": 0.1,
                     "upstream.tag_application_name": True}))).start()  # correlation, below
    store = handle.runtime.store
    task = f"INC-{uuid.uuid4().hex[:6]}"
    scopes = SCOPES.format(locked=locked)
    seen: dict = {"task": task, "locked": locked}
    try:
        a, token_a = handle.call(store.issue(agent=AGENT, task=task, reason="refund duplicates",
                                             granted_by="oncall-lead", database="app",
                                             scopes=scopes, ttl="5s"))
        # 7 s in all: sessions 1 and 2 and the failed login below take ~1.5 s, then
        # session 3 waits for grant A's expiry
        a = handle.call(store.extend(a.id, "2s", by="oncall-lead"))
        b, token_b = handle.call(store.issue(agent=AGENT, task=task, reason="second look",
                                             granted_by="oncall-lead", database="app",
                                             scopes="read:public.orders", ttl="10m"))
        seen.update(grant_a=a.id, grant_b=b.id, expires_a=a.expires_at)
        dsn_a = make_dsn(AGENT, token_a, handle.host, handle.port, "app")
        dsn_b = make_dsn(AGENT, token_b, handle.host, handle.port, "app")

        # session 1 (psycopg, simple protocol): allowed, policy-denied, db error, db-refused, COPY
        with psycopg.connect(dsn_a, autocommit=True, application_name="billing-agent") as c:
            cur = c.cursor()
            cur.execute("select count(*) from orders")
            seen["count"] = cur.fetchone()[0]
            for key, sql in (("policy", "select * from secret.payroll"),
                             ("dberror", "select 1/0 from orders"),
                             ("dbdenied", f"select * from public.{locked}")):
                with pytest.raises(psycopg.Error) as e:
                    cur.execute(sql)
                seen[key] = (sql, e.value.sqlstate)
            with cur.copy("COPY public.customers TO STDOUT") as cp:
                seen["copy_rows"] = sum(1 for _ in cp.rows())
            seen["s1_app"] = c.info.parameter_status("application_name")
            seen["activity"] = pg.psql("SELECT pid || '|' || application_name FROM "
                                       "pg_stat_activity WHERE application_name LIKE "
                                       "'pgw:%/billing-agent'", db="app").split()

        # session 2 (asyncpg, extended protocol): a parameter, a denied write; then revoked
        async def s2():
            conn = await asyncpg.connect(dsn_b)
            row = await conn.fetchrow("select id, total from orders where id = $1", 2)
            seen["param_row"] = dict(row)
            with pytest.raises(asyncpg.PostgresError) as e:
                await conn.execute("delete from orders")
            seen["s2_denied"] = e.value.sqlstate
            handle.call(store.revoke(b.id, by="security"))
            # (the proxy's FATAL 57P01 may reach asyncpg while it is idle, before the close:
            # its next call then fails with InternalClientError, as after pg_terminate_backend)
            ended = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                     ConnectionError, OSError)  # fmt: skip
            with pytest.raises(ended):
                for _ in range(100):
                    await conn.fetchval("select 1 from orders limit 1")
                    await asyncio.sleep(0.05)
            await conn.close(timeout=2)
        asyncio.run(s2())

        # a failed login (wrong token)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(make_dsn(AGENT, "pgw_wrong", handle.host, handle.port, "app"))

        # session 3: idle on grant A until it expires
        c3 = psycopg.connect(dsn_a, autocommit=True)
        c3.execute("select 1 from customers limit 1")
        wait_for(lambda: c3.closed or _dead(c3), 20, "grant A to expire", 0.2)
        wait_for(lambda: sessions_done(handle), 10, "sessions to end")
    finally:
        handle.stop()
    seen["tmp_path"] = tmp_path
    return seen


def _dead(conn) -> bool:
    try:
        conn.execute("select 1 from customers limit 1")
        return False
    except psycopg.Error:
        return True


def test_audit_answer_lists_each_fact_once_as_the_clients_saw_it(scenario):
    tmp_path, task = scenario["tmp_path"], scenario["task"]
    rc, a = answer(tmp_path, "--task", task)
    assert rc == 0, a["verification"]
    assert a["verification"]["intact"] and not a["verification"]["not_intact"]
    grants = {g["grant_id"]: g for g in a["grants"]}
    assert set(grants) == {scenario["grant_a"], scenario["grant_b"]}
    ga, gb = grants[scenario["grant_a"]], grants[scenario["grant_b"]]
    assert ga["reason"] == "refund duplicates" and ga["granted_by"] == "oncall-lead"
    assert len(ga["extensions"]) == 1 and ga["extensions"][0]["by"] == "oncall-lead"
    assert ga["ended"] == "expired" and ga["expired_at"]
    assert gb["ended"] == "revoked" and gb["revoked_by"] == "security"
    kinds_a = [e["kind"] for e in ga["events"]]
    assert kinds_a == ["grant.issued", "grant.extended", "grant.expired"], kinds_a
    assert [e["kind"] for e in gb["events"]] == ["grant.issued", "grant.revoked"]

    s1, s3 = ga["sessions"]
    (s2,) = gb["sessions"]
    assert s1["application_name"] == "billing-agent" and s1["end_cause"] == "terminate"
    assert s2["end_cause"] == "revoked" and s3["end_cause"] == "expired"
    assert s1["client_addr"].startswith("127.0.0.1:")
    # correlation: the database saw pgw:<tag>/<client's name> on the recorded backend pid;
    # the client saw its own name
    assert scenario["s1_app"] == "billing-agent"
    assert scenario["activity"] == [f"{s1['backend_pid']}|{s1['upstream_application_name']}"]
    rows = {st["text"]: st for st in s1["statement_rows"]}
    assert len(rows) == len(s1["statement_rows"]) == 5, list(rows)
    ok = rows["select count(*) from orders"]
    assert (ok["decision"], ok["outcome"], ok["command_tag"], ok["rows"]) == (
        "allowed", "ok", "SELECT 1", 1)
    # recorded by its decision shape (docs/recording-format.md): what the policy said of it
    # is still in the answer
    assert ok["rule"] == "scope.read" and ok["reason"] is None, ok
    for key, rule_denied in (("policy", True), ("dberror", False), ("dbdenied", False)):
        sql, sqlstate = scenario[key]
        r = rows[sql]
        assert (r["outcome"], r["sqlstate"]) == ("error", sqlstate), r
        assert (r["decision"] == "denied") == rule_denied, r
    assert rows["COPY public.customers TO STDOUT"]["rows"] == scenario["copy_rows"]
    assert rows["COPY public.customers TO STDOUT"]["copy"]

    p = [st for st in s2["statement_rows"] if st["text"].startswith("select id, total")]
    assert len(p) == 1 and json.loads(p[0]["params"]) == [2]  # binary int4, typed by its ParameterDescription
    assert p[0]["rows"] == 1 and p[0]["outcome"] in ("ok", "suspended")
    d = [st for st in s2["statement_rows"] if st["text"] == "delete from orders"]
    assert len(d) == 1 and d[0]["decision"] == "denied" and d[0]["sqlstate"] == scenario["s2_denied"]

    denials = {(x["source"], x["text"]) for x in a["denials"]}
    assert ("policy", "select * from secret.payroll") in denials
    assert ("policy", "delete from orders") in denials
    assert ("database", f"select * from public.{scenario['locked']}") in denials
    assert ("database", "select 1/0 from orders") not in denials  # an error, not a refusal
    statement_denials = [x for x in a["denials"] if x["source"] in ("policy", "database")]
    assert len(statement_denials) == len({(x["session_id"], x["n"]) for x in statement_denials}) == 3
    # a refused login of the task's agent (a wrong token: no grant named) is one of its
    # denials as it is one of its refused logins (session 33)
    assert [x["ts"] for x in a["denials"] if x["source"] in ("login", "connection")] == [
        r["ts"] for r in a["refused_logins"]]

    # every statement fact exactly once across the answer
    keys = [(s["session_id"], st["n"]) for g in a["grants"] for s in g["sessions"]
            for st in s["statement_rows"]]
    assert len(keys) == len(set(keys))
    # the failed login: listed once if the proxy records refused logins, else not invented
    con = duckdb.connect(str(tmp_path / "audit.duckdb"), read_only=True)
    recorded = con.execute("select count(*) from control_events where kind = 'login.refused'"
                           ).fetchone()[0]
    con.close()
    assert len(a["refused_logins"]) == recorded

    rc, denied_only = answer(tmp_path, "--task", task, "--denied")
    texts = [st["text"] for g in denied_only["grants"] for s in g["sessions"]
             for st in s["statement_rows"]]
    assert sorted(texts) == sorted(["select * from secret.payroll", "delete from orders",
                                    f"select * from public.{scenario['locked']}"])

    rc, text = run("audit", *store_args(tmp_path), "--task", task)
    assert rc == 0 and text.startswith("VERIFIED: all") and "REVOKED" in text
    rc, listed = run("sessions", *store_args(tmp_path), "--task", task, "--format", "json")
    listed = [json.loads(x) for x in listed.splitlines()]
    assert [x["session_id"] for x in listed] == [s1["session_id"], s2["session_id"],
                                                 s3["session_id"]]
    assert [x["denials"] for x in listed] == [2, 1, 0]
    rc, listed = run("sessions", *store_args(tmp_path), "--agent", AGENT, "--denied",
                     "--since", s2["started_at"], "--format", "json")
    assert [json.loads(x)["session_id"] for x in listed.splitlines()] == [s2["session_id"]]
    rc, csv_out = run("audit", *store_args(tmp_path), "--task", task, "--format", "csv")
    assert csv_out.count(",statement,") == len(keys)


def test_rebuild_equals_incremental_and_sql_views(scenario, tmp_path):
    src = scenario["tmp_path"]
    answer(src)  # make sure the incremental index is current
    run("index", "rebuild", *store_args(src, "rebuilt.duckdb"))
    inc = duckdb.connect(str(src / "audit.duckdb"), read_only=True)
    reb = duckdb.connect(str(src / "rebuilt.duckdb"), read_only=True)
    for table, cols in index.TABLES.items():
        names = ", ".join(f'"{c}"' for c in cols if c != "indexed_at")
        q = f"SELECT {names} FROM {table} ORDER BY ALL"
        assert inc.execute(q).fetchall() == reb.execute(q).fetchall(), table
    inc.close()
    reb.close()
    rc, out = run("audit", *store_args(src), "--sql",
                  "select source, count(*) as n from denials group by source order by source",
                  "--format", "json")
    # the wrong-token login is recorded as a login.refused event (issue 13): a 'login' denial
    assert rc == 0 and [json.loads(x)["source"] for x in out.splitlines()] == [
        "database", "login", "policy"]


def test_tampered_recording_is_flagged_and_new_recordings_are_picked_up(scenario, tmp_path):
    src = scenario["tmp_path"]
    shutil.copytree(src / "rec", tmp_path / "rec")
    shutil.copy(src / "signing.key.pub", tmp_path / "signing.key.pub")
    rc, a = answer(tmp_path, "--task", scenario["task"])
    assert rc == 0
    ga = next(g for g in a["grants"] if g["grant_id"] == scenario["grant_a"])
    sid = ga["sessions"][0]["session_id"]
    # a recording the index has not seen: move a whole session out, index, move it back
    store = LocalStore(tmp_path / "rec")
    other = ga["sessions"][1]["session_id"]
    d = tmp_path / "rec" / chunks.session_prefix(other)
    hidden = tmp_path / "hidden"
    shutil.move(str(d), hidden)
    fresh = tmp_path / "fresh.duckdb"
    rc, a1 = answer(tmp_path, "--task", scenario["task"], idx="fresh.duckdb")
    shutil.move(str(hidden), d)
    rc, a2 = answer(tmp_path, "--task", scenario["task"], idx="fresh.duckdb")
    s_before = {s["session_id"] for g in a1["grants"] for s in g["sessions"]}
    s_after = {s["session_id"] for g in a2["grants"] for s in g["sessions"]}
    assert other not in s_before and s_after == s_before | {other}
    assert fresh.exists()

    # tamper with one chunk of session 1: flagged, rows still shown, marked
    key = chunks.chunk_key(sid, 1)
    path = store._path(key)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    path.chmod(0o444)
    rc, a3 = answer(tmp_path, "--task", scenario["task"], "--reverify")
    assert rc == 1 and [r["session_id"] for r in a3["verification"]["not_intact"]] == [sid]
    rc, b = run("index", "rebuild", *store_args(tmp_path))
    rc, a3 = answer(tmp_path, "--task", scenario["task"])
    assert rc == 1 and not a3["verification"]["intact"]
    assert [r["session_id"] for r in a3["verification"]["not_intact"]] == [sid]
    s = next(s for g in a3["grants"] for s in g["sessions"] if s["session_id"] == sid)
    assert s["intact"] is False and s["status"] == "tampered"
    rc, text = run("audit", *store_args(tmp_path), "--task", scenario["task"])
    assert text.startswith("WARNING: 1 of") and f"SESSION {sid} !" in text


def test_export_parquet_reads_back_as_the_answer(scenario, tmp_path):
    src = scenario["tmp_path"]
    rc, a = answer(src, "--task", scenario["task"])
    rc, out = run("export", *store_args(src), "--out", str(tmp_path / "export"))
    assert rc == 0
    assert list((tmp_path / "export" / "statements").glob("event_date=*/*.parquet"))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    got = con.execute(
        f"SELECT session_id, n, text, decision, outcome, sqlstate, rows FROM read_parquet("
        f"'{tmp_path / 'export'}/statements/*/*.parquet', hive_partitioning = true) "
        "WHERE task = ? ORDER BY session_id, n", [scenario["task"]]).fetchall()
    want = sorted((s["session_id"], st["n"], st["text"], st["decision"], st["outcome"],
                   st["sqlstate"], st["rows"]) for g in a["grants"] for s in g["sessions"]
                  for st in s["statement_rows"])
    assert got == want
    rc, out = run("export", *store_args(src), "--out", str(tmp_path / "ocsf"), "--as", "ocsf")
    events = [json.loads(x) for f in (tmp_path / "ocsf").rglob("*.jsonl")
              for x in f.read_text().splitlines()]
    ds = [e for e in events if e["class_uid"] == 6005 and e["unmapped"]["task"] == scenario["task"]]
    assert len(ds) == len(want)
    assert all(e["type_uid"] == 600500 + e["activity_id"] and e["metadata"]["version"] for e in ds)
    assert any(e["class_uid"] == 3003 for e in events)


def test_export_to_s3_reads_back(scenario, s3_server, tmp_path, monkeypatch):
    from tests.support import fixtures_s3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", fixtures_s3.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", fixtures_s3.SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", fixtures_s3.REGION)
    src = scenario["tmp_path"]
    rc, a = answer(src, "--task", scenario["task"])
    prefix = f"export-{uuid.uuid4().hex[:8]}"
    rc, out = run("export", *store_args(src), "--out", s3_server.store_url(prefix),
                  "--s3-endpoint", s3_server.endpoint, "--s3-region", fixtures_s3.REGION,
                  "--retention-days", "1")
    assert rc == 0, out
    client = s3_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_server.bucket,
                                                     Prefix=prefix)["Contents"]]
    assert any("/statements/event_date=" in k for k in keys)
    for k in keys:
        head = client.head_object(Bucket=s3_server.bucket, Key=k)
        assert head.get("ObjectLockMode") == "COMPLIANCE"
    local = tmp_path / "dl"
    for k in keys:
        p = local / k
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(client.get_object(Bucket=s3_server.bucket, Key=k)["Body"].read())
    con = duckdb.connect()
    n = con.execute(f"SELECT count(*) FROM read_parquet('{local / prefix}/statements/*/*.parquet',"
                    " hive_partitioning = true) WHERE task = ?", [scenario["task"]]).fetchone()[0]
    assert n == sum(len(s["statement_rows"]) for g in a["grants"] for s in g["sessions"])


def test_closed_session_is_in_the_index_soon_after_it_closes(pg, make_proxy, tmp_path):
    """The watcher (`pgwitness index update --watch`) indexes a closed session within ~2 s
    (a generous bound: the target is an availability claim; the machine is loaded)."""
    import threading

    from policy.grants.store import open_store  # noqa: F401
    from recorder.signing import load_public_key  # noqa: F401

    handle = make_proxy(**recording(tmp_path))
    pub = public_key(tmp_path)
    stop = threading.Event()
    t = threading.Thread(target=index.watch, args=(tmp_path / "w.duckdb", LocalStore(
        tmp_path / "rec"), [pub]), kwargs={"interval": 0.2, "stop": stop.is_set}, daemon=True)
    t.start()
    try:
        with psycopg.connect(handle.dsn(), autocommit=True) as c:
            c.execute("select 42")
        closed = time.monotonic()

        def indexed():
            try:
                con = index.connect(tmp_path / "w.duckdb", read_only=True, wait=0.1)
            except duckdb.Error:
                return False
            try:
                return con.execute("select count(*) from statements where text = 'select 42' "
                                   "and outcome = 'ok'").fetchone()[0] == 1
            finally:
                con.close()
        wait_for(indexed, 10, "the closed session in the index", 0.05)
        assert time.monotonic() - closed < 5  # target 2 s; loose for a loaded machine
    finally:
        stop.set()
        t.join(10)
