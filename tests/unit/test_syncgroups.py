"""The Sync-group tracker (proxy/wire/syncgroups.py), driven by message type codes alone.

No sockets, no payloads: a test writes the client's messages and the server's answers as
strings of type codes (``"PBES"``: Parse, Bind, Execute, Sync; ``"12CZ"``: ParseComplete,
BindComplete, CommandComplete, ReadyForQuery) and checks which group each ReadyForQuery
ended (the items attached to it), whether the server is skipping to the client's Sync,
and whether anything is still in flight. What the server does in each case is PostgreSQL's
behaviour; ``tests/test_proxy_relay.py`` checks the same shapes against a real server
through the Relay (``test_relay_mixed_groups_match_the_server``).
"""

from __future__ import annotations

import random

from common.wire.syncgroups import ANSWERS, SyncGroups

ERROR, READY, COPY_IN = ord("E"), ord("Z"), ord("G")


def client(g: SyncGroups, codes: str, attach: dict[int, str] | None = None) -> None:
    """Send ``codes``; ``attach`` = {position: item}: attach ``item`` to the group being
    built just before the message at that position is sent."""
    for i, ch in enumerate(codes):
        if attach and i in attach:
            g.attach(attach[i])
        g.sent(ord(ch))


def server(g: SyncGroups, codes: str) -> list[list]:
    """Feed the server's codes as one run, as the relay's splice loop does; returns the
    items each ReadyForQuery handed back."""
    ended = []
    counting = g.counting()
    for ch in codes:
        t = ord(ch)
        if counting:
            if t in ANSWERS:
                g.answer()
            elif t == ERROR:
                g.error()
                counting = False
        if t == READY:
            ended.append(list(g.ready()))
            counting = g.counting()
        elif t == COPY_IN:
            g.copy_in()
    return ended


def test_a_pipeline_of_sync_groups_is_answered_in_order():
    g = SyncGroups()
    assert g.idle and not g.busy
    client(g, "PBESPBES", attach={0: "a", 4: "b"})
    assert g.busy and g.in_flight == 2 and g.sent_groups == 2
    assert server(g, "12CZ") == [["a"]]
    assert g.busy and g.in_flight == 1
    assert server(g, "12CZ") == [["b"]]
    assert g.idle and g.answered == 2


def test_an_error_inside_a_sync_ended_group_skips_only_that_group():
    g = SyncGroups()
    client(g, "PBESPBES", attach={0: "a", 4: "b"})
    assert server(g, "1EZ") == [["a"]]  # Bind failed: skipped to the group's own Sync
    assert not g.skipping
    assert server(g, "12CZ") == [["b"]]
    assert g.idle


def test_flush_adds_to_the_open_group():
    g = SyncGroups()
    client(g, "PBEH", attach={0: "a"})
    assert g.busy and g.in_flight == 0  # Flush ends no group
    assert server(g, "12C") == []
    client(g, "S")
    assert server(g, "Z") == [["a"]]
    assert g.idle


def test_simple_queries_each_end_a_group():
    g = SyncGroups()
    client(g, "QQQ", attach={1: "b"})
    assert g.in_flight == 3
    assert server(g, "TDCZ") == [[]]
    assert server(g, "EZ") == [["b"]]  # a simple Query's own error skips nothing after it
    assert server(g, "CZ") == [[]]
    assert g.idle and not g.skipping


def test_an_extended_error_before_a_query_skips_the_query_too():
    """Parse, Bind, Execute, Query, Sync: Bind fails; the server skips the Query and
    answers the Sync alone, so both groups end with one ReadyForQuery."""
    g = SyncGroups()
    client(g, "PBEQS", attach={0: "a", 4: "b"})
    assert g.in_flight == 2 and g.query_ended == 1
    assert server(g, "1E") == []
    assert g.in_flight == 1  # merged into the Sync's group
    assert server(g, "Z") == [["a", "b"]]
    assert g.idle and g.query_ended == 0 and not g.skipping


def test_the_querys_own_error_after_extended_messages_skips_nothing():
    g = SyncGroups()
    client(g, "PBEQS", attach={0: "a", 4: "b"})
    assert server(g, "12CEZ") == [["a"]]  # the extended messages succeeded, the Query failed
    assert server(g, "Z") == [["b"]]
    assert g.idle and g.query_ended == 0


def test_mixed_groups_chain_until_the_sync():
    """Two Query-ended groups after a failing extended message: all merge into the Sync's."""
    g = SyncGroups()
    client(g, "PBEQPBEFS", attach={0: "a", 4: "b", 8: "c"})
    assert g.in_flight == 3 and g.query_ended == 2
    assert server(g, "EZ") == [["a", "b", "c"]]
    assert g.idle and g.query_ended == 0


def test_an_error_seen_before_the_query_is_sent_makes_the_server_skip_it():
    """The client flushed and waited: the error arrives while the group is still open, so
    the Query the client sends next is ignored by the server up to the Sync."""
    g = SyncGroups()
    client(g, "PBEH", attach={0: "a"})
    assert server(g, "1E") == []
    assert g.skipping
    client(g, "Q", attach={0: "b"})
    assert g.in_flight == 0 and g.skipping  # the skipped Query ends no group
    client(g, "S")
    assert not g.skipping and g.in_flight == 1
    assert server(g, "Z") == [["a", "b"]]
    assert g.idle


def test_extended_copy_in_swallows_the_sync_sent_after_execute():
    """COPY FROM STDIN over the extended protocol, Sync sent right after Execute: in copy-in
    mode the server ignores that Sync; the group ends with the Sync after CopyDone."""
    g = SyncGroups()
    client(g, "PBES", attach={0: "a"})
    assert g.in_flight == 1
    assert server(g, "12G") == []
    assert g.in_flight == 0  # the Sync was swallowed: the group is the open one again
    client(g, "dddcS")
    assert g.in_flight == 1
    assert server(g, "CZ") == [["a"]]
    assert g.idle


def test_simple_query_copy_in_ends_with_its_own_ready():
    g = SyncGroups()
    client(g, "Q", attach={0: "a"})
    assert server(g, "G") == []
    assert g.in_flight == 1
    client(g, "ddc")
    assert server(g, "CZ") == [["a"]]
    assert g.in_flight == 0
    # CopyData/CopyDone count as messages of the open group until the next group ends:
    # conservative (a denial meanwhile goes through the server instead of a local answer).
    assert not g.idle
    client(g, "Q")
    assert server(g, "Z") == [[]]
    assert g.idle


def test_a_copy_ended_before_its_copy_in_response_leaves_copy_mode():
    """Red-team round 77: COPY, its rows and CopyDone in one write; the CopyInResponse comes
    after the CopyDone went: copy-in mode is not entered (it was, for good, and every later
    Sync went uncounted)."""
    g = SyncGroups()
    client(g, "Qddc", attach={0: "a"})
    assert server(g, "G") == []
    assert server(g, "CZ") == [["a"]]
    client(g, "PBES")  # a Sync after it ends a group of its own
    assert g.in_flight == 1
    assert server(g, "12CZ") == [[]]
    assert g.idle


def test_an_extended_copy_ended_in_its_write_merges_only_the_swallowed_syncs():
    g = SyncGroups()
    client(g, "PBESdcS", attach={0: "a"})  # libpq: Execute, Sync, rows, CopyDone, Sync
    assert g.in_flight == 2
    assert server(g, "12G") == []
    assert g.in_flight == 1  # the first Sync was swallowed: one answer for both
    assert server(g, "CZ") == [["a"]]
    assert g.idle
    client(g, "PBES")
    assert server(g, "12CZ") == [[]] and g.idle


def test_sync_in_copy_mode_ends_no_group():
    g = SyncGroups()
    client(g, "Q")
    server(g, "G")
    client(g, "dSdc")  # a Sync during copy-in: ignored by the server
    assert g.in_flight == 1
    assert server(g, "CZ") == [[]]
    assert g.in_flight == 0


def test_copy_fail_leaves_copy_mode():
    g = SyncGroups()
    client(g, "PBES")
    server(g, "12G")
    client(g, "dfS")  # CopyFail, then the Sync that ends the group
    assert g.in_flight == 1
    assert server(g, "EZ") == [[]]
    client(g, "S")  # out of copy mode: a Sync ends a group again
    assert g.in_flight == 1


def test_injected_extended_messages_count_towards_the_group():
    """A denied Parse is replaced by Parse+Bind+Execute (``attach(extended=2)`` for the
    two the client did not send). Our error comes from the Execute, after two answers of
    three extended messages: an extended failure, so the server skips the client's Query
    too and one ReadyForQuery (the Sync's) ends both groups."""
    g = SyncGroups()
    g.attach("deny", extended=2)
    client(g, "PQS", attach={2: "s"})
    assert g.in_flight == 2
    assert server(g, "12EZ") == [["deny", "s"]]
    assert g.idle and not g.skipping


def test_without_the_injected_messages_counted_the_query_would_be_waited_for():
    """The attack on the count above: the same answers with only the client's Parse
    counted read as the Query's own error, and the tracker waits for a second
    ReadyForQuery that never comes (the relay would stay busy for ever)."""
    g = SyncGroups()
    g.attach("deny")
    client(g, "PQS", attach={2: "s"})
    assert server(g, "12EZ") == [["deny"]]
    assert g.busy


def test_a_ready_for_query_with_no_sync_sent_ends_the_open_group():
    g = SyncGroups()
    client(g, "P", attach={0: "a"})
    assert server(g, "Z") == [["a"]]
    assert g.groups[0] == [] and g.in_flight == 0


def test_random_pipelines_without_errors_end_idle():
    """Any sequence of Sync-ended or Query-ended groups, answered without errors, gives one
    ReadyForQuery per group, each handing back exactly its own items, in order."""
    rng = random.Random(17)
    for _ in range(300):
        g = SyncGroups()
        expected = []
        script_server = ""
        for n in range(rng.randint(1, 6)):
            item = f"g{n}"
            extended = "".join(rng.choice("PBDEC") for _ in range(rng.randint(0, 4)))
            end = rng.choice("SQF") if extended else rng.choice("QF")
            client(g, extended + end, attach={0: item})
            expected.append([item])
            script_server += "".join("1" for _ in extended) + ("C" if end != "S" else "") + "Z"
        assert server(g, script_server) == expected
        assert g.idle and g.query_ended == 0 and not g.skipping and g.answered == len(expected)


# the attribute names: __slots__ interpreted, __mypyc_attrs__ compiled (common/compiled.py)
_FIELDS = sorted(getattr(SyncGroups, "__mypyc_attrs__", None) or SyncGroups.__slots__)


def _state(g: SyncGroups) -> tuple:
    assert len(_FIELDS) >= 11
    return tuple(
        [(type(x).__name__, list(x), getattr(x, "extended", None)) for x in g.groups]
        if name == "groups" else getattr(g, name)
        for name in _FIELDS
    )  # fmt: skip


def test_sent_frames_matches_sent_per_frame():
    """The relay's batch path (``sent_frames``) against the reference (``sent`` per
    message), on random client runs with random server answers between them, stopping at
    random types as the relay stops at statements."""
    rng = random.Random(14)
    codes = "PBDEHSQFCcfdX"
    for _ in range(400):
        ref, fast = SyncGroups(), SyncGroups()
        for _ in range(rng.randint(1, 6)):
            run = [(ord(rng.choice(codes)), 0, 0) for _ in range(rng.randint(0, 10))]
            stop = frozenset(ord(c) for c in rng.sample("PQFX", rng.randint(0, 3)))
            i = 0
            while True:
                j = fast.sent_frames(run, i, stop)
                for t, _s, _e in run[i:j]:
                    ref.sent(t)
                if j == len(run):
                    break
                assert run[j][0] in stop and all(t not in stop for t, _, _ in run[i:j])
                ref.sent(run[j][0])
                fast.sent(run[j][0])
                i = j + 1
            assert _state(fast) == _state(ref)
            answers = "".join(rng.choice("12nCEZG") for _ in range(rng.randint(0, 6)))
            assert server(fast, answers) == server(ref, answers)
            assert _state(fast) == _state(ref)
