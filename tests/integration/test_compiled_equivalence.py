"""The compiled hot path against its pure-Python sources, in two processes (one of each
build): tests/support/hot_path_driver.py's random sessions must give the same output."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from common import compiled
from tests.support.early_build import installed_copy_build

ROOT = Path(__file__).resolve().parents[2]
EXT = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def _env(pure: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    if pure:
        env[compiled.PURE_ENV] = "1"
    return env


def _started(args: list[str], pure: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(pure),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _output(proc: subprocess.Popen, timeout: float) -> str:
    """What ``proc`` printed; a failure (or a timeout) raises, as ``run(check=True)``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out, err)
    return out


def _reap(procs) -> None:
    """Those of ``procs`` still running (a check failed before reading them) are killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _drive(pure: bool, sessions: int = 400, seed: int = 7) -> subprocess.Popen:
    """The driver's random sessions in a process of one build (started: both run at once)."""
    return _started(["-m", "tests.support.hot_path_driver", str(sessions), str(seed)], pure)


def test_compiled_and_pure_paths_give_the_same_bytes_records_and_errors():
    """Random sessions (policy enforcing, dry run, pass-through, rows as counts; frames split
    anywhere; denials answered locally and injected; database refusals; protocol errors from
    either side) through both builds, fed to ``proxy.splice.Splice`` as the event loop does:
    every written byte, callback, record, error and state is the same, and a
    quarter of the sessions go through the real recorder, whose stored records (verified)
    are the same too."""
    runs = _drive(pure=False), _drive(pure=True)
    try:
        native, pure = (json.loads(_output(run, 120)) for run in runs)
    finally:
        _reap(runs)
    assert native["compiled"], "no compiled build to compare (make compile)"
    assert all(f.endswith(EXT) for f in native["files"].values()), native["files"]
    assert not pure["compiled"]
    assert all(f.endswith(".py") for f in pure["files"].values()), pure["files"]
    for i, (a, b) in enumerate(zip(native["sessions"], pure["sessions"], strict=True)):
        assert a == b, f"session {i} differs"
    assert native["digest"] == pure["digest"]
    # the run exercised what it claims to (else the comparison proves little)
    seen: Counter = Counter()
    for s in native["sessions"]:
        seen[s[0]] += 1
        for step in s[1:-1]:
            if step[0] == "raised":
                seen["raised"] += 1
            elif step[0] in ("c", "s"):  # what the splice wrote and called
                for w in step[1]:
                    seen[w[0]] += 1
                    if w[0] == "to_server":
                        seen["injected"] += "DO $pgw_" in bytes.fromhex(w[1]).decode("latin-1")
                    elif w[0] == "to_client" and step[0] == "c":
                        seen["answered locally"] += 1
            elif step[0] == "released":
                seen["released"] += bool(step[1])
            elif len(step) == 9 and step[1]:
                seen["terminated"] += 1
        for item in s[-1]:
            if item[0] == "recorded":  # through the real recorder: stored, verified, read back
                assert item[1][0] == "closed", item[1][0]
                seen["recorded records"] += len(item[1]) - 1
            seen[item[0] if item[0] != "decision" else ("denied" if item[2] else "allowed")] += 1
    for what in ("enforce", "dry-run", "pass", "counts", "client_error", "server_error",
                 "injected", "answered locally", "released", "held", "frame_memory",
                 "terminated", "allowed", "denied", "event", "wire", "recorded",
                 "recorded records"):
        assert seen[what] > 0, (what, seen)


def test_every_package_decides_before_it_imports_a_compiled_module():
    """Whichever package a process imports first, the build is used only when it may be:
    with PGWITNESS_PURE_PYTHON=1 every module listed comes from its source."""
    runs = []  # every process started at once, then each one's answer checked
    for first in ("common.wire.framing", "policy", "proxy.relay", "recorder"):
        code = (
            f"import {first}, sys\n"
            "from common import compiled\n"
            "for name in compiled.MODULES: __import__(name)\n"
            "print(' '.join(sys.modules[n].__file__ for n in compiled.MODULES))"
        )
        for pure, suffixes in ((True, (".py",)), (False, EXT)):
            runs.append((first, pure, suffixes, _started(["-c", code], pure)))
    try:
        for first, pure, suffixes, proc in runs:
            files = _output(proc, 60).split()
            assert len(files) == len(compiled.MODULES)
            assert all(f.endswith(suffixes) for f in files), (first, pure, files)
    finally:
        _reap(run[-1] for run in runs)


def test_an_installed_copy_compiles_in_place():
    """What the Docker image's build stage does: the packages as installed in site-packages
    (no pyproject.toml beside them), compiled by ``python -m devtools.compile`` run from
    elsewhere, then imported compiled, with nothing of the build left behind. (The copy is
    made and built when the session's collection ends, at the lowest CPU priority, while
    other tests run: tests/support/early_build.py.)"""
    build = installed_copy_build()
    tmp_path, site = build.workdir, build.site
    runs = build.result()
    before, built, after = runs["before"], runs["build"], runs["after"]
    assert before.stdout.split()[0] == "False"  # not built yet: the sources
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    flag, relay_file, writer_file = after.stdout.split()
    assert flag == "True"
    assert relay_file.startswith(str(site)) and relay_file.endswith(EXT)
    assert writer_file.startswith(str(site)) and writer_file.endswith(EXT)
    assert not (site / ".build").exists() and not (site / ".mypy_cache").exists()
    assert not (tmp_path / ".mypy_cache").exists() and not (tmp_path / "build").exists()
