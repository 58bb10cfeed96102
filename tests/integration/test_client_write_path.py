"""Every byte the client reads after login is written, counted and recorded on one path
(``proxy.connection.ClientWriter`` → ``Relay.deliver``), the proxy's own frames included:
the login's last frames, a locally answered denial, the FATAL that ends a revoked
session. The authentication exchange is written on that path too, and never recorded.

The judge is the client's own socket: what a raw client read is compared byte for byte
with the session's recording and with the ``bytes_relayed`` metric.
"""

from __future__ import annotations

import uuid

import pytest

from common.wire import messages as m
from recorder.records import Direction, Kind
from tests.support.proxies import metric
from tests.support.rawpg import RawClient, error_fields
from tests.support.recording import (
    end_record,
    grants,
    issue_grant,
    live_session_ids,
    one_live_session,
    public_key,
    recording,
    records,
    revoke_from_another_host,
    wait_status,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(60)


def s2c_bytes() -> float:
    return metric("pgwitness_bytes_relayed_total", direction="s2c")


def test_what_the_client_read_is_what_was_recorded_and_counted(make_proxy, tmp_path):
    h = make_proxy(**recording(tmp_path), **grants(tmp_path))
    agent = f"writepath-{uuid.uuid4().hex[:8]}"
    grant, token = issue_grant(h, agent=agent)
    before = s2c_bytes()
    with RawClient(h.host, h.port) as c:
        c.startup(agent, "app")
        login = c.authenticate(token)
        ok = next(i for i, f in enumerate(login) if f[:1] == b"R" and m.decode_auth(f)[0] == m.AUTH_OK)
        auth, hello = login[: ok + 1], login[ok + 1 :]
        assert hello[-1][:1] == b"Z"
        sid = one_live_session(h)
        allowed = c.query("SELECT name FROM public.customers WHERE id = 1")
        assert allowed[-1][:1] == b"Z" and any(f[:1] == b"D" for f in allowed)
        denied = c.query("SELECT salary FROM secret.payroll")  # idle: answered by the proxy
        assert [f[:1] for f in denied] == [b"E", b"Z"]
        assert error_fields(denied[0])["C"] == "42501"
        revoke_from_another_host(tmp_path, grant.id, +2.0)
        wait_for(lambda: not live_session_ids(h), 5.0, "the revoked session to end")
        fatal = c.frames_until_eof()
        assert [error_fields(f).get("S") for f in fatal] == ["FATAL"]
    read_after_login = b"".join(hello + allowed + denied + fatal)
    store = h.runtime.recorder.store
    wait_status(store, sid, public_key(tmp_path), "closed")
    recs = records(store, sid)
    recorded = b"".join(r.payload for r in recs if r.kind == Kind.WIRE and r.direction == Direction.S2C)
    assert recorded == read_after_login
    for frame in auth:  # not one authentication frame reached the recording
        assert frame not in b"".join(r.payload for r in recs)
    assert end_record(recs)["cause"] == "revoked"
    # counted on the same path: the proxy's own frames are relayed bytes too
    wait_for(lambda: s2c_bytes() - before >= len(read_after_login), 5.0, "the session's bytes to be counted")
    assert s2c_bytes() - before == len(read_after_login)
