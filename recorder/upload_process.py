"""The recorder's uploader in a process of its own (a store named by URL: the product).

Why a process: putting objects into the store is a stream of system calls (open, write,
fsync, link, close per object on the local store; boto3's HTTP and signing, in Python, on
S3), and each one hands the GIL back and forth with the event loop's thread. Measured on
the shipped configuration, that contention cost the event loop more than the uploads
themselves (docs/benchmarks.md, run U1). Here the uploads run in their own interpreter;
the proxy's process sends it the path of each spooled batch and books what comes back.

Parent (``UploadProcess``, used by ``recorder.writer.Recorder``)::

    submit(batch)  -> ("batch", path, size)       one message per spool batch, in order
    close(deadline)-> ("close", deadline)         finish what it can by then, then exit
    control_id(id) -> ("control", id)             a control stream: log its stored heads
    (at each start)-> ("key", raw public key)     verify those heads with (recorder/uploader.py)
                   <- ("ready",)                  signals ignored, store opened
                   <- ("attempt", Attempt)        one per try at a batch (Recorder._apply)
                   <- ("log", level, msg, fields) the child's log records, logged here

The child (``python -c ... FD``, see ``_CHILD``) opens the store itself, takes
batches in order and retries the oldest until it is stored (backing off as the thread
did), and exits when the socket closes: a proxy that dies takes it along. If the child
dies, the parent starts another and sends it every batch not yet booked as stored (a
retry stores the same bytes again: a success). Both ends ignore nothing: a message they
do not know is a bug and ends the child (the parent then restarts it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .config import RecorderConfig
from .spool import Batch, Spool
from .uploader import Attempt, Uploader

log = logging.getLogger("pgwitness.recorder")

_ROOT = str(Path(__file__).resolve().parent.parent)  # the directory holding ``recorder``
# not ``-m recorder.upload_process``: importing the package imports this module first
_CHILD = "import sys; from recorder.upload_process import main; sys.exit(main(sys.argv[1:]))"


class UploadProcess:
    """Parent side: starts the child, sends it batches, books its answers with ``apply``."""

    def __init__(self, config: RecorderConfig, apply: Callable[[Attempt], None],
                 public_key: Ed25519PublicKey | None = None):
        self._config = config
        # the recorder's public key, for the child to verify control-stream heads with
        self._public_key = None if public_key is None else public_key.public_bytes(
            Encoding.Raw, PublicFormat.Raw)
        self._apply = apply
        self._lock = threading.Lock()  # one sender at a time (sealer, close, restart)
        self._conn: Connection | None = None
        self._proc: subprocess.Popen | None = None
        self._pending: list[Batch] = []  # submitted, not booked as stored: resent on restart
        self._control: set[str] = set()
        self._closing = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self._down_since: float | None = None  # the first exit since the last stored batch
        self.ready = threading.Event()  # the current child has its signals and store set up
        self.failed = ""  # why no child runs (start failed): the recorder is then unhealthy

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._spawn()
        self._thread = threading.Thread(target=self._receive_loop, name="pgwitness-upload-rx",
                                        daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        self.ready.clear()
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(theirs.fileno())],
                # in the proxy's process group (its CPU is the proxy's, for top and for the
                # benchmarks); it ignores the group's SIGINT/SIGTERM: the proxy closes it
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        # the recorder's settings as the plain dataclass (the proxy's subclass of it is
        # common's, which this package does not import)
        cfg = self._config
        conn.send(("config", RecorderConfig(**{
            f.name: getattr(cfg, f.name) for f in dataclasses.fields(RecorderConfig)})))
        with self._lock:
            self._conn, self._proc = conn, proc
            if self._public_key is not None:
                conn.send(("key", self._public_key))
            for cid in self._control:
                conn.send(("control", cid))
            for b in self._pending:
                conn.send(("batch", str(b.path), b.size))
            if self._closing:
                conn.send(("close", self._deadline))

    @property
    def pid(self) -> int | None:
        """The child's process id (metrics, tests)."""
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        t = self._thread
        return not self.failed and t is not None and t.is_alive()

    def close(self, deadline: float) -> None:
        """Ask the child to finish by ``deadline`` (time.monotonic()) and exit; wait for it."""
        with self._lock:
            self._closing = True
            self._deadline = deadline
            conn = self._conn
            if conn is not None:
                try:
                    conn.send(("close", deadline))
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    # -- to the child ----------------------------------------------------------------------

    def submit(self, batch: Batch) -> None:
        with self._lock:
            self._pending.append(batch)
            self._send(("batch", str(batch.path), batch.size))

    def control_id(self, session_id: str) -> None:
        with self._lock:
            self._control.add(session_id)
            self._send(("control", session_id))

    def _send(self, msg: tuple) -> None:
        if self._conn is None:
            return
        try:
            self._conn.send(msg)
        except OSError:
            pass  # the child is gone: the receiver restarts it and resends everything

    # -- from the child --------------------------------------------------------------------

    def _receive_loop(self) -> None:
        while True:
            conn = self._conn
            assert conn is not None
            try:
                while True:
                    self._handle(conn.recv())
            except (EOFError, OSError, pickle.UnpicklingError):
                pass
            code = self._proc.wait() if self._proc is not None else None
            conn.close()
            if self._closing:
                return
            self.restarts += 1
            why = f"the upload process exited (code {code})"
            log.error("recorder: %s; starting another", why)
            # Batches wait and none is being stored: a failing store from the first exit
            # since the last stored batch, so a child that cannot run (crashing at start,
            # killed over and over) makes the proxy refuse after fail_after_seconds. (With
            # nothing waiting there is nothing to clear it later: no failure then.)
            with self._lock:
                waiting = bool(self._pending)
            if waiting:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                self._apply(Attempt("", False, failing_since=self._down_since, error=why))
            time.sleep(min(2.0, 0.1 * self.restarts))
            try:
                self._spawn()
            except Exception as e:
                self.failed = f"cannot start the upload process: {e}"
                log.error("recorder: %s", self.failed)
                return

    def _handle(self, msg: tuple) -> None:
        if msg[0] == "attempt":
            a: Attempt = msg[1]
            if a.done:
                self._down_since = None
                with self._lock:
                    self._pending = [b for b in self._pending if str(b.path) != a.path]
            self._apply(a)
        elif msg[0] == "ready":
            self.ready.set()
        elif msg[0] == "log":
            _, level, text, fields = msg
            log.log(level, "%s", text, extra={"fields": fields} if fields else None)
        else:
            raise pickle.UnpicklingError(f"unknown message {msg[0]!r} from the upload process")


# -- the child ---------------------------------------------------------------------------


class _ToParent(logging.Handler):
    """The child's log records go to the parent, which logs them with its own settings."""

    def __init__(self, conn: Connection):
        super().__init__()
        self._conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        try:
            self._conn.send(("log", record.levelno, text, getattr(record, "fields", None)))
        except OSError:
            pass


def _child(conn: Connection) -> None:
    from .store import open_store

    _, cfg = conn.recv()
    logging.getLogger().addHandler(_ToParent(conn))
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("pgwitness").setLevel(logging.INFO)  # the control stream heads
    uploader = Uploader(open_store(cfg.store, **cfg.s3_options()),
                        Spool(cfg.spool_dir, fsync=cfg.fsync), cfg)
    conn.send(("ready",))
    queue: list[Batch] = []
    retry_at = 0.0

    def take(msg: tuple) -> None:
        if msg[0] == "batch":
            queue.append(Batch(Path(msg[1]), msg[2]))
        elif msg[0] == "control":
            uploader.control_ids.add(msg[1])
        elif msg[0] == "key":
            uploader.public_key = Ed25519PublicKey.from_public_bytes(msg[1])
        elif msg[0] == "close":
            uploader.deadline = msg[1]
        else:
            raise ValueError(f"unknown message {msg[0]!r} from the proxy")

    try:
        while True:
            # wait for work (or the retry's back-off), taking every message that came
            wait = None if not queue else max(0.0, retry_at - time.monotonic())
            if uploader.deadline is not None:
                left = max(0.0, uploader.deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            if conn.poll(wait):
                take(conn.recv())
                while conn.poll(0):
                    take(conn.recv())
            if uploader.deadline is not None and (not queue or uploader.past_deadline()):
                return
            if not queue or time.monotonic() < retry_at:
                continue
            a = uploader.upload(queue[0])
            conn.send(("attempt", a))
            if a.done:
                queue.pop(0)
            retry_at = time.monotonic() + uploader.retry_delay(a)
    except EOFError:
        return  # the proxy is gone
    finally:
        uploader.close()


def main(argv: list[str]) -> int:
    # The proxy's process group gets SIGTERM/SIGINT (systemd, a terminal): the proxy then
    # closes this process itself, after its last batches, so neither signal ends it here.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(argv[0]))
    try:
        _child(conn)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
