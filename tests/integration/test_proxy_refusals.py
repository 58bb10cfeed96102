"""Refusals at the boundary are evidence: each failed login and refused connection is a
signed ``login.refused`` event in the recorder's control stream (never with the token), and
a flood of them costs a bounded number of events and objects."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from recorder.records import Kind
from recorder.verify import verify_all
from tests.support.fixtures_proxy import STATIC_PASSWORD, STATIC_USER
from tests.support.rawpg import RawClient
from tests.support.recording import public_key, recording, records
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(90)

SHAPE = {"agent", "database", "grant", "client", "reason", "sqlstate", "message"}


def _control_events(store, kind: str) -> list[dict]:
    out = []
    for sid in store.sessions():
        recs = records(store, sid)
        if recs and recs[0].json()["meta"].get("stream") == "control":
            out += [r.json() for r in recs if r.kind == Kind.CONTROL and r.type == kind]
    return out


def _all_bytes(root) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


async def _refused(**kw) -> asyncpg.PostgresError:
    try:
        conn = await asyncpg.connect(ssl="require", timeout=10, **kw)
    except asyncpg.PostgresError as exc:
        return exc
    await conn.close()
    raise AssertionError("the connection was accepted")


def test_every_kind_of_refusal_is_a_signed_control_event(make_proxy, tmp_path, client_tls):  # noqa: F811
    """Issue 13.6: before, these existed only in logs and metrics."""
    handle = make_proxy(**recording(tmp_path), **{
        "grants.store": f"sqlite:///{tmp_path / 'grants.db'}",
        "proxy.tls_cert": client_tls["cert"], "proxy.tls_key": client_tls["key"],
        "proxy.require_tls": True, "proxy.max_connections": 2, "proxy.prelogin_per_address": 2,
        "proxy.auth_fail_delay": 0.0,
    })
    store = handle.runtime.store

    def issue(**kw):
        return handle.call(store.issue(agent="refusal-bot", task="REF-1", reason="test",
                                       granted_by="pytest", database="app", scopes="read:public.orders",
                                       ttl="10m", **kw))

    live, live_token = issue()
    revoked, revoked_token = issue()
    handle.call(store.revoke(revoked.id, by="pytest"))
    kw = {"host": handle.host, "port": handle.port, "user": "refusal-bot", "database": "app"}

    async def attempts():
        got = {}
        got["password"] = await _refused(**kw, password="not-the-token")
        got["revoked"] = await _refused(**kw, password=revoked_token)
        got["wrong_database"] = await _refused(**{**kw, "database": "postgres"}, password=live_token)
        got["startup_params"] = await _refused(**kw, password=live_token,
                                               server_settings={"search_path": "evil"})
        held = [await asyncpg.connect(ssl="require", timeout=10, **kw, password=live_token)
                for _ in range(2)]
        got["too_many"] = await _refused(**kw, password=live_token)
        for conn in held:
            await conn.close()
        return got

    got = asyncio.run(attempts())
    with RawClient(handle.host, handle.port) as c:  # plaintext: TLS is required
        c.startup(user="refusal-bot")
        c.frames_until_eof()
    stalled = [RawClient(handle.host, handle.port, source="127.0.0.7") for _ in range(3)]
    for c in stalled:
        c.send(b"\x00")
    for c in stalled:
        c.close()

    expected = {
        "password": ("28P01", None), "revoked": ("28000", revoked.id),
        "wrong_database": ("28000", live.id), "startup_params": ("42501", live.id),  # decided after login (issue 12)
        "too_many": ("53300", None), "tls_required": ("28000", None),
        "prelogin_per_address": ("53300", None),
    }
    assert {k: v.sqlstate for k, v in got.items()} == {k: expected[k][0] for k in got}

    def by_reason():
        return {e["reason"]: e for e in _control_events(handle.runtime.recorder.store, "login.refused")}

    events = wait_for(lambda: (lambda e: e if set(expected) <= set(e) else None)(by_reason()),
                      10.0, "every refusal in the control stream")
    for reason, (sqlstate, grant) in expected.items():
        e = events[reason]
        assert set(e) == SHAPE, e
        assert (e["sqlstate"], e["grant"]) == (sqlstate, grant), e
        assert e["client"].startswith("127.0.0.")
        if reason != "prelogin_per_address":
            assert e["agent"] == "refusal-bot"
            assert e["database"] == ("postgres" if reason == "wrong_database" else "app")
        else:
            assert e["agent"] is None and e["client"].startswith("127.0.0.7:")
    handle.stop()
    # the events are signed: the control stream verifies, and no token is anywhere in it
    reports = verify_all(handle.runtime.recorder.store, public_key(tmp_path))
    assert reports and all(r.ok for r in reports), [r.summary() for r in reports]
    stored = _all_bytes(tmp_path / "rec")
    for secret in (live_token, revoked_token, "not-the-token"):
        assert secret.encode() not in stored


def test_a_flood_of_refusals_costs_a_bounded_number_of_events(make_proxy, tmp_path):
    """300 connections refused by the pre-login budget in about a second: at most
    ``refusal_events_per_second`` events a second, the rest in a summary, and the
    control stream's chunks are cut by age, not one per refusal."""
    handle = make_proxy(**recording(tmp_path), **{
        "proxy.prelogin_per_address": 1, "proxy.refusal_events_per_second": 5,
        "proxy.startup_timeout": 30.0, "proxy.prelogin_timeout": 30.0,
    })
    rec = handle.runtime.recorder
    chunks_before = rec.stats["chunks"]
    holder = RawClient(handle.host, handle.port, source="127.0.0.9")
    holder.send(b"\x00")
    t0 = time.monotonic()
    for _ in range(300):
        c = RawClient(handle.host, handle.port, source="127.0.0.9")
        c.close()
    elapsed = time.monotonic() - t0
    time.sleep(1.2)
    with RawClient(handle.host, handle.port) as ok:  # the proxy still serves, and a tick passes
        ok.login(STATIC_USER, STATIC_PASSWORD)
    holder.close()

    def summaries():
        return _control_events(rec.store, "login.refused.summary")

    def accounted() -> int:  # each second's summary is written once that second is over
        return len(_control_events(rec.store, "login.refused")) + sum(
            s["dropped"] for s in summaries()
        )

    wait_for(lambda: accounted() >= 300, 10.0, "every refusal an event or in a summary")
    events = _control_events(rec.store, "login.refused")
    dropped = sum(s["dropped"] for s in summaries())
    seconds = int(elapsed) + 3
    assert len(events) <= 5 * seconds, len(events)
    assert len(events) + dropped == 300, (len(events), dropped)
    assert all(set(s["by_reason"]) == {"prelogin_per_address"} for s in summaries())
    chunks = rec.stats["chunks"] - chunks_before
    print(f"300 refusals in {elapsed:.2f} s: {len(events)} events, {dropped} summarised, "
          f"{chunks} chunks sealed")
    assert chunks <= 2 * (seconds + 2) / handle.cfg.recorder.chunk_max_seconds


def test_recorder_gauges_are_real_before_the_listener_opens(make_proxy, tmp_path):
    """Issue 13.7: the housekeeping loop first ran a second after start, so
    pgwitness_recorder_healthy read 0 (page!) until then."""
    from prometheus_client import REGISTRY

    from proxy import metrics

    metrics.RECORDER_HEALTHY.set(0)
    handle = make_proxy(**recording(tmp_path))  # returns once the listener is open
    assert REGISTRY.get_sample_value("pgwitness_recorder_healthy") == 1
    assert handle.runtime.recorder.healthy
