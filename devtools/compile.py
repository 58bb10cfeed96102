"""Compile the hot path (``common.compiled.MODULES``) with mypyc, in place.

    .venv/bin/python -m devtools.compile          # make compile (make test/demo/bench do it)
    .venv/bin/python -m devtools.compile --clean  # remove the build: the sources run

It compiles the copy of the packages it is imported from: the checkout (``make``), or an
installed copy in site-packages (the Docker image's build stage, with mypy from a
throwaway directory on PYTHONPATH).

Writes each module's extension beside its source, mypyc's shared library
(``common/_native__mypyc``) and ``common/compiled.json`` (the SHA-256 of every source
compiled; ``common.compiled`` uses the build only while they all still match). Needs a C
compiler and the Python headers (gcc and python3-dev on Debian). Nothing is written
until the whole build has succeeded: the manifest goes last.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from common.compiled import GROUP, MANIFEST, MODULES, ROOT, source_hashes, source_path

BUILD_DIR = ROOT / ".build" / "mypyc"


def built_files(root: Path = ROOT) -> list[Path]:
    found = []
    for name in (*MODULES, GROUP + "__mypyc"):
        base = root.joinpath(*name.split("."))
        found += sorted(base.parent.glob(base.name + ".*.so")) + sorted(base.parent.glob(base.name + ".*.pyd"))
    return found


def clean() -> None:
    MANIFEST.unlink(missing_ok=True)  # first: a half-removed build is never used
    for path in built_files():
        path.unlink()
    shutil.rmtree(BUILD_DIR, ignore_errors=True)


def build() -> None:
    from mypyc.build import mypycify  # the test extra's mypy ships mypyc

    Distribution = importlib.import_module("setuptools").Distribution  # stubs vary by version

    hashes = source_hashes()
    clean()
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(ROOT)  # mypyc names modules by their path from here
    try:
        paths = [str(source_path(name).relative_to(ROOT)) for name in MODULES]
        paths.insert(0, f"--cache-dir={BUILD_DIR / 'mypy-cache'}")  # removed with the build
        if not (ROOT / "pyproject.toml").exists():
            # an installed copy (the Docker image's build stage): no mypy configuration
            # here, and dependencies without stubs are read as Any, as pyproject says
            paths.insert(0, "--ignore-missing-imports")
        extensions = mypycify(paths, group_name=GROUP, target_dir=str(BUILD_DIR / "c"), opt_level="3")
        dist = Distribution({"name": "pgwitness-hot-path", "ext_modules": extensions})
        cmd = dist.get_command_obj("build_ext")
        cmd.inplace = True
        cmd.build_temp = str(BUILD_DIR / "temp")
        cmd.parallel = os.cpu_count() or 1
        dist.run_command("build_ext")
    finally:
        os.chdir(cwd)
    if source_hashes() != hashes:
        clean()
        raise SystemExit("a source changed while it was being compiled: run it again")
    shutil.rmtree(BUILD_DIR, ignore_errors=True)  # generated C and objects: not needed to run
    with contextlib.suppress(OSError):
        BUILD_DIR.parent.rmdir()  # .build/, if nothing else is in it
    tmp = MANIFEST.with_suffix(".tmp")
    tmp.write_text(json.dumps({"python": sys.implementation.cache_tag, "sources": hashes}, indent=1) + "\n")
    os.replace(tmp, MANIFEST)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clean", action="store_true", help="remove the build (the sources run)")
    a = p.parse_args(argv)
    if a.clean:
        clean()
        print("compiled hot path removed: the pure-Python sources run")
        return 0
    t0 = time.monotonic()
    try:
        build()
    except (Exception, SystemExit) as exc:  # mypyc exits on type errors; its output is above
        print(
            f"cannot build the compiled hot path: {exc}\n"
            "It needs a C compiler and the Python headers (Debian: apt-get install gcc python3-dev).\n"
            "PGWITNESS_PURE_PYTHON=1 runs the pure-Python sources without it.",
            file=sys.stderr,
        )
        return 1
    print(f"compiled {len(MODULES)} modules with mypyc in {time.monotonic() - t0:.0f}s: {', '.join(MODULES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
