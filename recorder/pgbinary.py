"""Text for PostgreSQL binary-format values of common built-in types, for the transcript.

Drivers such as asyncpg and JDBC ask for results in binary format; the transcript shows
them as Postgres would print them in text format. Unknown types, and values that do not
decode, return None (the caller shows hex).
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from decimal import Decimal

_EPOCH = dt.datetime(2000, 1, 1)
_EPOCH_DATE = dt.date(2000, 1, 1)
_I64_MAX, _I64_MIN = 2**63 - 1, -(2**63)
_I32_MAX, _I32_MIN = 2**31 - 1, -(2**31)

_TEXT_TYPES = {18, 19, 25, 114, 142, 705, 1042, 1043}  # char name text json xml unknown bpchar varchar


def _numeric(raw: bytes) -> str:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHH", raw)
    special = {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}
    if sign in special:
        return special[sign]
    if sign not in (0x0000, 0x4000) or len(raw) != 8 + 2 * ndigits:
        raise ValueError("not a numeric")
    digits = struct.unpack_from(f"!{ndigits}H", raw, 8)
    value = Decimal(int("".join(f"{d:04d}" for d in digits) or "0")).scaleb(4 * (weight - ndigits + 1))
    text = f"{value:.{dscale}f}"
    return "-" + text if sign == 0x4000 else text


def _timestamp(raw: bytes, tz: bool) -> str:
    """As Postgres prints it with DateStyle ISO (timestamptz in UTC: the proxy's sessions'
    TimeZone may differ, so the offset is stated)."""
    (micros,) = struct.unpack("!q", raw)
    if micros in (_I64_MAX, _I64_MIN):
        return "infinity" if micros > 0 else "-infinity"
    text = (_EPOCH + dt.timedelta(microseconds=micros)).isoformat(sep=" ")
    if "." in text:
        text = text.rstrip("0")  # Postgres drops trailing zeros of the fraction
    return text + "+00" if tz else text


def _float(raw: bytes, fmt: str, digits: int, fixed_below: int) -> str:
    """The shortest text that reads back as the same value, laid out as Postgres does:
    plain below 10**fixed_below (and from 1e-4), else d.ddde+XX."""
    (value,) = struct.unpack(fmt, raw)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    for precision in range(1, digits + 1):
        text = f"{value:.{precision}g}"
        if struct.unpack(fmt, struct.pack(fmt, float(text)))[0] == value:
            break
    shortest = Decimal(text)
    if value == 0:
        return "-0" if str(value).startswith("-") else "0"
    exponent = shortest.adjusted()
    if -4 <= exponent < fixed_below:
        return format(shortest, "f")
    sign, ds, _ = shortest.as_tuple()
    mantissa = str(ds[0]) + ("." + "".join(map(str, ds[1:])).rstrip("0") if len(ds) > 1 else "")
    mantissa = mantissa.rstrip(".")
    return f"{'-' if sign else ''}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


def _date(raw: bytes) -> str:
    (days,) = struct.unpack("!i", raw)
    if days in (_I32_MAX, _I32_MIN):
        return "infinity" if days > 0 else "-infinity"
    return (_EPOCH_DATE + dt.timedelta(days=days)).isoformat()


_DECODERS = {
    16: lambda r: {b"\x01": "t", b"\x00": "f"}[r],
    20: lambda r: str(struct.unpack("!q", r)[0]),
    21: lambda r: str(struct.unpack("!h", r)[0]),
    23: lambda r: str(struct.unpack("!i", r)[0]),
    26: lambda r: str(struct.unpack("!I", r)[0]),
    700: lambda r: _float(r, "!f", 9, 6),
    701: lambda r: _float(r, "!d", 17, 15),
    1082: _date,
    1114: lambda r: _timestamp(r, tz=False),
    1184: lambda r: _timestamp(r, tz=True),
    1700: _numeric,
    2950: lambda r: str(uuid.UUID(bytes=r)),
}
_JSONB = 3802  # version 1, then its text


def binary_text(raw: bytes, type_oid: int, codec: str = "utf-8") -> str | None:
    """The text form of a binary value of type ``type_oid``, or None if not known here. The
    text types' (and jsonb's text) are in the session's client encoding, ``codec``: the
    server converts them as it converts text-format values."""
    try:
        if type_oid in _TEXT_TYPES:
            return raw.decode(codec)
        if type_oid == _JSONB:
            return raw[1:].decode(codec) if raw[:1] == b"\x01" else None
        decoder = _DECODERS.get(type_oid)
        return decoder(raw) if decoder is not None else None
    except (struct.error, KeyError, ValueError, UnicodeDecodeError, ArithmeticError):
        return None
