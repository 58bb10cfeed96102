"""The installed-copy build of ``test_compiled_equivalence``, started when the session's
collection is done and run at the lowest CPU priority while the other tests run (they
mostly wait on servers, so it takes idle CPU): the test then reads its results. The
build is the same (mypyc and a C compiler, about 45 s of CPU); only when it runs changes.

``pytest_collection_modifyitems`` moves the test to the end of the session (it shares
nothing with the others), so the build has the whole run to finish in;
``pytest_collection_finish`` starts it when the test is among the session's items;
``pytest_sessionfinish`` ends it if the test never collected it (a stopped session).

With pytest-xdist (``make test`` runs the suite on two workers, ``--dist loadfile``) the
build runs in the controller, which runs no tests: a worker's unit tests forbid starting
processes (tests/unit/conftest.py), and two workers must not build twice. The controller
starts it when the first worker's collection holds the test, in a directory it gave every
worker (``pytest_configure_node``); the build writes its results there (``RESULTS``) and
the test, on whichever worker, reads them (``BuildResults``). The test is its own work
unit, scheduled last (``pytest_xdist_make_scheduler``), as it runs last without xdist.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from common import compiled

ROOT = Path(__file__).resolve().parents[2]
TEST = "test_compiled_equivalence.py::test_an_installed_copy_compiles_in_place"
PACKAGES = ("common", "policy", "proxy", "recorder", "devtools")
# what the test's child processes print: whether the build is used, and where two of the
# compiled modules were imported from
CODE = ("from common import compiled; import proxy.relay, recorder.writer; "
        "print(compiled.status().compiled, proxy.relay.__file__, recorder.writer.__file__)")
RESULTS = "results.json"  # in the build's directory, written when the build is done
WORKDIR_KEY = "pgw_installed_copy_workdir"  # the controller's directory, in workerinput


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
        finally:
            self._write_results()

    def _write_results(self) -> None:
        """The results as a file beside the copy, for a test on an xdist worker."""
        doc: dict[str, object] = {}
        for step, value in self.results.items():
            if isinstance(value, subprocess.CompletedProcess):
                doc[step] = {"args": [str(a) for a in value.args], "returncode": value.returncode,
                             "stdout": value.stdout, "stderr": value.stderr}  # fmt: skip
            else:
                doc[step] = f"{type(value).__name__}: {value}"
        try:
            tmp = self.workdir / (RESULTS + ".part")
            tmp.write_text(json.dumps(doc))
            tmp.replace(self.workdir / RESULTS)
        except OSError:
            pass  # stopped: the directory is gone

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


class BuildResults:
    """On an xdist worker: the controller's build (``InstalledCopyBuild``), read from the
    results file it writes in ``workdir``. The controller removes the directory."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.site = workdir / "site-packages"

    def result(self, timeout: float = 600.0) -> dict[str, object]:
        path = self.workdir / RESULTS
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"the installed copy's build did not end in {timeout} s")
            time.sleep(0.2)
        results: dict[str, object] = {}
        for step, value in json.loads(path.read_text()).items():
            if isinstance(value, str):  # what the controller's build raised
                raise AssertionError(f"the installed copy's build failed: {value}")
            results[step] = subprocess.CompletedProcess(
                value["args"], value["returncode"], value["stdout"], value["stderr"])  # fmt: skip
        return results


_build: InstalledCopyBuild | None = None
_workdir: Path | None = None  # xdist's controller: the directory it gave the workers


def installed_copy_build() -> InstalledCopyBuild | BuildResults:
    """The session's early build (started now if collection did not start it); on an
    xdist worker, the controller's."""
    global _build
    workerinput = getattr(_config, "workerinput", None)
    if workerinput is not None and WORKDIR_KEY in workerinput:
        return BuildResults(Path(workerinput[WORKDIR_KEY]))
    if _build is None:
        workdir = _workdir or Path(tempfile.mkdtemp(prefix="pgw-installed-copy-"))
        _build = InstalledCopyBuild(workdir)
    return _build


_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


def pytest_collection_modifyitems(items) -> None:
    items.sort(key=lambda item: item.nodeid.endswith(TEST))  # stable: the rest keep their order


def pytest_collection_finish(session) -> None:
    if session.config.option.collectonly or hasattr(session.config, "workerinput"):
        return  # on an xdist worker the controller builds
    if any(item.nodeid.endswith(TEST) for item in session.items):
        installed_copy_build()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist's controller: every worker learns where the build's results will be."""
    global _workdir
    if _workdir is None:
        _workdir = Path(tempfile.mkdtemp(prefix="pgw-installed-copy-"))
    node.workerinput[WORKDIR_KEY] = str(_workdir)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids) -> None:
    """xdist's controller: start the build when a worker's collection holds the test."""
    if _build is None and any(nodeid.endswith(TEST) for nodeid in ids):
        installed_copy_build()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile``, with the test a work unit of its own: the last one (collection
    put it last, and among work units of one test each xdist keeps collection order)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LoadFileBuildLast(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid if nodeid.endswith(TEST) else super()._split_scope(nodeid)

    return LoadFileBuildLast(config, log)


def pytest_sessionfinish(session) -> None:
    global _build, _workdir
    if _build is not None:
        _build.stop()
        _build = None
    if _workdir is not None and not hasattr(session.config, "workerinput"):
        shutil.rmtree(_workdir, ignore_errors=True)
        _workdir = None
