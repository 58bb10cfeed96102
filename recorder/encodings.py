"""Client encodings as PostgreSQL names them, and the Python codec that reads each one the
proxy allows (pure, the standard library only).

The server reads a session's texts in its client encoding. The proxy's policy decides which
encodings a session may use (``policy.encodings``: only those in which no multibyte
character holds an ASCII byte, and that a codec here decodes exactly); the relay reads each
statement in the encoding the server last reported; replay and the audit answer read a
recording's texts the same way (``session_codec``). One table serves all three, so it lives
here, in the lowest layer, which every other package may import (devtools/layering.py).

Names resolve like ``pg_char_to_encoding`` in PostgreSQL's src/common/encnames.c: every
character but ASCII letters and digits dropped, letters folded to lower case, then looked up
in its alias table (``S_JIS``, ``Shift-JIS``, ``windows932`` and ``ms-kanji`` are all SJIS).
"""

from __future__ import annotations

__all__ = ["ALIASES", "CODECS", "DEFAULT_CODEC", "python_codec", "resolve", "session_codec"]

DEFAULT_CODEC = "utf-8"  # before the server reports an encoding, and for one off the allowlist

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


def python_codec(pg_name: str) -> str | None:
    """The Python codec for an encoding as the server reports it, or None if not allowed."""
    enc = resolve(pg_name)
    return CODECS.get(enc) if enc is not None else None


def session_codec(pg_name: str) -> str:
    """The codec the proxy reads a session's texts in once the server reports ``pg_name``
    (``proxy.relay.python_encoding``): UTF-8 for an encoding off the allowlist (an
    enforcing session ends there; a dry run or pass-through one goes on, read as UTF-8)."""
    return python_codec(pg_name) or DEFAULT_CODEC
