"""Session recording: chunks, hash chain, signed checkpoints, stores, spool, verify, replay."""

import common.compiled  # noqa: F401  # first: compiled or pure hot path (the one import of common)

from .config import RecorderConfig
from .replay import iter_records, replay_session
from .store import ObjectExists, ObjectMissing, Store, StoreError, open_store
from .verify import Problem, Report, verify_all, verify_session
from .writer import Recorder, RecorderClosed, SessionRecorder

__all__ = [
    "ObjectExists", "ObjectMissing", "Problem", "Recorder", "RecorderClosed", "RecorderConfig",
    "Report", "SessionRecorder", "Store", "StoreError", "control_stream_id", "iter_records",
    "open_store", "replay_session", "verify_all", "verify_session",
]


def control_stream_id(recorder: Recorder) -> str | None:
    """The id of the control stream ``recorder.control_event`` records into (started now if
    this process has none yet), or None once the recorder is closed.

    The grant store names it with each change it stores (``GrantStore(event_stream=...)``),
    so a session's start can say where its grant's events are.
    """
    return recorder.control_stream_id()
