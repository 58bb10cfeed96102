"""The import layering, checked from the source: ``python -m devtools.layering`` (``make lint``).

Packages, bottom up; each may import only itself and the packages listed for it::

    recorder                      the session recorder: knows nothing of proxy or policy
    common   -> recorder          wire protocol (SCRAM), config, login throttle
    policy   -> common, recorder  statement policy and grants: never the server
    proxy    -> common, policy, recorder
    devtools -> anything          development tools; the runtime packages never import them

Every import counts, the ones inside functions too (a lazy import is still a dependency),
except those under ``if TYPE_CHECKING:``, which never run. ``EXCEPTIONS`` lists the two
deliberate crossings. Besides the package rules, no two modules may import each other, at
any distance (a cycle of modules), counting lazy imports too. And test modules never
import from each other (``cross_test_imports``): what two of them share lives in
``tests/support``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ALLOWED: dict[str, frozenset[str]] = {
    "recorder": frozenset(),
    "common": frozenset({"recorder"}),
    "policy": frozenset({"common", "recorder"}),
    "proxy": frozenset({"common", "policy", "recorder"}),
    "devtools": frozenset({"common", "policy", "proxy", "recorder"}),
}

# (importing module, imported module): the CLI offers ``pgwitness demo`` when devtools is there;
# the recorder package decides, before importing its compiled writer, whether the compiled
# hot path may be used (common/compiled.py: the standard library only, the same decision
# for every package).
EXCEPTIONS = frozenset({("proxy.cli", "devtools.demo"), ("recorder", "common.compiled")})

# Cycles that exist and are owned elsewhere; a new cycle fails. None since the classify
# split (the cross-check lives inside policy.classify and imports its model, not the package).
KNOWN_CYCLES: frozenset[tuple[str, ...]] = frozenset()


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module (or module.name), dotted and absolute
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.target}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of(root: Path, path: Path) -> list[Import]:
    module = module_name(root, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import name``: pkg.name when that is a module, else pkg (``check``
            # resolves each to the longest prefix that is a module).
            targets = [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"] or [base]
        found.extend(Import(module, t, path, node.lineno) for t in dict.fromkeys(targets))
    return found


def source_files(root: Path, packages: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for package in packages:
        base = root / package
        if base.is_dir():
            files.extend(sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts))
    return files


def _package_part(imp: Import, target: str) -> bool:
    """A package's ``__init__`` importing its own parts (to export them or open one) is
    not a cycle with the parts that import the package's shared names back."""
    return imp.path.name == "__init__.py" and target.startswith(imp.module + ".")


def _resolve(target: str, modules: set[str]) -> str | None:
    """The longest prefix of ``target`` that is one of our modules."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules:
            return name
    return None


def check(root: Path, allowed: dict[str, frozenset[str]] = ALLOWED,
          exceptions: frozenset[tuple[str, str]] = EXCEPTIONS,
          known_cycles: frozenset[tuple[str, ...]] = KNOWN_CYCLES) -> list[str]:  # fmt: skip
    """Every violation under ``root``, as readable lines; empty when the layering holds."""
    files = source_files(root, allowed)
    modules = {module_name(root, p) for p in files}
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for path in files:
        for imp in imports_of(root, path):
            top_from, top_to = imp.module.split(".")[0], imp.target.split(".")[0]
            if top_to not in allowed:
                continue  # the standard library or a dependency
            target = _resolve(imp.target, modules) or imp.target
            crossing = top_to != top_from and top_to not in allowed[top_from]
            if crossing and (imp.module, target) not in exceptions:
                problems.append(f"{imp}: {top_from} may not import {top_to}")
            if target in modules and target != imp.module and not _package_part(imp, target):
                graph[imp.module].add(target)
    for cycle in cycles(graph):
        if tuple(cycle[:-1]) not in known_cycles:
            problems.append(f"import cycle: {' -> '.join(cycle)}")
    return sorted(dict.fromkeys(problems))


TEST_DIRS = ("tests/unit", "tests/integration")


def cross_test_imports(root: Path) -> list[str]:
    """Every import of one test module by another (``tests/unit``, ``tests/integration``;
    a ``conftest`` counts as a test module): shared builders and fixtures belong in
    ``tests/support``, where every module can find them."""
    files: list[Path] = []
    for d in TEST_DIRS:
        base = root / d
        if base.is_dir():
            files.extend(sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts))
    modules = {module_name(root, p) for p in files if p.name != "__init__.py"}
    problems = []
    for path in files:
        for imp in imports_of(root, path):
            target = _resolve(imp.target, modules)
            if target is not None and target != imp.module:
                problems.append(f"{imp}: test modules never import from each other (tests/support)")
    return sorted(dict.fromkeys(problems))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component) + [sorted(component)[0]])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    problems = check(root) + cross_test_imports(root)
    for line in problems:
        print(line)
    if problems:
        print(f"layering: {len(problems)} problem(s)")
        return 1
    print("layering: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
