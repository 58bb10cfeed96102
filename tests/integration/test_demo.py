"""`pgwitness demo` after a plain `pip install pgwitness`: without the test extra.

The test extra brings psycopg; the main dependencies do not. The demo runs in a subprocess
where a meta-path blocker (loaded by ``sitecustomize``) makes ``import psycopg`` fail, as
it would in a venv with only the main dependencies, and must still run end to end: the
session, the denials, verify and replay.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = '''\
import importlib.abc
import sys


class _NotInstalled(importlib.abc.MetaPathFinder):
    """As if only pgwitness's main dependencies were installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "psycopg" or name.startswith(("psycopg.", "psycopg_")):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
'''


@pytest.fixture
def no_psycopg_env(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    return env


def test_the_blocker_really_blocks_psycopg(no_psycopg_env):
    """Else the demo test below would prove nothing."""
    probe = subprocess.run(
        [sys.executable, "-c", "import psycopg"], env=no_psycopg_env, capture_output=True, text=True
    )
    assert probe.returncode != 0
    assert "blocked by the test" in probe.stderr


@pytest.mark.slow
def test_demo_runs_without_psycopg(no_psycopg_env):
    # the demo's cluster runs as the postgres OS user when we are root: a directory it can reach
    work = Path(tempfile.mkdtemp(prefix="pgwitness-demo-test-", dir="/tmp"))
    os.chmod(work, 0o755)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "demo", "--dir", str(work / ".demo")],
            env=no_psycopg_env, cwd=work, capture_output=True, text=True, timeout=110,
        )
        left_behind = (work / ".demo").exists()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "psycopg" not in done.stderr, out[-4000:]
    # the agent's session ran through the proxy: the reads, the write, two denials
    session = out.split("== the agent's session", 1)[1].split("== verify", 1)[0]
    assert "UPDATE 1" in session
    assert "ERROR 42501: pgwitness: task INC-4821 may not read secret.payroll" in session
    assert session.count("ERROR 42501") == 2, session
    assert "(1,)" in session  # the refunded order is counted after the update
    # and the recordings verify
    assert "sessions verified, 0 failed" in out
    assert "replay of the agent's session" in out
    assert not left_behind  # torn down without --keep
