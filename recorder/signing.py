"""Ed25519 keys and signed checkpoints (docs/recording-format.md)."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

CKPT_MAGIC = b"PGWK"
FORMAT_VERSION = 1
SIGN_DOMAIN = b"pgwitness/v1/checkpoint\x00"
KEY_ID_DOMAIN = b"pgwitness/v1/key-id\x00"
# magic 4s | version u8 | state u8 | reserved u16 | n u64 | chain 32s | chunk_sha256 32s
# | first_seq u64 | next_seq u64 | time_ns u64 | key_id 16s | session_id_len u16
CKPT_HEADER = struct.Struct(">4sBBHQ32s32sQQQ16sH")
SIG_LEN = 64


class CheckpointError(ValueError):
    """Bytes that do not decode as a checkpoint."""


class State(enum.IntEnum):
    OPEN = 0  # more chunks may follow
    FINAL = 1  # the session ended; nothing may follow


def key_id(public_key: Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(KEY_ID_DOMAIN + raw).digest()[:16]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    session_id: str
    n: int
    chain: bytes
    chunk_sha256: bytes
    state: State
    first_seq: int  # first record seq in chunk n
    next_seq: int  # seq the next chunk's first record must have
    time_ns: int  # wall clock (Unix ns) when the chunk was sealed
    key_id: bytes
    signature: bytes = b""

    def body(self) -> bytes:
        sid = self.session_id.encode()
        return CKPT_HEADER.pack(
            CKPT_MAGIC, FORMAT_VERSION, int(self.state), 0, self.n, self.chain, self.chunk_sha256,
            self.first_seq, self.next_seq, self.time_ns, self.key_id, len(sid),
        ) + sid

    def encode(self) -> bytes:
        return self.body() + self.signature

    def signed(self, private_key: Ed25519PrivateKey) -> Checkpoint:
        sig = private_key.sign(SIGN_DOMAIN + self.body())
        return dataclasses.replace(self, signature=sig)

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(self.signature, SIGN_DOMAIN + self.body())
            return True
        except InvalidSignature:
            return False


def decode_checkpoint(data: bytes) -> Checkpoint:
    if len(data) < CKPT_HEADER.size + SIG_LEN:
        raise CheckpointError("too short for a checkpoint")
    (magic, ver, state, _r, n, chain, chunk_sha, first_seq, next_seq, t, kid,
     sid_len) = CKPT_HEADER.unpack_from(data)
    if magic != CKPT_MAGIC or ver != FORMAT_VERSION:
        raise CheckpointError("bad magic or version")
    if len(data) != CKPT_HEADER.size + sid_len + SIG_LEN:
        raise CheckpointError("length does not match the session id length")
    try:
        st = State(state)
        sid = data[CKPT_HEADER.size : CKPT_HEADER.size + sid_len].decode()
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"bad field: {e}") from None
    ckpt = Checkpoint(sid, n, chain, chunk_sha, st, first_seq, next_seq, t, kid,
                      data[CKPT_HEADER.size + sid_len :])
    if ckpt.encode() != data:  # reserved bits set etc.: the signature must cover every byte
        raise CheckpointError("non-canonical encoding")
    return ckpt


# -- key files -------------------------------------------------------------------------------

def public_key_path(private_path: str | os.PathLike) -> Path:
    p = Path(private_path)
    return p.with_name(p.name + ".pub")


def generate_keypair(out: str | os.PathLike) -> tuple[Path, Path]:
    """Write a PEM private key (0600, never overwrites) and `<out>.pub` next to it."""
    out = Path(out)
    pub_path = public_key_path(out)
    for p in (out, pub_path):
        if p.exists():
            raise FileExistsError(f"{p} exists")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(pub)
        f.flush()
        os.fsync(f.fileno())
    return out, pub_path


def load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    data = Path(path).read_bytes()
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key
