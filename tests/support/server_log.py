"""PostgreSQL's own log as the judge of the audit answer's statement rows.

A module that uses it makes the cluster log every statement of the proxy's upstream role
(``logging_role``: ``log_statement = 'all'``, errors with their SQLSTATE, the parameters of
each execution; the role's settings restored after). ``trace`` turns a backend's log into
what the server ran, in order; ``assert_as_the_server_ran`` holds the answer's rows to it
(text, values, SQLSTATE, the policy's denials left out). ``Case`` is one session of an agent
with a grant through a recording proxy, its answer and its backend's log (the red-team
rounds of sessions 33 and 34: tests/integration/test_s33_audit_rows.py,
test_s34_audit_lies.py).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from proxy.cli import main as cli_main
from tests.support.rawpg import RawClient
from tests.support.recording import grants, issue_grant, public_key, recording, wait_status
from tests.support.wait import wait_for

AGENT = "billing-bot"
# what the server logs for the upstream role while a module runs
LOG_SETTINGS = {
    "log_statement": "all",
    "log_min_duration_statement": "0",
    "log_min_error_statement": "error",
    "log_error_verbosity": "verbose",  # "ERROR:  22012: division by zero"
    "log_parameter_max_length": "-1",
    "log_parameter_max_length_on_error": "-1",
}


@contextmanager
def logging_role(pg, setup: str, schema: str) -> Iterator[object]:
    """The ``pg`` cluster logs every statement of the proxy's upstream role (the settings
    apply to its logins from then on), with ``setup`` run in the app database first; the
    role's own settings are put back and ``schema`` dropped after."""
    before = pg.psql(
        "SELECT coalesce(array_to_string(setconfig, E'\\n'), '') FROM "
        "pg_db_role_setting WHERE setrole = 'pgwitness'::regrole AND setdatabase = 0"
    )
    had = dict(x.split("=", 1) for x in before.splitlines() if "=" in x)
    pg.psql(setup, db="app")
    try:
        for k, v in LOG_SETTINGS.items():
            pg.psql(f"ALTER ROLE pgwitness SET {k} = '{v}'")
        yield pg
    finally:
        for k in LOG_SETTINGS:
            if k in had:
                pg.psql(f"ALTER ROLE pgwitness SET {k} = '{had[k]}'")
            else:
                pg.psql(f"ALTER ROLE pgwitness RESET {k}")
        pg.psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE;", db="app")


# --- the server's word ---------------------------------------------------------------

_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[(\d+)\] (?:\S*@\S* )?([A-Z]+):  "
)
_PARAM = re.compile(r"\$\d+ = (NULL|'(?:[^']|'')*')(?:, |$)")
_EXECUTE = re.compile(r"execute (fetch from )?[^:]*: ", re.S)
ERROR_CODE = re.compile(r"[0-9A-Z]{5}: ")  # log_error_verbosity = verbose: every message's SQLSTATE


def log_entries(pg, pid: int, offset: int) -> list[tuple[str, str]]:
    """The log's messages of backend ``pid`` from ``offset`` on: (level, text)."""
    with open(pg.log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    out: list[tuple[str, str]] = []
    mine = False
    for line in text.split("\n"):
        hit = _LINE.match(line)
        if hit:
            mine = int(hit.group(1)) == pid
            if mine:
                out.append((hit.group(2), line[hit.end() :]))
        elif mine and out:  # a message's next line (the server puts a tab before it)
            out[-1] = (out[-1][0], out[-1][1] + "\n" + line.removeprefix("\t"))
    return out


def _params(detail: str) -> list[str | None]:
    return [None if v == "NULL" else v[1:-1].replace("''", "'") for v in _PARAM.findall(detail)]


@dataclass
class Ran:
    """What the server's log says of one client message: a simple Query (``statement``),
    an Execute (``execute``; ``fetch``: a portal continued), or a Parse or Bind it refused
    (``refused``: no execution logged, only its error), with its text as the server
    names it, its values and its error's SQLSTATE."""

    how: str
    text: str | None
    params: list[str | None] | None = None
    sqlstate: str | None = None


def trace(entries: list[tuple[str, str]]) -> list[Ran]:
    """The server's executions and refusals, in its order, from its log lines. The proxy's
    own statements (its denials' ``DO`` blocks, the ``DISCARD ALL`` it resets a kept
    backend with) are left out."""
    out: list[Ran] = []
    last: Ran | None = None  # the message the lines being read are about (None: another's)
    for level, line in entries:
        code, text = (line[:5], line[7:]) if ERROR_CODE.match(line) else (None, line)
        if level == "LOG" and text.startswith("statement: "):
            last = Ran("statement", text[len("statement: ") :])
            out.append(last)
        elif level == "LOG" and (hit := _EXECUTE.match(text)):
            last = Ran("fetch" if hit.group(1) else "execute", text[hit.end() :])
            out.append(last)
        elif level == "LOG" and text.startswith("duration: "):
            last = None  # its message completed (a parse or bind's: the next's details)
        elif level == "DETAIL" and text.startswith("parameters: ") and last is not None:
            last.params = _params(text[len("parameters: ") :])
        elif level in ("ERROR", "FATAL"):
            if last is None or last.sqlstate is not None:
                last = Ran("refused", None)
                out.append(last)
            last.sqlstate = code
        elif level == "CONTEXT" and "with parameters: " in text and last is not None:
            if last.params is None:
                last.params = _params(text.split("with parameters: ", 1)[1])
        elif level == "STATEMENT" and last is not None and last.text is None:
            last.text = text
    kept: list[Ran] = []
    for r in out:
        if (r.text or "").startswith("DO $pgw_") or (r is out[-1] and r.text == "DISCARD ALL"):
            continue  # the proxy's denials; its reset of a backend kept for the grant
        if r.text is None and r.params is None and kept and kept[-1].sqlstate is None:
            kept[-1].sqlstate = r.sqlstate  # an error that names no statement: the Sync's
            continue  # (the group's commit failed: what it ran is undone, with that error)
        kept.append(r)
    return kept


def _plain(v) -> str | None:
    """An answer's parameter as the server logs it (typed binary ones back to text)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "t" if v else "f"
    return str(v)


def assert_as_the_server_ran(rows: list[dict], ran: list[Ran]) -> None:
    """Statement by statement, the answer's rows (but the policy's denials) are what the
    server ran or refused: text, values, SQLSTATE, in order, as many."""
    got = []
    for r in rows:
        if r["decision"] == "denied":
            continue
        params = json.loads(r["params"]) if r["params"] else None
        got.append((r["text"], [_plain(p) for p in params] if params else None, r["sqlstate"]))
    want = []
    for x, mine in zip(ran, got + [None] * len(ran), strict=False):
        params = list(x.params) if x.params else None  # a NULL is None in both
        if x.params is None and x.sqlstate is not None and mine is not None:
            params = mine[1]  # refused before the server read the values: it logs none
        want.append((x.text, params, x.sqlstate))
    assert got == want, "\n".join(map(str, ["answer:", *got, "server:", *want]))


# --- the session and the answer ------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli_main(list(argv))
    return rc, out.getvalue()


@dataclass
class Case:
    """One session through a recording proxy with a grant, and the server log from its start."""

    h: object
    tmp: Path
    task: str
    token: str
    pg: object
    offset: int

    def client(self) -> RawClient:
        return RawClient.session(self.h.host, self.h.port, AGENT, self.token)

    def answer(self, sid: str) -> dict:
        """The session's entry in ``pgwitness audit --task T --format json``, once every
        recording it draws on is stored and verifies (the control stream that indexes the
        session is stored a moment after the session's last chunk: until then the answer
        says it is missing)."""
        wait_status(self.h.runtime.recorder.store, sid, public_key(self.tmp), "closed")
        last: list[dict] = []

        def intact() -> bool:
            rc, out = run_cli("audit", "--store", str(self.tmp / "rec"), "--index",
                              str(self.tmp / "audit.duckdb"), "--public-key",
                              str(self.tmp / "signing.key.pub"), "--format", "json",
                              "--task", self.task)  # fmt: skip
            last[:] = [json.loads(out)]
            return rc == 0 and last[0]["verification"]["intact"]

        try:
            wait_for(intact, 10, "the answer's recordings to verify", 0.2)
        except AssertionError:
            raise AssertionError(json.dumps(last[0]["verification"], indent=1)) from None
        (s,) = [s for g in last[0]["grants"] for s in g["sessions"] if s["session_id"] == sid]
        return s

    def judged_raw(self, sid: str) -> tuple[list[dict], list[tuple[str, str]]]:
        """The answer's rows of session ``sid`` and its backend's log entries."""
        s = self.answer(sid)
        return s["statement_rows"], log_entries(self.pg, s["backend_pid"], self.offset)

    def judged(self, sid: str) -> tuple[list[dict], list[Ran]]:
        """The answer's rows of session ``sid`` and the server's trace of its backend."""
        rows, entries = self.judged_raw(sid)
        return rows, trace(entries)


def open_case(pg, make_proxy, tmp_path: Path, request, prefix: str, scopes: str) -> Case:
    """A recording proxy with a grant store, and a grant of ``scopes`` (the test's own if
    ``with_scopes`` marked it) for a task named after the test: the ``case`` fixtures."""
    h = make_proxy(**recording(tmp_path), **grants(tmp_path))
    task = prefix + request.node.name.removeprefix("test_")[:40]
    _, token = issue_grant(h, scopes=getattr(request.function, "scopes", scopes), task=task)
    return Case(h, tmp_path, task, token, pg, pg.log_path.stat().st_size)


def with_scopes(scopes: str):
    """The test's grant has these scopes (the ``case`` fixtures), not the module's."""

    def mark(test):
        test.scopes = scopes
        return test

    return mark
