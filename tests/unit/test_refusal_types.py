"""The connection's typed outcomes: ``Refused`` (one exception type for every refusal
before a session is live) and ``EndCause`` (why a session ended). Their strings are
metric labels and recorded values that dashboards and recordings already hold, so they
are pinned here."""

from __future__ import annotations

import json

from common.wire.errors import INVALID_AUTHORIZATION, PgError, Refused
from proxy.auth import refused
from proxy.causes import EndCause
from proxy.upstream import UpstreamError


def test_end_causes_are_the_strings_recordings_already_hold():
    assert {c.value for c in EndCause} == {
        "terminate", "disconnect", "upstream", "protocol_error", "expired", "revoked",
        "shutdown", "handshake_aborted", "handshake_failed", "prelogin_evicted",
    }  # fmt: skip
    # a member is its string wherever it is written: JSON records, labels, logs
    assert json.dumps({"cause": EndCause.REVOKED}) == '{"cause": "revoked"}'
    assert str(EndCause.EXPIRED) == "expired" and f"{EndCause.SHUTDOWN}" == "shutdown"


def test_a_refusal_is_fatal_and_names_its_outcome_reason_and_grant():
    r = refused("grant g1 for task t was revoked", "revoked", "g1")
    assert isinstance(r, PgError) and r.fatal and r.sqlstate == INVALID_AUTHORIZATION
    assert (r.outcome, r.reason, r.grant) == ("refused", "revoked", "g1")
    assert Refused("x", "53300", outcome="too_many").reason == "too_many"  # reason defaults


def test_refused_of_keeps_what_the_client_reads():
    up = UpstreamError("upstream unreachable")
    r = Refused.of(up, "upstream_failed")
    assert r.encode() == up.encode()
    assert (r.outcome, r.reason, r.grant) == ("upstream_failed", "upstream_failed", None)
    # a refusal re-labelled keeps its reason and grant (auth failures: the grant's state)
    again = Refused.of(refused("expired", "expired", "g2"), "auth_failed")
    assert (again.outcome, again.reason, again.grant) == ("auth_failed", "expired", "g2")
    assert Refused.of(PgError("e", "XX000", "ERROR"), "refused").severity == "ERROR"
