"""Several worker processes sharing one port with SO_REUSEPORT; the parent serves metrics."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile

from common.config import Config, parse_hostport


def run_workers(cfg: Config) -> int:
    metrics_dir = tempfile.mkdtemp(prefix="pgwitness-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    metrics_server = None
    if cfg.metrics.listen:  # bound before forking, so a busy port fails before any worker runs
        from .metrics import start_metrics_server

        host, port = parse_hostport("metrics.listen", cfg.metrics.listen)
        try:
            metrics_server = start_metrics_server(host, port)
        except OSError as exc:
            print(f"pgwitness: cannot listen on metrics.listen {cfg.metrics.listen}: {exc.strerror}", file=sys.stderr)
            return 1
    children: list[int] = []
    for _ in range(cfg.proxy.workers):
        pid = os.fork()
        if pid == 0:  # worker
            if metrics_server is not None:
                metrics_server.socket.close()  # the parent serves metrics
            from .worker import run_worker

            code = 1
            try:
                code = run_worker(cfg, reuse_port=True, metrics=False)
            finally:
                os._exit(code)
        children.append(pid)

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
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)  # its live gauges stop counting
            rc = os.waitstatus_to_exitcode(code)
            if rc != 0:
                status = rc if rc > 0 else 1
                print(f"pgwitness: worker {pid} exited with {rc}", file=sys.stderr)
                forward(signal.SIGTERM, None)
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return status
