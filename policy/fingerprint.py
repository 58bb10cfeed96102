"""PostgreSQL lexer: statement splitting, literal-stripped fingerprints, canonical text.

One compiled regex walks the text left to right the way PostgreSQL's scanner does
(standard_conforming_strings = on): standard strings, E-strings with backslash escapes,
dollar quotes, quoted identifiers, nested block comments, line comments, numbers as whole
tokens. Two outputs per statement:

* ``fingerprint``: the token stream with literals replaced by placeholders, unquoted words
  ASCII-lower-cased, comments dropped and whitespace folded to one separator (newline-ness
  kept). Two statements with the same fingerprint differ only in literal values, whitespace,
  comments and keyword case.
* ``canon``: the text handed to sqlglot. It is a function of the fingerprint alone (string
  literals become ``'<index>'``, numbers ``0``, non-ASCII identifiers are quoted), so sqlglot
  never sees a literal's content and can never disagree with PostgreSQL about where a string
  or comment ends. Literal values stay available through ``Statement.literals``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "Statement",
    "Token",
    "ascii_lower",
    "fingerprint_statements",
    "lex",
    "parse_qualified_name",
    "render_name",
    "truncate_identifier",
]

# Alternatives are ordered by frequency (the engine tries them in order); a word never
# starts an E-string (E'...') or a Unicode escape (U&'...', U&"...").
_TOKEN_RE = re.compile(
    r"""
      (?P<ws>[ \t\n\r\f\v]+)
    | (?P<word>(?![eE]'|[uU]&['"])[A-Za-z_\x80-\U0010ffff][A-Za-z_0-9$\x80-\U0010ffff]*)
    | (?P<num>0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+
        |(?:[0-9][0-9_]*(?:\.(?!\.)[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9][0-9_]*)?)
    | (?P<punct>[(),\[\].:])
    | (?P<op>(?:[+*<>=~!@\#%^&|`?]|-(?!-)|/(?!\*))+)
    | (?P<str>'(?:[^']|'')*')
    | (?P<qid>"(?:[^"]|"")*")
    | (?P<lc>--[^\n\r]*)
    | (?P<bc>/\*)
    | (?P<semi>;)
    | (?P<estr>[eE]'(?:[^'\\]|\\.|'')*')
    | (?P<uesc>[uU]&['"])
    | (?P<dq>\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z_0-9\x80-\U0010ffff]*)?\$)
    | (?P<param>\$[0-9]+)
    | (?P<other>.)
    """,
    re.X | re.S,
)
_COMMENT_EDGE_RE = re.compile(r"/\*|\*/")
_E_ESCAPE_RE = re.compile(
    r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))", re.S
)
_E_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# Placeholders in fingerprints: control characters never survive into a fingerprint
# otherwise (any "other" character makes the statement unfingerprintable).
_FP_STR = "\x01"
_FP_ESTR = "\x02"
_FP_DQ = "\x03"
_FP_NUM = "\x04"
_LITERAL_KINDS = frozenset({"str", "estr", "dq"})
# Token kinds a number may not touch without a separator: PostgreSQL versions disagree
# about "1x", "0x1F", "1.e"; keep such statements out of the fingerprint cache.
_GLUE_KINDS = frozenset({"word", "qid", "num", "str", "estr", "dq", "param", "uesc"})


NAMEDATALEN = 64  # PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes


def truncate_identifier(name: str) -> str:
    """Truncate to 63 bytes (whole characters) as PostgreSQL does with long identifiers."""
    if len(name) < 16:
        return name
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) < NAMEDATALEN:
        return name
    return raw[: NAMEDATALEN - 1].decode("utf-8", "ignore")


_PLAIN_NAME_RE = re.compile(r"[a-z_][a-z0-9_$]*\Z")


def render_name(*parts: str) -> str:
    """``schema.name`` with each part double-quoted unless it is a plain lower-case name."""
    return ".".join(
        p if _PLAIN_NAME_RE.match(p) else '"' + p.replace('"', '""') + '"' for p in parts
    )


def ascii_lower(word: str) -> str:
    """Fold case the way PostgreSQL folds unquoted identifiers (ASCII letters only)."""
    return word.lower() if word.isascii() else word.translate(_ASCII_LOWER)


def _decode_e(body: str) -> str:
    def repl(m: re.Match[str]) -> str:
        octal, hx, u4, u8, other = m.groups()
        if octal:
            return chr(int(octal, 8) & 0xFF)
        if hx:
            return chr(int(hx, 16))
        if u4 or u8:
            try:
                return chr(int(u4 or u8, 16))
            except (ValueError, OverflowError):
                return "\ufffd"
        return _E_SIMPLE.get(other, other)

    return _E_ESCAPE_RE.sub(repl, body.replace("''", "'"))


def _block_comment_end(sql: str, start: int) -> int:
    """Index just past the nested /* ... */ comment starting at ``start``; -1 if unterminated."""
    depth = 1
    pos = start + 2
    while True:
        m = _COMMENT_EDGE_RE.search(sql, pos)
        if m is None:
            return -1
        depth += 1 if m.group() == "/*" else -1
        pos = m.end()
        if depth == 0:
            return pos


_new_token = tuple.__new__  # builds a Token without NamedTuple's Python-level __new__


class Token(NamedTuple):
    kind: str  # word qid str estr dq param num op punct other uesc
    value: str  # words ASCII-lower-cased; quoted identifiers unescaped; literals decoded
    canon: str  # this token's text in Statement.canon
    start: int  # offset of the token's canon text in Statement.canon


@dataclass(slots=True)
class Statement:
    sql: str  # original text, stripped, without the terminating ';'
    fingerprint: str
    canon: str
    tokens: list[Token] = field(default_factory=list)  # no whitespace or comments
    literals: list[str] = field(default_factory=list)  # string literal values by index
    cacheable: bool = True  # the fingerprint may stand for this statement
    error: str = ""  # lexical error (unterminated literal, stray character, U& escape)


def fingerprint_statements(sql: str) -> list[tuple[str, str, bool]] | None:
    """Fast path: ``(text, fingerprint, cacheable)`` per statement; None on a lexical error."""
    out: list[tuple[str, str, bool]] = []
    fp: list[str] = []
    sep = ""
    ok = True
    last = ""  # kind of the last significant token, "" after a separator
    begin = -1
    pos = 0
    n = len(sql)
    match = _TOKEN_RE.match
    while pos < n:
        m = match(sql, pos)
        kind = m.lastgroup
        end = m.end()
        if kind == "ws":
            if fp:
                text = m.group()
                sep = "\n" if ("\n" in text or "\r" in text or sep == "\n") else " "
            last = ""
            pos = end
            continue
        if kind == "lc":
            if fp:
                sep = "\n"
            last = ""
            pos = end
            continue
        if kind == "bc":
            end = _block_comment_end(sql, pos)
            if end < 0:
                return None
            if fp and sep != "\n":
                sep = " "
            last = ""
            pos = end
            continue
        if kind == "semi":
            if fp:
                out.append((sql[begin:pos].strip(), "".join(fp), ok))
            fp = []
            sep = ""
            ok = True
            last = ""
            begin = -1
            pos = end
            continue
        if kind == "other" or kind == "uesc":
            return None
        if begin < 0:
            begin = pos
        if sep:
            fp.append(sep)
            sep = ""
        if kind == "word":
            fp.append(ascii_lower(m.group()))
        elif kind == "str":
            fp.append(_FP_STR)
        elif kind == "num":
            if last in _GLUE_KINDS or last == ".":
                ok = False
            fp.append(_FP_NUM)
        elif kind == "estr":
            fp.append(_FP_ESTR)
        elif kind == "dq":
            delim = m.group()
            close = sql.find(delim, end)
            if close < 0:
                return None
            end = close + len(delim)
            fp.append(_FP_DQ)
        else:
            fp.append(m.group())
        if last == "num" and (kind in _GLUE_KINDS or m.group() == "."):
            ok = False
        last = "." if (kind == "punct" and m.group() == ".") else kind
        pos = end
    if fp:
        out.append((sql[begin:].strip(), "".join(fp), ok))
    return out


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lex(sql: str) -> list[Statement]:
    """Full lexer: statements with tokens, canonical text, literal values and fingerprints."""
    stmts: list[Statement] = []
    fp: list[str] = []
    canon: list[str] = []
    tokens: list[Token] = []
    literals: list[str] = []
    sep = ""
    ok = True
    error = ""
    last = ""
    begin = -1
    clen = 0
    pos = 0
    n = len(sql)
    match = _TOKEN_RE.match

    def flush(stop: int) -> None:
        if fp or error:
            stmts.append(
                Statement(
                    sql=sql[begin if begin >= 0 else 0 : stop].strip(),
                    fingerprint="".join(fp),
                    canon="".join(canon),
                    tokens=list(tokens),
                    literals=list(literals),
                    cacheable=ok and not error,
                    error=error,
                )
            )

    while pos < n:
        m = match(sql, pos)
        kind = m.lastgroup
        end = m.end()
        text = m.group()
        if kind == "ws" or kind == "lc" or kind == "bc":
            if kind == "bc":
                end = _block_comment_end(sql, pos)
                if end < 0:
                    error = error or f"unterminated /* comment at offset {pos}"
                    if begin < 0:
                        begin = pos
                    end = n
            if fp:
                if kind == "lc" or (kind == "ws" and ("\n" in text or "\r" in text)):
                    sep = "\n"
                elif sep != "\n":
                    sep = " "
            last = ""
            pos = end
            continue
        if kind == "semi":
            flush(pos)
            fp, canon, tokens, literals = [], [], [], []
            sep, ok, error, last, begin, clen = "", True, "", "", -1, 0
            pos = end
            continue
        if begin < 0:
            begin = pos
        if sep:
            fp.append(sep)
            canon.append(sep)
            clen += 1
            sep = ""
        if kind == "word":
            value = ascii_lower(text)
            fp.append(value)
            piece = value if value.isascii() else _quote_ident(value)
        elif kind in _LITERAL_KINDS:
            if kind == "str":
                value = text[1:-1].replace("''", "'")
                fp.append(_FP_STR)
            elif kind == "estr":
                value = _decode_e(text[2:-1])
                fp.append(_FP_ESTR)
            else:
                close = sql.find(text, end)
                if close < 0:
                    error = error or f"unterminated dollar-quoted string at offset {pos}"
                    close = n
                    value = sql[end:]
                    end = n
                else:
                    value = sql[end:close]
                    end = close + len(text)
                fp.append(_FP_DQ)
            if last == "word" and tokens[-1].value in ("b", "x"):
                piece = "'0'"  # bit-string syntax: the index placeholder would not lex
            else:
                piece = "'" + str(len(literals)) + "'"
            literals.append(value)
        elif kind == "num":
            if last in _GLUE_KINDS or last == ".":
                ok = False
            value = text
            fp.append(_FP_NUM)
            piece = "0"
        elif kind == "qid":
            value = text[1:-1].replace('""', '"')
            fp.append(text)
            piece = text
        elif kind == "other":
            if text == "'":
                problem = "unterminated quoted string"
            elif text == '"':
                problem = "unterminated quoted identifier"
            else:
                problem = f"unexpected character {text!r}"
            error = error or f"{problem} at offset {pos}"
            value = piece = text
            fp.append(text)
        elif kind == "uesc":
            error = error or "U& Unicode-escape literals and identifiers are not supported"
            value = piece = text
            fp.append(text)
        else:
            value = piece = text
            fp.append(text)
        if last == "num" and (kind in _GLUE_KINDS or text == "."):
            ok = False
        last = "." if text == "." else kind
        tokens.append(_new_token(Token, (kind, value, piece, clen)))
        canon.append(piece)
        clen += len(piece)
        pos = end
    flush(n)
    return stmts


def parse_qualified_name(text: str) -> list[tuple[str, bool]] | None:
    """Split ``a."B".c`` into ``[(name, quoted), ...]`` with PostgreSQL's identifier rules."""
    parts: list[tuple[str, bool]] = []
    pos = 0
    n = len(text)
    expect_name = True
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        kind = m.lastgroup
        if kind == "ws":
            pos = m.end()
            continue
        if expect_name:
            if kind == "word":
                parts.append((truncate_identifier(ascii_lower(m.group())), False))
            elif kind == "qid":
                name = m.group()[1:-1].replace('""', '"')
                if not name:
                    return None
                parts.append((truncate_identifier(name), True))
            else:
                return None
            expect_name = False
        elif m.group() == ".":
            expect_name = True
        else:
            return None
        pos = m.end()
    if expect_name or not parts:
        return None
    return parts
