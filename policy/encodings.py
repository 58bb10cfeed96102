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

Names resolve like ``pg_char_to_encoding`` in PostgreSQL's src/common/encnames.c: every
character but ASCII letters and digits dropped, letters folded to lower case, then looked up
in its alias table (``S_JIS``, ``Shift-JIS``, ``windows932`` and ``ms-kanji`` are all SJIS).
"""

from __future__ import annotations

__all__ = [
    "ALIASES",
    "CODECS",
    "UNSAFE",
    "check_client_encoding",
    "is_safe_encoding",
    "python_codec",
    "resolve",
]

# PostgreSQL's alias table (src/common/encnames.c, pg_encname_tbl): cleaned name -> encoding.
ALIASES: dict[str, str] = {
    "abc": "WIN1258",
    "alt": "WIN866",
    "big5": "BIG5",
    "euccn": "EUC_CN",
    "eucjis2004": "EUC_JIS_2004",
    "eucjp": "EUC_JP",
    "euckr": "EUC_KR",
    "euctw": "EUC_TW",
    "gb18030": "GB18030",
    "gbk": "GBK",
    "iso88591": "LATIN1",
    "iso885910": "LATIN6",
    "iso885913": "LATIN7",
    "iso885914": "LATIN8",
    "iso885915": "LATIN9",
    "iso885916": "LATIN10",
    "iso88592": "LATIN2",
    "iso88593": "LATIN3",
    "iso88594": "LATIN4",
    "iso88595": "ISO_8859_5",
    "iso88596": "ISO_8859_6",
    "iso88597": "ISO_8859_7",
    "iso88598": "ISO_8859_8",
    "iso88599": "LATIN5",
    "johab": "JOHAB",
    "koi8": "KOI8R",
    "koi8r": "KOI8R",
    "koi8u": "KOI8U",
    "latin1": "LATIN1",
    "latin10": "LATIN10",
    "latin2": "LATIN2",
    "latin3": "LATIN3",
    "latin4": "LATIN4",
    "latin5": "LATIN5",
    "latin6": "LATIN6",
    "latin7": "LATIN7",
    "latin8": "LATIN8",
    "latin9": "LATIN9",
    "mskanji": "SJIS",
    "muleinternal": "MULE_INTERNAL",
    "shiftjis": "SJIS",
    "shiftjis2004": "SHIFT_JIS_2004",
    "sjis": "SJIS",
    "sqlascii": "SQL_ASCII",
    "tcvn": "WIN1258",
    "tcvn5712": "WIN1258",
    "uhc": "UHC",
    "unicode": "UTF8",
    "utf8": "UTF8",
    "vscii": "WIN1258",
    "win": "WIN1251",
    "win1250": "WIN1250",
    "win1251": "WIN1251",
    "win1252": "WIN1252",
    "win1253": "WIN1253",
    "win1254": "WIN1254",
    "win1255": "WIN1255",
    "win1256": "WIN1256",
    "win1257": "WIN1257",
    "win1258": "WIN1258",
    "win866": "WIN866",
    "win874": "WIN874",
    "win932": "SJIS",
    "win936": "GBK",
    "win949": "UHC",
    "win950": "BIG5",
    "windows1250": "WIN1250",
    "windows1251": "WIN1251",
    "windows1252": "WIN1252",
    "windows1253": "WIN1253",
    "windows1254": "WIN1254",
    "windows1255": "WIN1255",
    "windows1256": "WIN1256",
    "windows1257": "WIN1257",
    "windows1258": "WIN1258",
    "windows866": "WIN866",
    "windows874": "WIN874",
    "windows932": "SJIS",
    "windows936": "GBK",
    "windows949": "UHC",
    "windows950": "BIG5",
}
# Encodings whose multibyte characters may contain bytes below 0x80 (PostgreSQL's own list
# of client-only encodings; none can be a server encoding for the same reason).
UNSAFE = frozenset({"SJIS", "BIG5", "GBK", "UHC", "GB18030", "JOHAB", "SHIFT_JIS_2004"})
# The allowlist: safe encodings and the Python codec that decodes each exactly.
CODECS: dict[str, str] = {
    "UTF8": "utf-8",
    "SQL_ASCII": "latin-1",
    "LATIN1": "latin-1",
    "LATIN2": "iso8859-2",
    "LATIN3": "iso8859-3",
    "LATIN4": "iso8859-4",
    "LATIN5": "iso8859-9",
    "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13",
    "LATIN8": "iso8859-14",
    "LATIN9": "iso8859-15",
    "LATIN10": "iso8859-16",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1252": "cp1252",
    "WIN1253": "cp1253",
    "WIN1254": "cp1254",
    "WIN1255": "cp1255",
    "WIN1256": "cp1256",
    "WIN1257": "cp1257",
    "WIN1258": "cp1258",
    "WIN866": "cp866",
    "WIN874": "cp874",
    "KOI8R": "koi8-r",
    "KOI8U": "koi8-u",
    "ISO_8859_5": "iso8859-5",
    "ISO_8859_6": "iso8859-6",
    "ISO_8859_7": "iso8859-7",
    "ISO_8859_8": "iso8859-8",
    "EUC_JP": "euc_jp",
    "EUC_KR": "euc_kr",
    "EUC_CN": "gb2312",
    "EUC_JIS_2004": "euc_jis_2004",
}
_NAMEDATALEN = 64


def resolve(name: str) -> str | None:
    """The encoding PostgreSQL would take ``name`` for (``"UTF8"``, ``"SJIS"``), or None."""
    if not name or len(name.encode("utf-8", "surrogatepass")) >= _NAMEDATALEN:
        return None
    key = "".join(ch.lower() for ch in name if ch.isascii() and ch.isalnum())
    return ALIASES.get(key)  # the table holds every official name's cleaned form too


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


def python_codec(pg_name: str) -> str | None:
    """The Python codec for an encoding as the server reports it, or None if not allowed."""
    enc = resolve(pg_name)
    return CODECS.get(enc) if enc is not None else None
