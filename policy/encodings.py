"""Client encodings by allowlist, resolved the way PostgreSQL resolves their names (pure).

The proxy lexes statements as text decoded with the session's client encoding. If the
server read the same bytes in an encoding whose multibyte characters may contain an ASCII
byte (SJIS's second byte can be ``\\`` or ``'``: 0x5C, 0x27 fall in 0x40-0x7E), a literal
would end at a different place for the server than for the proxy, and the rest of the line
would run unchecked. So only encodings in which every byte of a multibyte character has
its high bit set (or that have no multibyte characters at all) are allowed, and only ones
the proxy can decode exactly.

``SQL_ASCII`` is allowed: the server does no multibyte parsing in it (every byte is one
character, a quote byte is always a quote), and the proxy decodes it byte-for-byte as
Latin-1, so both see the same literal boundaries.

The names and codecs themselves are ``recorder.encodings``' (the relay, replay and the audit
answer read texts with the same table): names resolve as PostgreSQL's
``pg_char_to_encoding`` does, and the allowlist is that module's ``CODECS``.
"""

from __future__ import annotations

from recorder.encodings import ALIASES, CODECS, python_codec, resolve

__all__ = [
    "ALIASES",
    "CODECS",
    "UNSAFE",
    "check_client_encoding",
    "is_safe_encoding",
    "python_codec",
    "resolve",
]

# Encodings whose multibyte characters may contain bytes below 0x80 (PostgreSQL's own list
# of client-only encodings; none can be a server encoding for the same reason).
UNSAFE = frozenset({"SJIS", "BIG5", "GBK", "UHC", "GB18030", "JOHAB", "SHIFT_JIS_2004"})


def is_safe_encoding(name: str) -> bool:
    """May a session use this client encoding? (Unknown names: no; the server refuses them.)"""
    enc = resolve(name)
    return enc is not None and enc in CODECS


def check_client_encoding(value: str) -> str | None:
    """None if ``value`` names an allowed client encoding, else the reason it is refused.

    ``DEFAULT`` (SET ... TO DEFAULT) returns to the session's start value, already checked."""
    text = value.strip().strip("'\"").strip()
    if text.lower() == "default":
        return None
    enc = resolve(text)
    if enc is not None and enc in CODECS:
        return None
    if enc in UNSAFE:
        return (
            f"client encoding {value!r} ({enc}) can hide quote characters inside multibyte "
            "characters"
        )
    return f"client encoding {value!r} is not on the proxy's allowlist"
