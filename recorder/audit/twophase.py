"""Two-phase commit across sessions: which COMMIT PREPARED or ROLLBACK PREPARED decided which
PREPARE TRANSACTION, over every recording in the index.

A session's own recording decides its prepared statements only when it holds their
resolution too (``derive``); the resolution often comes from another session (a transaction
manager, the agent's next session, a DBA through the proxy), indexed before or after the
preparing one. So the index pairs them again after every update (``resolve``, as
``index.rebuild_grants`` folds the grants): each successful two-phase statement of every
session is a row of ``two_phase``, and rows with prepared statements keep in
``statements.fates`` what their outcome and message were made of, each prepared statement
pending, so a pairing found later decides them again.

The pairing follows the server's rules. A gid is unique among a cluster's prepared
transactions, and COMMIT PREPARED / ROLLBACK PREPARED must run in the database that prepared
it: a gid's successful statements in one database alternate PREPARE, resolution, PREPARE,
... So, in time order (when the proxy recorded the server's answer to each), a resolution
decides the PREPARE just before it, if that is a PREPARE; if it is a resolution, the one
this resolution decided is in no recording (prepared outside the proxy, or its recording is
lost, not yet stored, or did not verify). A PREPARE followed by another PREPARE of the same
gid was decided before it, by no recorded statement: committed or undone, not known. A
PREPARE nothing follows is pending. Only events from records that verified take part (an
unverified record may be forged); a gid derive could not read, or a session whose database
is not attested, is left as its own recording says.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

from .derive import _gid_literal, _resolved, mark_fates

Key = tuple[str, int, int]  # (session_id, n, k): statement k of row n of a session


def _when(at: dt.datetime | None) -> str:
    if at is None:
        return "an unknown time"
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def pair(events: Iterable[dict]) -> dict[Key, dict]:
    """Each event's pairing: ``events`` are two_phase rows (``session_id, n, k, at,
    database, op, gid, verified``). Returns, for each event that takes part, ``{"fate",
    "other"}``: for a PREPARE, fate ``commit`` or ``rollback`` (``other``: the resolution),
    ``superseded`` (``other``: the next PREPARE of its gid) or ``pending``; for a
    resolution, ``resolved`` (``other``: its PREPARE) or ``unmatched``."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in events:
        if (
            e.get("verified")
            and e.get("database") is not None
            and e.get("gid") is not None
            and e.get("at") is not None
        ):
            groups.setdefault((e["database"], e["gid"]), []).append(e)
    out: dict[Key, dict] = {}
    for group in groups.values():
        group.sort(key=lambda e: (e["at"], e["session_id"], e["n"], e["k"]))
        for j, e in enumerate(group):
            before = group[j - 1] if j > 0 else None
            after = group[j + 1] if j + 1 < len(group) else None
            if e["op"] == "prepare":
                if after is None:
                    fate, other = "pending", None
                elif after["op"] == "prepare":
                    fate, other = "superseded", after
                else:
                    fate, other = after["op"], after
            elif before is not None and before["op"] == "prepare":
                fate, other = "resolved", before
            else:
                fate, other = "unmatched", None
            out[(e["session_id"], e["n"], e["k"])] = {"fate": fate, "other": other}
    return out


def prepared_fate(prepare: dict, pairing: dict) -> tuple[str, str, str]:
    """What became of the statements ``prepare`` prepared, as derive says a fate: (the
    outcome of a row all of whose changing statements they are, that row's message, the
    words after them in a row only partly so)."""
    gid, other, fate = prepare["gid"], pairing["other"], pairing["fate"]
    lit = _gid_literal(gid)
    same = other is not None and other["session_id"] == prepare["session_id"]
    if fate in ("commit", "rollback"):
        if same:
            return _resolved(fate, gid)  # as derive says it
        done = "committed" if fate == "commit" else "undone"
        by = f"{fate.upper()} PREPARED in session {other['session_id']} at {_when(other['at'])}"
        return (
            "ok" if fate == "commit" else "rolled back",
            f"prepared for two-phase commit as {lit}, then {done} by {by}",
            f"prepared as {lit}, then {done} by {by}",
        )
    if fate == "superseded":
        where = "later in this session" if same else f"in session {other['session_id']}"
        return (
            "unknown",
            f"prepared for two-phase commit as {lit}, then decided by no recorded statement: "
            f"{lit} was prepared again {where} at {_when(other['at'])}, so a COMMIT PREPARED or "
            "ROLLBACK PREPARED outside the recordings ended this one before: whether it "
            "committed is not known",
            f"prepared as {lit}, then committed or undone outside the recordings (not known which)",
        )
    return (
        "prepared",
        f"prepared for two-phase commit as {lit}: neither committed nor rolled back until "
        f"COMMIT PREPARED or ROLLBACK PREPARED {lit}, which no recording in the index holds "
        "after it (one outside the proxy may yet decide it, or have decided it)",
        f"prepared for two-phase commit as {lit} (pending)",
    )


def resolution_message(resolution: dict, pairing: dict) -> str:
    """What a COMMIT PREPARED or ROLLBACK PREPARED that succeeded decided."""
    lit = _gid_literal(resolution["gid"])
    did = "committed" if resolution["op"] == "commit" else "rolled back"
    prepare = pairing["other"]
    if prepare is None:
        return (
            f"{did} the transaction prepared as {lit}, whose PREPARE TRANSACTION is in no "
            "recording in the index (prepared outside the proxy, or its recording is lost, "
            "not yet stored, or did not verify)"
        )
    if prepare["session_id"] == resolution["session_id"]:
        return (
            f"{did} the transaction prepared as {lit} earlier in this session (statement "
            f"{prepare['n']}, at {_when(prepare['at'])})"
        )
    return (
        f"{did} the transaction prepared as {lit} in session {prepare['session_id']} "
        f"(statement {prepare['n']}) at {_when(prepare['at'])}"
    )


def decide(events: list[dict], rows: list[dict]) -> tuple[dict[Key, dict], list[dict]]:
    """The pairing of ``events`` and what it makes of ``rows``: the statement rows that
    prepared statements or ran a two-phase statement (``session_id, n, command_tag, classes,
    fates``). Returns the pairing and ``[{session_id, n, outcome, message, note}]`` for the
    rows it decides (the rest stay as derived): ``note`` the index's own words, never the
    server's (``derive.mark_fates``); ``message`` the server's where it answered with an
    error, else the note."""
    pairing = pair(events)
    by_key = {(e["session_id"], e["n"], e["k"]): e for e in events}
    out: list[dict] = []
    done: set[tuple[str, int]] = set()
    for row in rows:
        sid = row["session_id"]
        if row.get("fates"):
            f = json.loads(row["fates"])
            undone: dict[int, tuple[str, str, str]] = {}
            for i, fate, message, words, prep in f["undone"]:
                why = (fate, message, words)
                key = (sid, prep[0], prep[1]) if prep else None
                if key is not None and key in pairing:
                    why = prepared_fate(by_key[key], pairing[key])
                undone[int(i)] = why
            outcome, message, note = mark_fates(row, f["outcome"], f["message"], undone)
            out.append(
                {
                    "session_id": sid,
                    "n": row["n"],
                    "outcome": outcome,
                    "message": message,
                    "note": note,
                }
            )
            done.add((sid, row["n"]))
    for key, p in pairing.items():
        e = by_key[key]
        if e["op"] != "prepare" and (key[0], key[1]) not in done:
            out.append(
                {
                    "session_id": key[0],
                    "n": key[1],
                    "outcome": "ok",
                    "message": resolution_message(e, p),
                    "note": resolution_message(e, p),
                }
            )
    return pairing, out


def _us(at: dt.datetime | None) -> int | None:
    if at is None:
        return None
    return (at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def resolve(con) -> None:
    """Pair every two-phase statement in the index again and write what that decides into
    ``two_phase`` (fate, the other side) and ``statements`` (outcome, message), and recount
    the errors of the sessions it touches. Everything it writes is recomputed from derive's
    facts each time: idempotent, and the same however the sessions were indexed."""
    import pyarrow as pa

    events = _rows_raw(
        con,
        "SELECT session_id, n, k, answered_at AS at, database, op, gid, verified FROM two_phase",
    )
    rows = _rows_raw(
        con,
        "SELECT session_id, n, command_tag, classes, fates FROM statements WHERE fates IS NOT NULL",
    )
    pairing, decided = decide(events, rows)
    ph = [
        {
            **e,
            "fate": p["fate"],
            "other_session": p["other"]["session_id"] if p["other"] else None,
            "other_n": p["other"]["n"] if p["other"] else None,
            "other_at": _us(p["other"]["at"]) if p["other"] else None,
        }
        for e in events
        if (p := pairing.get((e["session_id"], e["n"], e["k"]))) is not None
    ]
    # read by DuckDB's replacement scan below
    upd = pa.table(  # noqa: F841
        {
            "session_id": pa.array([d["session_id"] for d in decided], pa.string()),
            "n": pa.array([d["n"] for d in decided], pa.int64()),
            "outcome": pa.array([d["outcome"] for d in decided], pa.string()),
            "message": pa.array([d["message"] for d in decided], pa.string()),
            "note": pa.array([d["note"] for d in decided], pa.string()),
        }
    )
    paired = pa.table(  # noqa: F841
        {
            "session_id": pa.array([e["session_id"] for e in ph], pa.string()),
            "n": pa.array([e["n"] for e in ph], pa.int64()),
            "k": pa.array([e["k"] for e in ph], pa.int64()),
            "fate": pa.array([e["fate"] for e in ph], pa.string()),
            "other_session": pa.array([e["other_session"] for e in ph], pa.string()),
            "other_n": pa.array([e["other_n"] for e in ph], pa.int64()),
            "other_at": pa.array([e["other_at"] for e in ph], pa.timestamp("us", tz="UTC")),
        }
    )
    con.execute("BEGIN")
    try:
        con.execute(
            "UPDATE two_phase SET fate = NULL, other_session = NULL, other_n = NULL, "
            "other_at = NULL"
        )
        con.execute("""
            UPDATE two_phase t SET fate = p.fate, other_session = p.other_session,
                   other_n = p.other_n, other_at = p.other_at
            FROM paired p WHERE t.session_id = p.session_id AND t.n = p.n AND t.k = p.k""")
        con.execute("""
            UPDATE statements s SET outcome = u.outcome, message = u.message, note = u.note
            FROM upd u WHERE s.session_id = u.session_id AND s.n = u.n
              AND (s.outcome IS DISTINCT FROM u.outcome OR s.message IS DISTINCT FROM u.message
                   OR s.note IS DISTINCT FROM u.note)""")
        con.execute("""
            UPDATE sessions s SET errors = c.errors
            FROM (SELECT session_id, count(*) FILTER (WHERE outcome IN ('error', 'rolled back'))
                         AS errors
                  FROM statements WHERE session_id IN (SELECT DISTINCT session_id FROM upd)
                  GROUP BY session_id) c
            WHERE s.session_id = c.session_id AND s.errors IS DISTINCT FROM c.errors""")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _rows_raw(con, sql: str) -> list[dict]:
    """Rows as dicts, timestamps kept as datetimes (compared, not shown)."""
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


__all__ = ["decide", "pair", "prepared_fate", "resolution_message", "resolve"]
