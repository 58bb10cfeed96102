"""Several worker processes sharing one port with SO_REUSEPORT; the parent serves metrics."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time

from .config import Config, parse_hostport


def run_workers(cfg: Config) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="pgwitness-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    children: list[int] = []
    for _ in range(cfg.proxy.workers):
        pid = os.fork()
        if pid == 0:  # worker
            from .cli import run_worker

            code = 1
            try:
                code = run_worker(cfg, reuse_port=True, metrics=False)
            finally:
                os._exit(code)
        children.append(pid)
    if cfg.metrics.listen:
        from .metrics import start_metrics_server

        host, port = parse_hostport("metrics.listen", cfg.metrics.listen)
        start_metrics_server(host, port)

    def forward(signum, _frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    remaining = set(children)
    while remaining:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid in remaining:
            remaining.discard(pid)
            rc = os.waitstatus_to_exitcode(code)
            if rc != 0:
                status = rc if rc > 0 else 1
                print(f"pgwitness: worker {pid} exited with {rc}", file=sys.stderr)
                forward(signal.SIGTERM, None)
    time.sleep(0)
    return status
