"""Record, chunk, chain and checkpoint encodings round-trip and reject garbage."""

import hashlib

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from recorder import chunks
from recorder.records import (
    Direction,
    Kind,
    Record,
    RecordError,
    decode_records,
    encode_record,
    wire_type,
)
from recorder.signing import (
    Checkpoint,
    CheckpointError,
    State,
    decode_checkpoint,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
)

ZC = zstandard.ZstdCompressor()
SID = chunks.new_session_id()

records_st = st.lists(st.tuples(
    st.integers(0, 2**63), st.sampled_from(list(Direction)), st.sampled_from(list(Kind)),
    st.text(max_size=20), st.binary(max_size=300)), max_size=30)


@given(records_st)
def test_records_round_trip(items):
    buf = b"".join(encode_record(i, t, d, k, ty, p) for i, (t, d, k, ty, p) in enumerate(items))
    out = list(decode_records(buf))
    # a wire record's empty type field means "the payload's first byte"
    assert out == [Record(i, t, d, k, wire_type(p) if k == Kind.WIRE and not ty else ty, p)
                   for i, (t, d, k, ty, p) in enumerate(items)]


def test_truncated_record_is_an_error():
    buf = encode_record(0, 1, 0, 0, "Q", b"select 1")
    for cut in range(1, len(buf)):
        with pytest.raises(RecordError):
            list(decode_records(buf[:cut]))


@given(records_st, st.integers(0, 10**6), st.integers(0, 10**9))
def test_chunk_round_trip(items, n, first):
    raw = b"".join(encode_record(first + i, t, d, k, ty, p)
                   for i, (t, d, k, ty, p) in enumerate(items))
    blob = chunks.encode_chunk(SID, n, first, len(items), raw, ZC)
    h, recs = chunks.decode_chunk(blob)
    assert (h.session_id, h.n, h.first_seq, h.record_count) == (SID, n, first, len(items))
    assert [r.payload for r in recs] == [p for *_, p in items]


def test_chunk_rejects_lies_about_its_content():
    raw = encode_record(5, 0, 0, 0, "Q", b"x")
    with pytest.raises(chunks.ChunkError):  # wrong record count
        chunks.decode_chunk(chunks.encode_chunk(SID, 0, 5, 2, raw, ZC))
    with pytest.raises(chunks.ChunkError):  # seq does not match first_seq
        chunks.decode_chunk(chunks.encode_chunk(SID, 0, 4, 1, raw, ZC))
    blob = bytearray(chunks.encode_chunk(SID, 0, 5, 1, raw, ZC))
    blob[0] ^= 1
    with pytest.raises(chunks.ChunkError):
        chunks.decode_chunk(bytes(blob))


def test_chain_binds_session_position_and_content():
    d = hashlib.sha256(b"chunk").digest()
    g = chunks.genesis(SID)
    assert g != chunks.genesis(chunks.new_session_id())
    c0 = chunks.chain_next(g, 0, d)
    assert c0 != chunks.chain_next(g, 1, d)  # position
    assert c0 != chunks.chain_next(g, 0, hashlib.sha256(b"other").digest())  # content
    assert c0 != chunks.chain_next(chunks.genesis(chunks.new_session_id()), 0, d)  # session
    # the documented formula, spelled out independently
    assert c0 == hashlib.sha256(b"pgwitness/v1/chain\x00" + g + (0).to_bytes(8, "big") + d).digest()


def test_session_ids_sort_by_time_and_name_their_day():
    a = chunks.new_session_id(1_700_000_000)
    b = chunks.new_session_id(1_700_000_001)
    assert a < b and chunks.is_session_id(a)
    assert chunks.session_prefix(a) == f"sessions/2023/11/14/{a}/"
    assert chunks.chunk_key(a, 7).endswith("/0000000007.chunk")
    assert chunks.parse_name("0000000007.ckpt") == (7, "ckpt")
    assert chunks.parse_name("7.ckpt") is None
    assert len({chunks.new_session_id() for _ in range(1000)}) == 1000
    with pytest.raises(ValueError):
        chunks.session_prefix("../../etc")


def _ckpt(key, **kw):
    base = dict(session_id=SID, n=3, chain=b"c" * 32, chunk_sha256=b"h" * 32, state=State.OPEN,
                first_seq=10, next_seq=20, time_ns=123, key_id=key_id(key.public_key()))
    base.update(kw)
    return Checkpoint(**base).signed(key)


def test_checkpoint_round_trip_and_signature():
    key = Ed25519PrivateKey.generate()
    c = _ckpt(key, state=State.FINAL)
    d = decode_checkpoint(c.encode())
    assert d == c and d.verify(key.public_key())
    assert not d.verify(Ed25519PrivateKey.generate().public_key())
    # every signed field matters
    for i in range(len(c.encode()) - 64):
        bad = bytearray(c.encode())
        bad[i] ^= 0x01
        try:
            assert not decode_checkpoint(bytes(bad)).verify(key.public_key())
        except CheckpointError:
            pass
    with pytest.raises(CheckpointError):
        decode_checkpoint(c.encode()[:-1])


def test_keygen_writes_private_0600_and_public(tmp_path):
    priv, pub = generate_keypair(tmp_path / "k.pem")
    assert priv.stat().st_mode & 0o777 == 0o600
    assert pub.name == "k.pem.pub"
    k = load_private_key(priv)
    assert key_id(load_public_key(pub)) == key_id(k.public_key())
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path / "k.pem")


def test_an_independent_verifier_written_from_the_format_doc(tmp_path):
    """Re-derive everything from docs/recording-format.md with struct/hashlib/zstd only."""
    import struct

    from devtools.testing import query
    from recorder.config import RecorderConfig
    from recorder.store.local import LocalStore
    from recorder.writer import Recorder

    key = Ed25519PrivateKey.generate()
    store = LocalStore(tmp_path / "store")
    rec = Recorder(RecorderConfig(store=str(store.root), spool_dir=str(tmp_path / "spool"),
                                  chunk_max_bytes=100), store=store, signing_key=key)
    rec.start()
    s = rec.open_session({"agent": "x"})
    for i in range(10):
        s.wire("c2s", query(f"select {i}"))
    s.end("bye")
    rec.close()

    sid = s.id
    d = tmp_path / "store" / "sessions" / sid[0:4] / sid[4:6] / sid[6:8] / sid
    names = sorted(p.name for p in d.iterdir())
    n_last = len(names) // 2 - 1
    assert names == [f"{n:010d}.{k}" for n in range(n_last + 1) for k in ("chunk", "ckpt")]
    chain = hashlib.sha256(b"pgwitness/v1/genesis\x00" + sid.encode()).digest()
    kid = hashlib.sha256(b"pgwitness/v1/key-id\x00" + key.public_key().public_bytes_raw()).digest()[:16]
    seq = 0
    for n in range(n_last + 1):
        blob = (d / f"{n:010d}.chunk").read_bytes()
        ck = (d / f"{n:010d}.ckpt").read_bytes()
        magic, ver, comp, res, cn, first, count, raw_len, sid_len = struct.unpack_from(">4sBBHQQIIH", blob)
        assert (magic, ver, comp, res, cn, first) == (b"PGWC", 1, 1, 0, n, seq)
        assert blob[34 : 34 + sid_len].decode() == sid
        raw = zstandard.ZstdDecompressor().decompress(blob[34 + sid_len :])
        assert len(raw) == raw_len
        off = 0
        for _ in range(count):
            rseq, _t, _d, _k, tl, pl = struct.unpack_from(">QQBBHI", raw, off)
            assert rseq == seq
            off += 24 + tl + pl
            seq += 1
        assert off == len(raw)
        digest = hashlib.sha256(blob).digest()
        chain = hashlib.sha256(b"pgwitness/v1/chain\x00" + chain + struct.pack(">Q", n) + digest).digest()
        fields = struct.unpack_from(">4sBBHQ32s32sQQQ16sH", ck)
        magic, ver, state, res, kn, kchain, ksha, kfirst, knext, _time, kkid, ksid_len = fields
        assert (magic, ver, res, kn, kchain, ksha, kfirst, knext, kkid) == (
            b"PGWK", 1, 0, n, chain, digest, first, seq, kid)
        assert state == (1 if n == n_last else 0)
        assert len(ck) == 122 + ksid_len + 64 and ck[122 : 122 + ksid_len].decode() == sid
        key.public_key().verify(ck[-64:], b"pgwitness/v1/checkpoint\x00" + ck[:-64])
