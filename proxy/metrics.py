"""Prometheus metrics, all in one place (prefix ``pgwitness_``).

The relay counts traffic in plain ints per session; ``flush`` moves the deltas into these
metrics about once a second, so the hot path never takes a metrics lock. With several
workers, prometheus-client's multiprocess mode aggregates them (``PROMETHEUS_MULTIPROC_DIR``
is set by the supervisor before the workers start).
"""

from __future__ import annotations

import os
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

_multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


_Mode = Literal["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent",
               "livemostrecent"]  # fmt: skip


def _gauge(name: str, doc: str, labels: tuple[str, ...] = (), mode: _Mode = "livesum") -> Gauge:
    if _multiproc:
        return Gauge(name, doc, labels, multiprocess_mode=mode)
    return Gauge(name, doc, labels)


CONNECTIONS_ACTIVE = _gauge("pgwitness_connections_active", "Client connections open now")
CONNECTIONS_TOTAL = Counter(
    "pgwitness_connections_total",
    "Client connections by how they ended up (ok, auth_failed, refused, protocol_error, "
    "upstream_failed, too_many, recorder_unavailable, tls_required, cancel, prelogin_refused)",
    ["outcome"],
)
SESSIONS_ENDED = Counter(
    "pgwitness_sessions_ended_total",
    "Sessions ended, by cause (terminate, disconnect, expired, revoked, upstream, shutdown, error)",
    ["cause"],
)
DDL_CODE_RUNS = Counter(
    "pgwitness_ddl_code_runs_total",
    "Statements that ran code that may run DDL, or defined a function, through the proxy: each "
    "opens the code window, in which every session checks its statement names with the server "
    "before a Bind until the next catalog load (origin: this_worker, or other_worker: its news)",
    ["origin"],
)
CATALOG_LOADS = Counter(
    "pgwitness_catalog_loads_total",
    "Catalog snapshots loaded, by outcome (ok, failed: the old snapshot stays, stale)",
    ["outcome"],
)
CATALOG_LOAD_SECONDS = Histogram(
    "pgwitness_catalog_load_seconds",
    "Time to load a database's catalog snapshot (its queries and reading their rows); a "
    "statement that waits for one (after DDL, on a name the snapshot does not know) waits this",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
AUTH_FAILURES = Counter(
    "pgwitness_auth_failures_total", "Failed client logins by reason", ["reason"]
)
ADMIN_AUTH_FAILURES = Counter(
    "pgwitness_admin_auth_failures_total", "Admin API requests refused for a missing or wrong token"
)
BYTES_RELAYED = Counter("pgwitness_bytes_relayed_total", "Bytes relayed", ["direction"])
MESSAGES_RELAYED = Counter("pgwitness_messages_relayed_total", "Protocol messages relayed", ["direction"])
STATEMENTS = Counter(
    "pgwitness_statements_total",
    "Policy decisions on client requests, by agent (tasks are unbounded and stay out of labels)",
    ["decision", "agent"],
)
DATABASE_DENIALS = Counter(
    "pgwitness_database_denials_total",
    "Statements the policy let through that the database refused (42501): each is a policy "
    "gap or a probe stopped by the grant's database role",
    ["agent"],
)
NOTIFICATIONS_WITHHELD = Counter(
    "pgwitness_notifications_withheld_total",
    "Notifications on a channel no listen: scope names, withheld from the client (code the "
    "grant ran listened there: the client's own LISTEN would have been refused)",
    ["agent"],
)
AGENT_SESSIONS = _gauge("pgwitness_agent_sessions_active", "Live sessions by agent", ("agent",))
UPSTREAM_CONNECT_SECONDS = Histogram(
    "pgwitness_upstream_connect_seconds",
    "Time to connect, secure and log in upstream",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UPSTREAM_REUSE = Counter(
    "pgwitness_upstream_reuse_total",
    "Upstream sessions kept for the same grant's next connection (proxy/upstream_pool.py), "
    "by outcome: parked, reused, idle (closed unused), full, reset_failed, unexpected "
    "(the server spoke while parked), aged, lost, make_room, shutdown",
    ["outcome"],
)
UPSTREAM_IDLE = _gauge(
    "pgwitness_upstream_idle", "Upstream sessions being reset or parked for reuse now"
)
GRANTS_ACTIVE = _gauge("pgwitness_grants_active", "Distinct grants with a live session", mode="max")
# From the grant store every GRANT_CENSUS_SECONDS (proxy/grant_census.py): what an SRE is
# asked about before the sessions start ("who holds access now, and what ends soon?").
GRANTS_VALID = _gauge(
    "pgwitness_grants_valid",
    "Grants in the store usable now (started, not expired, not revoked), by agent",
    ("agent",), mode="livemax",
)
GRANTS_EXPIRING_SOON = _gauge(
    "pgwitness_grants_expiring_soon",
    "Usable grants that expire within 15 minutes, by agent",
    ("agent",), mode="livemax",
)
RECORDER_HEALTHY = _gauge(
    "pgwitness_recorder_healthy", "1 when the recorder is keeping up, 0 while refusing traffic", mode="min"
)
REFUSED_UNRECORDED = Counter(
    "pgwitness_refused_unrecorded_total",
    "Statements and connections refused because the recorder could not record them",
    ["what"],
)
RECORDER_WAITS = Counter(
    "pgwitness_recorder_waits_total",
    "Times a session stopped being read until the recorder caught up with what it holds "
    "unsealed (more than half of recorder.max_memory_bytes)",
)


EVENT_LOOP_LAG = Histogram(
    "pgwitness_event_loop_lag_seconds",
    "How late a 100 ms timer fires in a worker: time it could serve no one (a long policy "
    "check, a GC pause, CPU starvation)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# What the recorder is doing, from Recorder.status once a second: SREs see a backlog build
# before the proxy starts refusing statements (pgwitness_recorder_healthy 0).
RECORDER_BACKLOG_BYTES = _gauge(
    "pgwitness_recorder_backlog_bytes",
    "Recorded bytes in memory, not yet sealed to the local spool (refusing above "
    "recorder.max_memory_bytes)",
)
RECORDER_SPOOL_BYTES = _gauge(
    "pgwitness_recorder_spool_bytes",
    "Sealed, signed chunks on local disk waiting for the store (refusing above "
    "recorder.fail_after_bytes)",
)
RECORDER_STORE_FAILING_SECONDS = _gauge(
    "pgwitness_recorder_store_failing_seconds",
    "How long store writes have been failing, 0 when they succeed (refusing above "
    "recorder.fail_after_seconds)",
    mode="max",
)
RECORDER_CHUNKS = Counter("pgwitness_recorder_chunks_total", "Chunks sealed and signed")
RECORDER_STORED_BYTES = Counter(
    "pgwitness_recorder_chunk_bytes_total", "Bytes of sealed chunks (compressed), bound for the store"
)
RECORDER_OBJECTS_STORED = Counter(
    "pgwitness_recorder_objects_stored_total", "Chunk and checkpoint objects the store accepted"
)
RECORDER_STORE_ERRORS = Counter(
    "pgwitness_recorder_store_errors_total", "Store writes that failed (each is retried)"
)
RECORDER_THROTTLED = Counter(
    "pgwitness_recorder_throttled_total",
    "Times a session waited for the recorder to catch up (memory over twice the limit)",
)
RECORDER_CONFLICTS = Counter(
    "pgwitness_recorder_conflicts_total",
    "Objects whose key already held something pgwitness did not write (planted): each is "
    "stored under a conflict key instead and logged as an error",
)
RECORDER_UPLOAD_RESTARTS = Counter(
    "pgwitness_recorder_upload_restarts_total",
    "Times the recorder's upload process died and another was started (nothing spooled is "
    "lost: the new one stores every batch not yet stored)",
)
_RECORDER_COUNTERS = (
    ("upload_restarts", RECORDER_UPLOAD_RESTARTS),
    ("conflicts", RECORDER_CONFLICTS),
    ("chunks", RECORDER_CHUNKS),
    ("stored_bytes", RECORDER_STORED_BYTES),
    ("objects_stored", RECORDER_OBJECTS_STORED),
    ("store_errors", RECORDER_STORE_ERRORS),
    ("throttled", RECORDER_THROTTLED),
)


class RecorderExporter:
    """Moves one Recorder's ``status`` into the metrics (counters by their increase)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def update(self, status: dict) -> None:
        RECORDER_HEALTHY.set(1 if status["healthy"] else 0)
        RECORDER_BACKLOG_BYTES.set(status["memory_bytes"])
        RECORDER_SPOOL_BYTES.set(status["spool_bytes"])
        RECORDER_STORE_FAILING_SECONDS.set(status["store_failing_seconds"])
        for key, counter in _RECORDER_COUNTERS:
            now = status.get(key, 0)
            grew = now - self._seen.get(key, 0)
            if grew > 0:
                counter.inc(grew)
            self._seen[key] = now


def start_metrics_server(host: str, port: int):
    """Serve /metrics from a thread; returns the HTTP server (OSError if the port is taken)."""
    if _multiproc:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        server, _thread = start_http_server(port, addr=host, registry=registry)
    else:
        server, _thread = start_http_server(port, addr=host)
    return server


def flush(counters, agent: str = "") -> None:
    """Move one session's traffic counts into the metrics and zero them."""
    for attr, metric, labels in (
        ("bytes_c2s", BYTES_RELAYED, ("c2s",)),
        ("bytes_s2c", BYTES_RELAYED, ("s2c",)),
        ("msgs_c2s", MESSAGES_RELAYED, ("c2s",)),
        ("msgs_s2c", MESSAGES_RELAYED, ("s2c",)),
        ("refused_unrecorded", REFUSED_UNRECORDED, ("statement",)),
        ("allowed", STATEMENTS, ("allowed", agent)),
        ("denied", STATEMENTS, ("denied", agent)),
        ("would_deny", STATEMENTS, ("would_deny", agent)),
        ("db_denied", DATABASE_DENIALS, (agent,)),
        ("notifications_withheld", NOTIFICATIONS_WITHHELD, (agent,)),
    ):
        n = getattr(counters, attr)
        if n:
            metric.labels(*labels).inc(n)
            setattr(counters, attr, 0)
