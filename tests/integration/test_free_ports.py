"""free_port's race, forced: the port it chose is taken before the server binds it.

``devtools.localpg.free_port`` returns a port that was free a moment ago; a server spawned
on it later may find it taken (CI once saw ``cannot listen on 127.0.0.1:60153: Address
already in use``). Every test server started on such a port goes through
``on_free_ports``: started again on new ports when it exits saying the address is in use.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import psycopg
import pytest

import devtools.localpg as localpg
import tests.support.fixtures_proxy as fixtures_proxy
from devtools.localpg import LocalCluster, LocalClusterError, PortTaken, on_free_ports, wait_serving
from tests.support.fixtures_proxy import ProxyHandle, proxy_config


class Thief:
    """A ``free_port`` whose ``steal``-th calls (0 the first) give ports someone else
    listens on right after they were chosen: the race, every time."""

    def __init__(self, steal: tuple[int, ...] = (0,)):
        self.steal = steal
        self.taken: list[socket.socket] = []
        self.chosen: list[int] = []

    def __call__(self) -> int:
        port = REAL_FREE_PORT()
        if len(self.chosen) in self.steal:
            self.taken.append(socket.create_server(("127.0.0.1", port)))
        self.chosen.append(port)
        return port

    @property
    def stolen(self) -> list[int]:
        return [s.getsockname()[1] for s in self.taken]

    def close(self) -> None:
        for s in self.taken:
            s.close()


REAL_FREE_PORT = localpg.free_port


@pytest.fixture
def thief(monkeypatch):
    """Steals the first port chosen (``thief.steal`` may be changed before it is called)."""
    t = Thief()
    monkeypatch.setattr(fixtures_proxy, "free_port", t)
    monkeypatch.setattr(localpg, "free_port", t)
    yield t
    t.close()


def test_on_free_ports_tries_again_a_bounded_number_of_times():
    calls = []

    def start():
        calls.append(1)
        if len(calls) < 3:
            raise PortTaken("taken")
        return "serving"

    assert on_free_ports(start) == "serving" and len(calls) == 3

    def never() -> None:
        calls.append(1)
        raise PortTaken("taken again")

    calls.clear()
    with pytest.raises(LocalClusterError, match="3 times in a row"):
        on_free_ports(never, attempts=3)
    assert len(calls) == 3


def test_wait_serving_tells_a_taken_port_from_another_failure():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code = f"import socket; socket.create_server(('127.0.0.1', {port}))"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode != 0
        assert localpg.address_in_use(proc.stderr), proc.stderr
        failed = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        failed.wait(10)
        out = failed.stderr.read()
        with pytest.raises(PortTaken):
            wait_serving(failed, lambda: out, lambda _text: False)
    other = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    other.wait(10)
    with pytest.raises(LocalClusterError, match="exited with 3"):
        wait_serving(other, lambda: "", lambda _text: False)


def test_a_spawned_proxy_whose_port_was_taken_starts_on_another(spawn, thief):
    """The CI flake: ``pgwitness serve`` exits with 'Address already in use'; the fixture
    starts it again on new ports, and it serves."""
    p = spawn()
    assert thief.stolen and thief.stolen[0] in thief.chosen
    assert p.port not in thief.stolen and p.metrics_port not in thief.stolen
    assert len(p.taken_logs) == 1 and localpg.address_in_use(p.taken_logs[0]), p.taken_logs
    with psycopg.connect(p.dsn(), autocommit=True, connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_a_spawned_supervisor_whose_admin_port_was_taken_starts_on_another(spawn, thief, tmp_path):
    """Two workers (the supervisor binds) with the admin API, its port the one taken."""
    thief.steal = (2,)  # the proxy's port, the metrics port, the admin API's
    p = spawn(workers=2, admin_token="admin-token-for-the-thief-0123456",
              config=f'[grants]\nstore = "sqlite:///{tmp_path}/grants.db"\n')  # fmt: skip
    assert thief.stolen == [thief.chosen[2]] and p.admin_port not in thief.stolen
    assert len(p.taken_logs) == 1 and "admin.listen" in p.taken_logs[0], p.taken_logs
    assert p.log().count("admin API listening") == 1, p.log()
    with psycopg.connect(p.dsn(), autocommit=True, connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_an_in_process_proxy_whose_port_was_taken_starts_on_another(pg, thief):
    handle = ProxyHandle(proxy_config(pg)).start()
    try:
        assert handle.taken_ports == thief.stolen
        assert handle.cfg.proxy.listen == f"127.0.0.1:{handle.port}"
        with psycopg.connect(handle.dsn(), autocommit=True, connect_timeout=10) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        handle.stop()


def test_a_cluster_whose_port_was_taken_starts_on_another(thief):
    cluster = LocalCluster()  # its own directory, one the postgres OS user may enter
    try:
        stolen = cluster.port
        cluster.start()
        assert stolen in thief.stolen and cluster.port != stolen
        assert cluster.psql("select 1").strip() == "1"
    finally:
        cluster.stop()
