"""Bounded decompression of chunks (session 19): a tampered or malicious chunk whose zstd body
expands past its declared size (or past the format's bound) is refused as it expands, never
loaded whole, reported as not intact by name, and the rest of the recording still verifies
and replays. The zstd frame's own content size is not trusted: zstandard's one-shot
``decompress`` allocates whatever the frame declares, whatever ``max_output_size`` says."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from recorder import chunks
from recorder.replay import iter_records, replay_json, replay_session
from recorder.signing import Checkpoint, decode_checkpoint
from recorder.verify import MALFORMED, MODIFIED, verify_session
from tests.support.recorded_sessions import KEY, PUB, last_n, path_of, record_session, writable

BOMB = 64 << 20  # what the crafted body expands to: far past what it declares


def bomb_body(size: int = BOMB, content_size: bool = True) -> bytes:
    """``size`` zero bytes as one zstd frame (with or without its content size in the header)."""
    return zstandard.ZstdCompressor(level=1, write_content_size=content_size).compress(bytes(size))


def chunk(sid: str, n: int, first_seq: int, count: int, raw_len: int, body: bytes) -> bytes:
    s = sid.encode()
    return chunks.CHUNK_HEADER.pack(chunks.CHUNK_MAGIC, 1, 1, 0, n, first_seq, count, raw_len,
                                    len(s)) + s + body


def peak_while(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_bound_is_the_writers_largest_chunk_with_a_margin():
    from recorder.config import RecorderConfig

    cfg = RecorderConfig(chunk_max_bytes=chunks.MAX_CHUNK_BYTES)
    cfg.validate()  # the largest chunk size the writer accepts ...
    cfg.chunk_max_bytes += 1
    with pytest.raises(ValueError):
        cfg.validate()  # ... and no larger
    assert chunks.MAX_RAW_LEN == chunks.MAX_CHUNK_BYTES + chunks.CHUNK_MARGIN < 1 << 31


@pytest.mark.parametrize("content_size", [True, False])
def test_a_bomb_is_stopped_as_it_expands_not_loaded_whole(content_size):
    body = bomb_body(content_size=content_size)
    assert len(body) < BOMB // 1000  # small compressed
    data = chunk("s", 0, 0, 1, 1024, body)  # declares 1 KiB: under every bound
    err: list[Exception] = []

    def decode() -> None:
        try:
            chunks.decode_chunk(data)
        except chunks.ChunkError as e:
            err.append(e)

    peak = peak_while(decode)
    assert err and "expands past its declared 1024 bytes" in str(err[0])
    assert peak < 4 << 20, f"{peak} bytes allocated decoding a chunk that declares 1 KiB"


def test_a_bomb_declaring_the_bound_expands_no_further_than_it():
    """A body that declares just under the (here lowered) bound and expands past it."""
    body = bomb_body()
    data = chunk("s", 0, 0, 1, 2 << 20, body)
    err: list[Exception] = []

    def decode() -> None:
        try:
            chunks.decode_chunk(data, max_raw_len=2 << 20)
        except chunks.ChunkError as e:
            err.append(e)

    peak = peak_while(decode)
    assert err and "expands past" in str(err[0])
    assert peak < 8 << 20, peak  # the bound (2 MiB), its one copy and a read's piece


def test_a_declared_size_over_the_format_bound_is_refused_before_decompression():
    data = chunk("s", 0, 0, 1, chunks.MAX_RAW_LEN + 1, bomb_body(1 << 20))
    with pytest.raises(chunks.ChunkError, match="over the reader's bound of"):
        chunks.decode_chunk(data)


def test_trailing_bytes_after_the_frame_do_not_decode():
    raw = b"x" * 100
    body = zstandard.ZstdCompressor().compress(raw)
    with pytest.raises(chunks.ChunkError):
        chunks.decompress_body(body + b"junk", len(raw))
    assert chunks.decompress_body(body, len(raw)) == raw


# --- a bomb in a recording -------------------------------------------------------------------


def plant_signed_bomb(store, sid: str, n: int) -> None:
    """Replace chunk n by a bomb that keeps its header (seqs, declared size) and sign it, and
    the chain after it, with the recorder's key: a malicious chunk that passes every
    signature check (the key holder's, or a writer's bug)."""
    blob = path_of(store, sid, n, "chunk").read_bytes()
    h = chunks.decode_chunk_header(blob)
    bomb = blob[: h.body_offset] + bomb_body()
    writable(path_of(store, sid, n, "chunk")).write_bytes(bomb)
    prev = (decode_checkpoint(path_of(store, sid, n - 1, "ckpt").read_bytes()).chain if n
            else chunks.genesis(sid))
    for k in range(n, last_n(store, sid) + 1):
        data = path_of(store, sid, k, "chunk").read_bytes()
        old = decode_checkpoint(path_of(store, sid, k, "ckpt").read_bytes())
        digest = hashlib.sha256(data).digest()
        prev = chunks.chain_next(prev, k, digest)
        new = Checkpoint(session_id=sid, n=k, chain=prev, chunk_sha256=digest, state=old.state,
                         first_seq=old.first_seq, next_seq=old.next_seq, time_ns=old.time_ns,
                         key_id=old.key_id).signed(KEY)
        writable(path_of(store, sid, k, "ckpt")).write_bytes(new.encode())
    for key in store.list(chunks.session_prefix(sid)):
        (store.root / key).chmod(0o444)


def test_verify_names_a_signed_bomb_chunk_and_verifies_the_rest(tmp_path):
    store, sid = record_session(tmp_path)
    last = last_n(store, sid)
    assert last >= 3
    plant_signed_bomb(store, sid, 1)
    reports = []
    peak = peak_while(lambda: reports.append(verify_session(store, sid, [PUB])))
    (r,) = reports
    assert r.status == "tampered"
    assert [(p.kind, p.where) for p in r.problems] == [(MALFORMED, "0000000001.chunk")]
    assert "expands past its declared" in r.problems[0].detail
    assert r.chunks == last + 1  # every checkpoint read; chunks 0, 2, ... decoded
    assert r.attested_through == 0
    assert peak < 16 << 20, peak


def test_verify_of_an_unsigned_bomb_never_decompresses_it(tmp_path):
    store, sid = record_session(tmp_path)
    blob = path_of(store, sid, 1, "chunk").read_bytes()
    h = chunks.decode_chunk_header(blob)
    writable(path_of(store, sid, 1, "chunk")).write_bytes(blob[: h.body_offset] + bomb_body())
    r = verify_session(store, sid, [PUB], check_locks=False)
    assert [(p.kind, p.where) for p in r.problems] == [(MODIFIED, "0000000001.chunk")]


def bombed(tmp_path: Path) -> tuple:
    store, sid = record_session(tmp_path)
    whole = list(iter_records(store, sid))
    blob = path_of(store, sid, 1, "chunk").read_bytes()
    h = chunks.decode_chunk_header(blob)
    writable(path_of(store, sid, 1, "chunk")).write_bytes(blob[: h.body_offset] + bomb_body())
    lost = set(range(h.first_seq, h.first_seq + h.record_count))
    return store, sid, whole, lost


def test_iter_records_skips_and_names_a_bomb_chunk(tmp_path):
    store, sid, whole, lost = bombed(tmp_path)
    with pytest.raises(chunks.ChunkError):  # without a callback: as before, an error
        list(iter_records(store, sid))
    bad: list[tuple[str, str]] = []
    got = list(iter_records(store, sid, lambda name, why: bad.append((name, why))))
    assert [r.seq for r in got] == [r.seq for r in whole if r.seq not in lost]
    assert [name for name, _ in bad] == ["0000000001.chunk"]
    assert "expands past" in bad[0][1]


def test_replay_shows_the_rest_and_names_the_bomb_chunk(tmp_path):
    store, sid, whole, lost = bombed(tmp_path)
    out, problems = io.StringIO(), []
    n = replay_session(store, sid, out, problems=problems)
    assert n == len(whole) - len(lost)
    assert "!! 0000000001.chunk: not intact, not read: " in out.getvalue()
    assert "select 11 from generate_series" in out.getvalue()  # the last chunks replayed
    assert len(problems) == 1 and problems[0].startswith("0000000001.chunk")
    out, problems = io.StringIO(), []
    replay_session(store, sid, out, follow=True, follow_timeout=0, problems=problems)
    assert len(problems) == 1 and "select 11 from" in out.getvalue()
    out = io.StringIO()
    replay_json(store, sid, out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["object"] for x in lines if x["kind"] == "problem"] == ["0000000001.chunk"]
    assert max(x["seq"] for x in lines if "seq" in x) == whole[-1].seq


def test_replay_cli_exits_1_and_names_the_chunk(tmp_path, capsys):
    from recorder.cli import cmd_replay

    store, sid, _, _ = bombed(tmp_path)

    class Args:
        session, format, max_rows, follow, public_key = sid, "text", None, False, []
        store_url = str(store.root)

    import recorder.cli as cli

    orig = cli.open_from_args
    cli.open_from_args = lambda args: store
    try:
        rc = cmd_replay(Args())
    finally:
        cli.open_from_args = orig
    err = capsys.readouterr().err
    assert rc == 1 and "0000000001.chunk: not intact" in err
