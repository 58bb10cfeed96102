"""Session 37, second round: ``pgwitness replay``'s transcript cannot be written by an agent.

The text transcript (``recorder.replay.Transcript``) printed what an agent's bytes reach as
it was: a statement's text, a prepared statement's and a portal's name, a parameter (quotes
doubled, a newline as it is), the server's message, detail and hint (a ``RAISE`` says
anything), a row's values and its columns' names, a setting's value (``application_name``)
in a ParameterStatus and in the session's start metadata, the session end's detail, the
policy's reason (it quotes the statement). A newline wrote a transcript line of its own
(``[   9.000009s] ok allowed scope.write``), a `` | `` a column, and a terminal's escape
(``\\x1b]0;...\\x07`` sets the title, ``\\x1b[2J`` clears the screen) reached the auditor's
terminal. Each is now a literal as the audit report writes one (``recorder.literal``, one
implementation for both); ``--format json`` carries each value exactly.

Also here: ``recorder.audit.derive.two_phase_op`` decodes an ``E''`` gid's escapes again
(the literal's map of escapes, defined in derive after the decoder's, had replaced it:
``E'a\\nb'`` read as ``anb``, the gid of another transaction).
"""

from __future__ import annotations

import io
import json

import pytest

from devtools.testing import (
    command_complete,
    data_row,
    frame,
    notice,
    parse,
    query,
    ready,
    row_description,
    sync,
)
from recorder import replay
from recorder.audit.derive import two_phase_op
from recorder.literal import sql_literal
from recorder.records import Direction, Kind, dump_json
from tests.support.audit_recordings import Session, bind, execute
from tests.support.literals import literal_at

# what an agent writes to pass its bytes for the transcript's own lines or the terminal's
FORGERIES = [
    "x\n[   9.000009s] ok allowed scope.write",
    "x\r[   9.000009s] !! DENIED forged",
    "x\u2028[   0.1s] forged",
    "x\u0085forged",
    "x\x1b]0;forged title\x07",
    "x\x1b[2J\x1b[Hforged",
    "x' forged",
    "a\\nb",
    "abc\u202edef",
    "it\u2019s",
    "\\",
]


def error_fields(code: str, message: str, detail: str, hint: str, typ: bytes = b"E") -> bytes:
    body = b"".join(k + v.encode() + b"\x00" for k, v in (
        (b"S", "ERROR"), (b"V", "ERROR"), (b"C", code), (b"M", message), (b"D", detail),
        (b"H", hint)))  # fmt: skip
    return frame(typ, body + b"\x00")


def parameter_status(name: str, value: str) -> bytes:
    return frame(b"S", name.encode() + b"\x00" + value.encode() + b"\x00")


def session_with(value: str) -> Session:
    """``value`` wherever an agent's bytes reach the transcript."""
    s = Session().start(application_name=value)
    s.client(query(f"SELECT 1 -- {value}"), decisions=1)
    s.server(
        parameter_status("application_name", value),
        row_description("n", value),
        data_row("1", value),
        command_complete("SELECT 1"),
        error_fields("P0001", value, value, value),
        notice(value),
        ready(),
    )
    s.client(parse(f"SELECT $1 -- {value}", value), bind(value, value, (value.encode(),)),
             execute(value), sync())  # fmt: skip
    s.meta("deny", dump_json({"outcome": "denied", "rule": "deny.read", "reason": value}),
           Kind.DECISION)  # fmt: skip
    s.server(frame(b"1", b""), frame(b"2", b""), command_complete("SELECT 1"), ready())
    s.meta("session.end", dump_json({"cause": "upstream", "detail": value}))
    return s


def transcript(s: Session) -> str:
    out = io.StringIO()
    t = replay.Transcript(out)
    for r in s.records:
        t.feed(r)
    t.close()
    return out.getvalue()


def after(text: str, head: str) -> tuple[str, str]:
    """The literal that follows ``head`` (on its line): its value and the rest of the line."""
    for line in text.splitlines():
        if head in line:
            value, end = literal_at(line, line.index(head) + len(head))
            return value, line[end:]
    raise AssertionError(f"{head!r} not in\n{text}")


@pytest.mark.parametrize("value", FORGERIES)
def test_every_value_an_agent_chose_is_one_literal_of_the_transcript(value):
    text = transcript(session_with(value))
    lines = text.splitlines()
    # nothing to print but the transcript's own: no line the agent's bytes began
    assert all(c.isprintable() for line in lines for c in line), lines
    assert all(ln.startswith(("[", "-- ", " " * 16)) for ln in lines), lines
    assert not [ln for ln in lines if ln.lstrip().startswith("[   9.000009s]")], lines
    # each value whole in its literal, and what follows it the transcript's own words
    assert after(text, "=> ") == (f"SELECT 1 -- {value}", ""), text
    assert after(text, "<= parameter application_name = ") == (value, ""), text
    assert after(text, "<= ERROR P0001: ") == (
        value,
        f" DETAIL: {sql_literal(value)} HINT: {sql_literal(value)}",
    ), text
    assert after(text, "<= NOTICE 00000: ") == (value, ""), text
    assert after(text, ": $1=") == (value, ""), text
    assert after(text, "!! DENIED deny.read: ") == (value, ""), text
    assert after(text, "-- session ended: upstream ") == (value, ""), text
    assert after(text, " application_name=")[0] == value, text
    # the table: the column's name and the row's value, one cell each
    table = [ln for ln in lines if ln.startswith(" " * 17) and " | " in ln]
    assert len(table) == 2, lines
    for row, want in zip(table, (["n", value], ["1", value]), strict=True):
        first, rest = row[17:].split(" | ", 1)
        assert first.strip() == want[0]
        if rest.startswith(("'", "E'")):  # not plain: a literal, and nothing after it
            got, end = literal_at(rest, 0)
            assert (got, rest[end:].strip()) == (want[1], ""), row
        else:  # plain (printable, no quote first, no |): as psql prints it
            assert rest.rstrip() == want[1] and value.isprintable(), row


@pytest.mark.parametrize("value", ["a b", "Mixed", 'q"uote', "new\nline", "s1"])
def test_a_statements_and_a_portals_name_is_an_identifier(value):
    text = transcript(session_with(value))
    ident = value if value == "s1" else '"' + value.replace('"', '""') + '"'
    if value == "new\nline":
        ident = 'U&"new\\000aline"'
    assert f"=> parse {ident}: " in text, text
    assert f"=> bind {ident}: " in text, text
    assert f"=> execute portal {ident}\n" in text, text


def test_plain_values_read_as_psql_prints_them():
    s = Session().start()
    s.client(query("SELECT 1"), decisions=1)
    s.server(row_description("id", "note"), data_row("1", "it's fine"), data_row("2", None),
             data_row("3", ""), data_row("4", "NULL"), data_row("5", "a | b"),
             data_row("6", " pad"), command_complete("SELECT 6"), ready())  # fmt: skip
    cells = [[c.strip() for c in ln[17:].split(" | ", 1)] for ln in transcript(s).splitlines()
             if ln.startswith(" " * 17) and " | " in ln]  # fmt: skip
    assert cells == [["id", "note"], ["1", "it's fine"], ["2", "NULL"], ["3", ""],
                     ["4", "'NULL'"], ["5", "'a | b'"], ["6", "' pad'"]]  # fmt: skip


@pytest.mark.parametrize("value", FORGERIES)
def test_the_json_replay_carries_every_value_exactly(value, monkeypatch):
    s = session_with(value)
    monkeypatch.setattr(replay, "iter_records", lambda *_a, **_k: iter(s.records))
    out = io.StringIO()
    replay.replay_json(None, "s", out)  # type: ignore[arg-type]
    lines = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert len(lines) == len(out.getvalue().splitlines())  # one object a line, whatever it holds
    wire = [ln for ln in lines if ln["kind"] == "wire"]
    assert [ln["sql"] for ln in wire if ln["frame"] in ("Q", "P")] == [
        f"SELECT 1 -- {value}", f"SELECT $1 -- {value}"]  # fmt: skip
    (b,) = [ln for ln in wire if ln["frame"] == "B"]
    assert (b["portal"], b["statement"], b["params"]) == (value, value, [value])
    (e,) = [ln for ln in wire if ln["frame"] == "E" and ln["direction"] == "s2c"]
    assert (e["fields"]["M"], e["fields"]["D"], e["fields"]["H"]) == (value, value, value)
    (t,) = [ln for ln in wire if ln["frame"] == "T"]
    (d,) = [ln for ln in wire if ln["frame"] == "D"]
    assert t["columns"] == ["n", value] and d["values"] == ["1", value]
    (ps,) = [ln for ln in wire if ln["frame"] == "S" and ln["direction"] == "s2c"]
    assert ps["value"] == value
    start, end = lines[0], lines[-1]
    assert start["payload"]["meta"]["application_name"] == value
    assert end["payload"]["detail"] == value
    (deny,) = [ln for ln in lines if ln["kind"] == "decision" and ln["type"] == "deny"]
    assert deny["payload"]["reason"] == value


def test_a_transcript_line_never_holds_what_is_not_printable():
    """``Transcript.line`` escapes what is left (words of ours: a tag), whatever its caller."""
    out = io.StringIO()
    t = replay.Transcript(out)
    t.line("SELECT 1\n[   0.1s] ok forged\x1b[2K")
    assert out.getvalue() == "[   0.000000s]    SELECT 1\\n[   0.1s] ok forged\\x1b[2K\n"


def test_an_unread_record_and_an_event_stay_on_their_line():
    s = Session().start()
    s.meta("note", dump_json({"said": "x\n[   0.1s] -- forged\x1b[2J"}), Kind.META)
    s._add(Direction.PROXY, Kind.META, "bad\nrecord", b"\xff not json")
    lines = transcript(s).splitlines()
    assert all(c.isprintable() for line in lines for c in line), lines
    assert len(lines) == 4 and all(ln.startswith(("[", "-- ")) for ln in lines), lines


# --- derive: an E'' gid's escapes ---------------------------------------------------------


@pytest.mark.parametrize(("sql", "gid"), [
    ("COMMIT PREPARED E'a\\nb'", "a\nb"),
    ("ROLLBACK PREPARED E'a\\tb\\\\c'", "a\tb\\c"),
    ("PREPARE TRANSACTION E'it\\'s'", "it's"),
    ("PREPARE TRANSACTION E'x\\by\\fz\\rw'", "x\by\fz\rw"),
    ("COMMIT PREPARED 'a\\nb'", "a\\nb"),
])  # fmt: skip
def test_an_escape_strings_gid_reads_as_the_server_reads_it(sql, gid):
    """``E'a\\nb'`` is the gid of a newline; it read as ``anb``, another transaction's."""
    assert two_phase_op(sql)[1] == gid


def test_the_literal_has_one_implementation():
    from recorder.audit import answer, derive

    assert derive.sql_literal is sql_literal is answer._literal is replay._literal
