"""The import layering (devtools/layering.py): the tree holds it, and the checker catches
violations planted in a copy of the tree and in small synthetic trees."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.layering import ALLOWED, check, cross_test_imports

ROOT = Path(__file__).resolve().parents[2]  # the repository, not tests/


def test_the_tree_holds_the_layering():
    assert check(ROOT) == []


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A copy of the real packages, checked once: it holds the layering."""
    base = tmp_path_factory.mktemp("pristine")
    for package in ALLOWED:
        shutil.copytree(ROOT / package, base / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert check(base) == []
    return base


@pytest.fixture
def tree(pristine, tmp_path):
    """A copy of the real packages (of ``pristine``, which holds the layering), to plant
    violations in."""
    for package in ALLOWED:
        shutil.copytree(pristine / package, tmp_path / package)
    return tmp_path


def plant(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write("\n" + text + "\n")


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("recorder/writer.py", "from proxy.server import ProxyServer", "recorder may not import proxy"),
        ("recorder/verify.py", "def f():\n    import policy.engine", "recorder may not import policy"),
        ("recorder/store/s3.py", "from common.wire import messages", "recorder may not import common"),
        ("policy/engine.py", "def f():\n    from proxy import relay", "policy may not import proxy"),
        ("policy/grants/admin.py", "from proxy.metrics import ADMIN_AUTH_FAILURES",
         "policy may not import proxy"),
        ("policy/grants/store/sqlite.py", "import proxy.server", "policy may not import proxy"),
        ("common/config.py", "from policy.scopes import Scopes", "common may not import policy"),
        ("proxy/server.py", "from devtools.localpg import free_port", "proxy may not import devtools"),
        ("proxy/cli.py", "from devtools.testing import query", "proxy may not import devtools"),
    ],
)
def test_a_planted_crossing_is_caught(tree, module, line, expected):
    plant(tree / module, line)
    problems = check(tree)
    assert any(expected in p and module in p for p in problems), problems


def test_a_planted_cycle_is_caught(tree):
    # proxy.supervisor used to import proxy.cli lazily while proxy.cli imported it
    plant(tree / "proxy/supervisor.py", "def f():\n    from .cli import build_parser")
    plant(tree / "proxy/cli.py", "def g():\n    from .supervisor import run_workers")
    assert any(p.startswith("import cycle:") and "proxy.cli" in p and "proxy.supervisor" in p
               for p in check(tree))  # fmt: skip


def test_type_checking_imports_and_the_demo_hook_are_allowed(tree):
    plant(tree / "recorder/writer.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
          "    from proxy.server import ProxyServer")  # fmt: skip
    assert check(tree) == []  # never runs, so no dependency
    plant(tree / "recorder/writer.py", "else:\n    from proxy import server")
    assert any("recorder may not import proxy" in p for p in check(tree))


def test_the_command_fails_on_a_violation(tree):
    plant(tree / "policy/scopes.py", "from proxy.relay import Relay")
    run = subprocess.run([sys.executable, "-m", "devtools.layering", str(tree)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 1 and "policy may not import proxy" in run.stdout, run.stdout
    ok = subprocess.run([sys.executable, "-m", "devtools.layering"], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stdout


def test_test_modules_never_import_each_other(tmp_path):
    assert cross_test_imports(ROOT) == []
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "integration").mkdir()
    (tmp_path / "tests" / "support").mkdir()
    (tmp_path / "tests" / "unit" / "test_a.py").write_text("HELPER = 1\n")
    (tmp_path / "tests" / "support" / "shared.py").write_text("SHARED = 1\n")
    (tmp_path / "tests" / "unit" / "test_b.py").write_text(
        "from tests.support.shared import SHARED\nfrom . import test_a\n"
    )
    (tmp_path / "tests" / "integration" / "test_c.py").write_text(
        "def test_x():\n    from tests.unit.test_a import HELPER\n"
    )
    found = cross_test_imports(tmp_path)
    assert len(found) == 2, found
    assert any("tests.unit.test_b imports tests.unit.test_a" in f for f in found), found
    assert any("tests.integration.test_c imports tests.unit.test_a.HELPER" in f for f in found), found
