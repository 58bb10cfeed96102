"""Session recording: chunks, hash chain, signed checkpoints, stores, spool, verify, replay."""

import common.compiled  # noqa: F401  # first: compiled or pure hot path (the one import of common)

from .config import RecorderConfig
from .replay import iter_records, replay_session
from .store import ObjectExists, ObjectMissing, Store, StoreError, open_store
from .verify import Problem, Report, verify_all, verify_session
from .writer import Recorder, RecorderClosed, SessionRecorder

__all__ = [
    "ObjectExists", "ObjectMissing", "Problem", "Recorder", "RecorderClosed", "RecorderConfig",
    "Report", "SessionRecorder", "Store", "StoreError", "iter_records", "open_store",
    "replay_session", "verify_all", "verify_session",
]
