"""Prometheus metrics, all in one place (prefix ``pgwitness_``).

The relay counts traffic in plain ints per session; ``flush`` moves the deltas into these
metrics about once a second, so the hot path never takes a metrics lock. With several
workers, prometheus-client's multiprocess mode aggregates them (``PROMETHEUS_MULTIPROC_DIR``
is set by the supervisor before the workers start).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

_multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _gauge(name: str, doc: str, labels: tuple[str, ...] = (), mode: str = "livesum") -> Gauge:
    if _multiproc:
        return Gauge(name, doc, labels, multiprocess_mode=mode)
    return Gauge(name, doc, labels)


CONNECTIONS_ACTIVE = _gauge("pgwitness_connections_active", "Client connections open now")
CONNECTIONS_TOTAL = Counter(
    "pgwitness_connections_total",
    "Client connections by how they ended up (ok, auth_failed, refused, protocol_error, "
    "upstream_failed, too_many, recorder_unavailable, tls_required, cancel)",
    ["outcome"],
)
SESSIONS_ENDED = Counter(
    "pgwitness_sessions_ended_total",
    "Sessions ended, by cause (terminate, disconnect, expired, revoked, upstream, shutdown, error)",
    ["cause"],
)
AUTH_FAILURES = Counter(
    "pgwitness_auth_failures_total", "Failed client logins by reason", ["reason"]
)
BYTES_RELAYED = Counter("pgwitness_bytes_relayed_total", "Bytes relayed", ["direction"])
MESSAGES_RELAYED = Counter("pgwitness_messages_relayed_total", "Protocol messages relayed", ["direction"])
STATEMENTS = Counter(
    "pgwitness_statements_total",
    "Policy decisions on client requests, by agent (tasks are unbounded and stay out of labels)",
    ["decision", "agent"],
)
AGENT_SESSIONS = _gauge("pgwitness_agent_sessions_active", "Live sessions by agent", ("agent",))
UPSTREAM_CONNECT_SECONDS = Histogram(
    "pgwitness_upstream_connect_seconds",
    "Time to connect, secure and log in upstream",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
GRANTS_ACTIVE = _gauge("pgwitness_grants_active", "Distinct grants with a live session", mode="max")
RECORDER_HEALTHY = _gauge(
    "pgwitness_recorder_healthy", "1 when the recorder is keeping up, 0 while refusing traffic", mode="min"
)
REFUSED_UNRECORDED = Counter(
    "pgwitness_refused_unrecorded_total",
    "Statements and connections refused because the recorder could not record them",
    ["what"],
)


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
    ):
        n = getattr(counters, attr)
        if n:
            metric.labels(*labels).inc(n)
            setattr(counters, attr, 0)
