"""Red-team round 20c, the pure parts: object and session names are matched exactly, the
external anchors count only sessions with a signed chunk, reports print any name safely,
and the index reads unverified chunks within a budget."""

from __future__ import annotations

import pytest
import zstandard

from recorder import chunks
from recorder.audit.index import _cell, _with_unverified
from recorder.records import Kind, Record, RecordError, encode_record
from recorder.store.local import LocalStore
from recorder.verify import Problem, Report, check_anchors, shown

SID = "20261205T120000Z-" + "a" * 26
FULLWIDTH = str.maketrans({c: chr(0xFF10 + i) for i, c in enumerate("0123456789")})


@pytest.mark.parametrize(("name", "parsed"), [
    ("0000000001.chunk", (1, "chunk")),
    ("0000000012.ckpt", (12, "ckpt")),
    ("0000000001.chunk\n", None),
    ("0000000001.chunk".translate(FULLWIDTH), None),
    ("\u0661" * 10 + ".chunk", None),  # Arabic-Indic digits
    ("000000001.chunk", None),
    ("00000000001.chunk", None),
    (" 0000000001.chunk", None),
    ("0000000001.chunk.x", None),
])
def test_object_names_are_matched_whole_and_in_ascii(name, parsed):
    assert chunks.parse_name(name) == parsed


@pytest.mark.parametrize(("sid", "ok"), [
    (SID, True),
    (SID + "\n", False),
    (SID.translate(FULLWIDTH), False),
    (SID.upper(), False),
    (SID[:-1], False),
])
def test_session_ids_are_matched_whole_and_in_ascii(sid, ok):
    assert chunks.is_session_id(sid) is ok
    if not ok:
        with pytest.raises(ValueError):
            chunks.session_prefix(sid)


def test_conflict_names_are_matched_exactly():
    name = "conflicts/0000000003.chunk." + "b" * 26
    assert chunks.parse_conflict_name(name) == (3, "chunk")
    assert chunks.parse_conflict_name(name + "\n") is None
    assert chunks.parse_conflict_name("conflicts/0000000003.chunk\n." + "b" * 26) is None


def test_reports_print_names_escaped_unless_plain_ascii():
    assert shown("0000000001.chunk") == "0000000001.chunk"
    assert shown("0000000001.chunk\n") == "'0000000001.chunk\\n'"
    bad = b"\xff.chunk".decode("utf-8", "surrogateescape")
    assert str(Problem("extra", bad, "x")) == "extra: '\\udcff.chunk': x"
    str(Problem("extra", bad, "x")).encode("utf-8")  # printable under a strict UTF-8 stdout
    assert Report(bad, status="empty").summary().startswith("'\\udcff.chunk'")


def _report(sid: str, status: str, attested: int | None, control: bool = False) -> Report:
    return Report(sid, status=status, attested_through=attested, control=control)


def test_anchors_count_only_sessions_with_a_signed_chunk():
    reports = [
        _report("s1", "closed", 3),
        _report("stub", "open", None),  # one unsigned chunk: nothing attested
        _report("bad", "tampered", None),
        _report("ctl", "open", 5, control=True),
    ]
    assert [p.where for p in check_anchors(reports, expect=1)] == []
    (p,) = check_anchors(reports, expect=2)
    assert p.where == "--expect" and "holds 1 with a signed chunk" in p.detail
    problems = check_anchors(reports, sessions=["s1", "stub", "bad", "gone"])
    assert [p.where for p in problems] == ["stub", "bad", "gone"]


def _chunk(n: int, first_seq: int, payloads: list[bytes]) -> bytes:
    raw = b"".join(encode_record(first_seq + i, 0, 2, Kind.META, "e", p)
                   for i, p in enumerate(payloads))
    return chunks.encode_chunk(SID, n, first_seq, len(payloads), raw, zstandard.ZstdCompressor())


def test_unverified_chunks_are_read_within_a_budget(tmp_path):
    store = LocalStore(tmp_path)
    store.put(chunks.chunk_key(SID, 0), _chunk(0, 0, [b"{}"]))
    store.put(chunks.chunk_key(SID, 1), _chunk(1, 1, [b"x" * 1000]))
    store.put(chunks.chunk_key(SID, 2), _chunk(2, 2, [b"{}"]))
    good = [Record(0, 0, 2, Kind.META, "e", b"{}")]
    records, verified, unread = _with_unverified(store, SID, good, None, budget=500)
    assert [r.seq for r in records] == [0, 2] and verified == {0}
    assert unread == ["not read: 0000000001.chunk (unverified) declares 1025 bytes, "
                      "over the audit's bound of 500"]
    # a name that is no session id (an alias directory) reads nothing and does not raise
    assert _with_unverified(store, SID + "\n", [], None) == ([], set(), [])


def test_a_decompression_bomb_is_refused_before_it_is_decompressed():
    sid = SID.encode()
    size = chunks.MAX_RAW_LEN  # declared; the body is never looked at
    body = zstandard.ZstdCompressor().compress(bytes(1 << 20))
    data = chunks.CHUNK_HEADER.pack(chunks.CHUNK_MAGIC, 1, 1, 0, 0, 0, 1, size, len(sid)) + sid + body
    with pytest.raises(chunks.ChunkError, match="over the reader's bound"):
        chunks.decode_chunk(data, max_raw_len=1 << 20)


def test_a_record_payload_must_be_a_json_object():
    assert Record(0, 0, 2, Kind.META, "e", b'{"a":1}').json() == {"a": 1}
    for payload in (b"[1]", b"1", b'"x"', b"null"):
        with pytest.raises(RecordError):
            Record(0, 0, 2, Kind.META, "e", payload).json()


@pytest.mark.parametrize(("value", "arrow_type", "cell"), [
    ("x", "string", "x"), (5, "string", "5"), ({"a": [1]}, "string", '{"a": [1]}'),
    (5, "int64", 5), ("5", "int64", None), (True, "int64", None), (1 << 70, "int64", None),
    (True, "bool_", True), (1, "bool_", None), (1.5, "float64", 1.5), ("1", "float64", None),
    (None, "string", None),
])
def test_index_cells_take_their_columns_type_or_null(value, arrow_type, cell):
    assert _cell(value, arrow_type) == cell


@pytest.mark.parametrize(("key", "ok"), [
    (chunks.chunk_key(SID, 3), True),
    (chunks.ckpt_key(SID, 3), True),
    (chunks.session_prefix(SID) + "conflicts/0000000003.chunk." + "c" * 26, True),
    ("../../escaped.chunk", False),
    (chunks.session_prefix(SID) + "../../x/0000000003.chunk", False),
    (chunks.chunk_key(SID, 3) + "\n", False),
    ("sessions/2026/12/06/" + SID + "/0000000003.chunk", False),  # another day's directory
    ("sessions/2026/12/05/" + SID, False),
])
def test_only_keys_the_sealer_writes_are_object_keys(key, ok):
    """The uploader stores only these; any other spool entry is dropped, never retried."""
    assert chunks.is_object_key(key) is ok
