"""OCSF 1.x events from the index: Datastore Activity (6005) per statement, Authorize Session
(3003) per login and per grant event, one JSON object per line (AWS Security Lake, SIEMs)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

OCSF_VERSION = "1.1.0"
PRODUCT = {"name": "pgwitness", "vendor_name": "pgwitness"}
# Datastore Activity activity_id: 1 Read, 2 Update, 3 Connect, 4 Query, 5 Write, 6 Create, 7 Delete
_DS_ACTIVITY = {"READ": 1, "WRITE": 5, "DDL": 6, "SESSION_SET": 2}
_DS_BY_COMMAND = {"UPDATE": 2, "INSERT": 5, "COPY": 5, "DELETE": 7, "TRUNCATE": 7, "CREATE": 6,
                  "SELECT": 4}


def _ms(v) -> int | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    return int(v.timestamp() * 1000)


def _base(class_uid: int, category_uid: int, activity_id: int, time, uid: str) -> dict:
    return {
        "class_uid": class_uid, "category_uid": category_uid, "activity_id": activity_id,
        "type_uid": class_uid * 100 + activity_id, "time": _ms(time),
        "severity_id": 1,
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT, "uid": uid},
    }


def _from(e: dict, addr: str | None) -> dict:
    """``e`` with ``src_endpoint`` from ``addr`` (``host:port``, as recorded), if any."""
    host, _, port = (addr or "").rpartition(":")
    if host:
        e["src_endpoint"] = {"ip": host, "port": int(port) if port.isdigit() else None}
    return e


# a statement row's outcome -> OCSF status (id, name): it ran and stayed, or a portal
# returned the rows it was asked for and was suspended (Success); a prepared transaction not
# yet decided, a recording that cannot say, or a statement whose answer it does not hold
# (the server may have run it, and committed: Unknown); an error, a refusal, or undone by its
# transaction's end (Failure)
_STATUS = {"ok": (1, "Success"), "suspended": (1, "Success"), "prepared": (0, "Unknown"),
           "unknown": (0, "Unknown"), "no answer": (0, "Unknown")}


def statement_event(s: dict) -> dict:
    tag = (s.get("command_tag") or "").split(" ")[0]
    first_class = (s.get("classes") or "").split(",")[0]
    activity = _DS_BY_COMMAND.get(tag) or _DS_ACTIVITY.get(first_class) or 99
    classes = [c for c in (s.get("classes") or "").split(",") if c]
    if tag == "COPY" and classes and "WRITE" not in classes:
        # COPY ... TO: the tag is a COPY FROM's too, the policy's classes tell them apart (a
        # table read out was a Write, session 35); without them (no policy) it stays Write
        activity = _DS_ACTIVITY.get(first_class) or 99
    # refused by the policy, or by the database (42501, or a refusal of the proxy's check the
    # server ran: db.denied, e.g. deny.replaced's 26000), as the denials view has it (was:
    # 42501 only, so a deny.replaced statement read Allowed: s35 round 2)
    denied = (s.get("decision") == "denied" or s.get("sqlstate") == "42501"
              or s.get("db_denied_rule") is not None)
    status_id, status = _STATUS.get(s.get("outcome") or "", (2, "Failure"))
    e = _base(6005, 6, activity, s["ts"], f"{s['session_id']}/{s['n']}")
    e.update({
        "class_name": "Datastore Activity", "category_name": "Application Activity",
        "actor": {"user": {"name": s.get("agent"), "uid": s.get("agent")},
                  "session": {"uid": s["session_id"]},
                  "authorizations": [{"decision": s.get("decision"), "policy": {
                      "uid": s.get("grant_id"), "name": s.get("rule"),
                      "desc": s.get("reason")}}]},
        "database": {"name": s.get("database"), "type_id": 99, "type": "PostgreSQL"},
        "query_info": {"query_string": s.get("text"), "uid": f"{s['session_id']}/{s['n']}"},
        "disposition_id": 2 if denied else 1, "disposition": "Blocked" if denied else "Allowed",
        "status_id": status_id, "status": status,
        "status_code": s.get("sqlstate"), "status_detail": s.get("message") or s.get("command_tag"),
        "duration": int(s.get("duration_ms") or 0), "end_time": _ms(s.get("ended_at")),
        "unmapped": {"task": s.get("task"), "grant_id": s.get("grant_id"),
                     "outcome": s.get("outcome"),
                     # the answer's own words on what became of it, apart from the server's
                     # message (``status_detail``; an error's note was in it: session 37)
                     "note": s.get("note"),
                     "params": s.get("params"), "rows": s.get("rows"),
                     "db_denied_rule": s.get("db_denied_rule"),
                     "verified": s.get("verified")},
    })
    return _from(e, s.get("client_addr"))


def _quoted(name) -> str:
    """A name an agent chose, in a sentence of ours: a literal, its quotes doubled (the
    ``unmapped`` fields carry it as it is)."""
    return "?" if name is None else "'" + str(name).replace("'", "''") + "'"


def withheld_notification_event(r: dict) -> dict:
    """A notification the proxy withheld from the session's client, as Datastore Activity
    (activity 1, Read: what the client would have read), Blocked by its rule."""
    try:
        said = json.loads(r.get("payload") or "{}")
    except ValueError:
        said = {}
    said = said if isinstance(said, dict) else {}
    rule = said.get("rule") or "deny.listen"
    uid = f"{r['session_id']}/notification/{r['seq']}"
    e = _base(6005, 6, 1, r["ts"], uid)
    e.update({
        "class_name": "Datastore Activity", "category_name": "Application Activity",
        "actor": {"user": {"name": r.get("agent"), "uid": r.get("agent")},
                  "session": {"uid": r["session_id"]},
                  "authorizations": [{"decision": "denied", "policy": {
                      "uid": r.get("grant_id"), "name": rule,
                      "desc": "a notification withheld: no listen: scope names its channel"}}]},
        "database": {"name": r.get("database"), "type_id": 99, "type": "PostgreSQL"},
        "disposition_id": 2, "disposition": "Blocked", "status_id": 2, "status": "Failure",
        "status_code": None, "status_detail": "notification on channel "
                                              f"{_quoted(said.get('channel'))} withheld from "
                                              "the client",
        "unmapped": {"task": r.get("task"), "grant_id": r.get("grant_id"),
                     "event": "notification.withheld", "channel": said.get("channel"),
                     "bytes": said.get("bytes"),
                     "more_not_recorded": bool(said.get("more_not_recorded")),
                     "verified": r.get("verified")},
    })  # fmt: skip
    return _from(e, r.get("client_addr"))


def session_end_event(r: dict) -> dict:
    """A session's end, as Authentication (3002) Logoff: when and why it ended (terminate,
    disconnect, revoked, expired, the database ending it, ...), as the answer, the CSV's
    ``session.end`` row and the Parquet ``sessions`` say it (OCSF had its start, the
    accepted login, and no end: s35 round 4)."""
    e = _base(3002, 3, 2, r["ended_at"], f"session.end/{r['session_id']}")
    e.update({
        "class_name": "Authentication", "category_name": "Identity & Access Management",
        "user": {"name": r.get("agent"), "uid": r.get("agent")},
        "session": {"uid": r["session_id"]}, "status_id": 1, "status": "Success",
        "status_detail": (r.get("end_cause") or "ended") + (
            f" ({r['end_detail']})" if r.get("end_detail") else ""),
        "unmapped": {"event": "session.end", "task": r.get("task"), "grant_id": r.get("grant_id"),
                     "database": r.get("database"), "end_cause": r.get("end_cause"),
                     "end_detail": r.get("end_detail"), "started_at": r.get("started_at"),
                     "verified": r.get("intact")},
    })  # fmt: skip
    return _from(e, r.get("client_addr"))


def cancel_event(r: dict) -> dict:
    """A cancel request the proxy received for a session (Datastore Activity, activity 99
    Other): from where, and the statement running then (its ``n``; the statement's own
    event says whether the server cancelled it: 57014). OCSF had none (s35 round 4)."""
    e = _base(6005, 6, 99, r["ts"], f"{r['session_id']}/cancel/{r['seq']}")
    e.update({
        "class_name": "Datastore Activity", "category_name": "Application Activity",
        "activity_name": "Cancel",
        "actor": {"user": {"name": r.get("agent"), "uid": r.get("agent")},
                  "session": {"uid": r["session_id"]}},
        "database": {"name": r.get("database"), "type_id": 99, "type": "PostgreSQL"},
        "disposition_id": 1, "disposition": "Allowed", "status_id": 1, "status": "Success",
        "status_detail": f"cancel request from {r.get('client')}",
        "unmapped": {"event": "cancel", "task": r.get("task"), "grant_id": r.get("grant_id"),
                     "n": r.get("n"), "from": r.get("client"), "verified": r.get("verified")},
    })  # fmt: skip
    if r.get("n") is not None:
        e["query_info"] = {"uid": f"{r['session_id']}/{r['n']}"}
    return _from(e, r.get("client"))


def recording_event(r: dict) -> dict:
    """A recording that did not verify (tampered, missing, truncated), as a Detection Finding
    (2004, category 2 Findings): what the other events stand on is not proven. The answer
    names each one whatever its filters, the CSV in ``recording.not_intact`` rows and the
    Parquet export in its ``recordings`` table; OCSF had no event of it (s35 round 4)."""
    try:
        problems = json.loads(r.get("problems") or "[]")
    except ValueError:
        problems = [r.get("problems")]
    e = _base(2004, 2, 1, r["ts"], f"recording/{r['session_id']}/{r.get('status')}")
    e.update({
        "class_name": "Detection Finding", "category_name": "Findings",
        "severity_id": 4, "severity": "High", "status_id": 1, "status": "New",
        "finding_info": {"uid": f"recording/{r['session_id']}",
                         "title": f"recording did not verify: {r.get('status')}",
                         "desc": "; ".join(map(str, problems)),
                         "types": ["recording.not_intact"]},
        "unmapped": {"event": "recording.not_intact", "session_id": r["session_id"],
                     "kind": r.get("kind"), "status": r.get("status"), "intact": False,
                     "problems": problems, "verified": False},
    })  # fmt: skip
    if r.get("kind") == "session":
        e["session"] = {"uid": r["session_id"]}
    return e


def authorize_event(kind: str, r: dict) -> dict:
    """A login (accepted/refused) or a grant lifecycle event as Authorize Session. A login
    says from where (``src_endpoint``), to which database, and why it was refused; a grant
    event for how long (the expiry it set, the one before, when the change happened); both
    whether their record verified."""
    refused = r.get("outcome") == "refused"
    e = _base(3003, 3, 1, r["ts"], f"{kind}/{r.get('session_id') or r.get('grant_id')}/{r['ts']}")
    unmapped = {"event": kind, "task": r.get("task"), "grant_id": r.get("grant_id"),
                "by": r.get("by"), "database": r.get("database"), "verified": r.get("verified")}
    if kind.startswith("login."):
        unmapped["reason"] = r.get("reason")
        if kind == "login.would_deny":
            unmapped["rule"] = r.get("rule")
    else:
        unmapped.update({k: r.get(k) for k in ("expires_at", "previous_expires_at",
                                               "happened_at")})
    e.update({
        "class_name": "Authorize Session", "category_name": "Identity & Access Management",
        "user": {"name": r.get("agent"), "uid": r.get("agent")},
        "privileges": [p for p in (r.get("scopes") or "").split(" ") if p],
        "status_id": 2 if refused else 1, "status": "Failure" if refused else "Success",
        "status_code": r.get("sqlstate"), "status_detail": r.get("message") or r.get("reason"),
        "unmapped": unmapped,
    })
    if r.get("session_id"):
        e["session"] = {"uid": r["session_id"]}
    return _from(e, r.get("client"))


def events(con, where: str = "TRUE", params: list | None = None) -> Iterator[dict]:
    from .answer import _rows

    params = params or []
    for s in _rows(con, "SELECT st.*, se.client_addr FROM statements st JOIN sessions se "
                        f"USING (session_id) WHERE {where.replace('ts', 'st.ts')} "
                        "ORDER BY st.ts, st.session_id, st.n", params):
        yield statement_event(s)
    # first: every recording that did not verify, whatever the window (the CSV's first rows)
    yield from not_intact_events(con, where, params)
    for r in _rows(con, f"SELECT l.*, g.scopes FROM logins l LEFT JOIN grants g USING (grant_id) "
                        f"WHERE {where.replace('ts', 'l.ts')} ORDER BY l.ts", params):
        yield authorize_event("login." + r["outcome"], r)
    # a dry run's login whose startup settings enforcement would have refused (the denials
    # view's dry-run rows of no statement): let through (Success), and a denial of the
    # answer's all the same (was: not exported at all, s35 round 2)
    for r in _rows(con, "SELECT d.*, g.scopes FROM denials d LEFT JOIN grants g USING (grant_id) "
                        "WHERE d.source = 'dry-run' AND d.n IS NULL AND d.session_id IS NOT NULL "
                        f"AND {where.replace('ts', 'd.ts')} ORDER BY d.ts", params):
        yield authorize_event("login.would_deny", r)
    # a notification the proxy withheld from the client (code the grant ran listens on a
    # channel no listen: scope names): its refusal, Blocked, as the answer and the CSV list
    # it (s35 round 3); its channel, never its payload
    for r in _rows(con, "SELECT e.session_id, e.seq, e.ts, e.payload, e.verified, s.agent, s.task, "
                        "s.grant_id, s.database, s.client_addr FROM session_events e JOIN sessions s "
                        "USING (session_id) WHERE e.kind = 'notification.withheld' AND "
                        f"{where.replace('ts', 'e.ts')} ORDER BY e.ts, e.session_id, e.seq",
                   params):  # fmt: skip
        yield withheld_notification_event(r)
    # a session's end, and each cancel request it received (s35 round 4: no event of either)
    for r in _rows(con, "SELECT * EXCLUDE (meta) FROM sessions WHERE ended_at IS NOT NULL AND "
                        f"{where.replace('ts', 'ended_at')} ORDER BY ended_at, session_id",
                   params):  # fmt: skip
        yield session_end_event(r)
    from .index import view

    for r in _rows(con, f"SELECT * FROM {view('cancels')} WHERE {where} ORDER BY ts, session_id, seq",
                   params):  # fmt: skip
        yield cancel_event(r)
    for r in _rows(con, "SELECT e.*, g.agent, g.task, g.scopes, g.database FROM grant_events e LEFT JOIN "
                        f"grants g USING (grant_id) WHERE {where.replace('ts', 'e.ts')} "
                        "ORDER BY e.ts", params):
        yield authorize_event(r["kind"], r)
    # a grant no control stream issued (a CLI without a recorder), as the answer knows it
    # from its sessions' signed starts: for how long it was granted (its expiry, the latest
    # they saw), dated by its first session (s35 round 2: OCSF said nothing of it)
    first = "(SELECT min(s.started_at) FROM sessions s WHERE s.grant_id = g.grant_id)"
    for r in _rows(con, "SELECT g.grant_id, g.agent, g.task, g.scopes, g.database, "
                        f"coalesce(g.issued_at, {first}) AS ts, g.granted_by AS by, "
                        "NULL AS happened_at, g.expires_at, NULL AS previous_expires_at, "
                        "g.intact AS verified FROM grants g WHERE g.source <> 'control' "
                        f"AND {where.replace('ts', f'coalesce(g.issued_at, {first})')} "
                        "ORDER BY 6", params):
        if r["ts"] is not None:
            yield authorize_event("grant", r)
    # a revocation no control stream records (a CLI without a recorder): the grant_revoked a
    # live session of the grant recorded, signed, which the grants table folds in; the
    # answer gives it, OCSF had no event of it (s35 round 2)
    for r in _rows(con, "SELECT g.grant_id, g.agent, g.task, g.scopes, g.database, "
                        "g.revoked_at AS ts, g.revoked_by AS by, g.revoked_at AS happened_at, "
                        "g.expires_at, NULL AS previous_expires_at, g.intact AS verified "
                        "FROM grants g WHERE g.revoked_at IS NOT NULL AND NOT EXISTS ("
                        "SELECT 1 FROM grant_events e WHERE e.grant_id = g.grant_id "
                        "AND e.kind = 'grant.revoked') "
                        f"AND {where.replace('ts', 'g.revoked_at')} ORDER BY g.revoked_at",
                   params):
        yield authorize_event("grant.revoked", r)


def not_intact_events(con, where: str = "TRUE", params: list | None = None) -> Iterator[dict]:
    """An event for each recording that did not verify: with ``where`` (on ``ts``), those it
    dates in it and every other one too (as the answer lists them whatever its filters, and a
    day's Parquet export holds them: one may belong to that day's rows)."""
    from .answer import _rows
    from .index import RECORDING_DATE

    for r in _rows(con, f"SELECT *, {RECORDING_DATE} AS ts FROM recordings WHERE NOT intact "
                        "ORDER BY 1", []):  # fmt: skip
        yield recording_event(r)


def write_jsonl(con, out, where: str = "TRUE", params: list | None = None) -> int:
    n = 0
    for e in events(con, where, params):
        out.write(json.dumps(e, sort_keys=True, default=str) + "\n")
        n += 1
    return n
