"""The layout keeps its promises: imports only go downward, no module is too long to read, and
the tests stand on their own (shared helpers in tests/helpers/, no sys.path edits).

The layers of ``src/actspace`` (README, "Layout"), from the bottom:

* ``plan`` and ``core`` import nothing of actspace above ``core`` (``core`` may read the plan);
* ``lm`` and ``world`` import only ``core`` and ``plan``;
* ``methods`` imports ``core``, ``plan``, ``lm``, ``world``;
* ``premortems``, ``gate`` and each ``branches/<branch>`` import only ``core``, ``plan``, ``lm``,
  ``world``, ``methods`` (and themselves): a branch never imports another branch, the
  pre-mortems, the gate or the analysis; what two of them share goes down into ``methods`` or
  ``core``;
* ``analysis`` and ``monitor`` import anything but ``config``;
* ``config`` (which runs every phase's resolver) imports anything.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "actspace"
TESTS = ROOT / "tests"

#: The longest a module may be, in lines: past it, a module holds several ideas; split it.
MAX_LINES = 600

_BASE = frozenset({"core", "plan"})
_PHASE = _BASE | {"lm", "world", "methods"}
#: Layer -> the layers it may import (its own is always allowed). ``branches.<name>`` is one
#: layer per branch; ``actspace`` is the package's own ``__init__``.
ALLOWED: dict[str, frozenset[str]] = {
    "actspace": _BASE,
    "plan": _BASE,
    "core": _BASE,
    "lm": _BASE,
    "world": _BASE,
    "methods": _PHASE,
    "premortems": _PHASE,
    "gate": _PHASE,
    "branches": _PHASE,
    "branches.*": _PHASE,
}
#: Layers that may import every layer except those listed.
ANYTHING_BUT: dict[str, frozenset[str]] = {
    "analysis": frozenset({"config"}),
    "monitor": frozenset({"config"}),
    "config": frozenset(),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def layer(module: str) -> str:
    """``actspace.lm.models``: ``lm``; ``actspace.branches.patching.a``: ``branches.patching``."""
    parts = module.split(".")[1:]
    if not parts:
        return "actspace"
    if parts[0] == "branches" and len(parts) > 1:
        return f"branches.{parts[1]}"
    return parts[0]


def _rule(source: str) -> tuple[frozenset[str] | None, frozenset[str]]:
    """(the layers ``source`` may import or None for 'anything', the layers it may not)."""
    if source in ANYTHING_BUT:
        return None, ANYTHING_BUT[source]
    key = "branches.*" if source.startswith("branches.") else source
    return ALLOWED[key] | {source}, frozenset()


def imported_modules(path: Path, module: str, known: set[str]) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every actspace module that ``path`` imports (at any depth of the
    file: inside functions and ``TYPE_CHECKING`` blocks too); relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "actspace":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "actspace":
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                yield node.lineno, candidate if candidate in known else target


def test_imports_only_go_downward() -> None:
    modules = _modules()
    known = set(modules)
    known_layers = set(ALLOWED) | set(ANYTHING_BUT)
    problems = []
    for module, path in modules.items():
        source = layer(module)
        if source not in known_layers and not source.startswith("branches."):
            problems.append(f"{module}: layer {source!r} is not in the layering (add it here)")
            continue
        allowed, forbidden = _rule(source)
        for line, target in imported_modules(path, module, known):
            where = layer(target)
            if where in forbidden or (allowed is not None and where not in allowed):
                rel = path.relative_to(ROOT)
                problems.append(f"{rel}:{line}: {source} imports {target} ({where})")
    assert not problems, "imports that go up or sideways:\n" + "\n".join(sorted(problems))


def test_the_layering_is_read_as_intended() -> None:
    """Known answers for the rule itself, so that a lenient rule cannot pass unnoticed."""
    assert layer("actspace.branches.cross_model.resolve") == "branches.cross_model"
    assert layer("actspace.lm.models") == "lm" and layer("actspace") == "actspace"

    def may(source: str, target: str) -> bool:
        allowed, forbidden = _rule(source)
        return target not in forbidden and (allowed is None or target in allowed)

    assert may("core", "plan") and may("plan", "core") and not may("core", "lm")
    assert may("lm", "core") and not may("lm", "world") and not may("world", "methods")
    assert may("methods", "world") and not may("methods", "premortems")
    assert may("branches.patching", "methods") and may("branches.patching", "branches.patching")
    assert not may("branches.patching", "branches.cross_model")
    assert not may("branches.patching", "premortems") and not may("branches.patching", "gate")
    assert not may("premortems", "analysis") and not may("gate", "branches.patching")
    assert may("analysis", "branches.patching") and not may("analysis", "config")
    assert may("monitor", "analysis") and not may("monitor", "config") and may("config", "gate")


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text(
        "from . import models\nfrom ..core.io import read_json\nimport actspace.plan\n"
    )
    known = {"actspace.lm.models", "actspace.core.io", "actspace.plan"}
    found = [target for _, target in imported_modules(source, "actspace.lm.x", known)]
    assert found == ["actspace.lm.models", "actspace.core.io", "actspace.plan"]


def test_no_module_is_over_the_line_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _modules().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    listing = "\n".join(f"{name}: {n} lines" for name, n in sorted(long.items()))
    assert not long, f"modules over {MAX_LINES} lines (split them by idea):\n{listing}"


def _test_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_test_module_imports_another() -> None:
    """Test modules share code through tests/helpers/ only."""
    local = {p.stem for p in TESTS.glob("*.py")} | {"tests"}
    problems = []
    for path in _test_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["." * node.level]
                if node.level and path.parent == TESTS:
                    names = ["tests"]
            else:
                continue
            for name in names:
                if name.split(".")[0] in local:
                    rel = path.relative_to(ROOT)
                    problems.append(f"{rel}:{node.lineno}: imports {name}")
    assert not problems, "test modules importing test modules:\n" + "\n".join(problems)


def _sys_path_edits(tree: ast.AST) -> Iterator[int]:
    """Lines that change ``sys.path`` (or ask pytest or ``site`` to)."""

    def is_sys_path(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        )

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if is_sys_path(node.func.value) or node.func.attr in ("syspath_prepend", "addsitedir"):
                yield node.lineno
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if is_sys_path(target) or (
                    isinstance(target, ast.Subscript) and is_sys_path(target.value)
                ):
                    yield node.lineno
        elif isinstance(node, ast.Delete) and any(
            isinstance(t, ast.Subscript) and is_sys_path(t.value) for t in node.targets
        ):
            yield node.lineno


def test_no_test_edits_sys_path() -> None:
    """pytest puts tests/ on the path (``pythonpath`` in pyproject.toml); nothing else may."""
    problems = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _test_files()
        for line in _sys_path_edits(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not problems, "sys.path edited in:\n" + "\n".join(problems)


def test_sys_path_edits_are_found() -> None:
    code = (
        "import sys, site\n"
        "sys.path.insert(0, 'x')\n"
        "sys.path = []\n"
        "sys.path[:0] = ['y']\n"
        "sys.path += ['z']\n"
        "monkeypatch.syspath_prepend('w')\n"
        "site.addsitedir('v')\n"
        "print(sys.path)\n"
    )
    assert sorted(_sys_path_edits(ast.parse(code))) == [2, 3, 4, 5, 6, 7]
