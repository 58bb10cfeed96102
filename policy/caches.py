"""Every cache the statement policy keeps, in one place.

A statement is classified (what it touches: depends on its text and the search_path only)
and then decided (allowed or not: depends on the grant and the catalog snapshot too).
``SharedClassifications`` holds the first kind for the whole process; ``SessionCaches``
holds one session's tiers and looks through to the shared one. ``StatementPolicy``
(policy/engine.py) asks the tiers in this order, cheapest first::

    tier                     key                          holds                    scope
    exact text               the query text               pairs, verdict           session
    number shape             text with digits as 0        classified + decision    session
    fingerprint              lexer fingerprint            classified + decision    session
    shared text              (search_path, text)          classifications         process
    shared fingerprint       (search_path, fingerprint)   classification          process
    shared number shapes     text with digits as 0        lexer's fingerprints    process

Session tiers hold decisions, so a new catalog snapshot empties them
(``forget_decisions``); shared tiers hold only what the text determines and are never
emptied for a grant's sake. Every tier is bounded (oldest entry out first) and bounded
in the size of what it keeps (``MAX_SESSION_TEXT``, ``MAX_SHARED_TEXT``).
tests/unit/test_engine_cached.py compares each tier's answers with a fresh session's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Final

from policy.classify import Classified, StatementClass
from policy.classify.crosscheck import boundaries_agree_in_place
from policy.decide import Decision
from policy.lexer import fingerprint_statements
from policy.number_shapes import NumberShapes
from policy.prepared import STATEFUL_COMMANDS

if TYPE_CHECKING:
    from policy.engine import Verdict

__all__ = [
    "MAX_SESSION_TEXT",
    "MAX_SHARED_TEXT",
    "SHARED",
    "Entry",
    "Pair",
    "SessionCaches",
    "SharedClassifications",
    "with_sql",
]

Pair = tuple[Classified, Decision]
# One lexed-and-classified statement: its Classified and, if the fingerprint may stand
# for it, the fingerprint.
Entry = tuple[Classified, "str | None"]

# Size limits: with every entry as large as allowed (each holds its text twice, as key and
# in its Classified) a session's caches stay under ~4 MB and the shared one under ~32 MB.
# Bigger statements are classified every time.
MAX_SESSION_TEXT: Final = 4096  # session text and fingerprint tiers, 256 entries each
MAX_SHARED_TEXT: Final = 2048  # shared text and fingerprint tiers, 4096 entries each


def _bounded_put(cache: dict, key: Any, value: Any, size: int) -> None:
    if len(cache) >= size:
        try:
            cache.pop(next(iter(cache)))
        except (StopIteration, KeyError, RuntimeError):  # another thread got there first
            pass
    cache[key] = value


class SharedClassifications:
    """Process-wide classification tiers: a classification depends only on the statement
    text (or its fingerprint) and the search_path, never on the grant, so sessions share
    it. Decisions stay per session. ``number_shapes`` remembers the lexer's fingerprints
    per number shape of a text (policy/number_shapes.py), which depend on the text alone."""

    def __init__(self, size: int = 4096):
        self.size = size
        self.by_text: dict[tuple[tuple[str, ...], str], tuple[Entry, ...]] = {}
        self.by_fingerprint: dict[tuple[tuple[str, ...], str], Classified] = {}
        self.number_shapes = NumberShapes(size, MAX_SHARED_TEXT)

    def clear(self) -> None:
        self.by_text.clear()
        self.by_fingerprint.clear()
        self.number_shapes.clear()


SHARED = SharedClassifications()


class SessionCaches:
    """One session's cache tiers (see the module's table) and its view of the shared ones.

    ``shared`` None: nothing is shared, every text is classified afresh in this session.
    ``stats`` counts where each check was answered: ``text_hits`` (exact text),
    ``fingerprint_hits`` (number shape or fingerprint), ``shared_hits`` (shared text),
    ``misses`` (classified here)."""

    def __init__(
        self, size: int, shared: SharedClassifications | None, search_path: tuple[str, ...]
    ):
        self.size = size
        self.shared = shared
        self.search_path = search_path
        # exact query text -> (pairs, stateful, verdict if stateless)
        self.texts: dict[str, tuple[tuple[Pair, ...], bool, Verdict | None]] = {}
        # number shape -> (characters before the statement's text, after it, classified,
        # decision, the shape's verdict): a single plain statement whose shape the shared
        # memo knows
        self.shapes: dict[bytes, tuple[int, int, Classified, Decision, Verdict]] = {}
        # statement fingerprint -> (classified, decision, plain)
        self.fingerprints: dict[str, tuple[Classified, Decision, bool]] = {}
        self.stats = {"text_hits": 0, "fingerprint_hits": 0, "shared_hits": 0, "misses": 0}

    def forget_decisions(self) -> None:
        """The session tiers hold decisions: a new catalog snapshot makes them stale."""
        self.texts.clear()
        self.shapes.clear()
        self.fingerprints.clear()

    # -- exact text ----------------------------------------------------------------------
    def put_text(self, sql: str, pairs: tuple[Pair, ...], verdict: Verdict) -> None:
        """Remember a query's pairs, and its verdict unless it depends on session state
        (a PREPARE/EXECUTE/DEALLOCATE is decided again on every hit) or runs DDL (each run
        of it counts: ``StatementPolicy._verdict``)."""
        if len(sql) > MAX_SESSION_TEXT:
            return
        stateful = opens_ddl(pairs) or any(c.command in STATEFUL_COMMANDS for c, _ in pairs)
        _bounded_put(self.texts, sql, (pairs, stateful, None if stateful else verdict), self.size)

    def shared_text(self, sql: str) -> tuple[Entry, ...] | None:
        if self.shared is None:
            return None
        entries = self.shared.by_text.get((self.search_path, sql))
        if entries is not None:
            self.stats["shared_hits"] += 1
        return entries

    def share_text(self, sql: str, entries: tuple[Entry, ...]) -> None:
        if self.shared is not None and len(sql) <= MAX_SHARED_TEXT:
            _bounded_put(self.shared.by_text, (self.search_path, sql), entries, self.shared.size)

    # -- number shape (looked up in StatementPolicy._from_shape, inlined there) ---------
    def remember_shape(
        self, sql: str, pair: Pair, verdict_of: Callable[[Pair, int, int], Verdict]
    ) -> None:
        """``pair`` decided the single plain statement of ``sql``: a later text of the same
        number shape is decided by one lookup, if the shared memo knows the shape and
        PostgreSQL's scanner ends the statement where the lexer does, by position (then it
        does so in every text of the shape: docs/decisions.md, "PostgreSQL's scanner and
        the number-shape tier"). ``verdict_of(pair, lead, tail)``: the verdict every text of
        the shape gets (``policy.engine.ShapeVerdict``), made once here."""
        if self.shared is None:
            return
        known = self.shared.number_shapes.known(sql)
        if known is None:
            return
        shape, lead, tail = known
        if not boundaries_agree_in_place(sql, lead, len(sql) - tail):
            return  # PostgreSQL's scanner must end the statement where the lexer does
        entry = (lead, tail, pair[0], pair[1], verdict_of(pair, lead, tail))
        _bounded_put(self.shapes, shape, entry, self.size)

    # -- fingerprints --------------------------------------------------------------------
    def any_fingerprints(self) -> bool:
        return bool(self.fingerprints) or (
            self.shared is not None and bool(self.shared.by_fingerprint)
        )

    def statements(self, sql: str) -> list[tuple[str, str, bool]] | None:
        """``policy.lexer.fingerprint_statements(sql)``, from the shared number-shape memo
        when there is one."""
        if self.shared is None:
            return fingerprint_statements(sql)
        return self.shared.number_shapes.fingerprints(sql)

    def fingerprint(self, fingerprint: str) -> tuple[Classified, Decision, bool] | None:
        return self.fingerprints.get(fingerprint)

    def put_fingerprint(self, fingerprint: str, classified: Classified, d: Decision) -> bool:
        """Remember a decided statement under its fingerprint; returns whether it is plain."""
        plain = _plain(classified, d)
        _bounded_put(self.fingerprints, fingerprint, (classified, d, plain), self.size)
        return plain

    def shared_fingerprint(self, fingerprint: str) -> Classified | None:
        if self.shared is None:
            return None
        return self.shared.by_fingerprint.get((self.search_path, fingerprint))

    def share_fingerprint(self, fingerprint: str, classified: Classified, size: int) -> None:
        if self.shared is not None and size <= MAX_SHARED_TEXT:
            key = (self.search_path, fingerprint)
            _bounded_put(self.shared.by_fingerprint, key, classified, self.shared.size)


def opens_ddl(pairs: tuple[Pair, ...]) -> bool:
    """Are ``pairs`` (or may they run) DDL, for the snapshot (``StatementPolicy._ran_ddl``)?
    Their verdict is then never cached: each run counts."""
    return any(
        c.cls is StatementClass.DDL
        or (c.cls is StatementClass.UNKNOWN and d.allowed)  # (unknown:* may allow DDL)
        or d.opens_ddl
        for c, d in pairs
    )


def _plain(c: Classified, d: Decision) -> bool:
    """Allowed, and neither DDL (nor code that may run it) nor session state: its verdict
    needs nothing else."""
    return (
        d.allowed
        and not d.opens_ddl
        and c.command not in STATEFUL_COMMANDS
        and c.cls is not StatementClass.DDL
    )


# ``with_sql`` builds a Classified per cache hit. The dataclass's generated ``__init__``
# (frozen: ``object.__setattr__`` per field) costs ~0.8 µs; setting the slots through their
# descriptors costs ~0.4 µs and gives the same object (same class, every field set, no
# ``__post_init__``). Checked here against the dataclass's own field list, so a field added
# to Classified fails at import instead of being left unset, and by
# tests/unit/test_engine_cached.py::test_with_sql_equals_the_dataclass_constructor.
_CLASSIFIED_FIELDS = (
    "sql", "cls", "command", "reads", "writes", "functions", "detail", "write_ops",
    "operators", "attributes", "types", "describes", "only", "rows_idle",
)  # fmt: skip
if (
    tuple(f.name for f in fields(Classified)) != _CLASSIFIED_FIELDS
    or Classified.__slots__ != _CLASSIFIED_FIELDS
    or hasattr(Classified, "__post_init__")
):  # pragma: no cover - a change to policy/classify/model.py
    raise ImportError("policy.caches.with_sql must follow Classified's fields")
_new = object.__new__
_SET = {name: Classified.__dict__[name].__set__ for name in _CLASSIFIED_FIELDS}
_sql, _cls, _command = _SET["sql"], _SET["cls"], _SET["command"]
_reads, _writes, _functions = _SET["reads"], _SET["writes"], _SET["functions"]
_detail, _write_ops, _operators, _attributes, _types, _describes = (
    _SET["detail"], _SET["write_ops"], _SET["operators"], _SET["attributes"], _SET["types"],
    _SET["describes"],
)  # fmt: skip
_only, _rows_idle = _SET["only"], _SET["rows_idle"]


def with_sql(c: Classified, sql: str) -> Classified:
    """``c`` for another text of the same statement (a cache hit keeps its own text):
    ``Classified(sql, c.cls, ..., c.rows_idle)``, built slot by slot (see above)."""
    if c.sql == sql:
        return c
    new = _new(Classified)
    _sql(new, sql)
    _cls(new, c.cls)
    _command(new, c.command)
    _reads(new, c.reads)
    _writes(new, c.writes)
    _functions(new, c.functions)
    _detail(new, c.detail)
    _write_ops(new, c.write_ops)
    _operators(new, c.operators)
    _attributes(new, c.attributes)
    _types(new, c.types)
    _describes(new, c.describes)
    _only(new, c.only)
    _rows_idle(new, c.rows_idle)
    return new
