"""The decision record of a checked message: its JSON, as the recorder stores it.

``decision_payload`` is the record's definition (docs/recording-format.md): the JSON is
``recorder.records.dump_json`` of it. ``DecisionRecords.render`` produces the same bytes
without building and sorting dicts per statement: everything about a statement except its
text is the same for every statement of one shape (a fingerprint-cache hit shares the
classification's sets and the decision), so that part is rendered once per shape and the
statement's text is spliced in. tests/unit/test_decision_records.py holds the two equal.
"""

from __future__ import annotations

from json import dumps
from json.encoder import encode_basestring_ascii as _json_str  # what dumps writes for a str

from recorder.records import dump_json

__all__ = ["DecisionRecords", "decision_payload"]


def decision_payload(grant_id, verdict, message: str, sql: str, **extra) -> dict:
    """The record of one checked message (Query, Parse, FunctionCall)."""
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


def _list(values) -> str:
    return "[" + ",".join(_json_str(v) for v in sorted(values)) + "]"


class DecisionRecords:
    """Renders one session's decision records; the per-shape parts are kept (bounded)."""

    __slots__ = ("grant_id", "_head", "_shapes", "_seen", "_size")

    def __init__(self, grant_id, size: int = 512):
        self.grant_id = grant_id
        self._head = '{"denied":false,"grant_id":' + dumps(grant_id, default=str) + ',"message":'
        self._shapes: dict[tuple, tuple[str, str]] = {}
        # id(decision) -> (decision, reads, writes, functions, cls, command, its shape)
        self._seen: dict[int, tuple] = {}
        self._size = size

    def render(self, verdict, message: str, sql: str, **extra) -> bytes:
        """``dump_json(decision_payload(...))``, from cached parts when it can."""
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
        shapes = self._shapes
        first = True
        seen = self._seen
        for classified, decision in verdict.decisions:
            # A cache hit brings the very objects of the cached classification and decision:
            # the same objects as last time are the same key, found without hashing it.
            # (The entry holds them, so no other object can have this id meanwhile.)
            known = seen.get(id(decision))
            if (
                known is not None
                and known[1] is classified.reads
                and known[2] is classified.writes
                and known[3] is classified.functions
                and known[4] is classified.cls
                and known[5] is classified.command
            ):
                shape = known[6]
            else:
                # every field but the text; the sets are the cached classification's own
                key = (classified.cls, classified.command, classified.reads, classified.writes,
                       classified.functions, decision)  # fmt: skip
                try:
                    shape = shapes.get(key)
                except TypeError:  # an unhashable set: not a cached classification's
                    return dump_json(
                        decision_payload(self.grant_id, verdict, message, sql, **extra)
                    )
                if shape is None:
                    shape = self._shape(classified, decision)
                    if len(shapes) >= self._size:
                        shapes.pop(next(iter(shapes)))
                    shapes[key] = shape
                if len(seen) >= self._size:
                    seen.pop(next(iter(seen)))
                seen[id(decision)] = (decision, *key[2:5], key[0], key[1], shape)
            if not first:
                parts.append(",")
            first = False
            parts += (shape[0], _json_str(classified.sql), shape[1])
        parts.append("]}")
        return "".join(parts).encode()

    @staticmethod
    def _shape(classified, decision) -> tuple[str, str]:
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
