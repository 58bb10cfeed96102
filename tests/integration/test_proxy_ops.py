"""Operations: connection limits, graceful shutdown, SIGTERM, workers, metrics, back-pressure.

Process-level behaviour is tested on real ``pgwitness serve`` subprocesses
(``python -m proxy.cli`` is the ``pgwitness`` entry point).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import asyncpg
import psycopg
import pytest

from common.wire import messages as m
from devtools.localpg import PortTaken, free_port, on_free_ports
from tests.support.fixtures_proxy import (
    REPO,
    STATIC_PASSWORD,
    STATIC_USER,
    rss_bytes,
    serving_pids,
    unread_bytes,
)
from tests.support.proxies import expect_fatal, wait_sessions
from tests.support.rawpg import RawClient, describe, error_fields

pytestmark = pytest.mark.timeout(90)


# --- a real `pgwitness serve` process --------------------------------------------------


def _established_by_pid(pids: list[int], port: int) -> collections.Counter:
    """How many ESTABLISHED TCP connections on local ``port`` each process holds."""
    return collections.Counter(serving_pids(pids, port).values())


# --- connection limit ----------------------------------------------------------------


def test_max_connections(make_proxy):
    handle = make_proxy(**{"proxy.max_connections": 2})

    async def go():
        kw = dict(handle.connect_kwargs(), ssl=False, timeout=10)
        a = await asyncpg.connect(**kw)
        b = await asyncpg.connect(**kw)
        with pytest.raises(asyncpg.TooManyConnectionsError, match="too many clients"):
            await asyncpg.connect(**kw)
        assert await a.fetchval("select 1") == 1
        await b.close()
        c = await asyncpg.connect(**kw)  # the freed slot is usable again
        assert await c.fetchval("select 2") == 2
        await a.close()
        await c.close()

    asyncio.run(go())
    wait_sessions(handle, 0)


def test_max_connections_is_reported_to_default_libpq_clients(make_proxy):
    handle = make_proxy(**{"proxy.max_connections": 1})
    with psycopg.connect(handle.dsn(sslmode="disable"), connect_timeout=5):
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(handle.dsn(sslmode="prefer"), connect_timeout=5)
        assert "too many clients" in str(info.value)


def _run_in_thread(fn):
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # reported to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def _wait_active(pg, marker: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    sql = f"select count(*) from pg_stat_activity where state = 'active' and query like '%{marker}%' and query not like '%pg_stat_activity%'"
    while pg.psql(sql, db="app").strip() != "1":
        assert time.monotonic() < deadline, f"query {marker} never became active"
        time.sleep(0.05)


def test_cancel_works_when_proxy_is_full(make_proxy, pg):
    handle = make_proxy(**{"proxy.max_connections": 2})
    with (
        psycopg.connect(handle.dsn(sslmode="disable"), connect_timeout=5) as busy,
        psycopg.connect(handle.dsn(sslmode="disable"), connect_timeout=5),
    ):
        t, box = _run_in_thread(
            lambda: busy.execute("select pg_sleep(20) /* full-cancel */").fetchone()
        )
        try:
            _wait_active(pg, "full-cancel")
            try:
                busy.cancel_safe(timeout=3)
            except psycopg.Error:
                pass
            t.join(3)
            assert not t.is_alive(), "the query was not cancelled"
            assert isinstance(box.get("error"), psycopg.errors.QueryCanceled)
        finally:
            pg.psql(
                "select pg_cancel_backend(pid) from pg_stat_activity where query like '%full-cancel%' and pid <> pg_backend_pid()",
                db="app",
            )
            t.join(5)


# --- graceful shutdown (in process) ----------------------------------------------------


def test_graceful_shutdown(make_proxy):
    handle = make_proxy()
    grace = 1.5
    with RawClient(handle.host, handle.port) as idle, RawClient(handle.host, handle.port) as busy:
        idle.login()
        busy.login()
        busy.send(m.query("select pg_sleep(0.2)"))
        started = time.monotonic()
        done = asyncio.run_coroutine_threadsafe(handle.server.shutdown(grace), handle.loop)
        time.sleep(0.1)
        with pytest.raises(OSError):
            socket.create_connection((handle.host, handle.port), timeout=2).close()
        # A session may finish its work during the grace period and end normally.
        frames = busy.frames_until_ready()
        assert [f[:1] for f in frames] == [b"T", b"D", b"C", b"Z"], describe(frames)
        assert busy.scalar("select 'still working'") == "still working"
        busy.send(m.TERMINATE)
        assert busy.frames_until_eof() == []
        assert time.monotonic() - started < grace
        # An idle session is told why at the deadline.
        err = expect_fatal(idle, "57P01")
        assert "shutting down" in err["M"]
        assert grace - 0.1 <= time.monotonic() - started < grace + 2
        done.result(5)
    assert len(handle.server.connections) == 0


def test_shutdown_does_not_leave_the_upstream_query_running(make_proxy, pg):
    handle = make_proxy()
    with RawClient(handle.host, handle.port) as c:
        c.login()
        pid = c.backend_pid
        c.send(m.query("select pg_sleep(30) /* orphaned */"))
        _wait_active(pg, "orphaned")
        done = asyncio.run_coroutine_threadsafe(handle.server.shutdown(0.2), handle.loop)
        expect_fatal(c, "57P01")
        done.result(5)
    try:
        deadline = time.monotonic() + 3
        while pg.psql(f"select count(*) from pg_stat_activity where pid = {pid}").strip() != "0":
            assert time.monotonic() < deadline, (
                "the upstream backend still runs the ended session's query"
            )
            time.sleep(0.1)
    finally:
        pg.psql(f"select pg_terminate_backend({pid})")


def test_upstream_backend_killed_mid_session(proxy, pg):
    with RawClient(proxy.host, proxy.port) as c:
        c.login()
        pg.psql(f"select pg_terminate_backend({c.backend_pid})")
        frames = c.frames_until_eof()
    first = error_fields(frames[0])
    assert (first["S"], first["C"]) == ("FATAL", "57P01"), describe(frames)
    with psycopg.connect(proxy.dsn(sslmode="disable"), connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_upstream_fatal_is_the_last_word(proxy, pg):
    with RawClient(proxy.host, proxy.port) as c:
        c.login()
        pg.psql(f"select pg_terminate_backend({c.backend_pid})")
        frames = c.frames_until_eof()
    assert len(frames) == 1, describe(frames)


def test_terminate_after_query_lets_the_query_finish(proxy, pg):
    pg.psql(
        "create table public.pgw_fire_and_forget (via text); "
        "alter table public.pgw_fire_and_forget owner to pgwitness",
        db="app",
    )
    try:
        for host, port, user, password in (
            (pg.host, pg.port, "pgwitness", pg.users["pgwitness"]),  # what Postgres does
            (proxy.host, proxy.port, STATIC_USER, STATIC_PASSWORD),
        ):
            with RawClient(host, port) as c:
                c.login(user, password)
                via = "proxy" if port == proxy.port else "direct"
                c.send(
                    m.query(
                        f"insert into public.pgw_fire_and_forget select '{via}' from pg_sleep(0.3)"
                    )
                    + m.TERMINATE
                )
                c.frames_until_eof()
        deadline = time.monotonic() + 3
        sql = "select string_agg(via, ',' order by via) from public.pgw_fire_and_forget"
        while (rows := pg.psql(sql, db="app").strip()) != "direct,proxy":
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert rows == "direct,proxy"
    finally:
        pg.psql("drop table public.pgw_fire_and_forget", db="app")


def test_client_vanishing_mid_query_ends_the_backend_query(proxy, pg):
    """docs/operations.md: 'a client vanishing mid-query: ... the backend ends its query'."""
    c = RawClient(proxy.host, proxy.port)
    c.login()
    pid = c.backend_pid
    c.send(m.query("select pg_sleep(30) /* vanishing */"))
    _wait_active(pg, "vanishing")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # RST, no Terminate
    try:
        deadline = time.monotonic() + 3
        while pg.psql(f"select count(*) from pg_stat_activity where pid = {pid}").strip() != "0":
            assert time.monotonic() < deadline, "the backend still runs the vanished client's query"
            time.sleep(0.1)
    finally:
        pg.psql(f"select pg_terminate_backend({pid})")


# --- real processes --------------------------------------------------------------------


def test_sigterm_exits_zero_within_grace_json_logs(spawn):
    p = spawn(grace=1.0, extra_args=("--log-format", "json"))
    with psycopg.connect(p.dsn(application_name="sigterm-test"), connect_timeout=5) as conn:
        assert conn.execute("select current_user").fetchone() == ("pgwitness",)
    idle = RawClient(p.host, p.port)
    idle.login()
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    err = expect_fatal(idle, "57P01")
    assert "shutting down" in err["M"]
    assert p.proc.wait(5) == 0, p.log()
    assert 0.9 <= time.monotonic() - t0 < 4.0
    idle.close()
    # Every line is one JSON object (log shippers depend on it); session events say who.
    events = [json.loads(line) for line in p.log().splitlines() if line.strip()]
    started = [e for e in events if e["msg"] == "session started"]
    assert len(started) == 2
    for key in ("agent", "task", "grant", "peer", "ts", "level"):
        assert key in started[0], started[0]
    assert started[0]["agent"] == STATIC_USER
    assert [e["msg"] for e in events][-1] == "stopped"
    assert STATIC_PASSWORD not in p.log()


def test_metrics_endpoint(spawn):
    p = spawn()
    # Hostile clients first: the process keeps serving, and counts them.
    with RawClient(p.host, p.port) as c:
        c.send(b"\x16\x03\x01\x02\x00garbage")
        expect_fatal(c, "08P01")
    for payload in (struct.pack("!ii", -5, 0), b"\x00" * 9):  # invalid lengths: as Postgres,
        with RawClient(p.host, p.port) as c:  # closed without a word (and counted)
            c.send(payload)
            c.sock.settimeout(5)
            assert c.sock.recv(64) == b""
    with psycopg.connect(p.dsn(), connect_timeout=5) as conn:
        conn.execute("select repeat('x', 10000)").fetchone()
        deadline = time.monotonic() + 5
        while True:  # traffic counters are flushed about once a second
            s = p.metrics()
            if s.get(("pgwitness_bytes_relayed_total", (("direction", "s2c"),)), 0) > 10000:
                break
            assert time.monotonic() < deadline, sorted(k for k in s if k[0].startswith("pgwitness"))
            time.sleep(0.2)
        assert s[("pgwitness_connections_active", ())] == 1
        assert s[("pgwitness_bytes_relayed_total", (("direction", "c2s"),))] > 0
        assert s[("pgwitness_connections_total", (("outcome", "ok"),))] == 1
        assert s[("pgwitness_connections_total", (("outcome", "protocol_error"),))] == 3
        assert s[("pgwitness_upstream_connect_seconds_count", ())] == 1
        assert 0 < s[("pgwitness_upstream_connect_seconds_sum", ())] < 5
    deadline = time.monotonic() + 5
    while p.metrics()[("pgwitness_connections_active", ())] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert p.metrics()[("pgwitness_sessions_ended_total", (("cause", "terminate"),))] == 1


def test_event_loop_lag_shows_a_stalled_worker(spawn):
    """A worker that cannot run (here: stopped for 0.4 s; in life a long policy check or a
    starved CPU) serves no one meanwhile; pgwitness_event_loop_lag_seconds shows it."""
    p = spawn()

    def stalls_over_250ms() -> float:
        s = p.metrics()
        return s[("pgwitness_event_loop_lag_seconds_count", ())] - s[
            ("pgwitness_event_loop_lag_seconds_bucket", (("le", "0.25"),))
        ]

    deadline = time.monotonic() + 5
    while p.metrics().get(("pgwitness_event_loop_lag_seconds_count", ()), 0) < 5:
        assert time.monotonic() < deadline, "the lag probe is not running"
        time.sleep(0.1)
    assert stalls_over_250ms() == 0  # an idle worker keeps its 100 ms timer
    (pid,) = p.worker_pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(0.4)
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 5
    while stalls_over_250ms() < 1:
        assert time.monotonic() < deadline, "the stall was not measured"
        time.sleep(0.1)


def test_workers_share_the_port_and_cancel_reaches_the_right_query(spawn, pg):
    p = spawn(workers=2, grace=1.0)
    pids = p.worker_pids()
    assert len(pids) == 2 and p.proc.pid not in pids
    clients = []
    try:
        for _ in range(16):
            c = RawClient(p.host, p.port)
            clients.append(c)
            c.login()
        assert all(c.scalar("select 1") == "1" for c in clients)
        spread = _established_by_pid(pids, p.port)
        assert sum(spread.values()) == 16, spread
        assert sorted(spread.values()) == [8, 8], f"not balanced: {spread}"
        assert p.metrics()[("pgwitness_connections_active", ())] == 16  # summed over workers
    finally:
        for c in clients:
            c.close()
    # A cancel may land on either worker; it must stop the query it names and no other.
    with psycopg.connect(p.dsn(), connect_timeout=5) as bystander:
        bt, bbox = _run_in_thread(
            lambda: bystander.execute("select pg_sleep(2.5), 'bystander'").fetchone()
        )
        for i in range(5):
            with psycopg.connect(p.dsn(), connect_timeout=5) as conn:
                marker = f"cancel-{i}"
                t, box = _run_in_thread(
                    lambda c=conn, mk=marker: c.execute(
                        f"select pg_sleep(20) /* {mk} */"
                    ).fetchone()
                )
                _wait_active(pg, marker)
                conn.cancel_safe(timeout=3)
                t.join(3)
                assert not t.is_alive(), f"cancel {i} did not reach its query"
                assert isinstance(box.get("error"), psycopg.errors.QueryCanceled), box
        bt.join(5)
        assert bbox.get("result") == ("", "bystander"), bbox
    s = p.metrics()
    assert s[("pgwitness_connections_total", (("outcome", "ok"),))] >= 16 + 6
    assert s[("pgwitness_connections_total", (("outcome", "cancel"),))] == 5
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(5) == 0, p.log()


def test_listen_address_in_use_exits_1(tmp_path, pg):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        path = tmp_path / "pgwitness.toml"
        path.write_text(
            f'[proxy]\nlisten = "127.0.0.1:{port}"\n[auth]\nusers = {{ a = "b" }}\n'
            '[metrics]\nlisten = ""\n[recorder]\nenabled = false\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PGWITNESS_", "PG"))}
        done = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(path)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_connections_go_to_the_worker_with_fewest_not_by_address(spawn):
    """The supervisor hands each connection to the worker holding the fewest (proxy.handoff):
    after one worker's sessions end, the next ones all go to it."""
    p = spawn(workers=2, grace=1.0)
    pids = p.worker_pids()
    clients = []
    try:
        for _ in range(4):
            c = RawClient(p.host, p.port)
            clients.append(c)
            c.login()
        serving = serving_pids(pids, p.port)
        by_pid = collections.Counter(serving.values())
        assert sorted(by_pid.values()) == [2, 2], by_pid
        emptied = pids[0]
        for c in list(clients):
            if serving[c.sock.getsockname()[1]] == emptied:
                c.close()
                clients.remove(c)
        deadline = time.monotonic() + 5
        while _established_by_pid(pids, p.port)[emptied] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the worker's word reaches the supervisor
        fresh = []
        for _ in range(2):
            c = RawClient(p.host, p.port)
            clients.append(c)
            c.login()
            fresh.append(c.sock.getsockname()[1])
        serving = serving_pids(pids, p.port)
        assert [serving[port] for port in fresh] == [emptied, emptied], serving
        assert all(c.scalar("select 1") == "1" for c in clients)
    finally:
        for c in clients:
            c.close()


def test_workers_shut_down_when_the_supervisor_is_killed(spawn):
    """No worker outlives its supervisor: no connection can reach it any more."""
    p = spawn(workers=2, grace=1.0)
    pids = p.worker_pids()
    c = RawClient(p.host, p.port)
    c.login()
    os.kill(p.proc.pid, signal.SIGKILL)
    p.proc.wait(5)
    # new connections are refused by the kernel: nobody holds the port
    with pytest.raises(OSError):
        RawClient(p.host, p.port, timeout=2).login()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    c.close()
    assert not any(_alive(pid) for pid in pids), p.log()
    assert "the supervisor has gone" in p.log()


def _two_workers_with_a_grant(spawn, tmp_path, agent: str, task: str, scopes: str):
    """Two workers with the admin API; (the proxy, a grant's token issued through it)."""
    token = "admin-token-for-two-workers-0123"
    p = spawn(
        workers=2, admin_token=token, config=f'[grants]\nstore = "sqlite:///{tmp_path}/grants.db"\n'
    )
    admin_port = p.admin_port
    issue = json.dumps({"agent": agent, "task": task, "reason": "two workers",
                        "database": "app", "scopes": scopes, "ttl": "10m"}).encode()  # fmt: skip
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin_port}/v1/grants", data=issue, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201
        return p, json.loads(resp.read())["token"]


def test_workers_with_the_admin_api_one_serves_it_and_its_grants_log_in_on_each(spawn, tmp_path):
    """The admin API's port is bound once (by the supervisor) and served by one worker: a
    second worker binding it too used to fail at start, silently, taking the service down."""
    p, grant_token = _two_workers_with_a_grant(spawn, tmp_path, "two-bot", "W-2", "read:public.*")
    pids = p.worker_pids()
    conns = [psycopg.connect(host=p.host, port=p.port, user="two-bot", password=grant_token,
                             dbname="app", sslmode="disable", connect_timeout=10)
             for _ in range(2)]  # fmt: skip
    try:
        by_pid = _established_by_pid(pids, p.port)
        assert sorted(by_pid.values()) == [1, 1], by_pid  # one login on each worker
        assert all(c.execute("select 1").fetchone() == (1,) for c in conns)
    finally:
        for c in conns:
            c.close()
    assert p.proc.poll() is None, p.log()
    assert p.log().count("admin API listening") == 1, p.log()


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_a_dying_worker_takes_the_service_down_with_nonzero_exit(spawn):
    """A worker killed outright stops the others too, so a supervisor sees the failure."""
    p = spawn(workers=2, grace=1.0)
    victim, survivor = p.worker_pids()
    os.kill(victim, signal.SIGKILL)
    assert p.proc.wait(10) != 0, p.log()
    assert f"worker {victim} exited" in p.log()
    assert (
        not Path(f"/proc/{survivor}").exists()
        or "zombie" in Path(f"/proc/{survivor}/status").read_text()
    )


def _kill_leftovers(marker: str) -> list[int]:
    """Kill processes this test started (their command line holds our unique config path)."""
    found = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(proc_dir.name))
            try:
                os.kill(int(proc_dir.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    return found


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("section", ["metrics", "admin"])
def test_a_port_in_use_fails_cleanly(tmp_path, pg, workers, section):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = f'listen = "127.0.0.1:{taken.getsockname()[1]}"\n'
        path = tmp_path / "pgwitness.toml"
        log = tmp_path / "out.log"

        def serve() -> tuple[int, bool, list[int]]:
            proxy_port = free_port()
            path.write_text(
                f'[proxy]\nlisten = "127.0.0.1:{proxy_port}"\nworkers = {workers}\n'
                f'[auth]\nusers = {{ a = "b" }}\n'
                + (f"[metrics]\n{busy}" if section == "metrics" else '[metrics]\nlisten = ""\n')
                + (f'[admin]\n{busy}token = "admin-token-0123456789abcdef"\n'
                   f'[grants]\nstore = "sqlite:///{tmp_path}/grants.db"\n' if section == "admin" else "")
                + "[recorder]\nenabled = false\n"
            )  # fmt: skip
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PGWITNESS_", "PG"))}
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "proxy.cli", "serve", "--config", str(path)],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                rc = proc.wait(15)
                if f"cannot listen on 127.0.0.1:{proxy_port}" in log.read_text(errors="replace"):
                    raise PortTaken(f"proxy.listen 127.0.0.1:{proxy_port}")  # not the one we took
                time.sleep(0.5)
                try:
                    socket.create_connection(("127.0.0.1", proxy_port), timeout=1).close()
                    orphans = True
                except OSError:
                    orphans = False
            finally:
                proc.kill()
                leftovers = _kill_leftovers(str(path))
            return rc, orphans, leftovers

        rc, orphans, leftovers = on_free_ports(serve)
    text = log.read_text(errors="replace")
    assert rc != 0
    assert not orphans and not leftovers, f"processes left serving after exit: {leftovers}"
    assert f"cannot listen on {section}.listen" in text and "Traceback" not in text, text[-600:]


def _drain(sock: socket.socket) -> tuple[int, list[bytes]]:
    """Read a simple-query result to ReadyForQuery: (DataRow count, other frames)."""
    buf = bytearray()
    rows = 0
    others: list[bytes] = []
    unpack = struct.Struct("!i").unpack_from
    while True:
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed mid-result after {rows} rows: {describe(others)}"
        buf += chunk
        pos, n = 0, len(buf)
        while n - pos >= 5:
            end = pos + 1 + unpack(buf, pos + 1)[0]
            if end > n:
                break
            if buf[pos] == 0x44:  # DataRow
                rows += 1
            else:
                others.append(bytes(buf[pos:end]))
                if buf[pos] == 0x5A:  # ReadyForQuery
                    return rows, others
            pos = end
        del buf[:pos]


def test_slow_reader_back_pressure_bounds_proxy_memory(spawn, pg):
    p = spawn()
    rows_wanted = 200_000  # ~200 MB of DataRows
    with RawClient(p.host, p.port, timeout=30) as slow:
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        slow.login()
        before = rss_bytes(p.proc.pid)
        slow.send(
            m.query(
                f"SELECT repeat('x', 1000) /* slowreader */ FROM generate_series(1, {rows_wanted})"
            )
        )
        time.sleep(3)
        grown = rss_bytes(p.proc.pid) - before
        # The stall reached Postgres: its backend is blocked writing to the proxy.
        wait = pg.psql(
            "select wait_event from pg_stat_activity where query like '%slowreader%' and pid <> pg_backend_pid()",
            db="app",
        ).strip()
        assert wait == "ClientWrite", wait
        # Other sessions are served meanwhile.
        with psycopg.connect(p.dsn(), connect_timeout=5) as other:
            assert other.execute("select 7").fetchone() == (7,)
        assert grown < 50 * 1024 * 1024, (
            f"proxy RSS grew by {grown / 1e6:.0f} MB while the client stalled"
        )
        rows, others = _drain(slow.sock)
    assert rows == rows_wanted
    assert [error_fields(f) for f in others if f[:1] == b"E"] == []
    assert (
        others[-2][:1] == b"C"
        and others[-2][5:].rstrip(b"\x00") == f"SELECT {rows_wanted}".encode()
    )
    assert rss_bytes(p.proc.pid) - before < 50 * 1024 * 1024


def test_client_flooding_queries_without_reading_is_paused(spawn):
    """Pipelined queries with big answers, nothing read: Postgres blocks writing, stops reading,
    and the proxy stops reading the client, so the client's sends block and memory stays flat."""
    p = spawn()
    # 120 MB offered: more than the kernel's buffers on the way take (loopback sockets grow
    # theirs to tens of MB: tcp_rmem), so only a proxy that stops reading stops the client.
    n, pad = 12_000, "y" * 10_000
    message = m.query(f"select repeat('x', 10000) /* {pad} */")
    total = n * len(message)
    with RawClient(p.host, p.port, timeout=30) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        c.login()
        before = rss_bytes(p.proc.pid)
        data = memoryview(message * n)
        sent = 0
        c.sock.setblocking(False)
        blocked_since = None
        while sent < total:
            try:
                sent += c.sock.send(data[sent : sent + (1 << 16)])
                blocked_since = None
            except BlockingIOError:
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > 1.5:
                    break
                time.sleep(0.01)
        grown = rss_bytes(p.proc.pid) - before
        assert sent < total, "the client could push everything without reading"
        # The kernel holds what the client sent last, unread by the proxy: it stopped reading.
        assert unread_bytes(p.port, c.sock.getsockname()[1]) > 0
        assert grown < 10 * 1024 * 1024, f"proxy RSS grew by {grown / 1e6:.0f} MB"
        c.sock.setblocking(True)
        queries = -(-sent // len(message))  # the last one partly sent: finish it
        rest = threading.Thread(
            target=c.sock.sendall, args=(data[sent : queries * len(message)],), daemon=True
        )
        rest.start()
        ready = 0
        while ready < queries:
            f = c.read_frame()
            assert f is not None and f[:1] != b"E", f
            ready += f[:1] == b"Z"
        rest.join(10)
        assert c.scalar("select 'after the flood'") == "after the flood"


def test_ddl_through_one_worker_is_followed_by_the_others(spawn, tmp_path, pg):
    """Session 19: a statement prepared in one worker while ``o.s19w_pin`` was a column,
    bound after a session of the other worker renamed that column away: the server reads
    it as the call ``s19w_pin(o)``, a user function reading a secret table. The workers'
    catalog snapshots are their own; the renaming worker's news reaches the other through
    the supervisor (proxy.handoff, CatalogLoader.news), which decides the statement again
    at its Bind and refuses it."""
    secret = "s19w-secret-7c1d"
    pg.psql(
        "SET ROLE pgwitness;\n"
        "CREATE TABLE public.s19w (id int, s19w_pin text);\n"
        "INSERT INTO public.s19w VALUES (1, 'harmless');\n"
        "CREATE TABLE secret.s19w_vault (v text);\n"
        f"INSERT INTO secret.s19w_vault VALUES ('{secret}');\n"
        "CREATE FUNCTION public.s19w_pin(public.s19w) RETURNS text LANGUAGE sql\n"
        "    AS $$ SELECT v FROM secret.s19w_vault $$;\n"
        "RESET ROLE;\n",
        db="app",
    )
    p, grant_token = _two_workers_with_a_grant(
        spawn, tmp_path, "news-bot", "W-NEWS", "read:public.s19w ddl:public.s19w"
    )
    probe = "SELECT o.s19w_pin FROM public.s19w o"
    try:
        prepared = RawClient(p.host, p.port, timeout=10)
        renamer = RawClient(p.host, p.port, timeout=10)
        try:
            prepared.login("news-bot", grant_token)
            renamer.login("news-bot", grant_token)
            by_pid = _established_by_pid(p.worker_pids(), p.port)
            assert sorted(by_pid.values()) == [1, 1], by_pid  # one session on each worker
            prepared.send(m.parse("s19w", probe), m.SYNC)
            frames = prepared.frames_until_ready()
            assert frames[0][:1] == b"1", describe(frames)  # ParseComplete: allowed
            assert renamer.scalar("SELECT count(*) FROM public.s19w") == "1"
            renamer.query("ALTER TABLE public.s19w RENAME COLUMN s19w_pin TO gone")
            time.sleep(0.3)  # the news crosses the supervisor
            prepared.send(m.bind_no_params(statement="s19w"), m.execute(), m.SYNC)
            raw = prepared.frames_until_ready()
            got = " ".join(describe(raw))
        finally:
            prepared.close()
            renamer.close()
        assert secret.encode() not in b"".join(raw), got
        assert "42501" in got and "decided again at its Bind" in got, got
    finally:
        pg.psql(
            "DROP FUNCTION IF EXISTS public.s19w_pin(public.s19w);\n"
            "DROP TABLE IF EXISTS public.s19w, secret.s19w_vault;\n",
            db="app",
        )
