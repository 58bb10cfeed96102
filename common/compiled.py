"""The compiled hot path: which modules mypyc compiles, and when their build may be used.

The modules in ``MODULES`` are what every relayed message and every checked statement
runs through (framing, Sync groups, the relay, denials, decision records, the policy's
cache hit). ``python -m devtools.compile`` (``make``) compiles them with mypyc into
extension modules beside their sources, plus ``MANIFEST``: the SHA-256 of each source
it compiled. The ``.py`` sources stay the reference: ``make test`` runs the unit tests
on them too, and tests/unit/test_compiled.py holds the two paths to the same bytes.

``install()`` (run by each top-level package before anything else of it is imported)
decides, once per process, which of the two is imported:

- compiled, when every module's extension exists and every source still has the hash
  the build recorded;
- the pure-Python sources otherwise: ``PGWITNESS_PURE_PYTHON=1``, no build, or a stale
  build. A stale build is never used, not even in part: mypyc links the compiled modules
  to each other directly, so one edited source with the rest compiled would run the old
  code of the edited one.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

__all__ = ["MANIFEST", "MODULES", "ROOT", "Status", "install", "source_hashes", "status"]

MODULES = (
    "common.wire.messages",
    "common.wire.framing",
    "common.wire.syncgroups",
    "policy.caches",
    "policy.portals",
    "policy.engine",
    "proxy.decision_records",
    "proxy.denials",
    "proxy.relay",
    "proxy.splice",
    "recorder.writer",
)
ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "common" / "compiled.json"  # written by devtools/compile.py
GROUP = "common._native"  # mypyc's shared library: common/_native__mypyc.*.so
PURE_ENV = "PGWITNESS_PURE_PYTHON"


def source_path(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def source_hashes(root: Path = ROOT) -> dict[str, str]:
    return {
        name: hashlib.sha256(source_path(name, root).read_bytes()).hexdigest() for name in MODULES
    }


def _extension(module: str, root: Path) -> Path | None:
    base = root.joinpath(*module.split("."))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.exists():
            return candidate
    return None


class Status:
    """Which path this process imports, and why (the ``listening`` log line, tests)."""

    def __init__(self, compiled: bool, reason: str):
        self.compiled = compiled
        self.reason = reason

    def __repr__(self) -> str:
        return f"Status(compiled={self.compiled}, reason={self.reason!r})"


def decide(root: Path = ROOT, environ=os.environ) -> Status:
    """Compiled only if asked for (not ``PGWITNESS_PURE_PYTHON``) and the build is whole
    and fresh."""
    if environ.get(PURE_ENV, "") not in ("", "0"):
        return Status(False, f"{PURE_ENV} is set")
    manifest = root / MANIFEST.relative_to(ROOT)
    try:
        built = json.loads(manifest.read_text())
    except FileNotFoundError:
        return Status(False, "not built (make compile)")
    except (OSError, ValueError) as exc:
        return Status(False, f"unreadable build manifest {manifest}: {exc}")
    if not isinstance(built, dict) or not isinstance(built.get("sources"), dict):
        return Status(False, f"unreadable build manifest {manifest}: not a build record")
    if built.get("python") != sys.implementation.cache_tag:
        return Status(False, f"built for {built.get('python')!r}, not {sys.implementation.cache_tag}")
    missing = [name for name in MODULES if _extension(name, root) is None]
    if missing:
        return Status(False, f"not built: {', '.join(missing)} (make compile)")
    try:
        current = source_hashes(root)
    except OSError as exc:
        return Status(False, f"cannot read a source: {exc}")
    stale = [name for name in MODULES if built["sources"].get(name) != current[name]]
    if stale:
        return Status(False, f"stale build, sources changed: {', '.join(stale)} (make compile)")
    return Status(True, "mypyc build matches the sources")


class _SourceFinder:
    """Imports the listed modules from their ``.py`` sources, ahead of the extension that
    the default path finder would pick."""

    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, name, path=None, target=None):
        if name not in MODULES:
            return None
        return importlib.util.spec_from_file_location(name, source_path(name, self.root))


_status: Status | None = None


def install() -> Status:
    """Decide once per process; with the pure path, put the source finder first."""
    global _status
    if _status is None:
        _status = decide()
        if not _status.compiled:
            sys.meta_path.insert(0, _SourceFinder(ROOT))
    return _status


def status() -> Status:
    return install()
