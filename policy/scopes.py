"""Grant scopes: ``read:public.orders,public.customers write:public.orders``.

Clauses are separated by whitespace; each is ``operation:target[,target...]`` with no
whitespace inside (a quoted identifier may hold any character). ``Scopes.text`` is the
canonical form stored with a grant: operations in a fixed order, targets sorted,
duplicates and targets covered by a ``schema.*`` of the same operation dropped.

``listen:`` names notification channels (``listen:orders_changed,"Jobs"``): one
identifier each, never schema-qualified, folded and truncated as PostgreSQL reads the
channel of ``LISTEN``; ``listen:*`` means every channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from policy.lexer import ascii_lower, parse_qualified_name, render_name, truncate_identifier
from policy.memo import memo_put

__all__ = [
    "FORBIDDEN_SETTINGS",
    "OPERATIONS",
    "ScopeError",
    "Scopes",
    "parse_scopes",
    "split_name",
]

RELATION_OPERATIONS = ("read", "write", "insert", "update", "delete", "truncate", "ddl")
OPERATIONS = (*RELATION_OPERATIONS, "execute", "set", "listen", "unknown")
# Never grantable: each would let the session change what the classifier assumes (the
# role running statements, how unqualified names resolve, how string literals are lexed,
# which CHECK constraints the planner folds: ``RELATION_PLAN_CODE_SQL``, red-team round 81).
FORBIDDEN_SETTINGS = frozenset(
    {"role", "session_authorization", "search_path", "standard_conforming_strings", "all",
     "constraint_exclusion"}
)  # fmt: skip
# Which scope operations satisfy a classified write operation.
SATISFIED_BY = {
    "read": ("read",),
    "insert": ("insert", "write"),
    "update": ("update", "write"),
    "delete": ("delete", "write"),
    "lock": ("update", "write"),
    "truncate": ("truncate",),
    "ddl": ("ddl",),
}

_PART_RE = re.compile(r'"(?:[^"]|"")*"|[A-Za-z_\x80-\U0010ffff][A-Za-z_0-9$\x80-\U0010ffff]*|\*')
_SETTING_RE = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?\Z")

Target = tuple[str, str | None]  # (schema, name); name None means "schema.*"


class ScopeError(ValueError):
    """A scope text that cannot be parsed; the message names the bad part."""


def _render_target(target: Target) -> str:
    schema, name = target
    return render_name(schema) + ".*" if name is None else render_name(schema, name)


@lru_cache(maxsize=4096)
def split_name(rendered: str) -> Target | None:
    """``schema.name`` (as ``classify`` renders it) -> (schema, name); ``s.*`` -> (s, None)."""
    if rendered.endswith(".*"):
        parts = parse_qualified_name(rendered[:-2])
        return (parts[0][0], None) if parts and len(parts) == 1 else None
    parts = parse_qualified_name(rendered)
    if not parts or len(parts) != 2:
        return None
    return parts[0][0], parts[1][0]


@dataclass(frozen=True, slots=True)
class Scopes:
    relations: dict[str, frozenset[Target]] = field(default_factory=dict)  # op -> targets
    execute: frozenset[Target] = frozenset()
    settings: frozenset[str] = frozenset()
    unknown: bool = False
    # LISTEN channels, as PostgreSQL reads them (case-folded unless quoted, 63 bytes)
    listen: frozenset[str] = frozenset()
    listen_any: bool = False  # listen:* - every channel

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scopes) and self.text == other.text

    @property
    def text(self) -> str:
        """Canonical text: ``parse_scopes(s.text) == s``."""
        clauses = []
        for op in RELATION_OPERATIONS:
            targets = self.relations.get(op)
            if targets:
                clauses.append(op + ":" + ",".join(sorted(map(_render_target, targets))))
        if self.execute:
            clauses.append("execute:" + ",".join(sorted(map(_render_target, self.execute))))
        if self.settings:
            clauses.append("set:" + ",".join(sorted(self.settings)))
        if self.listen_any or self.listen:
            clauses.append("listen:" + ",".join(self._listen_targets()))
        if self.unknown:
            clauses.append("unknown:*")
        return " ".join(clauses)

    def _listen_targets(self) -> list[str]:
        # a channel named * is quoted; the bare * is every channel (and covers the rest)
        return ["*"] if self.listen_any else sorted(render_name(c) for c in self.listen)

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: operation -> sorted list of targets."""
        out: dict[str, object] = {}
        for op in RELATION_OPERATIONS:
            if self.relations.get(op):
                out[op] = sorted(map(_render_target, self.relations[op]))
        if self.execute:
            out["execute"] = sorted(map(_render_target, self.execute))
        if self.settings:
            out["set"] = sorted(self.settings)
        if self.listen_any or self.listen:
            out["listen"] = self._listen_targets()
        if self.unknown:
            out["unknown"] = ["*"]
        return out

    def allows_relation(self, op: str, relation: str) -> bool:
        """May ``op`` (read insert update delete lock truncate ddl) touch ``relation``?"""
        target = split_name(relation)
        if target is None:
            return False
        wildcard = (target[0], None)
        for scope_op in SATISFIED_BY[op]:
            targets = self.relations.get(scope_op)
            if targets and (target in targets or wildcard in targets):
                return True
        return False

    def allows_function(self, schema: str, name: str) -> bool:
        return (schema, name) in self.execute or (schema, None) in self.execute

    def allows_listen(self, channel: str) -> bool:
        """May the session LISTEN on ``channel`` (the name as PostgreSQL reads it)?"""
        return self.listen_any or channel in self.listen


def _parse_target(text: str, clause: str, allow_wildcard: bool = True) -> Target:
    parts: list[str] = []
    pos = 0
    while True:
        m = _PART_RE.match(text, pos)
        if m is None:
            raise ScopeError(f"malformed name {text!r} in {clause!r}")
        parts.append(m.group())
        pos = m.end()
        if pos == len(text):
            break
        if text[pos] != ".":
            raise ScopeError(f"malformed name {text!r} in {clause!r}")
        pos += 1
    if len(parts) == 1:
        raise ScopeError(f"{text!r} in {clause!r} must be schema-qualified (e.g. public.{text})")
    if len(parts) > 2:
        raise ScopeError(f"{text!r} in {clause!r} has too many parts (use schema.name)")
    if parts[0] == "*":
        raise ScopeError(f"{text!r} in {clause!r}: the schema cannot be a wildcard")

    schema = _norm_identifier(parts[0], clause)
    if parts[1] == "*":
        if not allow_wildcard:
            raise ScopeError(f"{text!r} in {clause!r}: wildcards are not allowed here")
        return schema, None
    return schema, _norm_identifier(parts[1], clause)


def _norm_identifier(part: str, clause: str) -> str:
    """One identifier as PostgreSQL reads it: quoted as written, else ASCII lower-cased;
    truncated to 63 bytes either way."""
    if part.startswith('"'):
        inner = part[1:-1].replace('""', '"')
        if not inner:
            raise ScopeError(f"empty quoted identifier in {clause!r}")
        return truncate_identifier(inner)
    return truncate_identifier(ascii_lower(part))


def _parse_channel(text: str, clause: str) -> str | None:
    """A ``listen:`` target: one identifier (None for the bare ``*``: every channel)."""
    if text == "*":
        return None
    m = _PART_RE.match(text)
    if m is None or m.group() == "*" or m.end() != len(text):
        if m is not None and m.end() < len(text) and text[m.end()] == ".":
            raise ScopeError(f"{text!r} in {clause!r}: a channel is one name, not schema-qualified")
        raise ScopeError(f"malformed channel name {text!r} in {clause!r}")
    return _norm_identifier(text, clause)


def _split_clauses(text: str) -> list[str]:
    """Split on whitespace outside double quotes."""
    clauses: list[str] = []
    current: list[str] = []
    in_quotes = False
    for ch in text:
        if ch == '"':
            in_quotes = not in_quotes
        if not in_quotes and ch in " \t\r\n\f\v":
            if current:
                clauses.append("".join(current))
                current = []
            continue
        current.append(ch)
    if in_quotes:
        raise ScopeError(f"unterminated quoted identifier in {''.join(current)!r}")
    if current:
        clauses.append("".join(current))
    return clauses


def _split_targets(body: str, clause: str) -> list[str]:
    targets: list[str] = []
    current: list[str] = []
    in_quotes = False
    for ch in body:
        if ch == '"':
            in_quotes = not in_quotes
        if ch == "," and not in_quotes:
            targets.append("".join(current))
            current = []
            continue
        current.append(ch)
    targets.append("".join(current))
    if any(not t for t in targets):
        raise ScopeError(f"empty target in {clause!r}")
    return targets


_PARSED: dict[str, Scopes] = {}


def parse_scopes(text: str) -> Scopes:
    """Parse scope text; raise ``ScopeError`` naming the bad part.

    Every login parses its grant's text again (a connection per task or per query is
    common), so the answer is kept per text (bounded, policy/memo.py): callers share it
    and never change it."""
    found = _PARSED.get(text) if type(text) is str else None
    if found is not None:
        return found
    scopes = _parse_scopes(text)
    memo_put(_PARSED, text, scopes, 1024)
    return scopes


def _parse_scopes(text: str) -> Scopes:
    if not isinstance(text, str):
        raise ScopeError("scopes must be text")
    clauses = _split_clauses(text)
    if not clauses:
        raise ScopeError("empty scopes: give at least one clause, e.g. read:public.orders")
    relations: dict[str, set[Target]] = {}
    execute: set[Target] = set()
    settings: set[str] = set()
    channels: set[str] = set()
    listen_any = False
    unknown = False
    for clause in clauses:
        op, colon, body = clause.partition(":")
        op = op.lower()
        if not colon:
            raise ScopeError(f"{clause!r} is not operation:target (e.g. read:public.orders)")
        if op not in OPERATIONS:
            raise ScopeError(
                f"unknown operation {op!r} in {clause!r} (one of {', '.join(OPERATIONS)})"
            )
        if not body:
            raise ScopeError(f"{clause!r} names no target")
        targets = _split_targets(body, clause)
        if op in RELATION_OPERATIONS:
            relations.setdefault(op, set()).update(_parse_target(t, clause) for t in targets)
        elif op == "execute":
            execute.update(_parse_target(t, clause) for t in targets)
        elif op == "set":
            for t in targets:
                name = t.lower()
                if not _SETTING_RE.match(name):
                    raise ScopeError(f"malformed setting name {t!r} in {clause!r}")
                if name in FORBIDDEN_SETTINGS:
                    raise ScopeError(f"setting {name!r} in {clause!r} cannot be granted")
                settings.add(name)
        elif op == "listen":
            for t in targets:
                channel = _parse_channel(t, clause)
                if channel is None:
                    listen_any = True
                else:
                    channels.add(channel)
        else:
            if targets != ["*"]:
                raise ScopeError(f"{clause!r}: the only target of unknown is '*'")
            unknown = True

    def prune(targets: set[Target]) -> frozenset[Target]:
        wild = {s for s, n in targets if n is None}
        return frozenset(t for t in targets if t[1] is None or t[0] not in wild)

    return Scopes(
        relations={op: prune(t) for op, t in relations.items() if t},
        execute=prune(execute),
        settings=frozenset(settings),
        unknown=unknown,
        listen=frozenset() if listen_any else frozenset(channels),
        listen_any=listen_any,
    )
