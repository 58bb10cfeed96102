"""Session recording: chunks, hash chain, signed checkpoints, stores, spool, verify, replay."""

from .config import RecorderConfig
from .verify import Problem, Report, verify_all, verify_session
from .writer import Recorder, RecorderClosed, SessionRecorder

__all__ = [
    "Problem", "Recorder", "RecorderClosed", "RecorderConfig", "Report", "SessionRecorder",
    "verify_all", "verify_session",
]
