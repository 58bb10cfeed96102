"""Several worker processes behind one listener; the parent accepts and serves metrics.

The parent binds the port (a busy port fails before any worker runs), forks the workers,
and hands each accepted connection to the worker holding the fewest (``proxy.handoff``).
The admin API's port, bound here too, is served by the first worker alone (grants are
the store's, which every worker follows).
A worker that exits with an error takes the others down with it, so whatever supervises
the service sees the failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import traceback

from common.config import Config, parse_hostport

from .handoff import Dispatcher, channel_pair, listeners


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
    host, port = parse_hostport("proxy.listen", cfg.proxy.listen)
    try:
        listening = listeners(host, port)
    except OSError as exc:
        print(f"pgwitness: cannot listen on {cfg.proxy.listen}: {exc.strerror}", file=sys.stderr)
        return 1
    admin: list[socket.socket] = []
    if cfg.admin.listen:  # one worker serves the admin API (its grants are the store's)
        ahost, aport = parse_hostport("admin.listen", cfg.admin.listen)
        try:
            admin = listeners(ahost, aport, backlog=128)
        except OSError as exc:
            for sock in listening:
                sock.close()
            print(f"pgwitness: cannot listen on admin.listen {cfg.admin.listen}: {exc.strerror}", file=sys.stderr)
            return 1
    address = listening[0].getsockname()[:2]
    pairs = [channel_pair() for _ in range(cfg.proxy.workers)]
    children: list[int] = []
    for i in range(cfg.proxy.workers):
        pid = os.fork()
        if pid == 0:  # worker: its own channel's end, nothing else of the parent's
            code = 1
            try:
                if metrics_server is not None:
                    metrics_server.socket.close()  # the parent serves metrics
                for sock in listening:
                    sock.close()
                if i != 0:
                    for sock in admin:
                        sock.close()
                for j, (ours, theirs) in enumerate(pairs):
                    ours.close()
                    if j != i:
                        theirs.close()
                from .handoff import Receiver
                from .worker import run_worker

                code = run_worker(
                    cfg, metrics=False, handoff=Receiver(pairs[i][1], address),
                    admin=admin if i == 0 else False,
                )  # fmt: skip
            except BaseException:
                traceback.print_exc()  # said, not lost with the process
            finally:
                os._exit(code)
        children.append(pid)
    for _ours, theirs in pairs:
        theirs.close()
    for sock in admin:
        sock.close()  # worker 0's now
    dispatcher = Dispatcher(listening, [ours for ours, _theirs in pairs])
    return _supervise(dispatcher, children, metrics_dir)


def _supervise(dispatcher: Dispatcher, children: list[int], metrics_dir: str) -> int:
    """Hand connections on until every worker has exited; the exit status."""
    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    # Signals wake the dispatcher's select at once (a byte on this socket), not only
    # its next timeout: shutting down stops accepting without delay.
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    dispatcher.watch(wake_r)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # a handler, so it wakes the select
    status = 0
    remaining = set(children)
    try:
        while remaining:
            if stopping and dispatcher.listening:
                dispatcher.stop_accepting()  # refused by the kernel from now on
            dispatcher.poll(0.5)
            while remaining:
                try:
                    pid, code = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    remaining.clear()
                    break
                if pid == 0:
                    break
                if pid not in remaining:
                    continue
                remaining.discard(pid)
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(pid)  # its live gauges stop counting
                rc = os.waitstatus_to_exitcode(code)
                if rc != 0:
                    status = rc if rc > 0 else 1
                    print(f"pgwitness: worker {pid} exited with {rc}", file=sys.stderr)
                    forward(signal.SIGTERM, None)
    finally:
        signal.set_wakeup_fd(-1)
        dispatcher.close()
        wake_r.close()
        wake_w.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return status
