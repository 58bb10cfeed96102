"""Recorder settings (the proxy maps its TOML/env/flags onto this)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RecorderConfig:
    # where recordings go: a directory / file:///dir (append-only files) or s3://bucket/prefix
    store: str = ".pgwitness/recordings"
    # local write-ahead spool; each Recorder claims its own slot-N directory under it
    spool_dir: str = ".pgwitness/spool"
    # Ed25519 private key (PEM); created (0600, with <path>.pub) if missing and create_key
    signing_key: str = ".pgwitness/signing.key"
    create_key: bool = True

    # a chunk closes at this size or age, a tick after session start, at once on a deny and at end
    chunk_max_bytes: int = 1 << 20
    chunk_max_seconds: float = 1.0
    zstd_level: int = 3

    # healthy becomes False when the store has failed for this long, or the spool holds more
    fail_after_seconds: float = 30.0
    fail_after_bytes: int = 1 << 30
    # un-spooled records in memory: healthy=False above this, wire() waits above twice this
    max_memory_bytes: int = 64 << 20

    # upload retries back off from retry_min_seconds to retry_max_seconds, forever
    retry_min_seconds: float = 0.05
    retry_max_seconds: float = 2.0
    upload_concurrency: int = 8
    fsync: bool = True
    # upload from a process of its own (recorder/upload_process.py), off the proxy's GIL;
    # false: from a thread in the proxy's process (embedding; tests that swap the store)
    upload_process: bool = True

    # S3 (boto3 credential chain unless keys are given)
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    retention_days: float = 365.0

    def s3_options(self) -> dict:
        return {
            "endpoint_url": self.s3_endpoint, "region": self.s3_region,
            "access_key_id": self.s3_access_key_id,
            "secret_access_key": self.s3_secret_access_key,
            "retention_days": self.retention_days,
        }

    def validate(self) -> None:
        for name in ("chunk_max_bytes", "chunk_max_seconds", "fail_after_seconds",
                     "fail_after_bytes", "max_memory_bytes", "upload_concurrency",
                     "retention_days", "retry_min_seconds", "retry_max_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"recorder.{name} must be > 0 (got {getattr(self, name)!r})")
        if self.chunk_max_bytes > 1 << 28:
            raise ValueError("recorder.chunk_max_bytes must be at most 256 MiB")
        if not self.store:
            raise ValueError("recorder.store must be set")
