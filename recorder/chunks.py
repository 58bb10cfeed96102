"""Chunk objects, the hash chain, session ids and object names (docs/recording-format.md)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import struct
import time
from dataclasses import dataclass

import zstandard

from .records import Record, RecordError, decode_records

CHUNK_MAGIC = b"PGWC"
FORMAT_VERSION = 1
COMPRESSION_ZSTD = 1
# magic 4s | version u8 | compression u8 | reserved u16 | n u64 | first_seq u64
# | record_count u32 | raw_len u32 | session_id_len u16
CHUNK_HEADER = struct.Struct(">4sBBHQQIIH")
# The largest chunk a reader decompresses (its records, raw): the writer cuts a chunk after
# the record that reaches chunk_max_bytes, at most 256 MiB (RecorderConfig.validate), so a
# chunk is at most that plus one record; the margin, 128 MiB, holds that record (what the
# proxy relays in one piece: a frame it reads whole, up to proxy.max_message_bytes, 64 MiB
# by default, with the frames of the same read). Anything larger is no chunk pgwitness
# wrote: refused before decompression (declared) or as soon as it expands past its
# declared size (a bomb), never loaded whole (docs/recording-format.md, "Chunks").
MAX_CHUNK_BYTES = 1 << 28
CHUNK_MARGIN = 1 << 27
MAX_RAW_LEN = MAX_CHUNK_BYTES + CHUNK_MARGIN
_READ = 1 << 20  # decompressed a MiB at a time

GENESIS_DOMAIN = b"pgwitness/v1/genesis\x00"
CHAIN_DOMAIN = b"pgwitness/v1/chain\x00"

PREFIX = "sessions"
N_DIGITS = 10
# Names are matched whole (fullmatch) and in ASCII: `\d` would take any Unicode digit and
# `$` a trailing newline, so two names could stand for one object (red-team round 20c).
_SESSION_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T[0-9]{6}Z-[a-z2-7]{26}", re.ASCII)
_NAME_RE = re.compile(r"([0-9]{" + str(N_DIGITS) + r"})\.(chunk|ckpt)", re.ASCII)
_RANDOM_RE = re.compile(r"[a-z2-7]{26}", re.ASCII)


class ChunkError(ValueError):
    """A chunk object that does not decode."""


def new_session_id(now: float | None = None) -> str:
    """Time-prefixed (sorts by start, names the day) + 130 random bits (unguessable)."""
    ts = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    rnd = base64.b32encode(os.urandom(17)).decode().lower()[:26]
    return f"{ts}-{rnd}"


def is_session_id(session_id: str) -> bool:
    return _SESSION_RE.fullmatch(session_id) is not None


def session_prefix(session_id: str) -> str:
    """`sessions/yyyy/mm/dd/<id>/` — the date is the session's start date, from its id."""
    m = _SESSION_RE.fullmatch(session_id)
    if not m:
        raise ValueError(f"not a pgwitness session id: {session_id!r}")
    y, mo, d = m.groups()
    return f"{PREFIX}/{y}/{mo}/{d}/{session_id}/"


def chunk_key(session_id: str, n: int) -> str:
    return f"{session_prefix(session_id)}{n:0{N_DIGITS}d}.chunk"


def ckpt_key(session_id: str, n: int) -> str:
    return f"{session_prefix(session_id)}{n:0{N_DIGITS}d}.ckpt"


CONFLICTS = "conflicts"


def conflict_key(key: str) -> str:
    """Where the proxy stores an object whose own key held something else (planted):
    `<session prefix>conflicts/<name>.<26 random base32>`, unpredictable, so it cannot be
    planted in advance too."""
    prefix, _, name = key.rpartition("/")
    rnd = base64.b32encode(os.urandom(17)).decode().lower()[:26]
    return f"{prefix}/{CONFLICTS}/{name}.{rnd}"


def parse_conflict_name(name: str) -> tuple[int, str] | None:
    """`conflicts/0000000003.chunk.<random>` -> (3, 'chunk'); None for anything else."""
    head, _, rest = name.partition("/")
    if head != CONFLICTS:
        return None
    base, _, rnd = rest.rpartition(".")
    return parse_name(base) if _RANDOM_RE.fullmatch(rnd) else None


def parse_name(name: str) -> tuple[int, str] | None:
    """`0000000003.chunk` -> (3, 'chunk'); None for anything else (exactly that spelling)."""
    m = _NAME_RE.fullmatch(name)
    return (int(m.group(1)), m.group(2)) if m else None


def is_object_key(key: str) -> bool:
    """Whether ``key`` is one pgwitness writes: `<session prefix><n>.chunk|ckpt` or a
    conflict copy under it (a spool entry with any other key was not sealed by us)."""
    head, sep, rest = key.partition("/")
    parts = key.split("/", 5)
    if head != PREFIX or not sep or len(parts) < 6 or not is_session_id(parts[4]):
        return False
    if "/".join(parts[:5]) + "/" != session_prefix(parts[4]):
        return False
    return parse_name(parts[5]) is not None or parse_conflict_name(parts[5]) is not None


def genesis(session_id: str) -> bytes:
    return hashlib.sha256(GENESIS_DOMAIN + session_id.encode()).digest()


def chain_next(prev: bytes, n: int, chunk_sha256: bytes) -> bytes:
    """chain_n = SHA256(domain ‖ chain_{n-1} ‖ u64be(n) ‖ SHA256(chunk_n))."""
    return hashlib.sha256(CHAIN_DOMAIN + prev + n.to_bytes(8, "big") + chunk_sha256).digest()


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    session_id: str
    n: int
    first_seq: int
    record_count: int
    raw_len: int
    body_offset: int


def encode_chunk(
    session_id: str, n: int, first_seq: int, record_count: int, raw: bytes,
    compressor: zstandard.ZstdCompressor,
) -> bytes:
    sid = session_id.encode()
    header = CHUNK_HEADER.pack(
        CHUNK_MAGIC, FORMAT_VERSION, COMPRESSION_ZSTD, 0, n, first_seq, record_count,
        len(raw), len(sid),
    )
    return header + sid + compressor.compress(raw)


def decode_chunk_header(data: bytes) -> ChunkHeader:
    if len(data) < CHUNK_HEADER.size:
        raise ChunkError("shorter than a chunk header")
    magic, ver, comp, _r, n, first_seq, count, raw_len, sid_len = CHUNK_HEADER.unpack_from(data)
    if magic != CHUNK_MAGIC:
        raise ChunkError("bad magic")
    if ver != FORMAT_VERSION or comp != COMPRESSION_ZSTD or _r != 0:
        raise ChunkError(f"unsupported version {ver} / compression {comp} / reserved {_r}")
    end = CHUNK_HEADER.size + sid_len
    if len(data) < end:
        raise ChunkError("truncated session id")
    try:
        sid = data[CHUNK_HEADER.size : end].decode()
    except UnicodeDecodeError:
        raise ChunkError("session id is not UTF-8") from None
    return ChunkHeader(sid, n, first_seq, count, raw_len, end)


def decompress_body(body, raw_len: int) -> bytes:
    """A chunk's zstd frame, decompressed as a stream, never past ``raw_len`` + 1 bytes (the
    frame's own content size is not trusted: a few KiB of zstd can declare and hold 2 GiB).
    Raises ChunkError if it holds more or less than ``raw_len`` bytes, or anything after its
    one frame."""
    out = bytearray()
    try:
        with zstandard.ZstdDecompressor().stream_reader(body, read_size=_READ) as reader:
            while len(out) <= raw_len:
                piece = reader.read(min(_READ, raw_len + 1 - len(out)))
                if not piece:
                    break
                out += piece
    except zstandard.ZstdError as e:
        raise ChunkError(f"zstd: {e}") from None
    if len(out) > raw_len:
        raise ChunkError(f"expands past its declared {raw_len} bytes (a decompression bomb?): "
                         "not read further")
    if len(out) != raw_len:
        raise ChunkError(f"decompressed {len(out)} bytes, header says {raw_len}")
    return bytes(out)


def decode_chunk(data: bytes, max_raw_len: int = MAX_RAW_LEN) -> tuple[ChunkHeader, list[Record]]:
    """Header and records; raises ChunkError if anything is inconsistent, or if the records
    would take more than ``max_raw_len`` bytes (a reader of unverified chunks passes a small
    bound: a few KiB of zstd can declare and hold 2 GiB)."""
    h = decode_chunk_header(data)
    bound = min(max_raw_len, MAX_RAW_LEN)
    if h.raw_len > bound:
        raise ChunkError(f"declared size {h.raw_len} is over the reader's bound of {bound} bytes: "
                         "not decompressed")
    raw = decompress_body(memoryview(data)[h.body_offset :], h.raw_len)
    try:
        records = list(decode_records(raw))
    except RecordError as e:
        raise ChunkError(str(e)) from None
    if len(records) != h.record_count:
        raise ChunkError(f"{len(records)} records, header says {h.record_count}")
    for i, r in enumerate(records):
        if r.seq != h.first_seq + i:
            raise ChunkError(f"record seq {r.seq} where {h.first_seq + i} expected")
    return h, records
