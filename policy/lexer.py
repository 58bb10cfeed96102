"""PostgreSQL lexer: statement splitting, literal-stripped fingerprints (the policy cache's
keys), canonical text (what sqlglot reads).

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

Plain statements (ASCII outside strings and comments, quoted identifiers of printable
ASCII, no dollar quotes, escape strings or unusual numbers: most of what agents, drivers
and ORMs send) take a fast path
that computes the same outputs with a few whole-text regex passes and builds tokens only
when asked; tests/unit/test_lexer.py holds the two paths to identical answers.
``collapse_values`` cuts a plain statement's VALUES rows of literals to the first one, for
the policy: such rows name nothing it decides on.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Protocol, cast

from policy.memo import memo_put

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

# PostgreSQL continues a string across whitespace holding a newline (scan.l's
# quotecontinue: horizontal space or -- comments, a newline, then spaces, newlines or
# -- comments each ended by a newline) when a quote follows: 'a'<LF>'b' is 'ab'. The
# continuation is read in the string's own mode: after E'...' backslashes still escape
# (E'a'<LF>'\'' is one string), after B'...'/X'...' a doubled quote still ends it. So the
# E-string and bit-string tokens take their continuations in (a standard string's
# continuation reads the same as a new standard string: two tokens, the same text inside).
_CONT = r"(?:[ \t\f]|--[^\n\r]*)*[\n\r](?:[ \t\n\r\f]|--[^\n\r]*[\n\r])*"
_E_BODY = r"'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'"
_E_SEGMENT_RE = re.compile(r"'([^'\\]*(?:(?:\\.|'')[^'\\]*)*)'", re.S)
_BIT_SEGMENT_RE = re.compile(r"'([^']*)'")

# Alternatives are ordered by frequency (the engine tries them in order); a word never
# starts an E-string (E'...') or a Unicode escape (U&'...', U&"..."). A bit string (B'...',
# X'...') cannot hold a doubled quote: PostgreSQL ends it at the next quote.
_TOKEN_ALTERNATIVES = rf"""
      (?P<word>(?![eE]'|[uU]&['"])[A-Za-z_\x80-\U0010ffff][A-Za-z_0-9$\x80-\U0010ffff]*)
    | (?P<num>0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+
        |(?:[0-9][0-9_]*(?:\.(?!\.)[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9][0-9_]*)?)
    | (?P<punct>[(),\[\].:])
    | (?P<op>(?:[+*<>=~!@\#%^&|`?]|-(?!-)|/(?!\*))+)
    | (?P<str>(?<=(?<![A-Za-z_0-9$\x80-\U0010ffff])[bBxX])'[^']*'(?:{_CONT}'[^']*')*
        |'[^']*(?:''[^']*)*')
    | (?P<qid>"[^"]*(?:""[^"]*)*")
    | (?P<lc>--[^\n\r]*)
    | (?P<bc>/\*)
    | (?P<semi>;)
    | (?P<estr>[eE]{_E_BODY}(?:{_CONT}{_E_BODY})*)
    | (?P<uesc>[uU]&['"])
    | (?P<dq>\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z_0-9\x80-\U0010ffff]*)?\$)
    | (?P<param>\$[0-9]+)
    | (?P<other>.)
"""
_WS = r"[ \t\n\r\f\v]"
# One token at a time, whitespace included (parse_qualified_name).
_TOKEN_RE = re.compile(rf"(?P<ws>{_WS}+)|{_TOKEN_ALTERNATIVES}", re.X | re.S)
# The lexers' step: the whitespace before a token (group 1, maybe empty) and the token, or
# the end of the text. Half the regex calls of matching whitespace on its own.
_STEP_RE = re.compile(rf"({_WS}*)(?:{_TOKEN_ALTERNATIVES}|(?P<end>\Z))", re.X | re.S)


class _Match(Protocol):
    """A match of a pattern that cannot fail (a catch-all alternative, or ``*`` of
    everything) and whose alternatives are all named groups, so ``lastgroup`` is a name.
    Typing only: at run time this is the ``re.Match`` itself."""

    @property
    def lastgroup(self) -> str: ...
    def start(self, group: int | str = 0, /) -> int: ...
    def end(self, group: int | str = 0, /) -> int: ...
    def group(self, group: int | str = 0, /) -> str: ...


class _Matcher(Protocol):
    def __call__(self, string: str, pos: int = 0, /) -> _Match: ...


def _always(pattern: re.Pattern[str]) -> _Matcher:
    """``pattern.match`` typed as never returning None (see ``_Match``); no run-time cost
    per token, since the lexers take it once per call."""
    return cast(_Matcher, pattern.match)


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

# Memos of the two pure name functions below, which every miss calls several times per
# relation and function (policy/memo.py), short names only.
_NAME_MEMO_MAX = 256  # characters
_rendered: dict[tuple[str, ...], str] = {}
_qualified: dict[str, tuple[tuple[str, bool], ...] | None] = {}


def render_name(*parts: str) -> str:
    """``schema.name`` with each part double-quoted unless it is a plain lower-case name."""
    out = _rendered.get(parts)
    if out is None:
        out = _render_name(parts)
        if len(out) <= _NAME_MEMO_MAX:
            memo_put(_rendered, parts, out)
    return out


def _render_name(parts: tuple[str, ...]) -> str:
    """``render_name`` without the memo (tests/unit/test_miss_path.py compares the two)."""
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


class Statement:
    """One statement as the lexer saw it."""

    __slots__ = (
        "sql", "fingerprint", "canon", "literals", "cacheable", "error", "_tokens", "_numbers",
        "_quoted",
    )  # fmt: skip

    def __init__(
        self,
        sql: str,
        fingerprint: str,
        canon: str,
        tokens: list[Token] | None = None,
        literals: list[str] | None = None,
        cacheable: bool = True,
        error: str = "",
        numbers: list[str] | None = None,
        quoted: int = 0,
    ):
        self.sql = sql  # original text, stripped, without the terminating ';'
        self.fingerprint = fingerprint
        self.canon = canon
        self.literals = [] if literals is None else literals  # string literal values by index
        self.cacheable = cacheable  # the fingerprint may stand for this statement
        self.error = error  # lexical error (unterminated literal, stray character, U& escape)
        # None: a plain statement whose tokens are read off ``canon`` when first asked for
        # (classifying most statements needs only the first two); ``numbers`` are then the
        # original text of its numbers, in order.
        self._tokens = tokens
        self._numbers = numbers
        self._quoted = quoted  # plain statements: how many quoted identifiers

    @property
    def tokens(self) -> list[Token]:
        """Every token but whitespace and comments."""
        tokens = self._tokens
        if tokens is None:
            tokens = self._tokens = _canon_tokens(self.canon, self.literals, self._numbers or [])
        return tokens

    def head(self, n: int) -> list[Token]:
        """The first ``n`` tokens (fewer if the statement is shorter)."""
        if self._tokens is not None:
            return self._tokens[:n]
        if n == 2:  # the classifier's question: most statements start with two words
            m = _TWO_WORDS_RE.match(self.canon)
            if m is not None:
                first, second = m.group(1, 2)
                return [
                    _new_token(Token, ("word", first, first, 0)),
                    _new_token(Token, ("word", second, second, m.start(2))),
                ]
        return _canon_tokens(self.canon, self.literals, self._numbers or [], n)

    def literal_counts(self) -> tuple[int, int]:
        """(string literals, quoted identifiers) as the canonical text shows them: quoted
        identifiers include non-ASCII words, which the canonical text quotes."""
        if self._tokens is None:
            return len(self.literals), self._quoted  # plain: ASCII, so no non-ASCII words
        return literal_counts(self._tokens)

    def _key(self) -> tuple:
        return (self.sql, self.fingerprint, self.canon, self.tokens, self.literals,
                self.cacheable, self.error)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Statement):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Statement(sql={self.sql!r}, fingerprint={self.fingerprint!r}, "
            f"canon={self.canon!r}, tokens={self.tokens!r}, literals={self.literals!r}, "
            f"cacheable={self.cacheable!r}, error={self.error!r})"
        )


def literal_counts(tokens: list[Token]) -> tuple[int, int]:
    """(string literals, quoted identifiers incl. non-ASCII words) among ``tokens``."""
    strings = quoted = 0
    for t in tokens:
        kind = t.kind
        if kind == "qid" or (kind == "word" and not t.value.isascii()):
            quoted += 1
        elif kind == "str" or kind == "estr" or kind == "dq":
            strings += 1
    return strings, quoted


def fingerprint_statements(sql: str) -> list[tuple[str, str, bool]] | None:
    """``(text, fingerprint, cacheable)`` per statement; None on a lexical error.

    What ``lex`` would say of the fingerprints, without building tokens.
    """
    fast = _plain_fingerprints(sql)
    if fast is not None:
        return fast
    return _scan_fingerprints(sql)


def _scan_fingerprints(sql: str) -> list[tuple[str, str, bool]] | None:
    out: list[tuple[str, str, bool]] = []
    fp: list[str] = []
    sep = ""
    ok = True
    last = ""  # kind of the last significant token, "" after a separator
    begin = -1
    pos = 0
    n = len(sql)
    match = _always(_STEP_RE)
    while pos < n:
        m = match(sql, pos)
        kind = m.lastgroup
        end = m.end()
        lead = m.group(1)
        if lead:
            if fp:
                sep = "\n" if ("\n" in lead or "\r" in lead or sep == "\n") else " "
            last = ""
        if kind == "word":
            if begin < 0:
                begin = m.start(kind)
            if sep:
                fp.append(sep)
                sep = ""
            text = m.group(kind)
            fp.append(text.lower() if text.isascii() else text.translate(_ASCII_LOWER))
            if last == "num":
                ok = False
            last = "word"
            pos = end
            continue
        if kind == "end":
            break
        if kind == "lc":
            if fp:
                sep = "\n"
            last = ""
            pos = end
            continue
        if kind == "bc":
            end = _block_comment_end(sql, m.start(kind))
            if end < 0:
                return None
            if fp and sep != "\n":
                sep = " "
            last = ""
            pos = end
            continue
        start = m.start(kind)
        if kind == "semi":
            if fp:
                out.append((sql[begin:start].strip(), "".join(fp), ok))
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
            begin = start
        if sep:
            fp.append(sep)
            sep = ""
        text = m.group(kind)
        if kind == "str":
            fp.append(_FP_STR)
        elif kind == "num":
            if last in _GLUE_KINDS or last == ".":
                ok = False
            fp.append(_FP_NUM)
        elif kind == "estr":
            fp.append(_FP_ESTR)
        elif kind == "dq":
            close = sql.find(text, end)
            if close < 0:
                return None
            end = close + len(text)
            fp.append(_FP_DQ)
        else:
            fp.append(text)
        if last == "num" and (kind in _GLUE_KINDS or text == "."):
            ok = False
        last = "." if (kind == "punct" and text == ".") else kind
        pos = end
    if fp:
        out.append((sql[begin:].strip(), "".join(fp), ok))
    return out


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lex(sql: str) -> list[Statement]:
    """Full lexer: statements with tokens, canonical text, literal values and fingerprints."""
    fast = _plain_lex(sql)
    if fast is not None:
        return fast
    return _scan(sql)


def _scan(sql: str) -> list[Statement]:
    """The reference lexer: one regex step per token."""
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
    match = _always(_TOKEN_RE)

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
                if last == "word" and tokens[-1].value in ("b", "x"):
                    value = "".join(_BIT_SEGMENT_RE.findall(text))  # continued: segments
                else:
                    value = text[1:-1].replace("''", "'")
                fp.append(_FP_STR)
            elif kind == "estr":
                value = _decode_e("".join(_E_SEGMENT_RE.findall(text, 1)))  # continued too
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


# ---- plain SQL: the same answers from a few C-level regex passes ---------------------
#
# Most statements are plain: ASCII outside string literals and comments, no nested block
# comments, quoted identifiers of printable ASCII that touch no word, number or string (set
# aside as placeholders during the passes, put back verbatim), no dollar quotes or
# parameters, no E/B/X/U& strings, and every number an unsigned decimal that touches no
# word, string or dot. For such text
# the tokens of the reference lexer are exactly what these patterns see, so the
# fingerprint and canonical text come from whole-text substitutions instead of a Python
# step per token. Anything else (including every lexical error) is not plain and goes to
# the reference lexer. tests/unit/test_lexer.py checks on random SQL-ish text that both
# paths agree exactly.
_PLAIN_RE = re.compile(  # alternatives start with distinct characters; nothing backtracks
    r"""(?:
        [A-Za-z_][A-Za-z0-9_]*+(?![$'"])
      | [ \t\n\r\f\v]++
      | [(),\[\].:;]
      | (?<![A-Za-z0-9_.'"])[0-9]++(?:\.[0-9]++)?+(?![A-Za-z0-9_.'$"])
      | (?<![A-Za-z0-9_&"])'(?:[^']++|'')*+'
      | (?<![A-Za-z0-9_$&'"])"(?:[ !\#-~]++|"")*+"(?![A-Za-z0-9_$'"])
      | (?:[+*<>=~!@\#%^&|`?]|-(?!-)|/(?!\*))++
      | --[^\n\r]*+
      | /\*(?:[^*/]|\*(?!/)|/(?!\*))*+\*/
    )*+""",
    re.X,
)
# A block comment without a nested one (nested ones are not plain: the validator refuses).
_BLOCK = r"/\*(?:[^*/]|\*(?!/)|/(?!\*))*\*/"
# (unrolled: a run of ordinary characters at a time, not one alternation per character; the
# same strings, ~70x faster on a long literal)
_PLAIN_STR = r"'[^']*(?:''[^']*)*'"
_PLAIN_QID = r'"[^"]*(?:""[^"]*)*"'
_PLAIN_STR_RE = re.compile(_PLAIN_STR)
_PLAIN_SEMI_RE = re.compile(rf"{_PLAIN_STR}|{_PLAIN_QID}|(;)")
# Strings, quoted identifiers and comments in one pass, so a quote in a comment or a
# comment marker in a string is seen for what it is.
_PLAIN_JUNK = rf"{_PLAIN_STR}|{_PLAIN_QID}|--[^\n\r]*|{_BLOCK}"
_PLAIN_JUNK_RE = re.compile(_PLAIN_JUNK)
_PLAIN_JUNK_SEMI_RE = re.compile(rf"{_PLAIN_JUNK}|(;)")
_PLAIN_JUNK_SPLIT_RE = re.compile(rf"({_PLAIN_JUNK})")
_QID = "\x05"  # a quoted identifier's place in a plain statement's bare text
# What each kind of junk becomes in the bare text, by its first character.
_JUNK_PLACEHOLDER = {"'": "\x01", '"': _QID, "-": "\n", "/": " "}
_PLAIN_LEADING_RE = re.compile(rf"(?:[ \t\n\r\f\v]+|--[^\n\r]*|{_BLOCK})*")
# A number not inside a word: (?<![a-z0-9_])[0-9]+(?:\.[0-9]+)?, spelled to start with the
# digit so that the regex engine scans for digits instead of trying the lookbehind at every
# character (twice as fast; tests/unit/test_miss_path.py compares the two spellings).
_PLAIN_NUM_RE = re.compile(r"[0-9](?<![a-z0-9_][0-9])[0-9]*(?:\.[0-9]+)?")
_PLAIN_NL_RE = re.compile(r"[ \t\f\v]*[\n\r][ \t\n\r\f\v]*")
_PLAIN_SP_RE = re.compile(r"[ \t\f\v]+")
_DIGITS = "0123456789"


def _has_digit(text: str) -> bool:
    return any(d in text for d in _DIGITS)  # ten C-level scans beat one regex search


# Tokens of a plain statement's canonical text: word, string placeholder, number
# placeholder, punctuation, operator run, separator.
_CANON_TOKEN_RE = re.compile(
    r"([a-z_][a-z0-9_]*)|('[0-9]+')|(0)|([(),\[\].:])|((?:[+*<>=~!@\#%^&|`?/-])+)"
    rf"|({_PLAIN_QID})|[ \n]"
)
_CANON_KINDS = (None, "word", "str", "num", "punct", "op", "qid")
# Two words and the separator between them at the start of a canonical text: what
# ``_canon_tokens(..., limit=2)`` reads there (tests/unit/test_miss_path.py compares the two).
_TWO_WORDS_RE = re.compile(r"([a-z_][a-z0-9_]*)[ \n]([a-z_][a-z0-9_]*)")


# The engine asks for a query's fingerprints and, on a cache miss, for its tokens: the
# second call finds the first one's answer here (same str object; a tuple swap is atomic).
_last_plain: tuple[str | None, list[tuple[str, str, str, int]] | None] = (None, None)


def _plain_statements(sql: str) -> list[tuple[str, str, str, int]] | None:
    """``(text, string-free lower-case text, fingerprint, quoted identifiers)`` per
    non-empty statement, if ``sql`` is plain."""
    global _last_plain
    last = _last_plain
    if last[0] is sql:
        return last[1]
    split = _plain_split(sql)
    out = None
    if split is not None:
        out = [(t, b, _with_quoted(_plain_fingerprint(b), q), len(q)) for t, b, q in split]
    _last_plain = (sql, out)
    return out


def _with_quoted(fingerprint: str, quoted: list[str]) -> str:
    """Put the quoted identifiers back in place of their placeholders, as written."""
    if not quoted:
        return fingerprint
    parts = fingerprint.split(_QID)
    pieces = [""] * (2 * len(parts) - 1)
    pieces[0::2] = parts
    pieces[1::2] = quoted  # one placeholder per identifier: a length mismatch raises
    return "".join(pieces)


def _plain_split(sql: str) -> list[tuple[str, str, list[str]]] | None:
    """``(text, bare, quoted identifiers)`` per non-empty statement of plain ``sql``: bare is
    the lower-cased text with strings, quoted identifiers and comments replaced."""
    if _PLAIN_RE.fullmatch(sql) is None:
        return None
    if "--" in sql or "/*" in sql or '"' in sql:
        return _plain_split_junk(sql)
    if ";" not in sql:
        pieces = [sql]
    elif "'" not in sql:
        pieces = sql.split(";")
    else:  # a ';' inside a string literal does not end the statement
        pieces = _split_at_semicolons(_PLAIN_SEMI_RE, sql)
    out: list[tuple[str, str, list[str]]] = []
    for piece in pieces:
        text = piece.strip()
        if text:
            bare = _PLAIN_STR_RE.sub("\x01", text) if "'" in text else text
            out.append((text, bare.lower(), []))
    return out


def _split_at_semicolons(pattern: re.Pattern[str], sql: str) -> list[str]:
    """Split where ``pattern``'s group 1 (a ';' outside strings and comments) matched."""
    pieces = []
    begin = 0
    for m in pattern.finditer(sql):
        if m.group(1):
            pieces.append(sql[begin : m.start()])
            begin = m.end()
    pieces.append(sql[begin:])
    return pieces


def _plain_split_junk(sql: str) -> list[tuple[str, str, list[str]]]:
    """Splitting and blanking for text with comments or quoted identifiers: strings,
    identifiers and comments in one pass, so each is seen for what it is."""
    pieces = _split_at_semicolons(_PLAIN_JUNK_SEMI_RE, sql) if ";" in sql else [sql]
    out = []
    for piece in pieces:
        # A statement's text starts at its first token: leading comments are not part of it.
        text = piece[_always(_PLAIN_LEADING_RE)(piece).end() :].strip()
        if text:
            bare, quoted = _blank_junk(text)
            out.append((text, bare.lower(), quoted))
    return out


def _blank_junk(text: str) -> tuple[str, list[str]]:
    """A string becomes its placeholder; a comment the separator the lexer would fold it
    to; a quoted identifier its placeholder, kept aside (in order) to be put back."""
    parts = _PLAIN_JUNK_SPLIT_RE.split(text)  # code, junk, code, junk, ..., code
    junk = parts[1::2]
    parts[1::2] = [_JUNK_PLACEHOLDER[j[0]] for j in junk]
    return "".join(parts), [j for j in junk if j[0] == '"']


def _plain_fingerprint(bare: str) -> str:
    fp = _PLAIN_NUM_RE.sub("\x04", bare) if _has_digit(bare) else bare
    if "\n" in fp or "\r" in fp:
        # (a trailing comment leaves a separator behind: the lexer never emits one last)
        return _PLAIN_SP_RE.sub(" ", _PLAIN_NL_RE.sub("\n", fp)).rstrip(" \n")
    return " ".join(fp.split())  # only ASCII whitespace is left outside the placeholders


def _plain_fingerprints(sql: str) -> list[tuple[str, str, bool]] | None:
    statements = _plain_statements(sql)
    if statements is None:
        return None
    return [(text, fingerprint, True) for text, _bare, fingerprint, _quoted in statements]


def _plain_lex(sql: str) -> list[Statement] | None:
    statements = _plain_statements(sql)
    if statements is None:
        return None
    out = []
    for text, bare, fingerprint, quoted in statements:
        numbers = _PLAIN_NUM_RE.findall(bare) if "\x04" in fingerprint else []
        if "\x01" in fingerprint:
            found = (
                _PLAIN_STR_RE.findall(text)
                if "--" not in text and "/*" not in text and not quoted
                else [j for j in _PLAIN_JUNK_RE.findall(text) if j[0] == "'"]
            )
            literals = [lit[1:-1].replace("''", "'") for lit in found]
        else:
            literals = []
        canon = _plain_canon(fingerprint)  # quoted identifiers hold no placeholder character
        out.append(Statement(text, fingerprint, canon, None, literals, True, "", numbers, quoted))
    return out


def _plain_canon(fingerprint: str) -> str:
    """A plain statement's canonical text: its fingerprint with numbers as 0 and string
    literals as their index."""
    canon = fingerprint.replace("\x04", "0")
    if "\x01" not in canon:
        return canon
    parts = canon.split("\x01")
    return parts[0] + "".join(f"'{i}'{part}" for i, part in enumerate(parts[1:]))


# --- VALUES lists: rows of literals say nothing to the policy --------------------------------
#
# A row of a VALUES list made only of literals (numbers, strings, NULL, TRUE, FALSE,
# DEFAULT) names no relation and calls no function, so a statement classifies the same
# with its second and later such rows removed. A 10 000-row INSERT then costs what a
# one-row INSERT does, and every batch size shares one fingerprint. Only plain statements
# are collapsed, where placeholders are single characters and the only other text that
# could look like a row is inside a quoted identifier (an odd number of '"' before it).

_VALUE_ATOM = r"(?:(?:[-+][ \n]?)?\x04|\x01|null|true|false|default)"
_VALUE_ROW = rf"\([ \n]?{_VALUE_ATOM}(?:[ \n]?,[ \n]?{_VALUE_ATOM})*+[ \n]?\)"
_VALUES_RUN_RE = re.compile(
    rf"(?<![a-z0-9_$.])values[ \n]?({_VALUE_ROW})((?:[ \n]?,[ \n]?{_VALUE_ROW})++)"
)


def collapse_values(stmt: Statement) -> Statement | None:
    """``stmt`` with each VALUES list of literal-only rows cut to its first row (rows after
    the first one that is not literal-only stay); None if nothing was cut. Plain statements
    only. The result keeps the original ``sql`` (what the client sent); its fingerprint,
    canonical text, literals and numbers are those of the shortened statement."""
    if stmt._tokens is not None or stmt.error or "values" not in stmt.fingerprint:
        return None
    fp = stmt.fingerprint
    pieces: list[str] = []
    drop_strings: list[tuple[int, int]] = []  # (first index, count) of literals cut out
    drop_numbers: list[tuple[int, int]] = []
    pos = strings = numbers = 0
    for m in _VALUES_RUN_RE.finditer(fp):
        if fp.count('"', 0, m.start()) % 2:
            continue  # inside a quoted identifier: text, not a VALUES list
        first_end, end = m.end(1), m.end()
        rest = fp[first_end:end]
        rows = rest.count("(")  # atoms hold no parentheses: one per row
        arity = m.group(1).count(",") + 1
        if rest.count(",") != rows * arity:  # a separator and arity - 1 commas per row
            continue  # rows of other lengths: Postgres refuses those; leave them be
        kept = fp[pos:first_end]
        pieces.append(kept)
        strings += kept.count("\x01")
        numbers += kept.count("\x04")
        cut_strings, cut_numbers = rest.count("\x01"), rest.count("\x04")
        drop_strings.append((strings, cut_strings))
        drop_numbers.append((numbers, cut_numbers))
        strings += cut_strings
        numbers += cut_numbers
        pos = end
    if not pieces:
        return None
    pieces.append(fp[pos:])
    collapsed = "".join(pieces)
    return Statement(
        stmt.sql,
        collapsed,
        _plain_canon(collapsed),
        None,
        _without(stmt.literals, drop_strings),
        stmt.cacheable,
        "",
        _without(stmt._numbers or [], drop_numbers),
        stmt._quoted,  # rows of literals hold no quoted identifier
    )


def _without(items: list[str], cuts: list[tuple[int, int]]) -> list[str]:
    out: list[str] = []
    pos = 0
    for first, count in cuts:
        out.extend(items[pos:first])
        pos = first + count
    out.extend(items[pos:])
    return out


def _canon_tokens(
    canon: str, literals: list[str], numbers: list[str], limit: int = -1
) -> list[Token]:
    """The tokens of a plain statement, read off its canonical text."""
    tokens: list[Token] = []
    n_num = 0
    kinds = _CANON_KINDS
    for m in _CANON_TOKEN_RE.finditer(canon):
        k = m.lastindex
        if k is None:
            continue  # separator
        if len(tokens) == limit:
            break
        piece = m.group(k)
        if k == 6:
            value = piece[1:-1].replace('""', '"')
        elif k == 1 or k >= 4:
            value = piece
        elif k == 3:
            value = numbers[n_num]
            n_num += 1
        else:
            value = literals[int(piece[1:-1])]
        tokens.append(_new_token(Token, (kinds[k], value, piece, m.start())))
    return tokens


def parse_qualified_name(text: str) -> list[tuple[str, bool]] | None:
    """Split ``a."B".c`` into ``[(name, quoted), ...]`` with PostgreSQL's identifier rules."""
    try:
        found = _qualified[text]
    except KeyError:
        found = _parse_qualified_name(text)
        if len(text) <= _NAME_MEMO_MAX:
            memo_put(_qualified, text, found)
    return None if found is None else list(found)


def _parse_qualified_name(text: str) -> tuple[tuple[str, bool], ...] | None:
    """``parse_qualified_name`` without the memo (tests/unit/test_miss_path.py compares)."""
    if "\v" in text:
        # PostgreSQL 15 reads a name in a string (regclassin, SplitIdentifierString) with
        # scanner_isspace, which a vertical tab is not: '...orders\v' names "orders\v",
        # where this lexer's whitespace would drop it (red-team round 13)
        return None
    parts: list[tuple[str, bool]] = []
    pos = 0
    n = len(text)
    expect_name = True
    match = _always(_TOKEN_RE)
    while pos < n:
        m = match(text, pos)
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
    return tuple(parts)
