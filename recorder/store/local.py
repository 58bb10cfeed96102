"""Local append-only store: one read-only file per object, fsynced, never replaced."""

from __future__ import annotations

import builtins
import os
import stat
from pathlib import Path

from ..chunks import PREFIX, is_session_id
from . import ObjectExists, ObjectMissing, StoreError


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: str | os.PathLike, data: bytes, *, flags: int, mode: int, fsync: bool) -> None:
    """Create ``path`` with ``flags`` (plus O_WRONLY|O_CREAT), write all of ``data``, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """Objects are written to an O_EXCL temp file, fsynced, then hard-linked into place.

    link(2) fails if the name exists, so an object is created at most once and a crash
    mid-write never leaves a short file under the final name.
    """

    def __init__(self, root: str | os.PathLike, *, fsync: bool = True):
        self.root = Path(root).absolute()
        self.url = f"file://{self.root}"
        self.fsync = fsync

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise ValueError(f"bad object key {key!r}")
        return self.root.joinpath(*parts)

    def _mkdirs(self, d: Path) -> None:
        missing = []
        while not d.is_dir():
            missing.append(d)
            d = d.parent
        for m in reversed(missing):
            try:
                m.mkdir()
            except FileExistsError:
                continue
            if self.fsync:
                fsync_dir(m.parent)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            self._mkdirs(path.parent)
            tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{os.urandom(4).hex()}")
            write_file(tmp, data, flags=os.O_EXCL, mode=0o444, fsync=self.fsync)
            try:
                os.link(tmp, path)
            except FileExistsError:
                existing = path.read_bytes()
                if existing != data:
                    raise ObjectExists(f"{key} exists with different content") from None
            finally:
                os.unlink(tmp)
            if self.fsync:
                fsync_dir(path.parent)
        except ObjectExists:
            raise
        except OSError as e:
            raise StoreError(f"local store {self.root}: {key}: {e}") from e

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        except OSError as e:
            raise StoreError(f"{key}: {e}") from e

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix if prefix else self.root
        if prefix and not prefix.endswith("/"):
            base = base.parent
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for f in filenames:
                if f.startswith("."):
                    continue
                key = f"{rel}/{f}" if rel != "." else f
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def sessions(self) -> builtins.list[str]:
        out: builtins.list[str] = []
        top = self.root / PREFIX
        for y in sorted(top.glob("[0-9][0-9][0-9][0-9]")):
            for m in sorted(y.glob("[0-9][0-9]")):
                for d in sorted(m.glob("[0-9][0-9]")):
                    out.extend(s.name for s in d.iterdir() if s.is_dir() and is_session_id(s.name))
        return sorted(out)

    def check(self, key: str) -> builtins.list[str]:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return ["missing"]
        problems = []
        if st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            problems.append(f"writable (mode {stat.S_IMODE(st.st_mode):04o}, want 0444)")
        return problems
