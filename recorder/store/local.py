"""Local append-only store: one read-only file per object, fsynced, never replaced."""

from __future__ import annotations

import builtins
import errno
import os
import stat
from pathlib import Path

from ..chunks import PREFIX
from . import ObjectExists, ObjectMissing, StoreError


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_ROOT_FD: int | None = None


def _root_fd() -> int:
    """A directory descriptor for linkat(2): ``os.link`` calls linkat (which follows the
    /proc/self/fd link to the open file) only when given one; "/" stays open for good."""
    global _ROOT_FD
    if _ROOT_FD is None:
        _ROOT_FD = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    return _ROOT_FD


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


class NotAnObject(OSError):
    """What sits at a key is not a regular file: a symlink, FIFO, device or directory
    someone with write access put there (the store only ever creates regular files)."""


def read_object(path: Path) -> bytes:
    """An object's bytes. Only a regular file, opened without following a symlink and
    without waiting on a FIFO: ``read_bytes`` would follow a link planted at a key (to
    ``/proc/self/fd/N``, the uploader's own temporary file holding the very bytes it
    compares) or block for ever on a FIFO (red-team round 10)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotAnObject(errno.ELOOP, "a symlink, not an object", str(path)) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotAnObject(errno.EINVAL, "not a regular file", str(path))
        parts: list[bytes] = []
        while True:
            part = os.read(fd, 1 << 20)
            if not part:
                return b"".join(parts)
            parts.append(part)
    finally:
        os.close(fd)


def _same_object(path: Path, data: bytes) -> bool:
    """Whether the object already at ``path`` holds exactly ``data`` (a retried put). Not
    a regular file is never the same: the caller reports a planted object."""
    try:
        return read_object(path) == data
    except NotAnObject:
        return False


_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_TMPFILE_PROBED = False


def _tmpfile_links(d: Path) -> bool:
    """Whether an O_TMPFILE file in ``d`` can be linked into it through /proc/self/fd (the
    kernel, the file system and /proc all allow it): tried once per process, with a hidden
    name unlinked at once, so a sandbox that refuses any step gets named temp files
    instead of a store that fails every put."""
    try:
        fd = os.open(d, _O_TMPFILE | os.O_WRONLY, 0o600)
    except OSError:
        return False
    probe = d / f".tmp-probe-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.link(f"/proc/self/fd/{fd}", probe, src_dir_fd=_root_fd(), follow_symlinks=True)
        os.unlink(probe)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class LocalStore:
    """Objects are written to an O_EXCL temp file, fsynced, then hard-linked into place.

    link(2) fails if the name exists, so an object is created at most once and a crash
    mid-write never leaves a short file under the final name. ``put_many`` does the same
    for several objects at once with one fsync per directory (the uploader's path).
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
        """``d`` and its missing parents, each new directory's entry durable."""
        parents = self._mkdirs_deferred(d)
        if self.fsync:
            for parent in sorted(parents, key=lambda p: -len(p.parts)):
                fsync_dir(parent)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            self._mkdirs(path.parent)
            tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{os.urandom(4).hex()}")
            write_file(tmp, data, flags=os.O_EXCL, mode=0o444, fsync=self.fsync)
            try:
                os.link(tmp, path)
            except FileExistsError:
                if not _same_object(path, data):
                    raise ObjectExists(f"{key} exists with different content") from None
            finally:
                os.unlink(tmp)
            if self.fsync:
                fsync_dir(path.parent)
        except ObjectExists:
            raise
        except OSError as e:
            raise StoreError(f"local store {self.root}: {key}: {e}") from e

    def put_many(self, items: builtins.list[tuple[str, bytes]]) -> builtins.list[Exception | None]:
        """Create several objects (distinct keys, typically one per session), each as
        ``put`` does: a new file (mode 0444) written and fsynced before it is linked under
        its name, never replacing one, the same bytes again a success. Everything is
        durable when this returns: the files, their directory entries and new
        directories. What is shared: each directory is fsynced once for all the objects
        linked into it (and a new directory's parent once), and the file is an unnamed
        ``O_TMPFILE`` where the kernel supports it (no temporary name to create and
        unlink). Returns one outcome per item: None (stored), ObjectExists, StoreError
        or ValueError (a bad key); one item's failure does not stop the others."""
        out: builtins.list[Exception | None] = [None] * len(items)
        fds: builtins.list[tuple[int, int, Path, str | None]] = []  # (item, fd, path, tmp name)
        dirs: dict[Path, builtins.list[int]] = {}  # directory -> items linked into it
        created: set[Path] = set()  # parents of directories made here
        try:
            for i, (key, data) in enumerate(items):
                try:
                    path = self._path(key)
                except ValueError as e:
                    out[i] = e
                    continue
                try:
                    created |= self._mkdirs_deferred(path.parent)
                    fd, tmp = self._open_unnamed(path.parent)
                    fds.append((i, fd, path, tmp))
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                except OSError as e:
                    out[i] = StoreError(f"local store {self.root}: {key}: {e}")
            if self.fsync:
                for i, fd, _path, _tmp in fds:
                    if out[i] is None:
                        try:
                            os.fsync(fd)
                        except OSError as e:
                            out[i] = StoreError(f"local store {self.root}: {items[i][0]}: {e}")
            for i, fd, path, tmp in fds:
                if out[i] is not None:
                    continue
                key, data = items[i]
                try:
                    try:
                        if tmp is None:
                            os.link(
                                f"/proc/self/fd/{fd}",
                                path,
                                src_dir_fd=_root_fd(),
                                follow_symlinks=True,
                            )
                        else:
                            os.link(tmp, path)
                    except FileExistsError:
                        if not _same_object(path, data):
                            out[i] = ObjectExists(f"{key} exists with different content")
                            continue
                    dirs.setdefault(path.parent, []).append(i)
                except OSError as e:
                    out[i] = StoreError(f"local store {self.root}: {key}: {e}")
        finally:
            for _i, fd, _path, tmp in fds:
                os.close(fd)
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
        if self.fsync:
            for d in sorted(created | set(dirs), key=lambda p: -len(p.parts)):
                try:
                    fsync_dir(d)
                except OSError as e:
                    err = StoreError(f"local store {self.root}: fsync {d}: {e}")
                    for i in dirs.get(d, ()):
                        out[i] = err
                    if d in created:  # a new directory's entry: everything may be in it
                        for j, _fd, path, _tmp in fds:
                            if out[j] is None and d in path.parents:
                                out[j] = err
        return out

    def _mkdirs_deferred(self, d: Path) -> set[Path]:
        """``_mkdirs`` without the fsyncs: the parents of the directories it made."""
        missing = []
        while not d.is_dir():
            missing.append(d)
            d = d.parent
        parents = set()
        for m in reversed(missing):
            try:
                m.mkdir()
            except FileExistsError:
                continue
            parents.add(m.parent)
        return parents

    def _open_unnamed(self, d: Path) -> tuple[int, str | None]:
        """A new file in ``d`` for writing, mode 0444: unnamed (O_TMPFILE) when the kernel
        and file system support it, else under an unguessable temporary name."""
        global _O_TMPFILE, _TMPFILE_PROBED
        if _O_TMPFILE and not _TMPFILE_PROBED:
            _TMPFILE_PROBED = True
            if not _tmpfile_links(d):
                _O_TMPFILE = 0
        if _O_TMPFILE:
            try:
                return os.open(d, _O_TMPFILE | os.O_WRONLY, 0o444), None
            except IsADirectoryError:  # a kernel without O_TMPFILE
                _O_TMPFILE = 0
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                _O_TMPFILE = 0  # a file system without it
        tmp = str(d / f".tmp-put-{os.getpid()}-{os.urandom(4).hex()}")
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444), tmp

    def get(self, key: str) -> bytes:
        try:
            return read_object(self._path(key))
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
                    # every directory, a name that is not a session id included: verify
                    # reports it (an alias such as "<id>\\n" is never skipped silently)
                    out.extend(s.name for s in d.iterdir()
                               if s.is_dir() and not s.name.startswith("."))
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
