"""Recording proxies under test: their config, their grants, and reading back what they
stored (records, raw bytes, verification status)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import zstandard

from recorder import chunks
from recorder.records import DECISION_SHAPE, DecisionShapes, Kind
from recorder.replay import (
    iter_records,
)
from recorder.signing import load_public_key
from recorder.verify import verify_session
from tests.support.wait import wait_for


def recording(tmp_path: Path, **extra) -> dict:
    """Config overrides for a recording proxy with everything private to this test."""
    return {
        "recorder.enabled": True,
        "recorder.store": str(tmp_path / "rec"),
        "recorder.spool_dir": str(tmp_path / "spool"),
        "recorder.signing_key": str(tmp_path / "signing.key"),
        "recorder.chunk_max_seconds": 0.2,
        "recorder.fsync": False,
        **extra,
    }


def public_key(tmp_path: Path):
    return load_public_key(tmp_path / "signing.key.pub")


def live_session_ids(handle) -> list[str]:
    async def ids():
        return [c.srec.id for c in handle.server.connections if c.srec is not None]

    return handle.call(ids())


def one_live_session(handle) -> str:
    ids = wait_for(lambda: live_session_ids(handle), what="a live recorded session")
    assert len(ids) == 1, ids
    return ids[0]


def wait_status(store, sid: str, pub, status: str, timeout: float = 5.0):
    """Poll verify_session until it reports `status`; return the report."""
    last = None

    def check():
        nonlocal last
        last = verify_session(store, sid, pub)
        return last if last.status == status else None

    try:
        return wait_for(check, timeout, f"session {sid} to verify as {status}", 0.05)
    except AssertionError:
        raise AssertionError(f"expected {status}, last report: {last.summary()}") from None


def audit_rows(handle, sid: str) -> list[dict]:
    """The auditor's statement rows (recorder.audit.derive.SessionFacts) of a session of
    ``handle``'s proxy, once its recording is closed."""
    from recorder.audit.derive import SessionFacts

    store = handle.runtime.recorder.store
    wait_status(store, sid, public_key(handle.tmp), "closed")
    facts = SessionFacts(sid)
    for r in iter_records(store, sid):
        facts.feed(r)
    facts.finish()
    return facts.statements


def records(store, sid: str) -> list:
    return list(iter_records(store, sid))


def decisions(recs: list) -> list[dict]:
    """Every decision's whole payload, in order, as a reader expands it (an allowed
    decision that refers to a decision.shape gets the shape's fields)."""
    shapes = DecisionShapes()
    out = []
    for r in recs:
        if r.kind == Kind.META and r.type == DECISION_SHAPE:
            shapes.define(r.json())
        elif r.kind == Kind.DECISION:
            out.append(shapes.expand(r.json()))
    return out


def stored_bytes(root: Path) -> list[tuple[Path, bytes]]:
    """Every file under `root`, and for chunks also their decompressed record bytes."""
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        out.append((p, data))
        if p.suffix == ".chunk":
            h = chunks.decode_chunk_header(data)
            raw = zstandard.ZstdDecompressor().decompress(data[h.body_offset:], max_output_size=h.raw_len)
            out.append((p.with_suffix(".chunk(decompressed)"), raw))
    return out


def assert_absent(root: Path, needles: list[bytes]) -> None:
    blobs = stored_bytes(root)
    assert blobs, f"nothing stored under {root}"
    for path, data in blobs:
        for needle in needles:
            assert needle not in data, f"{needle!r} found in {path}"


def issue_grant(handle, **kw):
    args = {
        "agent": "billing-bot", "task": "INC-4821", "reason": "refund audit",
        "granted_by": "tester", "database": "app", "scopes": "read:public.customers",
        "ttl": "10m",
    }
    args.update(kw)
    return handle.call(handle.runtime.store.issue(**args))


def grants(tmp_path: Path) -> dict:
    return {"grants.store": f"sqlite:///{tmp_path / 'grants.db'}", "grants.poll_interval": 0.2}


def end_record(recs) -> dict:
    last = recs[-1]
    assert last.kind == Kind.META and last.type == "session.end", last
    return last.json()


def revoke_from_another_host(tmp_path: Path, grant_id: str, clock_offset: float) -> None:
    """Revoke through a second store on the same database, whose clock is off by `offset` s."""
    from datetime import UTC, datetime, timedelta

    from policy.grants.store import open_store as open_grants

    async def go():
        store = await open_grants(
            f"sqlite:///{tmp_path / 'grants.db'}",
            clock=lambda: datetime.now(UTC) + timedelta(seconds=clock_offset))
        try:
            await store.revoke(grant_id, by="other-host")
        finally:
            await store.close()

    asyncio.run(go())
