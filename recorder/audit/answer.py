"""The audit answer: per grant, who was granted what, for how long, what they did, and what
they were denied, from the index (``index.py``), with what the answer stands on."""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass
from typing import TextIO

from ..literal import escaped, plain_char, sql_literal
from ..verify import shown


@dataclass
class Filters:
    task: str | None = None
    agent: str | None = None
    grant: str | None = None
    session: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    denied: bool = False

    def window(self) -> Filters:
        """Only the time window of these filters."""
        return Filters(since=self.since, until=self.until)


def _rows(con, sql: str, params: list) -> list[dict]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, (_plain(v) for v in row), strict=True)) for row in cur.fetchall()]


def _plain(v):
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return v


def _where(f: Filters, *, ts: str, grant_col: str = "grant_id", task=True, session=None,
           ts_end: str | None = None) -> tuple[str, list]:
    cond: list[str] = ["TRUE"]
    params: list[object] = []
    if f.task is not None and task:
        cond.append("task = ?")
        params.append(f.task)
    if f.agent is not None:
        cond.append("agent = ?")
        params.append(f.agent)
    if f.grant is not None:
        cond.append(f"{grant_col} = ?")
        params.append(f.grant)
    if f.session is not None and session:
        cond.append(f"{session} = ?")
        params.append(f.session)
    if f.since is not None:
        cond.append(f"coalesce({ts_end or ts}, TIMESTAMPTZ '9999-12-31') >= ?")
        params.append(f.since)
    if f.until is not None:
        cond.append(f"{ts} <= ?")
        params.append(f.until)
    return " AND ".join(cond), params


# what --denied keeps: denied by the policy or the database, or what a dry-run grant's
# policy would have denied (it ran: the denials' source says dry-run)
DENIED = ("(decision IN ('denied', 'would_deny') OR sqlstate = '42501' "
          "OR db_denied_rule IS NOT NULL)")


# when a row of the denials view ended: its statement's end (a login's refusal: its time)
DENIAL_END = ("coalesce((SELECT st.ended_at FROM statements st WHERE st.session_id = "
              "denials.session_id AND st.n = denials.n), ts)")


def _time(v: str | None) -> dt.datetime | None:
    return None if v is None else dt.datetime.fromisoformat(v.replace("Z", "+00:00"))


def _by_time(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["ts"] is None, _time(r["ts"]) or dt.datetime.min))


def _in_force(g: dict, f: Filters) -> bool:
    """Whether grant ``g`` was in force in the window of ``f``: issued by --until, not
    ended (revoked or expired) before --since. A grant known only from its sessions' start
    metadata (no grant.issued) is in the answer through those sessions only."""
    issued = _time(g["issued_at"])
    if issued is None or (f.until is not None and issued > f.until):
        return False
    ends = [t for t in (_time(g["revoked_at"]), _time(g["expires_at"])) if t is not None]
    return f.since is None or not ends or min(ends) >= f.since


def audit(con, f: Filters) -> dict:
    """The answer as plain data (JSON-ready)."""
    w, p = _where(f, ts="started_at", ts_end="ended_at", session="session_id")
    sessions = _rows(con, f"SELECT * EXCLUDE (meta) FROM sessions WHERE {w} "
                          "ORDER BY started_at, session_id", p)
    sids = [s["session_id"] for s in sessions]
    gw, gp = _where(Filters(task=f.task, agent=f.agent, grant=f.grant), ts="issued_at")
    grants = _rows(con, f"SELECT * FROM grants WHERE {gw} ORDER BY issued_at NULLS LAST, grant_id", gp)
    # statements carry task/agent/grant: filtering on them lets DuckDB skip row groups
    # a statement is in the window as a session is: begun by --until, not ended before
    # --since (was: begun by --since, so an UPDATE running across it, committed inside the
    # window, was left out of the session the answer shows: s35 round 2)
    sw, sp = _where(f, ts="ts", session="session_id", ts_end="ended_at")
    if f.denied:
        sw += f" AND {DENIED}"
    statements = _rows(con, f"SELECT * EXCLUDE (fates) FROM statements WHERE session_id IN "
                            f"(SELECT unnest(?)) AND {sw} ORDER BY session_id, n", [sids, *sp])
    lw, lp = _where(f, ts="ts")
    refused = [] if f.session is not None else _rows(
        con, f"SELECT * FROM logins WHERE outcome = 'refused' AND {lw} ORDER BY ts", lp)
    if f.task is not None and f.grant is None and f.session is None and grants:
        # a refused login names no grant when its token matched none (a wrong or stale
        # token): it belongs to the task's answer if that agent tried while a grant of the
        # task was open, since only the grant holder was meant to log in as that agent then
        tw, tp = _where(Filters(since=f.since, until=f.until), ts="l.ts")
        refused = _by_time(refused + _rows(con, f"""
            SELECT l.* FROM logins l WHERE l.outcome = 'refused' AND l.grant_id IS NULL
              AND {tw}
              AND EXISTS (SELECT 1 FROM grants g WHERE g.grant_id IN (SELECT unnest(?))
                          AND g.agent = l.agent
                          AND l.ts >= coalesce(g.not_before, g.issued_at, l.ts)
                          AND l.ts <= least(coalesce(g.revoked_at, g.expires_at, l.ts),
                                            coalesce(g.expires_at, l.ts)))""",
                                           [*tp, [g["grant_id"] for g in grants]]))
    # the grants: those of the filters (with --session, the session's); with --since or
    # --until, those in force in the window and those its sessions and refusals name
    named = {s["grant_id"] for s in sessions} | {r["grant_id"] for r in refused}
    if f.session is not None:
        grants = [g for g in grants if g["grant_id"] in named]
    elif f.since is not None or f.until is not None:
        grants = [g for g in grants if g["grant_id"] in named or _in_force(g, f)]
    gids = [g["grant_id"] for g in grants]
    events = _rows(con, "SELECT * FROM grant_events WHERE grant_id IN (SELECT unnest(?)) "
                        "ORDER BY ts, stream_id, seq", [gids])
    dw, dp = _where(f, ts="ts", session="session_id", ts_end=DENIAL_END)
    denials = _rows(con, f"SELECT * FROM denials WHERE {dw} ORDER BY ts", dp)
    unnamed = [r["ts"] for r in refused if r["grant_id"] is None and r["task"] is None]
    if f.task is not None and unnamed:
        # the refused logins that named no grant, which belong to the task (above): denials
        # of it as much as its refused logins are, so both lists say the same
        denials = _by_time(denials + _rows(
            con, "SELECT * FROM denials WHERE source IN ('login', 'connection') "
                 "AND grant_id IS NULL AND task IS NULL "
                 "AND ts IN (SELECT CAST(unnest(?) AS TIMESTAMPTZ)) ORDER BY ts", [unnamed]))
    # refusals over the proxy's rate of login.refused events, counted by reason only: no
    # agent to filter them by, so every answer but a session's shows those of its window
    summaries = []
    if f.session is None:
        ww, wp = _where(f.window(), ts="ts")
        for r in _rows(con, "SELECT ts, stream_id, payload, verified FROM control_events WHERE "
                            f"kind = 'login.refused.summary' AND {ww} ORDER BY ts, stream_id, seq",
                       wp):
            counts = _payload(r.pop("payload"))
            summaries.append({**r, "dropped": counts.get("dropped"),
                              "by_reason": counts.get("by_reason")})
    by_session: dict[str, list] = {sid: [] for sid in sids}
    for st in statements:
        by_session[st["session_id"]].append(st)
    for s in sessions:
        s["statement_rows"] = by_session[s["session_id"]]
    # the notifications each session's client received (another session's NOTIFY on a
    # channel it listens on), and those the proxy withheld from it (code the grant ran
    # listens where no listen: scope reaches: ``notification.withheld``, rule deny.listen),
    # in the window: their channels, never their payloads (s35 round 3: the answer said
    # nothing of either)
    nw, np_ = _where(f.window(), ts="ts")
    notes: dict[str, list] = {sid: [] for sid in sids}
    for e in _rows(con, "SELECT session_id, ts, kind, payload, verified FROM session_events "
                        "WHERE session_id IN (SELECT unnest(?)) AND kind IN ('notification', "
                        f"'notification.withheld') AND {nw} ORDER BY session_id, ts, seq",
                   [sids, *np_]):  # fmt: skip
        said = _payload(e["payload"])
        delivered = e["kind"] == "notification"
        notes[e["session_id"]].append({
            "ts": e["ts"], "channel": said.get("channel"), "delivered": delivered,
            "bytes": said.get("bytes"), "pid": said.get("pid") if delivered else None,
            "rule": None if delivered else said.get("rule") or "deny.listen",
            "more_not_recorded": bool(said.get("more_not_recorded")), "verified": e["verified"]})
    for s in sessions:
        # --denied keeps what was denied: the withheld ones (as it keeps the denied statements)
        s["notifications"] = [x for x in notes[s["session_id"]]
                              if not (f.denied and x["delivered"])]
    # the cancel requests each session received (from where; the statement running then),
    # in the window: who cancelled what (s35 round 4: the answer said nothing of them)
    cancels: dict[str, list] = {sid: [] for sid in sids}
    from .index import view

    for c in _rows(con, f"SELECT ts, session_id, client, n, verified FROM {view('cancels')} WHERE "
                        f"session_id IN (SELECT unnest(?)) AND {nw} ORDER BY session_id, ts, seq",
                   [sids, *np_]):  # fmt: skip
        cancels[c.pop("session_id")].append(c)
    for s in sessions:
        s["cancels"] = [] if f.denied else cancels[s["session_id"]]  # (denied nothing)
    by_grant: dict[str | None, list] = {}
    for s in sessions:
        by_grant.setdefault(s["grant_id"], []).append(s)
    evs: dict[str, list] = {}
    for e in events:
        evs.setdefault(e["grant_id"], []).append(e)
    for g in grants:
        g["extensions"] = json.loads(g["extensions"] or "[]")
        g["events"] = evs.get(g["grant_id"], [])
        g["sessions"] = by_grant.pop(g["grant_id"], [])
    other = [s for ss in by_grant.values() for s in ss]  # sessions without a known grant
    if f.denied:
        # those with a denied statement, or a denial of their own (a dry run's login that
        # enforcement would have refused: the denials view)
        denied = {d["session_id"] for d in denials if d["session_id"]}
        for g in grants:
            g["sessions"] = [s for s in g["sessions"]
                             if s["statement_rows"] or s["session_id"] in denied]
        other = [s for s in other if s["statement_rows"] or s["session_id"] in denied]
    # the control streams the answer draws on: its grants' events (and those signed records
    # name as holding them: index.GRANT_STREAMS), its refused logins'
    streams = {e["stream_id"] for e in events} | {s["stream_id"] for s in summaries}
    from .index import GRANT_STREAMS

    query = f"SELECT DISTINCT stream_id FROM ({GRANT_STREAMS}) WHERE grant_id IN (SELECT unnest(?))"
    streams |= {r[0] for r in con.execute(query, [gids]).fetchall()}
    if refused:
        streams |= {r[0] for r in con.execute(
            "SELECT DISTINCT stream_id FROM control_events WHERE kind = 'login.refused' "
            "AND ts IN (SELECT CAST(unnest(?) AS TIMESTAMPTZ))",
            [[r["ts"] for r in refused]]).fetchall()}
    return {
        "filters": {k: _plain(v) for k, v in vars(f).items() if v not in (None, False)},
        "verification": verification(con, sids, sorted(streams)),
        "grants": grants,
        "other_sessions": other,
        "denials": denials,
        "refused_logins": refused,
        "refusals_not_itemized": summaries,
    }


def _payload(text: str | None) -> dict:
    try:
        p = json.loads(text or "{}")
    except ValueError:
        return {}
    return p if isinstance(p, dict) else {}


def verification(con, sids: list[str], streams: list[str]) -> dict:
    """What the answer stands on: the recordings it draws on, and every recording in the
    store that did not verify, whatever the filters. A tampered recording's signed records
    may not say what it held (its start, its grant events could be the forged ones), so no
    filter can prove it does not belong to this answer (red-team round 20c). The control
    stream of the process that recorded a session of the answer is drawn on too (it holds
    the session's grant events and refusals): listed ``missing`` if the store lacks it."""
    from .index import PROCESS_STREAM

    drawn = set(sids + streams) | {r[0] for r in con.execute(
        f"SELECT DISTINCT {PROCESS_STREAM} FROM sessions s WHERE s.session_id IN "
        "(SELECT unnest(?)) AND s.host IS NOT NULL", [sids]).fetchall()}
    recs = _rows(con, "SELECT session_id, kind, status, intact, problems, indexed_at FROM recordings "
                      "WHERE session_id IN (SELECT unnest(?)) OR NOT intact ORDER BY session_id",
                 [sorted(drawn)])
    bad = [r for r in recs if not r["intact"]]
    for r in bad:
        r["problems"] = json.loads(r["problems"] or "[]")
        r["in_answer"] = r["session_id"] in drawn
    return {
        "recordings": len(recs),
        "intact": not bad,
        "open": sorted(r["session_id"] for r in recs if r["status"] == "open"),
        "not_intact": bad,
        "verified_at": max((r["indexed_at"] for r in recs if r["indexed_at"]), default=None),
        # the control streams the answer draws on (its grants' events, its refusals): what
        # `audit --reverify` verifies again with its sessions
        "control_streams": sorted(streams),
    }


# ---- output -------------------------------------------------------------------------

def write_json(answer: dict, out: TextIO) -> None:
    json.dump(answer, out, indent=1, sort_keys=True, default=str)
    out.write("\n")


# The last columns say who was granted what, for how long (grant events: ``by`` the change's
# author, ``why`` the grant's reason, ``happened_at`` the change's own time, ``expires_at``
# and ``previous_expires_at`` the expiry it set and the one before), and for sessions and
# logins where from (``client``) and to which ``database``. ``reason`` keeps, for a grant
# event, its ``by`` (as before these columns). ``db_denied_rule``: a statement the database
# refused through the proxy's check (deny.replaced's 26000), which the denials list holds
# and its row said nothing of (s35 round 2).
CSV_COLUMNS = ["ts", "kind", "grant_id", "agent", "task", "session_id", "n", "text", "params",
               "decision", "rule", "reason", "outcome", "command_tag", "rows", "sqlstate",
               "message", "duration_ms", "verified", "by", "why", "database", "scopes",
               "enforce", "not_before", "expires_at", "previous_expires_at", "happened_at",
               "client", "db_denied_rule"]


def timeline(answer: dict) -> list[dict]:
    """Every fact of the answer as one flat row, in time order (CSV)."""
    rows = []
    for g in answer["grants"]:
        base = {"grant_id": g["grant_id"], "agent": g["agent"], "task": g["task"],
                "why": g["reason"], "database": g["database"], "scopes": g["scopes"],
                "enforce": g["enforce"], "not_before": g["not_before"]}
        for e in g["events"]:
            rows.append({**base, "ts": e["ts"], "kind": e["kind"], "reason": e["by"],
                         "by": e["by"], "expires_at": e["expires_at"],
                         "previous_expires_at": e["previous_expires_at"],
                         "happened_at": e["happened_at"], "verified": e["verified"]})
        # What the grant's events do not say, the answer knows from signed session records
        # (s35): a grant no control stream issued (a CLI without a recorder) from its
        # sessions' starts, its expiry the latest they saw; a revocation no control stream
        # records from the grant_revoked a live session recorded. The JSON and text gave
        # both; the CSV had no row of either: not how long the grant was, nor that it was
        # revoked (s35 round 2).
        first = min((s["started_at"] for s in g["sessions"] if s["started_at"]), default=None)
        if g["source"] != "control":
            rows.append({**base, "ts": g["issued_at"] or first, "kind": "grant",
                         "by": g["granted_by"], "reason": g["granted_by"],
                         "expires_at": g["expires_at"], "verified": g["intact"],
                         "text": "no grant.issued event in the control streams: details from "
                                 "session metadata"})
        if g["revoked_at"] and not any(e["kind"] == "grant.revoked" for e in g["events"]):
            rows.append({**base, "ts": g["revoked_at"], "kind": "grant.revoked",
                         "by": g["revoked_by"], "reason": g["revoked_by"],
                         "happened_at": g["revoked_at"], "expires_at": g["expires_at"],
                         "verified": g["intact"],
                         "text": "in no control stream: the grant_revoked a live session of "
                                 "the grant recorded"})
    for s in [s for g in answer["grants"] for s in g["sessions"]] + answer["other_sessions"]:
        base = {"grant_id": s["grant_id"], "agent": s["agent"], "task": s["task"],
                "session_id": s["session_id"], "verified": s["intact"],
                "database": s["database"], "client": s["client_addr"]}
        rows.append({**base, "ts": s["started_at"], "kind": "session.start",
                     "text": f"client {s['client_addr']} tls {s['client_tls']}",
                     "scopes": s["scopes"], "enforce": s["enforce"]})
        for st in s["statement_rows"]:
            rows.append({**{c: st.get(c) for c in CSV_COLUMNS}, "kind": "statement"})
        for x in s.get("notifications") or []:
            # its channel (``text``), its frame's size (``rows``: bytes); one withheld is
            # the proxy's refusal (decision denied, its rule)
            rows.append({**base, "ts": x["ts"], "verified": x["verified"], "text": x["channel"],
                         "rows": x["bytes"], **({"kind": "notification", "outcome": "received"}
                         if x["delivered"] else {"kind": "notification.withheld",
                                                 "decision": "denied", "rule": x["rule"],
                                                 "outcome": "withheld"})})  # fmt: skip
        for x in s.get("cancels") or []:
            # a cancel request: from where (``client``), the statement running then (``n``)
            rows.append({**base, "ts": x["ts"], "kind": "cancel", "client": x["client"],
                         "n": x["n"], "verified": x["verified"],
                         "text": f"cancel request from {x['client']}"})  # fmt: skip
        if s["ended_at"]:
            rows.append({**base, "ts": s["ended_at"], "kind": "session.end",
                         "outcome": s["end_cause"], "message": s["end_detail"]})
    for d in answer["denials"]:
        # a denial of a session that is no statement of it: a dry run's login whose startup
        # settings enforcement would have refused (``startup_would_deny``). The JSON and text
        # list it among the denials; the CSV had no row of it (s35 round 2). (A statement's
        # denial is its row; a refused login's, the login.refused row.)
        # (A withheld notification's denial is its notification.withheld row.)
        if d["session_id"] is not None and d["n"] is None and d["source"] == "dry-run":
            rows.append({"ts": d["ts"], "kind": "login.would_deny", "grant_id": d["grant_id"],
                         "agent": d["agent"], "task": d["task"], "session_id": d["session_id"],
                         "decision": "would_deny", "rule": d["rule"], "reason": d["reason"],
                         "sqlstate": d["sqlstate"], "message": d["message"],
                         "database": d["database"], "verified": d["verified"]})
    for r in answer["refused_logins"]:
        rows.append({"ts": r["ts"], "kind": "login.refused", "grant_id": r["grant_id"],
                     "agent": r["agent"], "task": r["task"], "reason": r["reason"],
                     "sqlstate": r["sqlstate"], "message": r["message"], "text": r["client"],
                     "client": r["client"], "database": r["database"],
                     "verified": r["verified"]})
    for r in answer.get("refusals_not_itemized", []):
        rows.append({"ts": r["ts"], "kind": "login.refused.summary", "rows": r["dropped"],
                     "reason": json.dumps(r["by_reason"], sort_keys=True),
                     "text": "refused, not itemized: over the proxy's rate of login.refused "
                             "events; not attributed to an agent",
                     "verified": r["verified"]})
    rows.sort(key=lambda r: (_time(r["ts"]) or dt.datetime.max.replace(tzinfo=dt.UTC),
                             r.get("session_id") or "", r.get("n") or 0))
    # first: every recording that did not verify, whatever the filters (``verification``),
    # so that a CSV alone says what the answer cannot vouch for (red-team round 22)
    warnings = [{"kind": "recording.not_intact", "session_id": r["session_id"],
                 "outcome": r["status"], "reason": "; ".join(map(str, r["problems"])),
                 "text": "in this answer" if r.get("in_answer", True) else "outside this answer's rows",
                 "verified": False}
                for r in answer["verification"]["not_intact"]]  # fmt: skip
    return warnings + rows


# The CSV's columns an agent's bytes (or the client's, before any login) can reach: a
# statement's text, its parameters, the server's messages quoting them, a channel, a refused
# login's names, a grant's free text. Not the proxy's own: times, ids, numbers, its rules.
CSV_CLIENT_COLUMNS = frozenset({"text", "params", "message", "agent", "task", "database",
                                "reason", "why", "by", "scopes", "command_tag", "sqlstate",
                                "client"})

# what a spreadsheet reads as the start of a formula (OWASP, "CSV Injection"); and the
# guard's own quote, so that a value that began with one reads apart from one guarded
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_cell(v):
    """A cell an agent's bytes reach, for a spreadsheet: one starting as a formula would
    (``=``, ``+``, ``-``, ``@``, a tab, a carriage return), or with a quote, gets a leading
    ``'`` (OWASP's CSV-injection guidance), so ``=HYPERLINK(...)`` is shown, never run, and a
    cell that starts with ``'`` had one added: drop it to get the value (JSON and Parquet
    keep values exactly). Anything else, and a value that is not text, is as it is."""
    if isinstance(v, str) and v.startswith(FORMULA_START):
        return "'" + v
    return v


def csv_rows(out: TextIO, names: list[str], rows, guard=CSV_CLIENT_COLUMNS.__contains__) -> None:
    """``rows`` as CSV: the cells of the columns ``guard`` names through ``csv_cell``
    (red-team session 37: a statement's text, a parameter, an error message, a channel or a
    refused login's name starting with ``=`` reached a spreadsheet as a formula). A row with
    a carriage return in a cell is written with every cell quoted: Python's writer quotes a
    newline (the line terminator) and not a lone CR, which a spreadsheet (and Python's own
    reader) takes for the end of the row: the rest of the cell read as a row of its own."""
    w = csv.DictWriter(out, names, extrasaction="ignore", lineterminator="\n")
    quoted = csv.DictWriter(out, names, extrasaction="ignore", lineterminator="\n",
                            quoting=csv.QUOTE_ALL)
    w.writeheader()
    for r in rows:
        r = {k: csv_cell(v) if guard(k) else v for k, v in r.items()}
        (quoted if any(isinstance(v, str) and "\r" in v for v in r.values()) else w).writerow(r)


def write_csv(answer: dict, out: TextIO) -> None:
    csv_rows(out, CSV_COLUMNS, timeline(answer))


# what is not printable in words of ours (a newline, a terminal's escape) as its escape
_escaped = escaped


# Every value an agent's bytes reach is a literal in the text report (recorder.literal):
# where it begins and ends is the report's, whatever it holds (session 37)
_literal = sql_literal


def table_cell(value) -> str:
    """A value of a ``|``-separated table (``pgwitness sessions``, ``audit --sql``): as it
    is if plain (printable, no quote, no ``|``, not blank at an end), else a literal; NULL
    is empty. A cell starting with a quote is a literal, so none can pass for another."""
    if value is None:
        return ""
    text = str(value)
    if (text and text.strip() == text and "|" not in text and "'" not in text
            and all(plain_char(c) for c in text)):
        return text
    return _literal(text)


# the keys whose values the text report writes as literals (``_literal``): left as they are
# by ``_data``; a denial's and a refused login's agent and database too (the client's names,
# before any authentication)
_LITERAL_KEYS = frozenset({"text", "message", "reason", "application_name",
                           "upstream_application_name", "channel", "end_detail"})
_CLIENT_NAMES = _LITERAL_KEYS | {"agent", "database"}


def _data(v, raw: frozenset[str] = _LITERAL_KEYS):
    """Every string of an answer's rows ``_escaped``, but those the report writes as
    literals (``raw``: ``_literal`` escapes them; a statement's text is cut first, by its
    characters: s35 round 4)."""
    if isinstance(v, str):
        return _escaped(v)
    if isinstance(v, dict):
        return {k: x if k in raw and isinstance(x, str) else _data(x, raw)
                for k, x in v.items()}
    if isinstance(v, list):
        return [_data(x, raw) for x in v]
    return v


def write_text(answer: dict, out: TextIO) -> None:
    # Whatever the report prints of its rows is data: a login name, a database name, an
    # error message or a statement's text is the client's (a refused login's before any
    # authentication), and a newline or a terminal control in it must not write lines of
    # the report (a forged refusal, a denial of another agent) or erase them (red-team
    # session 33). The verification's names are printed by ``shown``.
    # Every value an agent's bytes reach is a literal (``_literal``): where it begins and
    # ends is the report's, whatever it holds (session 37).
    answer = {k: (v if k == "verification" else
                  _data(v, _CLIENT_NAMES) if k in ("denials", "refused_logins") else _data(v))
              for k, v in answer.items()}
    v = answer["verification"]
    w = out.write
    if v["intact"]:
        # an open recording has no end yet: it is still being written, or the process writing
        # it stopped before it could end it (killed, crashed): the recording cannot tell
        opened = (f" ({len(v['open'])} with no end recorded: still being written, or its process "
                  "stopped first)") if v["open"] else ""
        w(f"VERIFIED: all {v['recordings']} recordings this answer draws on verified intact{opened}"
          f" (index verified them at {v['verified_at']})\n")
    else:
        w(f"WARNING: {len(v['not_intact'])} of {v['recordings']} recordings did NOT verify; "
          "rows from them are marked '!'; one outside this answer may belong in it (what it "
          "says of itself is not proven)\n")
        for r in v["not_intact"]:
            where = "" if r.get("in_answer", True) else ", outside this answer's rows"
            w(f"  {shown(r['session_id'])} ({r['kind']}{where}): {r['status']}\n")
            for p in r["problems"]:
                w(f"    {p}\n")
    if answer["filters"]:
        w("filters: " + " ".join(f"--{k}={v}" for k, v in answer["filters"].items()) + "\n")
    for g in answer["grants"]:
        mark = "" if g["intact"] else " !"
        w(f"\nGRANT {g['grant_id']}{mark}\n")
        w(f"  agent {g['agent']}  task {g['task']}  database {g['database']}\n")
        w(f"  why: {_literal(g['reason'])}\n  issued by {g['granted_by']} at {g['issued_at']}\n")
        w(f"  scopes: {g['scopes']}{'' if g['enforce'] in (None, True) else '  (dry-run)'}\n")
        first = g["first_expires_at"] or g["expires_at"]  # (a grant known from its sessions)
        w(f"  window: not before {g['not_before']}, expires {first}\n")
        for x in g["extensions"]:
            w(f"  extended at {x['at']} by {x['by']}: {x['from']} -> {x['to']}\n")
        if g["revoked_at"]:
            w(f"  REVOKED at {g['revoked_at']} by {g['revoked_by']}\n")
        if g["expired_at"]:
            w(f"  EXPIRED at {g['expired_at']} ({g['expired_by']})\n")
        elif not g["revoked_at"] and _passed(g["expires_at"]):
            # ``grant.expired`` is recorded by a proxy running when the expiry comes (or
            # within a day of it: GrantStore.expire_due), so a grant that expired while its
            # proxies were all stopped has none; its expiry has passed all the same, and no
            # login is accepted on it (session 35: the report gave its window and no end, as
            # for a grant in force)
            w(f"  EXPIRED at {g['expires_at']} (its expiry has passed; no grant.expired event is "
              "recorded)\n")
        if g["source"] != "control":
            w("  (no grant.issued event in the control streams: details from session metadata)\n")
        for s in g["sessions"]:
            _session(s, w)
    if answer["other_sessions"]:
        w("\nSESSIONS WITHOUT A GRANT IN THE INDEX\n")
        for s in answer["other_sessions"]:
            _session(s, w)
    w(f"\nDENIALS ({len(answer['denials'])})\n")
    for d in answer["denials"]:
        mark = "" if d["verified"] else "! "
        what = _cut(d["text"]) if d["text"] else _literal(d["message"])
        w(f"  {mark}{d['ts']} {d['source']:<10} {_literal(d['agent'])} {d['rule'] or ''} "
          f"{d['sqlstate'] or ''}: {what}\n")
    summaries = answer.get("refusals_not_itemized", [])
    more = sum(r["dropped"] or 0 for r in summaries)
    w(f"\nREFUSED LOGINS AND CONNECTIONS ({len(answer['refused_logins'])}"
      f"{f', and {more} more not itemized' if more else ''})\n")
    for r in answer["refused_logins"]:
        mark = "" if r["verified"] else "! "
        grant = f" [grant {r['grant_id']}, task {r['task']}]" if r["grant_id"] else ""
        w(f"  {mark}{r['ts']} {_literal(r['agent'])} from {r['client']} to "
          f"{_literal(r['database'])}: {_escaped(r['reason'] or '')} {r['sqlstate']} "
          f"{_literal(r['message'])}{grant}\n")
    for r in summaries:
        mark = "" if r["verified"] else "! "
        w(f"  {mark}{r['ts']} {r['dropped']} more refused, not itemized (over the proxy's rate "
          f"of login.refused events), by reason {json.dumps(r['by_reason'], sort_keys=True)}: "
          "not attributed to an agent, some may belong in this answer\n")


def _passed(when: str | None) -> bool:
    """Whether the time ``when`` (as the answer writes it) is past, now."""
    t = _time(when) if when else None
    return t is not None and t <= dt.datetime.now(dt.UTC)


# a session row with no end: its recording's status -> what the report says of its end
_NO_END = {
    "open": "(no end recorded: the session is still live, or its proxy stopped before it "
            "could record one)",
    "tampered": "(no verified end: the recording did not verify)",
}


def _session(s: dict, w) -> None:
    mark = "" if s["intact"] else " !"
    state = s["status"] if s["status"] != "closed" else "closed"
    w(f"\n  SESSION {s['session_id']}{mark} [{state}]\n")
    if s["ended_at"]:
        w(f"    {s['started_at']} -> {s['ended_at']}  end: {s['end_cause']}"
          # its detail a literal: the server's FATAL follows the proxy's words there, and a
          # FATAL's message may be an agent's (PL/Python's plpy.fatal(text) says anything;
          # session 37, round 2: it was printed as it was, the closing ')' the agent's to write)
          f"{(' ' + _literal(s['end_detail'])) if s['end_detail'] else ''}\n")
    else:
        # (was "-> (open)": a session whose proxy was killed is as open in its recording as a
        # live one, and ended long ago; session 35)
        w(f"    {s['started_at']} -> {_NO_END.get(s['status'], '(no verified end recorded)')}\n")
    w(f"    client {s['client_addr']} tls {s['client_tls']}"
      f"{'  application_name ' + _literal(s['application_name']) if s['application_name'] else ''}"
      f"  upstream {s['upstream']} backend pid {s['backend_pid']}"
      f"{' (kept from an earlier session of this grant)' if s.get('upstream_reused') else ''}"
      f"{' as ' + _literal(s['upstream_application_name']) if s['upstream_application_name'] else ''}"
      "\n")
    # a line's time of day, and its date where it is not the line before's (the session's
    # start, for the first): a session over more than a day had lines that read as any of
    # its days (s35 round 3)
    day = (s["started_at"] or "")[:10]
    for st in s["statement_rows"]:
        mark = "  " if st["verified"] else "! "
        dec = st["decision"] or "-"
        res = _result(st)
        params = f" params {st['params']}" if st["params"] not in (None, "[]") else ""
        when = st["ts"][11:23]
        if st["ts"][:10] != day:
            day = st["ts"][:10]
            when = f"{day} {when}"
        w(f"    {mark}{when} [{dec} {st['rule'] or ''}] {_cut(st['text'])}{params}\n")
        w(f"        -> {res} ({st['duration_ms']:.1f} ms)\n")
    for x in s.get("cancels") or []:
        mark = "  " if x["verified"] else "! "
        what = f"statement {x['n']} running" if x["n"] is not None else "no statement running"
        w(f"    {mark}{x['ts'][:10]} {x['ts'][11:23]} CANCEL REQUEST from {x['client']} ({what})\n")
    for x in s.get("notifications") or []:
        mark = "  " if x["verified"] else "! "
        what = (f"received (from backend pid {x['pid']})" if x["delivered"] else
                f"WITHHELD {x['rule']}: the proxy kept it from the client"
                + ("; later ones counted, not recorded" if x["more_not_recorded"] else ""))
        w(f"    {mark}{x['ts'][:10]} {x['ts'][11:23]} NOTIFICATION {_literal(x['channel'])} "
          f"({x['bytes']} bytes) {what}\n")


TEXT_SHOWN = 200  # characters of a statement's text the text report shows


def _cut(text: str | None) -> str:
    """A statement's text as the report shows it: its first ``TEXT_SHOWN`` characters as a
    literal (``_literal``), and if there are more, how many it leaves out, after the literal
    (was: cut silently, so that what followed, a ``, balance = 0`` after a long literal, read
    as a statement that was not there). The literal replaces session 35's ``escaped`` word:
    its ``E`` says its backslashes are doubled, where the text cannot write."""
    text = str(text)  # (the statement as it is: cut by its characters, never an escape's)
    shown = _literal(text[:TEXT_SHOWN])
    if len(text) <= TEXT_SHOWN:
        return shown
    return (f"{shown} ...[statement cut: {len(text) - TEXT_SHOWN} more of "
            f"{len(text)} characters not shown; --format json has it whole]")


# Outcomes that say what became of a statement that ran: shown before its tag, in capitals
# as ERROR is, with the reason (the JSON and CSV carry them in outcome and message)
_FATES = {"rolled back": "ROLLED BACK", "prepared": "PREPARED, PENDING",
          "unknown": "OUTCOME UNKNOWN"}


def _result(st: dict) -> str:
    """What the server did with a statement, as the text answer says it: the server's
    message a literal (it quotes the agent's bytes at will: a ``RAISE`` says anything), the
    answer's own note (``note``: what became of the row's statements) after it, as words of
    ours. Until session 37's second round an error's note was appended to its message, so a
    ``RAISE`` could write it; and a row the Sync's error rolled back printed the server's
    message bare, as derive's words."""
    tag, outcome, note = st["command_tag"], st["outcome"], st.get("note")
    # the server's words (a row with a SQLSTATE: an error, a Sync's error that rolled it
    # back); a row the server said nothing of has its note for its message (as before)
    said = st["message"] if st["sqlstate"] is not None or outcome == "error" else None
    server = f" {_literal(said)}" if said is not None or outcome == "error" else ""
    note = _escaped(note) if note else None  # (ours: names in it are quoted already)
    if outcome == "error":
        return f"ERROR {st['sqlstate']}{server}{'; ' + note if note else ''}"
    if said is None and note is None and st["message"]:
        note = _escaped(st["message"])  # (a row with no note: no SQLSTATE, its message ours)
    if outcome in _FATES:
        ran = f" (ran: {tag})" if tag else ""
        state = f" {st['sqlstate']}" if st["sqlstate"] else ""
        return f"{_FATES[outcome]}{ran}{state}{server}{': ' + note if note else ''}"
    if note:  # an ok row some of whose statements were undone, prepared or resolved
        head, sep, rest = note.partition(": ")
        if head.startswith("partly ") and sep:  # "partly rolled back: statement 1 ..."
            note = f"{head.upper()}: {rest}"
        return f"{tag or outcome}{server}; {note}"
    return f"{tag or outcome}{server}"


def write(answer: dict, fmt: str, out: TextIO) -> None:
    {"text": write_text, "json": write_json, "csv": write_csv}[fmt](answer, out)


def sessions_list(con, f: Filters) -> list[dict]:
    w, p = _where(f, ts="started_at", ts_end="ended_at", session="session_id")
    if f.denied:
        # a session with a denial in the window (the denials view: a statement --denied
        # keeps, a dry run's login enforcement would have refused), as the answer keeps it
        # (was: any denial of the session, one before --since or after --until too)
        sw, sp = _where(f.window(), ts="ts", ts_end=DENIAL_END)
        w += f" AND session_id IN (SELECT session_id FROM denials WHERE {sw})"
        p += sp
    return _rows(con, "SELECT session_id, started_at, ended_at, end_cause, agent, task, grant_id, "
                      "database, client_addr, client_tls, statements, denials, errors, status, "
                      f"intact FROM sessions WHERE {w} ORDER BY started_at, session_id", p)
