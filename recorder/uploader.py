"""Puts spooled batches into the store: what the recorder's uploader does with one batch.

``Uploader.upload(batch)`` is one attempt at one spool batch: every object of it stored,
each session's objects strictly in order (chunk n, checkpoint n, chunk n+1, ...), or as
far as the store let it go. It returns an ``Attempt``: what the recorder must book (the
batch can go, the store is failing since when, counters). The recorder applies it with
``Recorder._apply`` whether the attempt ran in its own uploader thread (a store object
handed to ``Recorder``) or in the upload process (``recorder/upload_process.py``: a
store named by URL, the product's case), so both run this one piece of code.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import chunks
from .config import RecorderConfig
from .signing import CheckpointError, decode_checkpoint, key_id
from .spool import Batch, Spool, SpoolCorrupt, SpoolError
from .store import ObjectExists, Store, StoreError

log = logging.getLogger("pgwitness.recorder")


@dataclass
class Attempt:
    """The outcome of one ``Uploader.upload``, booked by the recorder (``Recorder._apply``)."""

    path: str
    done: bool  # every object is in the store, or the batch was set aside: drop it
    stats: dict[str, int] = field(default_factory=dict)
    failing_since: float | None = None  # time.monotonic() the store's failures began
    error: str = ""  # the newest error, for status()
    spool_error: bool = False  # the spool batch could not be read


class Uploader:
    """Stores spool batches for one recorder. Not thread-safe: one caller at a time."""

    def __init__(self, store: Store, spool: Spool, config: RecorderConfig,
                 public_key: Ed25519PublicKey | None = None):
        self.store = store
        # the recorder's own key: a control-stream checkpoint is logged as the stream's head
        # (an anchor for verify) only if it signed it (None: nothing is logged as a head)
        self.public_key = public_key
        self.spool = spool  # only for keep() and Batch.set_aside(): never claims a slot
        self.control_ids: set[str] = set()  # the control stream's ids: their heads are logged
        self.deadline: float | None = None  # time.monotonic() past which nothing is started
        self._config = config
        self._backoff = config.retry_min_seconds
        self._pool: ThreadPoolExecutor | None = None
        self._failing_since: float | None = None
        self._attempt = Attempt("", False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def retry_delay(self, a: Attempt) -> float:
        """Seconds to wait before the next try: none after a stored batch, else a back-off
        doubling from retry_min_seconds to retry_max_seconds (retries never stop)."""
        cfg = self._config
        if a.done:
            self._backoff = cfg.retry_min_seconds
            return 0.0
        delay = self._backoff
        self._backoff = min(delay * 2, cfg.retry_max_seconds)
        return delay

    def past_deadline(self) -> bool:
        d = self.deadline
        return d is not None and time.monotonic() > d

    def upload(self, batch: Batch) -> Attempt:
        """One try at ``batch``: objects already stored by an earlier try (``batch.done``)
        are skipped, so a retry goes on where the last one stopped."""
        a = self._attempt = Attempt(str(batch.path), False)
        try:
            entries = batch.read()
        except SpoolCorrupt as e:
            dest = batch.set_aside()
            log.error("recorder: %s; moved to %s, skipping it", e, dest)
            self._count("spool_corrupt")
            a.done = True
            return a
        except SpoolError as e:
            a.spool_error = True
            a.error = str(e)
            log.error("recorder: cannot read spool batch: %s", e)
            return a
        a.done = self._upload_entries(batch, entries)
        if a.done:
            self._failing_since = None
        a.failing_since = self._failing_since
        return a

    def _count(self, name: str, n: int = 1) -> None:
        stats = self._attempt.stats
        stats[name] = stats.get(name, 0) + n

    def _upload_entries(self, batch: Batch, entries: list[tuple[str, bytes]]) -> bool:
        by_session: dict[str, list[int]] = {}
        for i, (key, data) in enumerate(entries):
            if i in batch.done:
                continue
            if not chunks.is_object_key(key):
                # not a key the sealer writes (one climbing out of the store, say): an entry
                # someone added to the spool. Never stored, never retried; said loudly
                log.error("recorder: spool batch %s holds an entry with key %s (%d bytes) that "
                          "pgwitness never writes: dropped, not stored", batch.path, ascii(key),
                          len(data))
                self._count("spool_rejected")
                batch.done.add(i)
                continue
            by_session.setdefault(key.rsplit("/", 2)[-2], []).append(i)
        if not by_session:
            return True

        def upload(indexes: list[int]) -> bool:
            for i in indexes:  # in order: chunk n, ckpt n, chunk n+1, ...
                if self.past_deadline():
                    return False
                key, data = entries[i]
                try:
                    self.store.put(key, data)
                    outcome: Exception | None = None
                except Exception as e:  # a bug in a store must not kill the uploader
                    outcome = e
                if not self._settle(batch, i, key, data, outcome):
                    return False
            return True

        groups = list(by_session.values())
        if hasattr(self.store, "put_many"):
            return self._upload_in_steps(batch, entries, groups)
        if len(groups) == 1:
            return upload(groups[0])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._config.upload_concurrency,
                                            thread_name_prefix="pgwitness-upload")
        return all(list(self._pool.map(upload, groups)))

    def _upload_in_steps(self, batch: Batch, entries: list[tuple[str, bytes]],
                         groups: list[list[int]]) -> bool:
        """For a store with ``put_many`` (the local store): step k stores the k-th object of
        every session in the batch in one call, durable (files and directories fsynced)
        before step k+1 starts, so each session's objects still land strictly in order
        (chunk n, checkpoint n, chunk n+1, ...) while the fsyncs of a directory are shared
        by the objects of that step. A session whose object fails stops there (the rest
        of it waits for the retry); the others go on."""
        put_many = self.store.put_many  # type: ignore[attr-defined]
        ok = True
        while groups:
            if self.past_deadline():
                return False
            step = [g[0] for g in groups]
            try:
                results = put_many([entries[i] for i in step])
                if len(results) != len(step):
                    raise StoreError(f"put_many: {len(results)} outcomes for {len(step)} objects")
            except Exception as e:  # a bug in a store must not kill the uploader
                log.exception("recorder: store put_many crashed")
                self._note_failure(e)
                return False
            going = []
            for g, i, err in zip(groups, step, results, strict=True):
                key, data = entries[i]
                if not self._settle(batch, i, key, data, err):
                    ok = False
                elif len(g) > 1:
                    going.append(g[1:])
            groups = going
        return ok

    def _settle(self, batch: Batch, i: int, key: str, data: bytes,
                outcome: Exception | None) -> bool:
        """Book the outcome of storing object ``i`` of ``batch`` (None: stored); whether
        that session's later objects may follow it."""
        if outcome is None:
            batch.done.add(i)
            self._count("objects_stored")
            if key.endswith(".ckpt") and key.rsplit("/", 2)[-2] in self.control_ids:
                self._log_head(key, data)
            return True
        if isinstance(outcome, ObjectExists):
            return self._conflict(key, data, outcome)
        if not isinstance(outcome, (StoreError, OSError)):  # a bug in a store
            log.error("recorder: store put %s crashed", key, exc_info=outcome)
        self._note_failure(outcome)
        return False

    def _conflict(self, key: str, data: bytes, e: ObjectExists) -> bool:
        """Our key holds an object we did not write (the same bytes would have been a
        success): someone with write access planted it. Keep our copy in the spool, store
        it under an unpredictable conflict key that verify reads, and say so loudly."""
        try:
            kept = self.spool.keep(key, data)
        except SpoolError as err:
            self._attempt.spool_error = True
            self._attempt.error = str(err)
            log.error("recorder: cannot keep a copy of %s: %s", key, err)
            return False
        alt = chunks.conflict_key(key)
        try:
            self.store.put(alt, data)
        except (StoreError, OSError) as err:
            self._note_failure(err)
            return False
        self._count("conflicts")
        self._attempt.error = f"{key}: {e}"
        log.error("recorder: %s in store %s is not what pgwitness sealed (%s): an object was "
                  "planted there. Stored ours as %s; spool copy kept at %s",
                  key, self.store.url, e, alt, kept)
        return True

    def _log_head(self, key: str, data: bytes) -> None:
        """An external anchor for verify (--anchor): the control stream's newest stored
        checkpoint, in the proxy's log, which an attacker on the store cannot rewrite.

        Only a checkpoint the recorder's own key signed, for the place its key names, is
        logged. The spool is a directory, not the sealer's memory: an entry someone added to
        it (a checkpoint for a control stream's next key) was stored above like any object,
        but logged as the head it would make ``verify --anchor`` expect a checkpoint number
        and chain the store never attests (the highest logged number wins, so one forged
        head with a huge number would stand in for every later real one: a permanent
        failure that hides a real truncation among false ones), and its session id, any
        string, would go into the log as it is. So a checkpoint that does not verify is
        never a head: it is logged as an error (and counted, ``heads_rejected``); verify
        reports the object itself (planted, bad-signature)."""
        where = f"control-stream checkpoint {ascii(key)} in the spool"
        why = ""
        try:
            ckpt = decode_checkpoint(data)
        except CheckpointError as e:  # an entry someone put in the spool: never crash here
            ckpt, why = None, f"does not decode ({e})"
        pk = self.public_key
        if ckpt is None:
            pass
        elif pk is None:
            why = "cannot be verified (the uploader has no public key)"
        elif ckpt.key_id != key_id(pk) or not ckpt.verify(pk):
            why = "is not signed by this recorder's key"
        elif chunks.ckpt_key(ckpt.session_id, ckpt.n) != key:
            why = f"is signed for another place (checkpoint {ckpt.n} of {ascii(ckpt.session_id)})"
        if why or ckpt is None:
            self._count("heads_rejected")
            log.error("recorder: %s %s: not logged as the stream's head", where, why)
            return
        log.info("control stream head", extra={"fields": {
            "stream": ckpt.session_id, "n": ckpt.n, "chain": ckpt.chain.hex()}})

    def _note_failure(self, e: Exception) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.error("recorder: store %s failing: %s", self.store.url, e)
        self._attempt.failing_since = self._failing_since
        self._attempt.error = str(e)
        self._count("store_errors")

