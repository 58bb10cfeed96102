"""The pgwitness Grafana dashboard, written as data: ``python deploy/grafana/dashboard.py``
rewrites ``dashboards/pgwitness.json`` (tests/integration/test_deploy.py fails when the two differ).

To add a panel, add a ``Panel`` to a row in ``ROWS``; ids and positions are derived. Every
query may use ``$__rate_interval`` and the ``$instance`` / ``$agent`` variables; every
metric it names must be one pgwitness exports (a test scrapes a live proxy to check).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "pgwitness.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
I = 'instance=~"$instance"'  # noqa: E741 - the instance filter every query carries
RI = "$__rate_interval"


@dataclass
class Panel:
    title: str
    description: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat
    width: int = 8
    height: int = 8
    thresholds: list[tuple[float | None, str]] = field(default_factory=list)
    stack: bool = False


def _rate(metric: str, by: str, matchers: str = "") -> str:
    sel = f"{I},{matchers}" if matchers else I
    return f"sum by ({by}) (rate({metric}{{{sel}}}[{RI}]))"


def _quantile(q: float, metric: str, by: str = "le") -> str:
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{I}}}[{RI}])))"


AGENT = f'{I},agent=~"$agent"'

ROWS: list[tuple[str, list[Panel]]] = [
    ("Health", [
        Panel("Proxies up", "Prometheus's scrape of each proxy (the PgwitnessDown alert).",
              [('sum(up{job="pgwitness"})', "up")], kind="stat", width=4,
              thresholds=[(None, "red"), (1, "green")]),
        Panel("Recorder healthy", "0 while a proxy refuses statements because it cannot record "
              "them (PgwitnessRecorderUnhealthy).",
              [(f"min(pgwitness_recorder_healthy{{{I}}})", "healthy")], kind="stat", width=4,
              thresholds=[(None, "red"), (1, "green")]),
        Panel("Refused unrecorded (range)", "Statements and connections refused because the "
              "recorder could not record them. Anything above 0 was an outage for agents.",
              [(f"sum(increase(pgwitness_refused_unrecorded_total{{{I}}}[$__range]))", "refused")],
              kind="stat", width=4, thresholds=[(None, "green"), (1, "red")]),
        Panel("Connections open", "Client connections open now, per proxy.",
              [(f"sum by (instance) (pgwitness_connections_active{{{I}}})", "{{instance}}")],
              width=6),
        Panel("Live sessions by agent", "Sessions open now, by agent.",
              [(f"sum by (agent) (pgwitness_agent_sessions_active{{{AGENT}}})", "{{agent}}")],
              width=6, stack=True),
    ]),
    ("Connections and sessions", [
        Panel("Connections by outcome", "How client connections ended up: ok, auth_failed, "
              "refused, too_many, recorder_unavailable, upstream_failed, ...",
              [(_rate("pgwitness_connections_total", "outcome"), "{{outcome}}")],
              unit="reqps", stack=True),
        Panel("Sessions ended by cause", "terminate, disconnect, expired, revoked, upstream, "
              "shutdown, error.",
              [(_rate("pgwitness_sessions_ended_total", "cause"), "{{cause}}")],
              unit="reqps", stack=True),
        Panel("Refused logins by reason", "Failed agent logins (password, expired, revoked, "
              "not_yet_valid, wrong_database, refused) and admin-API token failures.",
              [(_rate("pgwitness_auth_failures_total", "reason"), "{{reason}}"),
               (f"sum(rate(pgwitness_admin_auth_failures_total{{{I}}}[{RI}]))", "admin API")],
              unit="reqps", stack=True),
    ]),
    ("Statements and denials", [
        Panel("Statements by decision", "Policy decisions: allowed, denied, would_deny (dry-run "
              "grants).",
              [(_rate("pgwitness_statements_total", "decision", 'agent=~"$agent"'), "{{decision}}")],
              unit="reqps", stack=True),
        Panel("Statements by agent", "Every decision, by agent.",
              [(_rate("pgwitness_statements_total", "agent", 'agent=~"$agent"'), "{{agent}}")],
              unit="reqps", stack=True),
        Panel("Policy denials by agent", "Statements the policy refused (42501), by agent; "
              "would_deny are the dry-run grants' refusals (PgwitnessDenialSpike).",
              [(_rate("pgwitness_statements_total", "agent", 'agent=~"$agent",decision="denied"'),
                "{{agent}} denied"),
               (_rate("pgwitness_statements_total", "agent",
                      'agent=~"$agent",decision="would_deny"'), "{{agent}} would deny")],
              unit="reqps"),
        Panel("Database denials by agent", "Statements the policy allowed and the database "
              "refused (42501): a gap in the policy or a probe (PgwitnessDatabaseDenials).",
              [(_rate("pgwitness_database_denials_total", "agent", 'agent=~"$agent"'),
                "{{agent}}")], unit="reqps"),
    ]),
    ("Grants", [
        Panel("Grants usable now", "Grants in the store that are started, unexpired and not "
              "revoked, by agent (every proxy counts the same store: max across proxies).",
              [(f"max by (agent) (pgwitness_grants_valid{{{AGENT}}})", "{{agent}}")],
              stack=True),
        Panel("Grants expiring within 15 minutes", "Usable grants about to end: sessions on them "
              "will be closed at expiry unless extended.",
              [(f"max by (agent) (pgwitness_grants_expiring_soon{{{AGENT}}})", "{{agent}}")],
              stack=True),
        Panel("Grants with a live session", "Distinct grants with at least one open session.",
              [(f"sum by (instance) (pgwitness_grants_active{{{I}}})", "{{instance}}")]),
    ]),
    ("Upstream and proxy", [
        Panel("Upstream connect time", "Connect, TLS and login to the database (RDS IAM token "
              "generation included).",
              [(_quantile(0.5, "pgwitness_upstream_connect_seconds"), "p50"),
               (_quantile(0.99, "pgwitness_upstream_connect_seconds"), "p99")], unit="s"),
        Panel("Event-loop lag", "How late a 100 ms timer fires in a worker: time the worker served "
              "no one (PgwitnessEventLoopLag).",
              [(_quantile(0.99, "pgwitness_event_loop_lag_seconds", "le, instance"),
                "p99 {{instance}}"),
               (_quantile(0.5, "pgwitness_event_loop_lag_seconds", "le, instance"),
                "p50 {{instance}}")], unit="s"),
        Panel("Catalog load time", "A database's catalog snapshot loading (after DDL, on a name "
              "it does not know): a statement waiting for one waits this long.",
              [(_quantile(0.5, "pgwitness_catalog_load_seconds"), "p50"),
               (_quantile(0.99, "pgwitness_catalog_load_seconds"), "p99")], unit="s"),
        Panel("Upstream sessions kept", "Grants' upstream sessions reset and parked for the "
              "same grant's next login (each holds a database connection), and what became "
              "of them: reused, or closed (idle, full, aged, reset_failed, unexpected, lost, "
              "make_room).",
              [(f"sum by (instance) (pgwitness_upstream_idle{{{I}}})", "parked {{instance}}"),
               (_rate("pgwitness_upstream_reuse_total", "outcome"), "{{outcome}}/s")],
              unit="short"),
        Panel("Bytes relayed", "Client to server (c2s) and server to client (s2c).",
              [(_rate("pgwitness_bytes_relayed_total", "direction"), "{{direction}}")],
              unit="Bps"),
    ]),
    ("Recorder", [
        Panel("Recorder backlog", "Recorded bytes in memory, not yet sealed to the spool "
              "(refusing above recorder.max_memory_bytes).",
              [(f"sum by (instance) (pgwitness_recorder_backlog_bytes{{{I}}})", "{{instance}}")],
              unit="bytes"),
        Panel("Spool", "Sealed, signed chunks on local disk waiting for the store (refusing "
              "above recorder.fail_after_bytes; PgwitnessSpoolGrowing).",
              [(f"sum by (instance) (pgwitness_recorder_spool_bytes{{{I}}})", "{{instance}}")],
              unit="bytes"),
        Panel("Store failing for", "How long store writes have been failing (refusing above "
              "recorder.fail_after_seconds; PgwitnessRecorderStoreFailing).",
              [(f"max by (instance) (pgwitness_recorder_store_failing_seconds{{{I}}})",
                "{{instance}}")], unit="s"),
        Panel("Store writes", "Objects the store accepted, writes that failed (retried), and "
              "restarts of the upload process (PgwitnessUploadProcessRestarting).",
              [(f"sum(rate(pgwitness_recorder_objects_stored_total{{{I}}}[{RI}]))", "stored"),
               (f"sum(rate(pgwitness_recorder_store_errors_total{{{I}}}[{RI}]))", "errors"),
               (f"sum(rate(pgwitness_recorder_upload_restarts_total{{{I}}}[{RI}]))",
                "upload process restarts")],
              unit="ops"),
        Panel("Refused unrecorded", "Statements and connections refused because they could not "
              "be recorded (PgwitnessRefusedUnrecorded).",
              [(_rate("pgwitness_refused_unrecorded_total", "what"), "{{what}}")],
              unit="reqps"),
        Panel("Recording throughput", "Sealed chunk bytes (compressed), and sessions throttled "
              "while the recorder caught up.",
              [(f"sum(rate(pgwitness_recorder_chunk_bytes_total{{{I}}}[{RI}]))", "chunk bytes/s"),
               (f"sum(rate(pgwitness_recorder_throttled_total{{{I}}}[{RI}]))", "throttled/s")],
              unit="short"),
        Panel("Planted objects", "Store writes that found a different object at their key: "
              "someone with write access to the bucket (PgwitnessRecorderConflicts).",
              [(f"sum by (instance) (increase(pgwitness_recorder_conflicts_total{{{I}}}[{RI}]))",
                "{{instance}}")], unit="short",
              thresholds=[(None, "green"), (1, "red")]),
    ]),
]


def _variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": name}, "definition": query,
        "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1,
    }


def _panel(pid: int, panel: Panel, x: int, y: int) -> dict:
    steps = [{"color": c, "value": v} for v, c in panel.thresholds] or [{"color": "green", "value": None}]
    out = {
        "id": pid, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": DS, "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend,
             "range": True}
            for i, (expr, legend) in enumerate(panel.targets)
        ],
        "fieldConfig": {
            "defaults": {"unit": panel.unit,
                         "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
    }
    if panel.kind == "timeseries":
        out["fieldConfig"]["defaults"]["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    else:
        out["options"] = {"colorMode": "background", "graphMode": "none",
                          "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    return out


def build() -> dict:
    panels, pid, y = [], 1, 0
    for title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y, x, line_height = pid + 1, y + 1, 0, 0
        for panel in row:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel(pid, panel, x, y))
            pid, x, line_height = pid + 1, x + panel.width, max(line_height, panel.height)
        y += line_height
    return {
        "uid": "pgwitness", "title": "pgwitness", "tags": ["pgwitness", "postgres", "audit"],
        "description": "The pgwitness proxy: sessions, policy decisions, grants, upstream and the "
                       "recorder. Built by deploy/grafana/dashboard.py.",
        "editable": True, "graphTooltip": 1, "refresh": "30s", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-6h", "to": "now"}, "timezone": "utc",
        "annotations": {"list": []},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            _variable("instance", "Proxy", "label_values(pgwitness_connections_active, instance)"),
            _variable("agent", "Agent", "label_values(pgwitness_statements_total, agent)"),
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
