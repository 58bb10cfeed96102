"""Export the index's tables as Parquet under ``<table>/event_date=YYYY-MM-DD/`` (local
directory or S3 with Object Lock, as recordings are), or as OCSF JSON lines."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import TextIO

from .index import RECORDING_DATE

# table -> the timestamp that dates its rows
EXPORT_TABLES = {
    # a grant known only from its sessions (no grant.issued; a static user's: no expiry
    # either) is dated by its first session, so that every grant of the index is exported
    "grants": "coalesce(issued_at, expires_at, (SELECT min(s.started_at) FROM sessions s "
              "WHERE s.grant_id = grants.grant_id))",
    "grant_events": "ts",
    "sessions": "started_at",
    "statements": "ts",
    "denials": "ts",
    "logins": "ts",
    # what each session's client received from other sessions' NOTIFY, and what the proxy
    # withheld from it (deny.listen): the answer and CSV list both, the export had neither
    # (s35 round 4)
    "notifications": "ts",
    # the cancel requests a session received, from where, and the statement running then
    "cancels": "ts",
    # what the rows stand on: each recording's verification (index.RECORDING_DATE)
    "recordings": RECORDING_DATE,
}


# what a table keeps for the index's own use, not exported
EXCLUDE = {"statements": "EXCLUDE (fates)"}


def _source(table: str) -> str:
    """What a table is exported from: a view added since an index was written is read as
    its query (``index.view``), so an export with ``--no-update`` has it too."""
    from .index import view

    return view(table) if table in ("notifications", "cancels") else table


def _day_filter(col: str, day: dt.date | None) -> tuple[str, list]:
    if day is None:
        return "TRUE", []
    return f"CAST({col} AS DATE) = ?", [day]


def export_local(con, out: Path, *, day: dt.date | None = None, fmt: str = "parquet") -> list[Path]:
    """Write every table (or the OCSF events) under ``out``; returns the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    con.execute("SET TimeZone = 'UTC'")
    if fmt == "ocsf":
        return _export_ocsf(con, out, day)
    for table, col in EXPORT_TABLES.items():
        where, params = _day_filter(col, day)
        dated = f"strftime(CAST({col} AS DATE), '%Y-%m-%d')"
        if table == "recordings" and day is not None:
            # every recording that did not verify, whatever its day, in each day's export (as
            # the answer lists them whatever its filters: one may belong to this day's rows)
            where, dated = f"({where} OR NOT intact)", f"'{day.isoformat()}'"
        target = (out / table).as_posix().replace("'", "''")
        con.execute(
            f"COPY (SELECT * {EXCLUDE.get(table, '')}, {dated} AS event_date "
            f"FROM {_source(table)} WHERE {where} AND {col} IS NOT NULL) TO '{target}' "
            "(FORMAT PARQUET, PARTITION_BY (event_date), OVERWRITE_OR_IGNORE, "
            "FILENAME_PATTERN 'part-{i}')", params)
    return sorted(p for p in out.rglob("*.parquet"))


def _export_ocsf(con, out: Path, day) -> list[Path]:
    import json

    from .ocsf import events

    where, params = _day_filter("ts", day)
    files: dict[str, TextIO] = {}
    try:
        for e in events(con, where, params):
            # a day's export is that day's file: its events are of the day, but for those of
            # recordings that did not verify, each day's has all (as its Parquet ``recordings``)
            d = day.isoformat() if day is not None else dt.datetime.fromtimestamp(
                (e["time"] or 0) / 1000, dt.UTC).date().isoformat()
            f = files.get(d)
            if f is None:
                path = out / "ocsf" / f"event_date={d}" / "events.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                f = files[d] = path.open("w")
            f.write(json.dumps(e, sort_keys=True, default=str) + "\n")
    finally:
        for f in files.values():
            f.close()
    return sorted(out.rglob("*.jsonl"))


def export_s3(con, store, *, day: dt.date | None = None, fmt: str = "parquet") -> list[str]:
    """Write through ``store`` (an S3Store: create-only PutObject, COMPLIANCE retention)."""
    with tempfile.TemporaryDirectory(prefix="pgwitness-export-") as tmp:
        files = export_local(con, Path(tmp), day=day, fmt=fmt)
        keys = []
        for f in files:
            key = f.relative_to(tmp).as_posix()
            store.put(key, f.read_bytes())
            keys.append(key)
        return keys


def read_back_sql(root: str, table: str) -> str:
    """The DuckDB query that reads an export back (docs/audit.md)."""
    return (f"SELECT * FROM read_parquet('{root.rstrip('/')}/{table}/*/*.parquet', "
            "hive_partitioning = true)")
