"""The run directory's file names are declared in one module: nowhere else in src spells them out in code."""

from __future__ import annotations

import ast
from pathlib import Path

import medtransfer
from medtransfer.rundir import files

SRC = Path(medtransfer.__file__).parent
NAMES = [files.CONFIG_FILE, files.METRICS_FILE, files.PREDICTIONS_FILE, files.PATIENTS_FILE, files.HISTORY_FILE,
         files.weights_file("head"), files.weights_file("knn")]
# Hugging Face's own snapshot files (timm's and transformers' model.safetensors, open_clip's
# open_clip_model.safetensors), a different thing of the same name, are looked up by the backbone families.
ALSO_ALLOWED = {files.weights_file("model"): {SRC / "models" / "weights.py", SRC / "models" / "hub.py",
                                              *(SRC / "models" / "families").glob("*.py")}}


def exempt(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes (prose may name a file; code must use the constants), and of the names
    listed in `__all__` (the constant called DONE is not the file)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            found |= {id(item) for item in ast.walk(node.value)}
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal in a module but the exempt ones, f-string parts included."""
    tree = ast.parse(path.read_text(), str(path))
    skip = exempt(tree)
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip]


def spelt_out() -> list[str]:
    """Every place outside the names module whose code spells a run file's name (or the DONE marker)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == Path(files.__file__):
            continue
        for line, text in literals(path):
            names = [n for n in NAMES if n in text] + [files.DONE] * (text == files.DONE)
            weights = files.weights_file("model")
            if weights in text and path not in ALSO_ALLOWED[weights]:
                names.append(weights)
            found += [f"{path.relative_to(SRC)}:{line}: {name}" for name in names]
    return found


def test_run_file_names_are_spelt_out_in_one_module_only() -> None:
    assert spelt_out() == []


def test_the_check_finds_a_spelt_out_name(tmp_path: Path, monkeypatch) -> None:
    module = tmp_path / "medtransfer" / "rogue.py"
    module.parent.mkdir()
    module.write_text(f'"""Reads {files.METRICS_FILE}."""\nNAME = "{files.HISTORY_FILE}"\nX = f"a/{files.DONE}"\n'
                      f'Y = "{files.DONE}"\n__all__ = ["{files.DONE}"]\n')
    monkeypatch.setattr(f"{__name__}.SRC", module.parent)
    assert spelt_out() == [f"rogue.py:2: {files.HISTORY_FILE}", f"rogue.py:4: {files.DONE}"]
