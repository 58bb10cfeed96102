"""Back-pressure of one live connection (proxy.flow.FlowControl): reading from a side
resumes only once no reason to pause it holds."""

from __future__ import annotations

from proxy.flow import FlowControl
from proxy.limits import FrameBudget


class Transport:
    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def flow() -> tuple[FlowControl, Transport, Transport]:
    client, upstream = Transport(), Transport()
    return FlowControl(client, upstream, FrameBudget(1 << 20)), client, upstream


def test_the_recorder_being_behind_stops_both_sides_until_it_caught_up():
    f, client, upstream = flow()
    f.recorder_behind()
    assert not client.reading and not upstream.reading
    f.recorder_caught_up()
    assert client.reading and upstream.reading


def test_a_side_paused_for_another_reason_stays_paused_when_the_recorder_caught_up():
    f, client, upstream = flow()
    f.client_full()  # the client reads slowly: the upstream is not read
    f.upstream_full()  # the upstream takes writes slowly: the client is not read
    f.recorder_behind()
    f.recorder_caught_up()
    assert not client.reading and not upstream.reading
    f.client_drained()
    assert upstream.reading and not client.reading
    f.upstream_drained()
    assert client.reading


def test_other_reasons_ending_do_not_resume_a_side_the_recorder_holds():
    f, client, upstream = flow()
    f.recorder_behind()
    f.client_full()
    f.client_drained()
    f.upstream_full()
    f.upstream_drained()
    f.hold_client()
    f.release_client()
    assert not client.reading and not upstream.reading
    f.recorder_caught_up()
    assert client.reading and upstream.reading


def test_a_client_held_for_an_offload_stays_held_while_the_upstream_drains():
    f, client, _ = flow()
    f.hold_client()
    f.upstream_full()
    f.upstream_drained()
    assert not client.reading
    f.release_client()
    assert client.reading


def test_nothing_resumes_after_close():
    f, client, upstream = flow()
    f.recorder_behind()
    f.close()
    f.recorder_caught_up()
    assert not client.reading and not upstream.reading
