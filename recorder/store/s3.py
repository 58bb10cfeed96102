"""S3 store: one PutObject per object, create-only (If-None-Match) under COMPLIANCE lock."""

from __future__ import annotations

import builtins
import datetime as dt
import threading

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..chunks import PREFIX
from . import ObjectExists, ObjectMissing, StoreError

_EXISTS_CODES = {"PreconditionFailed", "412"}
_MISSING_CODES = {"NoSuchKey", "404", "NoSuchVersion", "NotFound"}


class S3Store:
    """Works against AWS and S3-compatible endpoints (SeaweedFS, MinIO, ...)."""

    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
        region: str | None = None, access_key_id: str | None = None,
        secret_access_key: str | None = None, session_token: str | None = None,
        retention_days: float = 365.0, connect_timeout: float = 3.0, read_timeout: float = 20.0,
        addressing_style: str | None = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.retention = dt.timedelta(days=retention_days)
        s3cfg = {"addressing_style": addressing_style or ("path" if endpoint_url else "auto")}
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region,
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            config=Config(
                s3=s3cfg, connect_timeout=connect_timeout, read_timeout=read_timeout,
                retries={"max_attempts": 2, "mode": "standard"},  # the writer retries forever
                max_pool_connections=32,
            ),
        )
        # key -> (oldest version id, number of object versions) from the last list()
        self._versions: dict[str, tuple[str | None, int]] = {}
        self._markers: dict[str, int] = {}  # key -> delete markers, from the last list()
        self._lock = threading.Lock()

    @property
    def client(self):
        return self._client

    def _error(self, op: str, key: str, e: Exception) -> StoreError:
        return StoreError(f"s3://{self.bucket}/{self.prefix}{key}: {op}: {e}")

    def put(self, key: str, data: bytes) -> None:
        until = dt.datetime.now(dt.UTC) + self.retention
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self.prefix + key, Body=data, IfNoneMatch="*",
                ChecksumAlgorithm="SHA256", ObjectLockMode="COMPLIANCE",
                ObjectLockRetainUntilDate=until,
            )
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _EXISTS_CODES or status == "412":
                self._compare_existing(key, data)
                return
            raise self._error("PutObject", key, e) from e
        except BotoCoreError as e:
            raise self._error("PutObject", key, e) from e

    def _compare_existing(self, key: str, data: bytes) -> None:
        """A 412: the key exists. Our own earlier put whose reply was lost holds exactly
        ``data`` (fine); anything else was planted there, and ObjectExists says so."""
        try:
            existing = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("AccessDenied", "403"):
                # docs/iam.md denies the proxy reads: it cannot tell its own lost-reply
                # retry from a planted object, so it keeps its copy under a conflict key
                # (verify notes a copy that was not needed when the original is ours)
                raise ObjectExists(f"{key} exists and cannot be read back (AccessDenied)") from e
            raise self._error("GetObject after 412", key, e) from e
        except BotoCoreError as e:
            raise self._error("GetObject after 412", key, e) from e
        if existing != data:
            raise ObjectExists(f"{key} exists with different content ({len(existing)} bytes)")

    def _list_versions(self, prefix: str) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        try:
            pages = self._client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            markers: dict[str, int] = {}
            for page in pages:
                for v in page.get("Versions", []):
                    out.setdefault(v["Key"][len(self.prefix) :], []).append(v)
                for d in page.get("DeleteMarkers", []):  # deletions tried: see history()
                    k = d["Key"][len(self.prefix) :]
                    markers[k] = markers.get(k, 0) + 1
            with self._lock:
                for k in out:
                    self._markers.pop(k, None)
                self._markers.update(markers)
        except (ClientError, BotoCoreError) as e:
            raise self._error("ListObjectVersions", prefix, e) from e
        return out

    def list(self, prefix: str) -> list[str]:
        versions = self._list_versions(prefix)
        with self._lock:
            for key, vs in versions.items():
                # S3 lists a key's versions newest first; LastModified has 1 s resolution,
                # so ties go to the later listing position (the older version)
                _, oldest = min(enumerate(vs), key=lambda iv: (iv[1]["LastModified"], -iv[0]))
                vid = oldest.get("VersionId")
                self._versions[key] = (None if vid in (None, "null") else vid, len(vs))
        return sorted(versions)

    def _version(self, key: str) -> str | None:
        with self._lock:
            known = self._versions.get(key)
        if known is None:
            self.list(key)
            with self._lock:
                known = self._versions.get(key)
        if known is None:
            raise ObjectMissing(key)
        return known[0]

    def get(self, key: str) -> bytes:
        vid = self._version(key)
        kw = {"VersionId": vid} if vid else {}
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self.prefix + key, **kw)["Body"].read()
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) in _MISSING_CODES:
                raise ObjectMissing(key) from None
            raise self._error("GetObject", key, e) from e
        except BotoCoreError as e:
            raise self._error("GetObject", key, e) from e

    def sessions(self) -> builtins.list[str]:
        out = set()
        for key in self._list_versions(PREFIX + "/"):
            parts = key.split("/")
            if len(parts) >= 6 and parts[4]:  # any name: verify reports one that is no id
                out.add(parts[4])
        return sorted(out)

    def history(self, key: str) -> builtins.list[str]:
        """Attempts on `key` that its lock withstood: delete markers (a plain DeleteObject)
        and versions written after the original (an overwrite)."""
        with self._lock:
            count = self._versions.get(key, (None, 1))[1]
            markers = self._markers.get(key, 0)
        out = []
        if count > 1:
            out.append(f"{count} versions: written again after the original (overwrite attempt)")
        if markers:
            out.append(f"{markers} delete marker{'s' if markers > 1 else ''}: deletion attempted "
                       "(the locked original is still there)")
        return out

    def check(self, key: str) -> builtins.list[str]:
        try:
            vid = self._version(key)
        except ObjectMissing:
            return ["missing"]
        problems: builtins.list[str] = []
        kw = {"VersionId": vid} if vid else {}
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self.prefix + key, **kw)
        except (ClientError, BotoCoreError) as e:
            return [*problems, f"HeadObject failed: {e}"]
        mode = head.get("ObjectLockMode")
        until = head.get("ObjectLockRetainUntilDate")
        if mode != "COMPLIANCE":
            problems.append(f"object lock mode is {mode or 'missing'}, want COMPLIANCE")
        if until is None:
            problems.append("object lock retain-until date is missing")
        return problems
