"""On-disk write-ahead spool: sealed chunks+checkpoints wait here until the store has them.

Each Recorder claims one `slot-N/` directory (flock on `slot-N/lock`). A batch file holds
every object sealed in one writer tick, written to a temp name, fsynced and renamed, so a
crash leaves whole batches or nothing. On start, slots whose owner died are claimed too and
drained first, oldest batch first.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .store.local import fsync_dir, write_file

BATCH_MAGIC = b"PGWS\x01"
_ENTRY = struct.Struct(">HI")  # key length, data length


class SpoolError(OSError):
    """The spool could not be written or read."""


class SpoolCorrupt(SpoolError):
    """A batch file does not decode (disk fault); it is set aside, never uploaded."""


@dataclass
class Batch:
    """A spooled batch; its bytes stay on disk until the uploader reads them (bounded memory)."""

    path: Path
    size: int
    done: set[int] = field(default_factory=set)  # indexes already in the store

    def read(self) -> list[tuple[str, bytes]]:
        try:
            buf = self.path.read_bytes()
        except OSError as e:
            raise SpoolError(f"spool {self.path}: {e}") from e
        return decode_batch(buf)

    def set_aside(self) -> Path:
        dest = self.path.with_suffix(".corrupt")
        os.rename(self.path, dest)
        return dest


def encode_batch(entries: list[tuple[str, bytes]]) -> bytes:
    parts = [BATCH_MAGIC]
    for key, data in entries:
        k = key.encode()
        parts += [_ENTRY.pack(len(k), len(data)), k, data]
    return b"".join(parts)


def decode_batch(buf: bytes) -> list[tuple[str, bytes]]:
    try:
        return _decode_batch(buf)
    except (struct.error, UnicodeDecodeError) as e:
        raise SpoolCorrupt(f"bad spool batch: {e}") from None


def _decode_batch(buf: bytes) -> list[tuple[str, bytes]]:
    if not buf.startswith(BATCH_MAGIC):
        raise SpoolCorrupt("not a spool batch")
    off, out = len(BATCH_MAGIC), []
    while off < len(buf):
        klen, dlen = _ENTRY.unpack_from(buf, off)
        off += _ENTRY.size
        key = buf[off : off + klen].decode()
        off += klen
        data = buf[off : off + dlen]
        if len(data) != dlen:
            raise SpoolCorrupt("truncated spool batch")
        off += dlen
        out.append((key, data))
    return out


class Spool:
    def __init__(self, root: str | os.PathLike, *, fsync: bool = True):
        self.root = Path(root)
        self.fsync = fsync
        self.slot: Path | None = None
        self._locks: dict[Path, int] = {}
        self._counter = 0

    def _try_lock(self, slot: Path) -> bool:
        fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._locks[slot] = fd
        return True

    def claim(self) -> list[Batch]:
        """Claim a slot; return leftover batches of it and of every orphaned slot, in order."""
        self.root.mkdir(parents=True, exist_ok=True)
        leftovers: list[Batch] = []
        slots = sorted(p for p in self.root.glob("slot-*") if p.is_dir())
        for slot in slots:
            if not self._try_lock(slot):
                continue
            if self.slot is None:
                self.slot = slot
            leftovers += self._load(slot)
        k = 0
        while self.slot is None:
            slot = self.root / f"slot-{k}"
            k += 1
            try:
                slot.mkdir()
            except FileExistsError:
                continue
            if self.fsync:
                fsync_dir(self.root)
            if self._try_lock(slot):
                self.slot = slot
        # own slot's batches keep numbering after the highest leftover
        own = [b for b in leftovers if b.path.parent == self.slot]
        self._counter = max((int(b.path.stem) for b in own), default=-1) + 1
        return leftovers

    def _load(self, slot: Path) -> list[Batch]:
        out = []
        for p in sorted(slot.iterdir()):
            if p.name.startswith(".tmp-"):
                p.unlink(missing_ok=True)  # torn write from a crash: never renamed, never acked
            elif p.suffix == ".spool":
                out.append(Batch(p, p.stat().st_size))
        return out

    def write(self, entries: list[tuple[str, bytes]]) -> Batch:
        assert self.slot is not None, "claim() first"
        buf = encode_batch(entries)
        path = self.slot / f"{self._counter:016d}.spool"
        tmp = self.slot / f".tmp-{path.name}"
        try:
            write_file(tmp, buf, flags=os.O_TRUNC, mode=0o600, fsync=self.fsync)
            os.rename(tmp, path)
            if self.fsync:
                fsync_dir(self.slot)
        except OSError as e:
            raise SpoolError(f"spool {self.slot}: {e}") from e
        self._counter += 1
        return Batch(path, len(buf))

    def keep(self, key: str, data: bytes) -> Path:
        """Keep a copy of an object the store would not take (its key held something else)
        under `conflicts/`, outside every slot: it is never uploaded or removed by us."""
        d = self.root / "conflicts"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{key.replace('/', '_')}.{os.urandom(4).hex()}"
        try:
            write_file(path, data, flags=os.O_EXCL, mode=0o400, fsync=self.fsync)
        except OSError as e:
            raise SpoolError(f"spool {d}: {e}") from e
        return path

    def remove(self, batch: Batch) -> None:
        batch.path.unlink(missing_ok=True)
        slot = batch.path.parent
        if slot != self.slot and not any(slot.glob("*.spool")):
            self._release(slot, remove=True)

    def _release(self, slot: Path, remove: bool) -> None:
        fd = self._locks.pop(slot, None)
        if remove:
            (slot / "lock").unlink(missing_ok=True)
            try:
                slot.rmdir()
            except OSError:
                pass
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for slot in list(self._locks):
            self._release(slot, remove=False)
