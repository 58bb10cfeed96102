"""Abuse before and around login: stalled sockets, huge unfinished frames, password guessing.

Each test attacks one budget of proxy/limits.py or the login throttle (common/throttle.py) from
127.0.0.x and checks that a real client from elsewhere is still served; counts and time
limits are bounded, and the time bounds are the loose form of a target the issue names.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import statistics
import struct
import threading
import time

import asyncpg
import psycopg
import pytest
from prometheus_client import REGISTRY

from common.wire import messages as m
from tests.support.fixtures_proxy import STATIC_PASSWORD, STATIC_USER
from tests.support.proxies import expect_fatal
from tests.support.rawpg import RawClient
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(120)


def _fd_room(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            try:  # root (CI) may raise the hard limit too
                resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
                return
            except (ValueError, OSError):
                pytest.fail(f"needs {n} file descriptors and the hard limit is {hard}: "
                            f"run as root or raise it (ulimit -Hn {n})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def _stall(host: str, port: int, source: str, count: int, startup: bool = False) -> list[RawClient]:
    """``count`` connections from ``source`` that each send one byte of a startup packet (or
    a whole one, and then never answer the SASL request)."""
    out = []
    for _ in range(count):
        c = RawClient(host, port, source=source)
        if startup:
            c.startup()
        else:
            c.send(b"\x00")
        out.append(c)
    return out


def _login_seconds(handle, n: int, **kw) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with psycopg.connect(handle.dsn(sslmode="disable", **kw), connect_timeout=5) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        times.append(time.perf_counter() - t0)
    return times


def _p99(times: list[float]) -> float:
    return sorted(times)[max(0, round(0.99 * len(times)) - 1)]


# --- 1. the pre-login budget ---------------------------------------------------------------


@pytest.mark.parametrize("stall", ["one byte", "startup packet"])
def test_a_thousand_stalled_sockets_from_one_address_do_not_lock_out_logins(make_proxy, stall):
    """Issue 13.1: 1,000 sockets from 127.0.0.2 send one byte (or a whole startup packet)
    and stall. Before, they filled max_connections + slack (or max_connections) and every
    login got 53300. Now they hold at most ``prelogin_per_address`` places of their own,
    and at most ``auth_concurrency_per_address`` logins in progress, and logins from
    127.0.0.1 go on (target: p99 of 50 logins under 100 ms; asserted loosely, the machine
    is shared)."""
    _fd_room(4096)
    handle = make_proxy(**{
        "proxy.max_connections": 50,
        "proxy.startup_timeout": 60.0,
        "proxy.prelogin_timeout": 60.0,  # the budget, not the deadline, must do the work
    })
    def refused() -> float:
        return REGISTRY.get_sample_value("pgwitness_connections_total", {"outcome": "prelogin_refused"}) or 0

    _login_seconds(handle, 1)  # warm up: the first login in a process imports the policy
    before = refused()
    stalled = _stall(handle.host, handle.port, "127.0.0.2", 1000, startup=stall == "startup packet")
    try:
        per_address = handle.cfg.proxy.prelogin_per_address
        logging_in = handle.cfg.proxy.auth_concurrency_per_address if stall == "startup packet" else 0
        server = handle.server
        # every one of the 1,000 has been accepted and placed (or refused) by the proxy
        wait_for(lambda: refused() - before + server.prelogin.count("127.0.0.2") + server.admitted == 1000)
        assert server.admitted == logging_in and server.prelogin.count("127.0.0.2") <= per_address
        times = _login_seconds(handle, 50)
        print(f"login with 1000 stalled sockets ({stall}) held: median "
              f"{statistics.median(times) * 1e3:.1f} ms, p99 {_p99(times) * 1e3:.1f} ms")
        assert _p99(times) < 1.0, times
        # the stalled sockets still hold their places: nothing timed out meanwhile
        wait_for(lambda: server.admitted == logging_in)  # our own logins have all left
        assert server.prelogin.count("127.0.0.2") > 0
    finally:
        for s in stalled:
            s.close()


def test_stalled_sockets_from_many_addresses_give_way_to_a_real_login(make_proxy):
    """When the pre-login places are all taken (an attacker with many addresses), the
    oldest stalled socket is closed for a newcomer, so a client that sends its startup
    packet at once still gets in."""
    handle = make_proxy(**{
        "proxy.prelogin_max": 40,
        "proxy.prelogin_per_address": 8,
        "proxy.startup_timeout": 60.0,
        "proxy.prelogin_timeout": 60.0,
    })
    stalled = []
    try:
        for k in range(3, 9):  # 6 addresses x 8 = 48 > 40 places
            stalled += _stall(handle.host, handle.port, f"127.0.0.{k}", 8)
        wait_for(lambda: len(handle.server.prelogin) == 40)
        assert len(_login_seconds(handle, 10)) == 10
        # the oldest were closed, with a FATAL that says why
        assert "waited longest" in expect_fatal(stalled[0], "53300")["M"]
    finally:
        for s in stalled:
            s.close()


def test_first_bytes_have_a_short_deadline(make_proxy):
    handle = make_proxy(**{"proxy.startup_timeout": 30.0, "proxy.prelogin_timeout": 0.5})
    t0 = time.monotonic()
    c = RawClient(handle.host, handle.port)
    c.sock.sendall(b"\x00\x00")
    err = expect_fatal(c, "08P01")
    assert "timeout" in err["M"] and time.monotonic() - t0 < 10
    c.close()
    # a login that is slow *after* its startup packet is not held to it
    with RawClient(handle.host, handle.port) as slow:
        slow.startup()
        time.sleep(1.0)
        assert slow.authenticate()[-1][:1] == b"Z"


# --- 3. the login throttle ------------------------------------------------------------------


TWO_AGENTS = {STATIC_USER: STATIC_PASSWORD, "bob": "bob-pw"}


def test_guessing_at_full_speed_is_slowed_per_agent_not_per_address(make_proxy):
    """Issue 13.3: 20 workers guess alice's password in parallel for 4 s. With a 0.1 s base
    delay, a 0.4 s ceiling and 4 concurrent authentications per address they get at most
    4 (the first burst) + 1 + 1 + 1 (0.1 + 0.2 + 0.4 s ramp) + 4 s / 0.4 s = 17 guesses;
    before, per-address delays that each parallel attempt slept through let ~all 20 guess
    every round. Meanwhile bob, from the same address, logs in without delay, and his
    success does not reset alice's back-off."""
    handle = make_proxy(**{
        "auth.users": TWO_AGENTS,
        "proxy.auth_fail_delay": 0.1,
        "proxy.auth_fail_max_delay": 0.4,
        "proxy.auth_concurrency_per_address": 4,
    })
    duration = 4.0
    guesses = 0
    lock = threading.Lock()

    async def guesser(stop: float):
        nonlocal guesses
        while time.monotonic() < stop:
            try:
                conn = await asyncpg.connect(**handle.connect_kwargs(password="wrong"), ssl=False, timeout=20)
                await conn.close()
                raise AssertionError("a wrong password was accepted")
            except asyncpg.InvalidPasswordError:
                if time.monotonic() < stop + 0.05:
                    with lock:
                        guesses += 1
            except (asyncpg.PostgresError, OSError, TimeoutError):
                pass  # queued past the startup timeout: no guess was made

    async def bob_logs_in() -> list[float]:
        times = []
        await asyncio.sleep(1.0)  # alice's back-off is under way
        for _ in range(5):
            t0 = time.perf_counter()
            conn = await asyncpg.connect(**handle.connect_kwargs(user="bob", password="bob-pw"),
                                         ssl=False, timeout=20)
            assert await conn.fetchval("select 1") == 1
            await conn.close()
            times.append(time.perf_counter() - t0)
        return times

    async def go():
        stop = time.monotonic() + duration
        tasks = [asyncio.create_task(guesser(stop)) for _ in range(20)]
        bob = await bob_logs_in()
        await asyncio.gather(*tasks)
        return bob

    bob = asyncio.run(go())
    print(f"alice's guesses in {duration} s with 20 workers: {guesses}; bob's logins: "
          + ", ".join(f"{t * 1e3:.0f} ms" for t in bob))
    assert guesses <= 17, guesses
    assert max(bob) < 0.35, bob  # no back-off (the smallest would be 0.4 s)
    # bob's successes did not reset alice's record
    assert handle.server.throttle.delay("127.0.0.1", STATIC_USER) > 0


def test_throttle_unit_keys_and_reset():
    from common.throttle import FailureThrottle

    t = FailureThrottle(0.1, 60, 1.0)
    for _ in range(3):
        t.failed("10.0.0.1", "alice")
    assert t.delay("10.0.0.1", "alice") == pytest.approx(0.4)
    assert t.delay("10.0.0.1", "bob") == 0 and t.delay("10.0.0.2", "alice") == 0
    t.succeeded("10.0.0.1", "bob")
    assert t.delay("10.0.0.1", "alice") == pytest.approx(0.4)
    for _ in range(10):
        t.failed("10.0.0.1", "alice")
    assert t.delay("10.0.0.1", "alice") == 1.0  # the ceiling
    t.succeeded("10.0.0.1", "alice")
    assert t.delay("10.0.0.1", "alice") == 0


# --- 2. the memory budget for frames read whole -----------------------------------------------


def _push(socks: list, payload: memoryview, *, stall: float = 1.5, limit: float = 30.0) -> list[int]:
    """Send ``payload`` on every socket (non-blocking, round robin) until each has sent it
    all or has made no progress for ``stall`` seconds; returns the bytes each sent."""
    sent = [0] * len(socks)
    last = [time.monotonic()] * len(socks)
    for s in socks:
        s.setblocking(False)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        active = False
        for i, s in enumerate(socks):
            if sent[i] >= len(payload) or time.monotonic() - last[i] > stall:
                continue
            active = True
            try:
                sent[i] += s.send(payload[sent[i] : sent[i] + (1 << 20)])
                last[i] = time.monotonic()
            except BlockingIOError:
                pass
        if not active:
            break
        time.sleep(0.001)
    for s in socks:
        s.setblocking(True)
    return sent


def test_sixteen_unfinished_60mib_queries_are_paused_not_buffered(spawn):  # noqa: F811
    """Issue 13.2: 16 logged-in connections each send 59 of a 60 MiB Query and stop. Before,
    the worker buffered all of it (1.48 GB RSS). Now the frames the worker may hold whole
    share proxy.frame_memory_bytes (128 MiB): two fit, the other fourteen are paused
    (their sends block), RSS stays under 400 MB and another session answers at once
    (target 50 ms; asserted loosely)."""
    from tests.support.fixtures_proxy import rss_bytes

    p = spawn()
    size = 60 * 1024 * 1024
    head = b"Q" + struct.pack("!i", 4 + size)
    payload = memoryview(head + b"x" * (size - 1024 * 1024))
    attackers = [RawClient(p.host, p.port, timeout=30) for _ in range(16)]
    try:
        for c in attackers:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
            c.login()
        with RawClient(p.host, p.port) as other:
            other.login()
            sent = _push([c.sock for c in attackers], payload)
            rss = rss_bytes(p.proc.pid)
            whole = sum(n == len(payload) for n in sent)
            times = []
            for i in range(20):
                t0 = time.perf_counter()
                assert other.scalar(f"select {i}") == str(i)
                times.append(time.perf_counter() - t0)
            print(f"RSS {rss / 2**20:.0f} MiB; {whole} of 16 sent all; "
                  f"other session: median {statistics.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms")
            assert rss < 400 * 1024 * 1024, f"RSS {rss / 2**20:.0f} MiB"
            assert whole <= 2, sent  # the rest were paused
            assert statistics.median(times) < 0.25, times
        # a paused connection goes on once a held one is gone
        attackers[0].close()
        attackers[1].close()
        more = _push([c.sock for c in attackers[2:4]], payload[max(sent[2], sent[3]):], stall=3.0)
        assert sum(more) > 32 * 1024 * 1024, (sent, more)
    finally:
        for c in attackers:
            c.close()


def test_a_statement_over_max_message_bytes_names_the_limit(make_proxy):
    handle = make_proxy(**{"proxy.max_message_bytes": 4096})
    with RawClient(handle.host, handle.port) as c:
        c.login()
        c.send(m.query("select '" + "x" * 5000 + "'"))
        err = expect_fatal(c, "08P01")
        assert "limit 4096 bytes: proxy.max_message_bytes" in err["M"], err
