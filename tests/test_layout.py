"""The package's layout rules, checked on the source itself (issue 11).

- no module over 600 lines;
- no private name (``_name``) imported from another package: a module may use the
  private names of its own package's modules, and the private modules at the root of
  ``balllink`` (its shared core: ``_scan``, ``_kernels``, ``_grid``, ``_files``), nothing
  private of a sibling package;
- every public function is exported under a name that no module of the package uses, so
  ``import balllink.<stage>`` always gives the module.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import types
from pathlib import Path

import pytest

import balllink as bl

SRC = Path(bl.__file__).resolve().parent
MAX_LINES = 600


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(path: Path) -> str:
    dotted = _dotted(path)
    return dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]


def _resolve(node: ast.ImportFrom, path: Path) -> str:
    if not node.level:
        return node.module or ""
    base = _package_of(path).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_imports(path: Path) -> list[str]:
    """``module: from X import Y`` for each private thing taken from outside its package."""
    own = _package_of(path)
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        source = _resolve(node, path)
        if source.split(".")[0] != "balllink":
            continue
        for alias in node.names:
            parts = f"{source}.{alias.name}".split(".")
            private_at = [i for i, p in enumerate(parts) if _is_private(p)]
            if not private_at or _allowed(own, parts, private_at):
                continue
            bad.append(f"{_dotted(path)}: from {source} import {alias.name}")
    return bad


def _allowed(own: str, parts: list[str], private_at: list[int]) -> bool:
    first = private_at[0]
    owner = ".".join(parts[:first])  # the package whose private member is taken
    if own == owner:
        return True  # a sibling module of the same package
    if owner == "balllink":
        # the root's private modules are the shared core; their public names are for all
        return private_at == [1]
    return own.startswith(owner + ".")  # a sub-package of the owner


def test_no_module_over_600_lines():
    long = {
        str(p.relative_to(SRC)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_private_name_imported_across_packages():
    bad = [b for p in _modules() for b in _private_imports(p)]
    assert not bad, "private names imported from another package:\n" + "\n".join(bad)


def test_the_rule_tells_allowed_from_forbidden():
    fake = SRC / "database" / "_probe.py"
    code = (
        "from ..preprocessing._chain import prepare\n"  # private module of a sibling
        "from ..preprocessing import _secret\n"  # private name of a sibling
        "from .._grid import nan_gaussian\n"  # the shared core: allowed
        "from .._grid import _helper\n"  # a private name of the core: forbidden
        "from ._store import _lru\n"  # own package: allowed
    )
    nodes = ast.parse(code).body
    assert _resolve(nodes[0], fake) == "balllink.preprocessing._chain"
    verdicts = []
    for node in nodes:
        parts = f"{_resolve(node, fake)}.{node.names[0].name}".split(".")
        private_at = [i for i, p in enumerate(parts) if _is_private(p)]
        verdicts.append(_allowed("balllink.database", parts, private_at))
    assert verdicts == [False, False, True, False, True]


@pytest.mark.parametrize(
    "name", ["io", "preprocessing", "comparison", "database", "cli", "simulate", "align"]
)
def test_every_stage_imports_as_a_module(name):
    mod = importlib.import_module(f"balllink.{name}")
    assert isinstance(mod, types.ModuleType)
    assert getattr(bl, name, mod) is mod or not hasattr(bl, name)


def test_public_functions_do_not_shadow_modules():
    submodules = {m.name for m in pkgutil.iter_modules(bl.__path__)}
    clashes = [n for n in bl.__all__ if n in submodules and not inspect.ismodule(getattr(bl, n))]
    assert not clashes, f"exported under a module's name: {clashes}"
    assert callable(bl.compare) and callable(bl.preprocess)
