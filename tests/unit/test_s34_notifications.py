"""A notification on a channel no ``listen:`` scope names is withheld (red-team round 79).

Code the grant runs may LISTEN where the client may not (a granted function's ``LISTEN``):
the relay then drops each NotificationResponse whose channel ``StatementPolicy.may_hear``
refuses, records its channel and size (never its payload: another session's data) for the
session's first ``_WITHHELD_NOTES``, and counts every one. Where code may set settings
(``encoding_code``) the server's reports of ``application_name`` and ``TimeZone`` are
withheld too. Through a real server: tests/integration/test_redteam_r79_fresh.py.
"""

from __future__ import annotations

import struct

from devtools.testing import frame, ready
from policy.engine import StatementPolicy
from policy.scopes import parse_scopes
from proxy.relay import _WITHHELD_NOTES, Relay
from tests.support.hot_path_driver import Sink

SECRET = b"R34-SECRET-PAYLOAD"


def notification(channel: str, payload: bytes = SECRET, pid: int = 4242) -> bytes:
    return frame(b"A", struct.pack(">i", pid) + channel.encode() + b"\x00" + payload + b"\x00")


def status(name: str, value: str) -> bytes:
    return frame(b"S", name.encode() + b"\x00" + value.encode() + b"\x00")


def relay(enforce: bool = True) -> tuple[Relay, Sink, StatementPolicy]:
    p = StatementPolicy(
        parse_scopes("read:public.t listen:ok"), task="T", shared=None, enforce=enforce
    )
    sink = Sink()
    return Relay(policy=p, recorder=sink), sink, p


def recorded(sink: Sink) -> bytes:
    return b"".join(bytes.fromhex(i[2]) for i in sink.items if i[0] == "wire")


def test_a_notification_on_a_channel_no_scope_names_is_withheld_and_recorded_without_payload():
    r, sink, _p = relay()
    granted = notification("ok", b"fine")
    out = r.from_server(notification("hidden") + granted + ready())
    assert out == granted + ready()
    assert SECRET not in recorded(sink) and SECRET not in repr(sink.items).encode()
    events = [i[2] for i in sink.items if i[0] == "event" and i[1] == "notification.withheld"]
    assert events == [{"channel": "hidden", "bytes": len(notification("hidden")),
                       "rule": "deny.listen", "n": 1, "more_not_recorded": False}]  # fmt: skip
    assert r.counters.notifications_withheld == 1


def test_a_malformed_notification_names_no_channel_and_is_withheld():
    r, _sink, _p = relay()
    assert r.from_server(frame(b"A", struct.pack(">i", 1) + b"ok") + ready()) == ready()


def test_the_first_ones_are_itemized_every_one_counted():
    r, sink, _p = relay()
    r.from_server(notification("hidden") * (_WITHHELD_NOTES + 5) + ready())
    events = [i[2] for i in sink.items if i[0] == "event"]
    assert len(events) == _WITHHELD_NOTES and events[-1]["more_not_recorded"]
    assert not any(e["more_not_recorded"] for e in events[:-1])
    assert r.counters.notifications_withheld == _WITHHELD_NOTES + 5


def test_a_dry_run_withholds_nothing():
    r, _sink, _p = relay(enforce=False)
    stream = notification("hidden") + ready()
    assert r.from_server(stream) == stream


def test_reported_free_text_settings_are_withheld_where_code_may_set_settings():
    r, _sink, p = relay()
    stream = (
        status("application_name", "x")
        + status("TimeZone", "UTC")
        + status("DateStyle", "ISO, MDY")
    )
    assert r.from_server(stream + ready()) == stream + ready()  # no such code: as they are
    p.encoding_code = True
    assert r.from_server(stream + ready()) == status("DateStyle", "ISO, MDY") + ready()
