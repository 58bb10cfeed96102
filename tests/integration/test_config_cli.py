"""`pgwitness serve --check` in a subprocess: a good configuration passes, a bad one exits 2
naming the key (the loading rules themselves: tests/unit/test_config.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
USERS = '[auth]\nusers = { alice = "alice-pw" }\n'


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pgwitness.toml"
    path.write_text(text)
    return path


# --- the CLI -------------------------------------------------------------------------


def _serve_check(
    *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGWITNESS_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", *args, "--check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_check_accepts_a_good_config(tmp_path):
    path = _write(
        tmp_path, USERS + '[proxy]\nlisten = "127.0.0.1:7432"\n[recorder]\nenabled = false\n'
    )
    done = _serve_check("--config", str(path))
    assert done.returncode == 0, done.stderr
    assert "configuration OK" in done.stdout


@pytest.mark.parametrize(
    "toml,args,env,key",
    [
        (USERS + '[upstream]\nport = "5432"\n', (), {}, "upstream.port"),
        (USERS, ("--set", "proxy.max_connections=lots"), {}, "proxy.max_connections"),
        (USERS, (), {"PGWITNESS_UPSTREAM_SSLMODE": "verify-full"}, "upstream.sslrootcert"),
        ("[proxy]\nworkers = 1\n", (), {}, "auth.users"),
    ],
    ids=["toml type", "--set", "environment", "nobody can log in"],
)
def test_cli_check_exits_2_naming_the_key(tmp_path, toml, args, env, key):
    path = _write(tmp_path, toml)
    done = _serve_check("--config", str(path), *args, env_extra=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert key in done.stderr
    assert "configuration error" in done.stderr
    assert "Traceback" not in done.stderr
