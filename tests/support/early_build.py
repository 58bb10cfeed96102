"""The installed-copy build of ``test_compiled_equivalence``, started when the session's
collection is done and run at the lowest CPU priority while the other tests run (they
mostly wait on servers, so it takes idle CPU): the test then reads its results. The
build is the same (mypyc and a C compiler, about 45 s of CPU); only when it runs changes.

``pytest_collection_modifyitems`` moves the test to the end of the session (it shares
nothing with the others), so the build has the whole run to finish in;
``pytest_collection_finish`` starts it when the test is among the session's items;
``pytest_sessionfinish`` ends it if the test never collected it (a stopped session).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from common import compiled

ROOT = Path(__file__).resolve().parents[2]
TEST = "test_compiled_equivalence.py::test_an_installed_copy_compiles_in_place"
PACKAGES = ("common", "policy", "proxy", "recorder", "devtools")
# what the test's child processes print: whether the build is used, and where two of the
# compiled modules were imported from
CODE = ("from common import compiled; import proxy.relay, recorder.writer; "
        "print(compiled.status().compiled, proxy.relay.__file__, recorder.writer.__file__)")


class InstalledCopyBuild:
    """The packages copied as installed in site-packages (no pyproject.toml beside them)
    under ``workdir``; then, in a thread: import them (``before``), compile them with
    ``python -m devtools.compile`` run from ``workdir`` (``build``), import them again
    (``after``). Each a ``subprocess.CompletedProcess``, or the exception it raised."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.site = workdir / "site-packages"
        skip = shutil.ignore_patterns("__pycache__", "*.so", "compiled.json", "*.tmp")
        for package in PACKAGES:
            shutil.copytree(ROOT / package, self.site / package, ignore=skip)
        self.env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
        self.env["PYTHONPATH"] = str(self.site)
        self.results: dict[str, object] = {}
        self._proc: subprocess.Popen | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="installed-copy-build",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _import(self) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", CODE], cwd=self.workdir, env=self.env,
                              capture_output=True, text=True, timeout=60, check=True)  # fmt: skip

    def _run(self) -> None:
        try:
            self.results["before"] = self._import()
            if self._stopped:
                return
            self._proc = subprocess.Popen(  # nice: the build and every compiler it starts
                ["nice", "-n", "19", sys.executable, "-m", "devtools.compile"],
                cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, start_new_session=True,
            )  # fmt: skip
            out, err = self._proc.communicate()
            self.results["build"] = subprocess.CompletedProcess(
                self._proc.args, self._proc.returncode, out, err)  # fmt: skip
            self.results["after"] = self._import()
        except BaseException as exc:  # raised again by result()
            self.results.setdefault("error", exc)

    def result(self, timeout: float = 600.0) -> dict[str, object]:
        """Wait for the three steps (at most ``timeout`` s, the build's own old bound)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.stop()
            raise AssertionError(f"the installed copy's build did not end in {timeout} s")
        if "error" in self.results:
            raise self.results["error"]  # type: ignore[misc]
        return self.results

    def stop(self) -> None:
        self._stopped = True
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)  # the compilers it started too
        self._thread.join(30)
        shutil.rmtree(self.workdir, ignore_errors=True)


_build: InstalledCopyBuild | None = None


def installed_copy_build() -> InstalledCopyBuild:
    """The session's early build (started now if collection did not start it)."""
    global _build
    if _build is None:
        _build = InstalledCopyBuild(Path(tempfile.mkdtemp(prefix="pgw-installed-copy-")))
    return _build


def pytest_collection_modifyitems(items) -> None:
    items.sort(key=lambda item: item.nodeid.endswith(TEST))  # stable: the rest keep their order


def pytest_collection_finish(session) -> None:
    if session.config.option.collectonly:
        return
    if any(item.nodeid.endswith(TEST) for item in session.items):
        installed_copy_build()


def pytest_sessionfinish(session) -> None:
    global _build
    if _build is not None:
        _build.stop()
        _build = None
