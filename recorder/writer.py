"""Recorder and SessionRecorder: cheap appends on the caller, everything else in background.

Threads (per Recorder):
  sealer   - every tick (<= 100 ms), or when woken: cuts each live session's pending records
             into chunks (size / age / deny at once; start and end a tick later), encodes,
             compresses, chains, signs, and writes all objects of the tick as one fsynced
             spool batch.
  uploader - takes spool batches oldest first, puts their objects into the store (each
             session's objects in order: S3 sessions in parallel, the local store in
             steps with shared fsyncs; recorder/uploader.py), removes a batch once stored.
             A store named by URL (the product) is uploaded to by a process of its own
             (recorder/upload_process.py): this process then only sends it batch paths
             and books its answers, off the event loop's GIL. A store object handed to
             Recorder (tests, tools) is uploaded to by a thread here, with the same code.
The caller's thread only packs a 24-byte record header, appends (header, frames) to the
session's deque and adds to two counters.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import socket
import threading
import time
from typing import Final

import zstandard
from mypy_extensions import mypyc_attr

from . import chunks
from .config import RecorderConfig
from .records import HEADER, Direction, Kind, dump_json
from .signing import (
    Checkpoint,
    State,
    generate_keypair,
    key_id,
    load_private_key,
)
from .spool import Batch, Spool, SpoolError
from .store import Store, open_store
from .upload_process import UploadProcess
from .uploader import Attempt, Uploader

log = logging.getLogger("pgwitness.recorder")

_C2S: Final = int(Direction.C2S)
_S2C: Final = int(Direction.S2C)
_PROXY: Final = int(Direction.PROXY)
_DECISION: Final = int(Kind.DECISION)
_WIRE_DIRS: Final = {"c2s": _C2S, "s2c": _S2C}
_monotonic_ns: Final = time.monotonic_ns
_monotonic: Final = time.monotonic
_pack: Final = HEADER.pack
_HSIZE: Final = HEADER.size


@mypyc_attr(native_class=False)  # an exception class: ordinary when compiled
class RecorderClosed(RuntimeError):
    """open_session()/control_event() after close()."""


class SessionRecorder:
    """One recorded session. Use it from one thread (the connection's event loop)."""

    __slots__ = ("id", "meta", "_rec", "_buf", "_in", "_out", "_force", "_ended", "_t0",
                 "_wall0", "_n", "_chain", "_next_seq", "_chunk_bytes", "_final_sealed", "_seq",
                 "_end_seq", "_kicked", "_sealed_at", "_lock", "_start_pending")

    def __init__(self, rec: Recorder, session_id: str, meta: dict):
        self.id = session_id
        self.meta = meta
        self._rec = rec
        self._buf: collections.deque = collections.deque()
        self._in = 0  # bytes appended (caller thread only)
        self._out = 0  # bytes sealed (sealer thread only)
        self._force = False
        self._start_pending = False  # session.start not sealed yet (see _start_record)
        self._kicked = False
        self._ended = False
        self._t0 = _monotonic_ns()
        self._wall0 = time.time_ns()
        self._seq = 0  # next record seq (caller thread)
        self._lock: threading.Lock | None = None  # only the shared control stream locks
        # sealer-owned chain state
        self._sealed_at = self._t0
        self._n = 0
        self._chain = chunks.genesis(session_id)
        self._next_seq = 0
        self._chunk_bytes = rec.config.chunk_max_bytes
        self._final_sealed = False
        self._end_seq: int | None = None  # seq of the session.end record, once appended

    def wire(self, direction: str, data: bytes | bytearray | memoryview) -> None:
        """Record frames as relayed (a large streamed frame may come in pieces). Hot path: no I/O."""
        if self._ended:
            return
        seq = self._seq
        self._seq = seq + 1
        if type(data) is not bytes:
            data = bytes(data)  # the caller may reuse a bytearray/memoryview; bytes are immutable
        n = len(data)
        # header and frames go in as one pair: extend() from a tuple is atomic under the GIL,
        # so the sealer always pops whole records, and big frames are never copied here
        self._buf.extend((_pack(seq, _monotonic_ns() - self._t0, _WIRE_DIRS[direction], 0, 0, n),
                          data))
        n += _HSIZE
        self._in += n
        rec = self._rec
        rec._in += n
        if self._in - self._out >= self._chunk_bytes and not self._kicked:
            self._kicked = True  # one wake-up per full chunk, not one per call
            rec._wake.set()
        if rec._in - rec._out > rec._hard_limit:
            rec._throttle()

    def _append(self, kind: Kind, type_: str, payload: dict, force: bool,
                end: bool = False) -> None:
        self._append_body(int(kind), type_.encode(), dump_json(payload), force, end)

    def _append_body(self, kind: int, t: bytes, body: bytes, force: bool,
                     end: bool = False) -> None:
        if self._lock is not None:
            with self._lock:
                return self._append_body_unlocked(kind, t, body, force, end)
        return self._append_body_unlocked(kind, t, body, force, end)

    def _append_body_unlocked(self, kind: int, t: bytes, body: bytes, force: bool,
                              end: bool) -> None:
        seq = self._seq
        self._seq = seq + 1
        head = _pack(seq, _monotonic_ns() - self._t0, _PROXY, kind, len(t), len(body)) + t
        if end:
            # set before the append: the sealer marks the chunk holding this seq final
            self._end_seq = seq
        self._buf.extend((head, body))
        n = len(head) + len(body)
        self._in += n
        self._rec._in += n
        if force:
            self._force = True
            self._rec._wake.set()

    def decision(self, payload: dict, denied: bool) -> None:
        """A policy decision; a deny seals the chunk at once, except while the recorder is
        unhealthy (an outage: statements are being refused), when refusals ride the next
        chunk instead of costing a chunk and a checkpoint each."""
        if self._ended:
            return
        self.decision_json(dump_json({**payload, "denied": denied}), denied)

    def decision_json(self, body: bytes, denied: bool) -> None:
        """``decision`` with the payload already rendered: ``body`` is ``dump_json`` of the
        payload including ``"denied"`` (proxy/decision_records.py renders it from cached
        parts)."""
        if self._ended:
            return
        if denied or self._lock is not None:
            self._append_body(_DECISION, b"deny" if denied else b"allow", body,
                              denied and self._rec.healthy)
            return
        # an allowed statement, the common case: ``_append_body_unlocked`` inline (no force)
        seq = self._seq
        self._seq = seq + 1
        head = _pack(seq, _monotonic_ns() - self._t0, _PROXY, _DECISION, 5, len(body)) + b"allow"
        self._buf.extend((head, body))
        n = len(head) + len(body)
        self._in += n
        self._rec._in += n

    def event(self, kind: str, payload: dict) -> None:
        if self._ended:
            return
        self._append(Kind.META, kind, payload, False)

    def end(self, cause: str, detail: str = "") -> None:
        """The last record: the sealer's next tick (at most ~100 ms later) seals the final
        chunk and checkpoint; later calls are ignored.

        Not forced: the sessions that end within one tick are sealed in one pass and
        spooled as one fsynced batch (under a connection per transaction, one batch,
        sealer wake-up and upload round per tick instead of per session). Nothing waits
        on it: the client has gone, and the records stay in memory, counted against the
        health gate, until the spool has them, as any record between two ticks does."""
        if self._ended:
            return
        self._ended = True
        self._append(Kind.META, "session.end", {"cause": cause, "detail": detail}, False, end=True)

    @property
    def ended(self) -> bool:
        return self._ended


class Recorder:
    """One per worker process: owns the signing key, the spool slot and the two threads."""

    def __init__(self, config: RecorderConfig, *, store: Store | None = None, signing_key=None):
        config.validate()
        self.config = config
        # a store named by URL is opened here too (a bad URL or bucket fails at start), but
        # uploaded to by the upload process, which opens its own
        by_process = store is None and config.upload_process
        self._store = store if store is not None else open_store(config.store, **config.s3_options())
        if signing_key is None:
            path = config.signing_key
            if not os.path.exists(path):
                if not config.create_key:
                    raise FileNotFoundError(f"recorder.signing_key {path} does not exist")
                generate_keypair(path)
                log.warning("created signing key %s (public key %s.pub)", path, path)
            signing_key = load_private_key(path)
        self._key = signing_key
        self._key_id = key_id(signing_key.public_key())
        self._spool = Spool(config.spool_dir, fsync=config.fsync)
        self._sessions: dict[str, SessionRecorder] = {}
        self._sessions_lock = threading.Lock()
        self._control: SessionRecorder | None = None
        self._control_ids: set[str] = set()
        self._wake = threading.Event()
        self._in = 0  # bytes appended by all sessions (caller threads)
        self._out = 0  # bytes spooled (sealer)
        self._hard_limit = 2 * config.max_memory_bytes
        self._soft_limit = config.max_memory_bytes // 2  # ``behind``
        # ``healthy``'s limits, read for every statement (a config is not a compiled class)
        self._max_memory = config.max_memory_bytes
        self._fail_after_bytes = config.fail_after_bytes
        self._batches: collections.deque[Batch] = collections.deque()
        self._batches_cv = threading.Condition()
        self._spool_bytes = 0
        self._loaded = 0  # bytes of the spool batch being uploaded, held in memory
        self._store_failing_since: float | None = None
        self._spool_failing = False
        self._last_error = ""
        self._stopping = False
        self._sealer_done = threading.Event()
        self._started = False
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._alive = True
        self._alive_checked_until = 0.0  # see _threads_alive
        # time.monotonic() of the uploader's last answer, or of a batch arriving when none
        # waited: the clock of _check_stalled
        self._progress_at = 0.0
        # the upload process (a store URL), or the uploader thread's Uploader (a store object)
        pub = signing_key.public_key()  # the uploader logs heads this key signed only
        self._uploads = UploadProcess(config, self._apply, pub) if by_process else None
        self._uploader = None if by_process else Uploader(self._store, self._spool, config, pub)
        if self._uploader is not None:
            self._uploader.control_ids = self._control_ids  # the same set: it sees new ones
        self.stats = collections.Counter(
            chunks=0, raw_bytes=0, stored_bytes=0, objects_stored=0, store_errors=0, throttled=0,
            conflicts=0)

    @classmethod
    def from_config(cls, cfg: RecorderConfig) -> Recorder:
        return cls(cfg)

    @property
    def store(self) -> Store:
        """The store (for reading; the upload process writes to its own, opened from the
        same URL)."""
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        """Another store from now on, for the uploader thread (tests inject faults so)."""
        if self._uploads is not None:
            raise RuntimeError("the upload process opens its own store: set "
                               "recorder.upload_process = false to swap it")
        self._store = store
        if self._uploader is not None:
            self._uploader.store = store

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Claim a spool slot, queue what a previous process left there, start the threads."""
        if self._started:
            return
        leftovers = self._spool.claim()
        self._progress_at = time.monotonic()
        for b in leftovers:
            self._batches.append(b)
            self._spool_bytes += b.size
            if self._uploads is not None:
                self._uploads.submit(b)
        if leftovers:
            log.warning("recorder: %d spooled batches left from a previous run; uploading",
                        len(leftovers))
            # the recovery itself is evidence: say so in this process's control stream
            self.control_event("recorder.spool_recovered", {
                "batches": len(leftovers), "bytes": sum(b.size for b in leftovers),
                "files": [str(b.path) for b in leftovers[:100]]})
        self._threads = [
            threading.Thread(target=self._seal_loop, name="pgwitness-sealer", daemon=True)]
        if self._uploads is not None:
            self._uploads.start()
        else:
            self._threads.append(threading.Thread(target=self._upload_loop,
                                                  name="pgwitness-uploader", daemon=True))
        for t in self._threads:
            t.start()
        self._started = True

    def close(self, timeout: float = 10.0) -> None:
        """End live sessions, seal everything, upload for up to `timeout`; the rest stays spooled."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        if self._uploader is not None:
            self._uploader.deadline = deadline
        with self._sessions_lock:
            live = list(self._sessions.values())
        for s in live:
            if s is not self._control:
                s.end("recorder-shutdown")
        if not self._started:
            self._spool.close()
            return
        self._stopping = True
        self._wake.set()
        self._sealer_done.wait(max(0.0, deadline - time.monotonic()))
        with self._batches_cv:
            while self._batches and time.monotonic() < deadline:
                self._batches_cv.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self._batches_cv.notify_all()
        if self._uploads is not None:
            self._uploads.close(deadline)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()) + 0.5)
        if self._uploader is not None:
            self._uploader.close()
        if self._batches:
            log.warning("recorder: closed with %d batches still spooled in %s",
                        len(self._batches), self._spool.slot)
        self._spool.close()

    # -- API used by the proxy -----------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """False while recording cannot be guaranteed; the proxy then refuses statements."""
        if not self._started or self._closed:
            return False
        if self._spool_failing or not self._threads_alive():
            return False
        since = self._store_failing_since
        if since is not None and time.monotonic() - since > self.config.fail_after_seconds:
            return False
        if self._spool_bytes > self._fail_after_bytes:
            return False
        return self._in - self._out <= self._max_memory

    def behind(self) -> bool:
        """More waits to be sealed than half of ``max_memory_bytes``: sessions stop reading
        until the sealer caught up (proxy.flow), so one session streaming fast makes itself
        wait instead of pushing the recorder past ``max_memory_bytes``, where the health
        gate refuses every session's statements."""
        return self._in - self._out > self._soft_limit

    def _threads_alive(self) -> bool:
        # Asked for every statement: Thread.is_alive() costs as much as recording the
        # statement, so liveness is looked at no more than every 100 ms.
        now = _monotonic()
        if now >= self._alive_checked_until:
            uploads = self._uploads
            self._alive = all(t.is_alive() for t in self._threads) and (
                uploads is None or uploads.alive())
            self._alive_checked_until = now + 0.1
            self._check_stalled(now)
        return self._alive

    def _check_stalled(self, now: float) -> None:
        """Batches wait and no try at one has finished for fail_after_seconds (a store that
        hangs, an upload process stopped or stuck): the store counts as failing since the
        last answer, so the health gate refuses rather than serve while nothing is stored."""
        if not self._batches or self._store_failing_since is not None:
            return
        quiet = now - self._progress_at
        if quiet > self.config.fail_after_seconds:
            self._store_failing_since = self._progress_at
            self._last_error = f"no upload has finished for {quiet:.1f} s with batches waiting"
            log.error("recorder: %s", self._last_error)

    @property
    def status(self) -> dict:
        """Numbers for metrics and error messages."""
        since = self._store_failing_since
        return {
            "healthy": self.healthy, "memory_bytes": self._in - self._out + self._loaded,
            "spool_bytes": self._spool_bytes, "spool_batches": len(self._batches),
            "store_failing_seconds": 0.0 if since is None else time.monotonic() - since,
            "last_error": self._last_error, "live_sessions": len(self._sessions),
            "upload_restarts": 0 if self._uploads is None else self._uploads.restarts,
            **self.stats,
        }

    def open_session(self, meta: dict) -> SessionRecorder:
        if self._closed:
            raise RecorderClosed("recorder is closed")
        s = SessionRecorder(self, chunks.new_session_id(), meta)
        self._start_record(s)
        with self._sessions_lock:
            self._sessions[s.id] = s
        self._index("session.opened", {"session": s.id})
        return s

    def _start_record(self, s: SessionRecorder) -> None:
        start = {
            "format": 1, "session": s.id, "wall_ns": s._wall0, "key_id": self._key_id.hex(),
            "host": socket.gethostname(), "pid": os.getpid(), "meta": s.meta,
        }
        # Chunk 0 closes one sealer tick after the start (not at once): a session shorter
        # than that (connect, one statement, close) is sealed and signed once, at its end,
        # instead of twice. The records wait in memory either way; nothing is served
        # unrecorded (the health gate), and verify's checks do not change.
        s._start_pending = True
        s._append(Kind.META, "session.start", start, False)

    def control_event(self, kind: str, payload: dict, force: bool = True) -> None:
        """An event in this process's own chained control stream. Grant lifecycle events
        seal a chunk at once (``force``); others (``login.refused``) ride the next one, so
        a flood of them costs a bounded number of objects."""
        if self._closed:
            raise RecorderClosed("recorder is closed")
        self._control_stream()._append(Kind.CONTROL, kind, payload, force)

    def control_stream_id(self) -> str | None:
        """The id of the control stream ``control_event`` records into (started now if this
        process has none yet), or None once the recorder is closed. The grant store names it
        with each change it stores (``GrantStore(event_stream=...)``), so a session's start
        can say where its grant's events are."""
        if self._closed:
            return None
        return self._control_stream().id

    def _control_stream(self) -> SessionRecorder:
        with self._sessions_lock:
            ctl = self._control
        if ctl is None:
            ctl = SessionRecorder(self, chunks.new_session_id(), {"stream": "control"})
            ctl._lock = threading.Lock()  # control records come from several threads
            self._control_ids.add(ctl.id)
            if self._uploads is not None:
                self._uploads.control_id(ctl.id)
            self._start_record(ctl)
            with self._sessions_lock:
                if self._control is None:
                    self._control = ctl
                    self._sessions[ctl.id] = ctl
                ctl = self._control
        return ctl

    def _index(self, type_: str, payload: dict) -> None:
        """Session index entry in the control stream (not forced: it rides the next chunk).

        `verify --all` cross-checks them: a session the index says was opened must exist,
        and one it says was closed must still end with that final chunk and chain, which
        makes deleting a whole session or the tail of a closed one detectable.
        """
        ctl = self._control_stream()
        if ctl._ended:  # only at shutdown, after the control stream's own end
            log.warning("recorder: control stream already ended; %s not indexed", type_)
            return
        ctl._append(Kind.CONTROL, type_, payload, False)

    # -- back-pressure -------------------------------------------------------------------

    def _throttle(self) -> None:
        # The sealer only needs CPU and the local disk, so this wait is short unless the
        # spool disk itself fails; memory stays bounded either way.
        self._wake.set()
        self.stats["throttled"] += 1
        deadline = time.monotonic() + 5.0
        while self._in - self._out > self.config.max_memory_bytes and time.monotonic() < deadline:
            time.sleep(0.001)

    # -- sealer --------------------------------------------------------------------------

    def _seal_loop(self) -> None:
        cfg = self.config
        tick = min(0.1, cfg.chunk_max_seconds / 4)
        max_age_ns = int(cfg.chunk_max_seconds * 1e9)
        start_ns = int(tick * 1e9)
        zc = zstandard.ZstdCompressor(level=cfg.zstd_level)
        pending: list[tuple[str, bytes]] = []
        pending_bytes = 0
        done = False
        try:
            while not done:
                self._wake.wait(tick)
                self._wake.clear()
                stopping = self._stopping
                now = _monotonic_ns()
                with self._sessions_lock:
                    live = list(self._sessions.values())
                    ctl = self._control
                    if stopping and ctl is not None and not ctl._ended and all(
                            x is ctl for x in live):
                        ctl.end("recorder-shutdown")  # after every session's index entry
                if ctl is not None and ctl in live:
                    # the control stream goes first, so index entries appended while sealing
                    # the sessions below land in a later spool batch than those sessions
                    live.remove(ctl)
                    live.insert(0, ctl)
                for s in live:
                    if not s._buf:
                        continue
                    force = s._force
                    if force:
                        s._force = False
                    ended = s._ended
                    due = (force or ended or stopping
                           or (s._start_pending and now - s._t0 >= start_ns)
                           or s._in - s._out >= s._chunk_bytes
                           or now - s._sealed_at >= max_age_ns)
                    if not due:
                        continue
                    objs, nbytes = self._seal(s, zc)
                    pending += objs
                    pending_bytes += nbytes
                    if s._final_sealed:
                        with self._sessions_lock:
                            self._sessions.pop(s.id, None)
                        if s is not ctl:
                            self._index("session.closed", {
                                "session": s.id, "final_chunk": s._n - 1,
                                "chain": s._chain.hex(), "records": s._next_seq})
                if pending:
                    try:
                        batch = self._spool.write(pending)
                    except SpoolError as e:
                        self._spool_failing = True
                        self._last_error = str(e)
                        log.error("recorder: cannot write spool: %s", e)
                        time.sleep(0.1)
                        continue  # keep `pending` in memory and retry
                    self._spool_failing = False
                    pending, self._out = [], self._out + pending_bytes
                    pending_bytes = 0
                    with self._batches_cv:
                        if not self._batches:
                            self._progress_at = time.monotonic()
                        self._batches.append(batch)
                        self._spool_bytes += batch.size
                        self._batches_cv.notify_all()
                    if self._uploads is not None:
                        self._uploads.submit(batch)
                if stopping:
                    with self._sessions_lock:
                        done = not self._sessions
        except Exception:
            log.exception("recorder sealer crashed")
            self._last_error = "sealer crashed"
            raise
        finally:
            self._sealer_done.set()
            with self._batches_cv:
                self._batches_cv.notify_all()

    def _seal(self, s: SessionRecorder, zc) -> tuple[list[tuple[str, bytes]], int]:
        """Cut everything pending in `s` into chunks of at most ~chunk_max_bytes."""
        objs: list[tuple[str, bytes]] = []
        total = 0
        buf = s._buf
        popleft = buf.popleft
        limit = s._chunk_bytes
        s._sealed_at = _monotonic_ns()
        s._kicked = False
        s._start_pending = False
        # Only what is pending now: records the caller appends while this chunk is being
        # compressed and signed wait for the next cut (else a busy session would be cut
        # into a stream of tiny chunks, each with its own checkpoint and upload).
        remaining = len(buf) // 2
        while remaining:
            # records are (header, payload) pairs, see wire(); taken 64 at a time (a
            # Python loop per record was the sealer's main cost), the chunk closing after
            # the record that reaches the size limit, as if taken one by one
            parts: list[bytes] = []
            size = 0
            while remaining and size < limit:
                k = min(remaining, 64)
                batch = [popleft() for _ in range(2 * k)]
                bsize = sum(map(len, batch))
                if size + bsize >= limit:
                    i = 0
                    while size < limit:
                        size += len(batch[i]) + len(batch[i + 1])
                        i += 2
                    buf.extendleft(reversed(batch[i:]))  # older than anything appended since
                    parts += batch[:i]
                    remaining -= i // 2
                    break
                parts += batch
                size += bsize
                remaining -= k
            raw = b"".join(parts)
            first_seq = s._next_seq
            next_seq = first_seq + len(parts) // 2
            is_final = s._end_seq is not None and next_seq == s._end_seq + 1
            objs += self._sealed_objects(s, zc, raw, first_seq, next_seq, is_final)
            s._next_seq = next_seq
            s._out += size
            total += size
        return objs, total

    def _sealed_objects(self, s, zc, raw: bytes, first_seq: int, next_seq: int, final: bool):
        n = s._n
        blob = chunks.encode_chunk(s.id, n, first_seq, next_seq - first_seq, raw, zc)
        digest = hashlib.sha256(blob).digest()
        s._chain = chunks.chain_next(s._chain, n, digest)
        ckpt = Checkpoint(
            session_id=s.id, n=n, chain=s._chain, chunk_sha256=digest,
            state=State.FINAL if final else State.OPEN, first_seq=first_seq, next_seq=next_seq,
            time_ns=time.time_ns(), key_id=self._key_id,
        ).signed(self._key)
        s._n = n + 1
        if final:
            s._final_sealed = True
        self.stats["chunks"] += 1
        self.stats["raw_bytes"] += len(raw)
        self.stats["stored_bytes"] += len(blob)
        return [(chunks.chunk_key(s.id, n), blob), (chunks.ckpt_key(s.id, n), ckpt.encode())]

    # -- uploader ------------------------------------------------------------------------

    def _upload_loop(self) -> None:
        """The uploader thread (a store object handed to ``Recorder``): the upload process's
        loop (recorder/upload_process.py), in this process."""
        up = self._uploader
        assert up is not None
        while True:
            with self._batches_cv:
                while not self._batches:
                    if self._sealer_done.is_set():
                        return
                    self._batches_cv.wait(0.1)
                batch = self._batches[0]
            if up.past_deadline():
                return  # what is left stays spooled for the next start()
            self._loaded = batch.size
            try:
                attempt = up.upload(batch)
            finally:
                self._loaded = 0
            self._apply(attempt)
            delay = up.retry_delay(attempt)
            if delay:
                time.sleep(delay)

    def _apply(self, a: Attempt) -> None:
        """Book one try at the oldest spool batch, from the uploader thread or the upload
        process's receiver: counters, errors for health and status, and a stored batch
        leaves the spool."""
        self._progress_at = time.monotonic()
        self.stats.update(a.stats)
        if a.error:
            self._last_error = a.error
        if a.spool_error:
            self._spool_failing = True
        if not a.done:
            since = a.failing_since
            if since is not None:
                # the earliest failure since the last stored batch: a restarted upload
                # process starts its own count later, and must not reset the proxy's
                old = self._store_failing_since
                self._store_failing_since = since if old is None else min(old, since)
            return
        self._store_failing_since = None
        with self._batches_cv:
            batch = self._batches[0] if self._batches else None
        if batch is None or str(batch.path) != a.path:
            raise RuntimeError(f"recorder: stored {a.path}, but the oldest batch is {batch}")
        self._spool.remove(batch)
        with self._batches_cv:
            self._batches.popleft()
            self._spool_bytes -= batch.size
            self._batches_cv.notify_all()
