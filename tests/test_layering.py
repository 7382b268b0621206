"""The package layering of DESIGN.md holds: nothing imports upward and the allocation layer is torch-free.

A profile made on a GPU box must be solvable on a laptop without torch, so `solvers` and
`allocator` may never import it, directly or through another package.
"""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Which project packages each package may import (DESIGN.md, "The house").
ALLOWED = {
    "solvers": set(),
    "allocator": {"solvers"},
    "quant": {"allocator", "solvers"},
    "profiling": {"quant", "allocator", "solvers"},
    "mixqvit": {"profiling", "quant", "allocator", "solvers"},
}


def _imported_top_level(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_upward_imports(package):
    forbidden = set(ALLOWED) - ALLOWED[package] - {package}
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_top_level(path) & forbidden
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("package", ["solvers", "allocator"])
def test_allocation_layer_never_loads_torch(package):
    code = f"import sys, {package}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"importing {package} loaded torch"


# Code that may use only the packages' public API (no `_private` module or name of another package).
API_USERS = sorted(ALLOWED) + ["benchmarks", "examples"]


def _private_imports(path: pathlib.Path, own: str) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] not in ALLOWED or parts[0] == own:
                continue
            private = [p for p in parts[1:] if p.startswith("_")]
            private += [a.name for a in node.names if a.name.startswith("_")]
            if private:
                found.append(f"{path.relative_to(ROOT)}: from {node.module} import {', '.join(a.name for a in node.names)}")
    return found


@pytest.mark.parametrize("where", API_USERS)
def test_no_private_names_across_packages(where):
    offenders = []
    for path in sorted((ROOT / where).rglob("*.py")):
        offenders += _private_imports(path, where)
    assert not offenders, "\n".join(offenders)

