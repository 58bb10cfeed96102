"""Round 20c's recorded session and the auditor's private copy of its store: the
fixtures ``recorded`` (one grant, one session through a recording proxy: an allowed
statement, a policy denial, a marker statement; once per test module) and ``copy`` (a
``Copy`` of that store per test, for an insider to tamper with), loaded for every test
module by tests/conftest.py. Used by red-team rounds 20c and 22.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from contextlib import redirect_stdout
from pathlib import Path

import psycopg
import pytest
import zstandard

from policy.grants.model import make_dsn
from proxy.cli import main as cli_main
from recorder import chunks
from recorder.records import Kind, Record, encode_record
from recorder.signing import load_public_key
from recorder.store.local import LocalStore
from recorder.verify import verify_session
from tests.support.proxies import AGENT
from tests.support.recording import recording
from tests.support.wait import wait_for

MARKER = b"r20c-marker"  # a statement's text, replaced by one of the same length


def require(cond: object, what: str) -> None:
    """A precondition of the attack: failing it is a broken test, never an xfail."""
    if not cond:
        raise RuntimeError(f"precondition failed: {what}")


@pytest.fixture(scope="module")
def recorded(pg, tmp_path_factory) -> dict:
    """One grant, one session through the proxy: allowed, denied by the policy, a marker."""
    from tests.support.fixtures_proxy import ProxyHandle, proxy_config

    tmp = tmp_path_factory.mktemp("r20c")
    handle = ProxyHandle(
        proxy_config(
            pg,
            **recording(
                tmp,
                **{"grants.store": f"sqlite:///{tmp / 'grants.db'}", "grants.poll_interval": 0.1},
            ),
        )
    ).start()
    gstore = handle.runtime.store
    task = f"R20C-{uuid.uuid4().hex[:6]}"
    try:
        g, token = handle.call(
            gstore.issue(
                agent=AGENT,
                task=task,
                reason="r20c red team",
                granted_by="lead",
                database="app",
                scopes="read:public.orders",
                ttl="10m",
            )
        )
        dsn = make_dsn(AGENT, token, handle.host, handle.port, "app")
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("select count(*) from orders").fetchone()
            with pytest.raises(psycopg.Error) as denied:
                c.execute("select * from secret.payroll")
            c.execute(f"select '{MARKER.decode()}' from orders limit 1").fetchall()

        async def n_conns():
            return len(handle.server.connections)

        wait_for(lambda: handle.call(n_conns()) == 0, 10, "the session to end")
    finally:
        handle.stop()
    store = LocalStore(tmp / "rec")
    pub = load_public_key(tmp / "signing.key.pub")
    reports = {sid: verify_session(store, sid, pub) for sid in store.sessions()}
    sessions = [sid for sid, r in reports.items() if not r.control]
    controls = [sid for sid, r in reports.items() if r.control]
    require(len(sessions) == 1 and controls, f"one session and a control stream: {reports}")
    require(
        all(r.status == "closed" for r in reports.values()),
        "\n".join(r.summary() for r in reports.values()),
    )
    return {
        "tmp": tmp,
        "task": task,
        "grant": g.id,
        "sid": sessions[0],
        "controls": controls,
        "denied_sqlstate": denied.value.sqlstate,
    }


class Copy:
    """A private copy of the recorded store, and what the auditor runs against it."""

    def __init__(self, recorded: dict, tmp_path: Path):
        self.tmp = tmp_path
        shutil.copytree(recorded["tmp"] / "rec", tmp_path / "rec")
        shutil.copy(recorded["tmp"] / "signing.key.pub", tmp_path / "signing.key.pub")
        self.root = tmp_path / "rec"
        self.store = LocalStore(self.root)
        self.pub = load_public_key(tmp_path / "signing.key.pub")
        self.task, self.grant = recorded["task"], recorded["grant"]
        self.sid, self.controls = recorded["sid"], recorded["controls"]

    # the auditor's commands
    def store_args(self) -> list[str]:
        return ["--store", str(self.root), "--public-key", str(self.tmp / "signing.key.pub")]

    def run(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with redirect_stdout(out):
            rc = cli_main(list(argv))
        return rc, out.getvalue()

    def verify(self, *argv: str) -> tuple[int, str]:
        return self.run("verify", *self.store_args(), *argv)

    def audit(self, *argv: str, index: str = "audit.duckdb") -> tuple[int, dict]:
        try:
            rc, out = self.run(
                "audit",
                *self.store_args(),
                "--index",
                str(self.tmp / index),
                "--format",
                "json",
                *argv,
            )
        except Exception as e:  # the auditor got no answer at all
            raise AssertionError(f"audit crashed: {e!r}") from e
        return rc, json.loads(out)

    def replay(self, sid: str) -> tuple[int, str]:
        return self.run("replay", *self.store_args(), sid)

    # the attacker's tools
    def path(self, sid: str, n: int, kind: str) -> Path:
        return self.root / (
            chunks.chunk_key(sid, n) if kind == "chunk" else chunks.ckpt_key(sid, n)
        )

    def last_n(self, sid: str) -> int:
        prefix = chunks.session_prefix(sid)
        return max(
            p[0] for k in self.store.list(prefix) if (p := chunks.parse_name(k[len(prefix) :]))
        )

    def records(self, sid: str, n: int) -> list[Record]:
        return chunks.decode_chunk(self.path(sid, n, "chunk").read_bytes())[1]

    def next_seq(self, sid: str) -> int:
        return self.records(sid, self.last_n(sid))[-1].seq + 1

    def write(self, path: Path, data: bytes) -> None:
        """Create or replace an object, restoring mode 0444 as a careful insider would."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.chmod(0o644)
            path.unlink()
        path.write_bytes(data)
        path.chmod(0o444)

    def delete(self, path: Path) -> None:
        path.unlink()


@pytest.fixture
def copy(recorded, tmp_path) -> Copy:
    return Copy(recorded, tmp_path)


def reencoded(blob: bytes, old: bytes, new: bytes) -> bytes:
    """The same chunk (session, n, seqs) with ``old`` replaced by ``new`` in its records."""
    h, recs = chunks.decode_chunk(blob)
    raw = b"".join(
        encode_record(
            r.seq,
            r.t_ns,
            r.direction,
            r.kind,
            "" if r.kind == Kind.WIRE else r.type,
            r.payload.replace(old, new),
        )
        for r in recs
    )
    return chunks.encode_chunk(
        h.session_id, h.n, h.first_seq, h.record_count, raw, zstandard.ZstdCompressor()
    )
