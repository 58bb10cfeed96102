"""The compiled hot path (common/compiled.py, devtools/compile.py): used only when whole and
fresh, and byte for byte what its pure-Python sources do."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from common import compiled

ROOT = Path(__file__).resolve().parents[2]
EXT = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def test_the_hot_path_runs_compiled_unless_the_sources_are_asked_for():
    """``make test`` builds it first (``make compile``), so the suite runs what ships; its
    second pass sets PGWITNESS_PURE_PYTHON=1 and runs the sources."""
    status = compiled.status()
    files = {name: importlib.import_module(name).__file__ for name in compiled.MODULES}
    if os.environ.get(compiled.PURE_ENV, "") not in ("", "0"):
        assert not status.compiled
        assert all(f.endswith(".py") for f in files.values()), files
    else:
        assert status.compiled, f"the hot path is not compiled: {status.reason}"
        assert all(f.endswith(EXT) for f in files.values()), files


def _fake_build(root: Path) -> None:
    for name in compiled.MODULES:
        src = compiled.source_path(name)
        dst = compiled.source_path(name, root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        dst.with_name(dst.stem + EXT[0]).write_bytes(b"")
    manifest = root / "common" / "compiled.json"
    manifest.write_text(json.dumps({
        "python": sys.implementation.cache_tag, "sources": compiled.source_hashes(root)}))


def test_a_stale_partial_or_foreign_build_is_never_used(tmp_path):
    _fake_build(tmp_path)
    assert compiled.decide(tmp_path, environ={}).compiled
    assert not compiled.decide(tmp_path, environ={compiled.PURE_ENV: "1"}).compiled
    assert compiled.decide(tmp_path, environ={compiled.PURE_ENV: "0"}).compiled

    # one source edited after the build: nothing compiled is used, not even the rest
    relay = compiled.source_path("proxy.relay", tmp_path)
    relay.write_text(relay.read_text() + "\n# edited\n")
    status = compiled.decide(tmp_path, environ={})
    assert not status.compiled and "stale" in status.reason and "proxy.relay" in status.reason

    _fake_build(tmp_path)
    ext = compiled.source_path("policy.engine", tmp_path).with_name("engine" + EXT[0])
    ext.unlink()
    status = compiled.decide(tmp_path, environ={})
    assert not status.compiled and "policy.engine" in status.reason

    _fake_build(tmp_path)
    manifest = tmp_path / "common" / "compiled.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "python": "cpython-39"}))
    assert not compiled.decide(tmp_path, environ={}).compiled
    manifest.write_text("{not json")
    assert "unreadable" in compiled.decide(tmp_path, environ={}).reason
    tag = sys.implementation.cache_tag
    for not_a_record in ("[]", '"x"', json.dumps({"python": tag}),
                         json.dumps({"python": tag, "sources": []})):
        manifest.write_text(not_a_record)
        assert "unreadable" in compiled.decide(tmp_path, environ={}).reason, not_a_record
    manifest.unlink()
    assert "not built" in compiled.decide(tmp_path, environ={}).reason


@pytest.mark.parametrize("module", compiled.MODULES)
def test_every_compiled_module_is_listed_by_its_source(module):
    assert compiled.source_path(module).is_file()
