"""The answer to DISCARD ALL that lets a kept upstream session serve again
(proxy/upstream_pool.py): only the complete, clean one, whichever way it is cut."""

from __future__ import annotations

import pytest

from common.wire import messages as m
from proxy.upstream_pool import ResetAnswer, reuse_key

PARAMS = {"DateStyle": "ISO, MDY", "application_name": "pgw:abc/app", "TimeZone": "UTC"}


def frame(t: bytes, body: bytes) -> bytes:
    return t + (len(body) + 4).to_bytes(4, "big") + body


def status(name: str, value: str) -> bytes:
    return frame(b"S", name.encode() + b"\0" + value.encode() + b"\0")


DONE = frame(b"C", b"DISCARD ALL\0")
IDLE = m.ready_for_query(b"I")
NOTICE = frame(b"N", b"SNOTICE\0Mhello\0\0")
NOTIFY = frame(b"A", (7).to_bytes(4, "big") + b"chan\0payload\0")


def feed_all(answer: ResetAnswer, data: bytes, step: int):
    """As the pool reads it: decided before the end, a False stands, and a True is undone
    by what comes after (a parked session that hears from the server is closed)."""
    out = None
    for i in range(0, len(data), step):
        out = answer.feed(data[i : i + step])
        if out is not None and i + step < len(data):
            return False
    return out


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
@pytest.mark.parametrize(
    ("data", "ok"),
    [
        (DONE + IDLE, True),
        # settings RESET ALL puts back to the login's values, notices and notifications
        # already on their way: fine
        (status("DateStyle", "ISO, MDY") + NOTICE + NOTIFY + DONE + IDLE, True),
        (status("application_name", "pgw:abc/app") + DONE + IDLE, True),
        # a setting the reset left away from the login's value (ALTER ROLE ... SET since)
        (status("TimeZone", "Europe/Paris") + DONE + IDLE, False),
        (status("search_path_unknown", "x") + DONE + IDLE, False),
        # an error (DISCARD ALL inside a transaction block), another command's tag
        (frame(b"E", b"SERROR\0C25001\0Mno\0\0") + IDLE, False),
        (frame(b"C", b"DISCARD PLANS\0") + IDLE, False),
        (IDLE, False),  # no CommandComplete
        (DONE + m.ready_for_query(b"T"), False),  # still in a transaction
        (DONE + m.ready_for_query(b"E"), False),
        (DONE + IDLE + NOTICE, False),  # anything after the answer
        (frame(b"D", b"\0\0") + DONE + IDLE, False),  # rows: not DISCARD ALL's answer
        (b"C\xff\xff\xff\xff" + IDLE, False),  # a length that cannot be
    ],
)
def test_only_a_clean_complete_answer_lets_the_session_serve_again(data, ok, step):
    assert feed_all(ResetAnswer(dict(PARAMS)), data, step) is ok


def test_an_incomplete_answer_is_not_yet_an_answer():
    answer = ResetAnswer(dict(PARAMS))
    assert answer.feed(DONE) is None
    assert answer.feed(IDLE[:3]) is None
    assert answer.feed(IDLE[3:]) is True


def test_the_key_names_the_principal_and_every_parameter_but_the_backends_tag():
    base = {"application_name": "pgw:111/app", "search_path": "public", "work_mem": "4MB"}
    key = reuse_key("g1", "app", "pgwitness", "app", base)
    assert key == reuse_key("g1", "app", "pgwitness", "app", {**base, "application_name": "pgw:222/app"})
    assert key != reuse_key("g2", "app", "pgwitness", "app", base)  # another grant
    assert key != reuse_key("g1", "other", "pgwitness", "app", base)
    assert key != reuse_key("g1", "app", "pgw_g_x", "app", base)
    assert key != reuse_key("g1", "app", "pgwitness", "another-app", base)
    assert key != reuse_key("g1", "app", "pgwitness", "app", {**base, "search_path": '"$user", public'})
    assert key != reuse_key("g1", "app", "pgwitness", "app", {**base, "work_mem": "8MB"})
    assert key != reuse_key("g1", "app", "pgwitness", "app", {k: v for k, v in base.items() if k != "work_mem"})
