"""The decision record of a checked message: its JSON, as the recorder stores it.

``decision_payload`` is the record's definition (docs/recording-format.md): the JSON is
``recorder.records.dump_json`` of it. An allowed statement's record refers to a *shape*
instead (``shape_payload``: the same payload without the statement's text, recorded once
per session as a ``decision.shape`` record): every statement of one shape in a session
has the same decision, and its text is the client frame the record follows, so the record
itself is ``{"denied":false,"shape":N}``. ``DecisionRecords.render`` produces both without
building and sorting dicts per statement; ``render_whole`` the whole payload's bytes from
cached parts. tests/unit/test_decision_records.py holds them equal to the reference, and
``recorder.records.DecisionShapes`` (what every reader expands them with) to
``decision_payload`` without the texts.
"""

from __future__ import annotations

from json import dumps
from json.encoder import encode_basestring_ascii as _json_str  # what dumps writes for a str

from policy.engine import ShapeVerdict, exact
from recorder.records import DECISION_SHAPE, dump_json

__all__ = ["DECISION_SHAPE", "DecisionRecords", "decision_payload", "shape_payload"]


def decision_payload(grant_id, verdict, message: str, sql: str, **extra) -> dict:
    """The record of one checked message (Query, Parse, FunctionCall, Bind)."""
    denied = not verdict.allowed
    payload = {
        "grant_id": grant_id,
        "message": message,
        "sql": sql,
        "outcome": "denied" if denied else ("would_deny" if verdict.would_deny else "allowed"),
        "statements": [
            {
                "sql": classified.sql,
                "class": classified.cls.name,
                "command": classified.command,
                "reads": sorted(classified.reads),
                "writes": sorted(classified.writes),
                "functions": sorted(classified.functions),
                "allowed": decision.allowed,
                "rule": decision.rule,
                "reason": decision.reason,
            }
            for classified, decision in verdict.decisions
        ],
        **extra,
    }
    if denied:
        payload["error"] = verdict.message
    payload["denied"] = denied  # SessionRecorder.decision adds it
    return payload


def shape_payload(grant_id, verdict, message: str, n: int) -> dict:
    """The ``decision.shape`` record of an allowed one-statement verdict: its decision
    record's payload without the texts (``sql``, the statement's ``sql``) and without
    ``denied``, numbered ``n`` in the session."""
    payload = decision_payload(grant_id, verdict, message, "")
    del payload["sql"], payload["denied"]
    for statement in payload["statements"]:
        del statement["sql"]
    payload["shape"] = n
    return payload


def _list(values) -> str:
    return "[" + ",".join(_json_str(v) for v in sorted(values)) + "]"


class _Entry:
    """A statement's classification and decision, everything but its text: the JSON of its
    full rendering around the text, and the session's shape numbers by message."""

    __slots__ = ("before", "after", "shapes")

    def __init__(self, before: str, after: str) -> None:
        self.before = before  # the statement's JSON object up to its "sql" value
        self.after = after  # and after it
        # message -> the compact record's JSON up to its closing brace, and without a
        # "statement" its whole bytes (the shape's number is in them)
        self.shapes: dict[str, tuple[str, bytes]] = {}


class DecisionRecords:
    """Renders one session's decision records; the per-shape parts are kept (bounded).

    An allowed statement of one shape (the message type and everything the policy said of
    the statement but its text) is recorded as ``{"denied":false,"shape":N}`` (plus the
    prepared statement's name for a Parse) once its ``decision.shape`` record, which holds
    the rest of the payload, has been: the statement's text is the client frame the
    decision follows (docs/recording-format.md, "Decision shapes"). Denials, dry-run
    would-denies and messages of several statements are recorded whole."""

    __slots__ = ("grant_id", "_head", "_shapes", "_seen", "_by_verdict", "_size", "next_shape")

    def __init__(self, grant_id, size: int = 512, first_shape: int = 0):
        self.grant_id = grant_id
        self._head = '{"denied":false,"grant_id":' + dumps(grant_id, default=str) + ',"message":'
        self._shapes: dict[tuple, _Entry] = {}
        # id(decision) -> (decision, reads, writes, functions, cls, command, its entry)
        self._seen: dict[int, tuple] = {}
        # id(a ShapeVerdict) -> (it, its entry): a number shape's statements, by one lookup
        self._by_verdict: dict[int, tuple] = {}
        self._size = size
        # shape numbers are the session's: a new grant's renderer continues the numbering
        self.next_shape = first_shape

    def render(self, verdict, message: str, sql: str, **extra) -> tuple[dict | None, bytes]:
        """(the payload of a ``decision.shape`` record to append first, or None; the
        decision record's body)."""
        if type(verdict) is ShapeVerdict and not extra:
            # a number shape's one verdict (policy.engine): its entry found by identity
            known_entry = self._by_verdict.get(id(verdict))
            if known_entry is not None and known_entry[0] is verdict:
                body = known_entry[1].shapes.get(message)
                if body is not None:
                    return None, body[1]
        decisions = verdict.decisions
        if (
            verdict.allowed
            and not verdict.would_deny
            and len(decisions) == 1
            and type(message) is str
            and (not extra or (extra.keys() == {"statement"} and type(extra["statement"]) is str))
        ):
            classified, decision = decisions[0]
            entry = self._entry(classified, decision)
            if entry is not None:
                shape: dict | None = None
                known = entry.shapes.get(message)
                if known is None:  # the shape's first statement in the session
                    n = self.next_shape
                    self.next_shape = n + 1
                    head = '{"denied":false,"shape":' + str(n)
                    known = entry.shapes[message] = (head, (head + "}").encode())
                    shape = shape_payload(self.grant_id, verdict, message, n)
                statement = extra.get("statement") if extra else None
                if statement is None:
                    if type(verdict) is ShapeVerdict:
                        by_verdict = self._by_verdict
                        if len(by_verdict) >= self._size:
                            by_verdict.pop(next(iter(by_verdict)))
                        by_verdict[id(verdict)] = (verdict, entry)  # (held: its id is its own)
                    return shape, known[1]  # a constant per shape
                return shape, (known[0] + ',"statement":' + _json_str(statement) + "}").encode()
        return None, self.render_whole(verdict, message, sql, **extra)

    def render_whole(self, verdict, message: str, sql: str, **extra) -> bytes:
        """``dump_json(decision_payload(...))``, from cached parts when it can."""
        verdict = exact(verdict, sql)  # (a number shape's own verdict: this text's statement)
        if (
            not verdict.allowed
            or verdict.would_deny
            or (extra and extra.keys() != {"statement"})
            or type(message) is not str
            or type(sql) is not str
        ):
            # denials and dry-run would-denies are rare (a deny seals a chunk anyway)
            return dump_json(decision_payload(self.grant_id, verdict, message, sql, **extra))
        parts = [self._head, _json_str(message), ',"outcome":"allowed","sql":', _json_str(sql)]
        statement = extra.get("statement")
        if statement is not None:
            if type(statement) is not str:
                return dump_json(decision_payload(self.grant_id, verdict, message, sql, **extra))
            parts += (',"statement":', _json_str(statement))
        parts.append(',"statements":[')
        first = True
        for classified, decision in verdict.decisions:
            entry = self._entry(classified, decision)
            if entry is None:  # an unhashable set: not a cached classification's
                return dump_json(decision_payload(self.grant_id, verdict, message, sql, **extra))
            if not first:
                parts.append(",")
            first = False
            parts += (entry.before, _json_str(classified.sql), entry.after)
        parts.append("]}")
        return "".join(parts).encode()

    def _entry(self, classified, decision) -> _Entry | None:
        """The statement's cached entry, made on first sight; None if its classification
        cannot be a key (an unhashable set: not a cached classification's)."""
        # A cache hit brings the very objects of the cached classification and decision:
        # the same objects as last time are the same key, found without hashing it.
        # (The entry holds them, so no other object can have this id meanwhile.)
        seen = self._seen
        known = seen.get(id(decision))
        if (
            known is not None
            and known[1] is classified.reads
            and known[2] is classified.writes
            and known[3] is classified.functions
            and known[4] is classified.cls
            and known[5] is classified.command
        ):
            return known[6]
        # every field but the text; the sets are the cached classification's own
        key = (classified.cls, classified.command, classified.reads, classified.writes,
               classified.functions, decision)  # fmt: skip
        shapes = self._shapes
        try:
            entry = shapes.get(key)
        except TypeError:
            return None
        if entry is None:
            entry = _Entry(*self._parts(classified, decision))
            if len(shapes) >= self._size:
                shapes.pop(next(iter(shapes)))
            shapes[key] = entry
        if len(seen) >= self._size:
            seen.pop(next(iter(seen)))
            # (an entry found by a ShapeVerdict is one ``seen`` gives: no longer, maybe)
            self._by_verdict.clear()
        seen[id(decision)] = (decision, *key[2:5], key[0], key[1], entry)
        return entry

    @staticmethod
    def _parts(classified, decision) -> tuple[str, str]:
        """The statement's JSON object up to its "sql" value, and after it (sorted keys)."""
        before = (
            '{"allowed":' + ("true" if decision.allowed else "false")
            + ',"class":' + _json_str(classified.cls.name)
            + ',"command":' + _json_str(classified.command)
            + ',"functions":' + _list(classified.functions)
            + ',"reads":' + _list(classified.reads)
            + ',"reason":' + _json_str(decision.reason)
            + ',"rule":' + _json_str(decision.rule)
            + ',"sql":'
        )  # fmt: skip
        return before, ',"writes":' + _list(classified.writes) + "}"
