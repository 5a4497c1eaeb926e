"""Every compiled module ships a type stub, and every name a stub declares exists in the
module it describes (a stub that promises a name the extension lacks would let mypy pass
code that fails at run time)."""
from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "web10g"
EXTENSIONS = sorted(p.stem for p in PKG.glob("*.pyx"))


def _declared(body: list[ast.stmt]) -> list[str]:
    names = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


def test_every_extension_has_a_stub():
    assert EXTENSIONS, "no .pyx found"
    missing = [name for name in EXTENSIONS if not (PKG / f"{name}.pyi").exists()]
    assert not missing, f"extensions without a .pyi stub: {missing}"


@pytest.mark.parametrize("name", EXTENSIONS)
def test_stub_names_exist(name):
    stub = PKG / f"{name}.pyi"
    if not stub.exists():
        pytest.fail(f"{name} has no stub")
    mod = importlib.import_module(f"web10g.{name}")
    tree = ast.parse(stub.read_text())
    absent = [n for n in _declared(tree.body) if not hasattr(mod, n)]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and hasattr(mod, node.name):
            cls = getattr(mod, node.name)
            absent += [f"{node.name}.{n}" for n in _declared(node.body)
                       if not n.startswith("__") and not hasattr(cls, n)]
    assert not absent, f"web10g/{name}.pyi declares names the module lacks: {absent}"
