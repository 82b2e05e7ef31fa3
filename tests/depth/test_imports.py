"""Imports inside vision3d.depth go one way: learned -> candidates -> classical (no cycle)."""

import ast
from pathlib import Path

import vision3d.depth

DEPTH = Path(vision3d.depth.__file__).parent


def _imported(module: str) -> set[str]:
    """Every vision3d.depth module that ``module`` imports, at the top or inside a function."""
    tree = ast.parse((DEPTH / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vision3d.depth."):
            out.add(node.module.removeprefix("vision3d.depth."))
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("vision3d.depth.") for a in node.names if a.name.startswith("vision3d.depth.")}
    return out


def test_candidates_and_classical_do_not_import_learned():
    assert _imported("candidates") == {"classical"}
    assert _imported("classical") == set()
    assert "learned" not in _imported("candidates") and {"candidates", "classical"} <= _imported("learned")
