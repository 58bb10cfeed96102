"""Record encoding: the unit a session is made of (see docs/recording-format.md)."""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass


class Direction(enum.IntEnum):
    C2S = 0  # client (agent) to server
    S2C = 1  # server (Postgres) to client
    PROXY = 2  # produced by the proxy itself (decisions, events)


class Kind(enum.IntEnum):
    WIRE = 0  # exact protocol frames as relayed
    DECISION = 1  # policy decision for a statement (JSON)
    META = 2  # session/proxy event (JSON): start, auth outcome, end, ...
    CONTROL = 3  # grant lifecycle event in a control stream (JSON)


DIRECTIONS = {"c2s": Direction.C2S, "s2c": Direction.S2C, "proxy": Direction.PROXY}

# seq u64 | t_ns u64 | direction u8 | kind u8 | type_len u16 | payload_len u32
HEADER = struct.Struct(">QQBBHI")


class RecordError(ValueError):
    """Bytes that do not decode as records."""


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    t_ns: int  # nanoseconds since the session started (monotonic clock)
    direction: Direction
    kind: Kind
    type: str  # wire: first frame's type byte as text; otherwise the event name
    payload: bytes

    def json(self) -> dict:
        """The payload of a DECISION/META/CONTROL record: a JSON object. Anything else (not
        JSON, not UTF-8, or JSON that is not an object: a forged record) raises ValueError."""
        payload = json.loads(self.payload)
        if not isinstance(payload, dict):
            raise RecordError(f"payload is JSON {type(payload).__name__}, not an object")
        return payload


def dump_json(payload: dict) -> bytes:
    """Canonical-enough JSON for event payloads (readable, stable key order)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


DECISION_SHAPE = "decision.shape"  # the meta record an allowed decision may refer to


class DecisionShapes:
    """One session's ``decision.shape`` records, and its decision payloads expanded with them.

    An allowed decision recorded as ``{"denied": false, "shape": N}`` (plus ``"statement"``
    for a Parse) stands for the payload of the session's earlier ``decision.shape`` record
    numbered N; the statement's text is the client frame the decision follows. Feed every
    ``decision.shape`` payload to ``define`` and every decision payload through ``expand``,
    in recorded order (docs/recording-format.md, "Decision shapes")."""

    __slots__ = ("_shapes",)

    def __init__(self) -> None:
        self._shapes: dict[int, dict] = {}

    def define(self, payload: dict) -> None:
        n = payload.get("shape")
        if type(n) is int:
            self._shapes[n] = payload

    def expand(self, payload: dict) -> dict:
        """The whole payload of a decision: the shape's fields (``shape`` kept) under the
        record's own. A shape never defined before it (a damaged or forged recording: a
        verified one always defines it first) yields ``shape_missing`` and no statements."""
        n = payload.get("shape")
        if type(n) is not int:
            return payload
        shape = self._shapes.get(n)
        if shape is None:
            return {"outcome": "allowed", "statements": [], "shape_missing": True, **payload}
        return {**shape, **payload}


def wire_type(data: bytes) -> str:
    """Type byte of the first frame, as text ('Q', 'D', ...); '' if none."""
    if not data:
        return ""
    b = data[0]
    return chr(b) if 0x20 < b < 0x7F else ""


def encode_record(seq: int, t_ns: int, direction: int, kind: int, type_: str, payload: bytes) -> bytes:
    t = type_.encode()
    return HEADER.pack(seq, t_ns, direction, kind, len(t), len(payload)) + t + payload


def decode_records(buf: bytes) -> Iterator[Record]:
    """Decode a concatenation of records; raises RecordError on any malformed byte."""
    mv = memoryview(buf)
    off, end, hsize = 0, len(buf), HEADER.size
    while off < end:
        if end - off < hsize:
            raise RecordError(f"truncated record header at offset {off}")
        seq, t_ns, d, k, tlen, plen = HEADER.unpack_from(mv, off)
        off += hsize
        if end - off < tlen + plen:
            raise RecordError(f"truncated record body at offset {off}")
        try:
            direction, kind = Direction(d), Kind(k)
            type_ = bytes(mv[off : off + tlen]).decode()
        except ValueError as e:
            raise RecordError(f"bad record field at offset {off}: {e}") from None
        off += tlen
        payload = bytes(mv[off : off + plen])
        if kind == Kind.WIRE and not type_:
            type_ = wire_type(payload)  # the writer leaves it to the payload's first byte
        yield Record(seq, t_ns, direction, kind, type_, payload)
        off += plen
