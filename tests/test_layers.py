"""The package's imports point one way: down the layers of docs/architecture (README, "Layout").

    core                                       imports nothing of the project above it
    data, convert, modeling                    core only (and themselves)
    synthetic (-> convert: its format writers), evaluation (-> data), measure (-> convert)
    checkpoint (-> modeling.rgbd), inference   everything above (inference -> checkpoint too)
    engine                                     everything above
    experiments                                everything

Every import counts, also one inside a function (a hidden upward arrow is still an arrow).
A private name (``_x``) is never imported from another package.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "grape_instances"

MIDDLE = {"data", "convert", "modeling", "synthetic", "evaluation", "measure"}
ALLOWED = {
    "core": set(),
    "data": set(),
    "convert": set(),
    "modeling": set(),
    "synthetic": {"convert"},
    "evaluation": {"data"},
    "measure": {"convert"},
    "checkpoint": {"modeling"},
    "inference": MIDDLE | {"checkpoint"},
    "engine": MIDDLE | {"checkpoint", "inference"},
    "experiments": MIDDLE | {"checkpoint", "inference", "engine"},
}


def _layer(module: str) -> str:
    """``grape_instances.data.build`` -> ``data``; the package root is ``core``'s peer."""
    parts = [p for p in module.split(".") if p != "__init__"]
    return parts[1] if len(parts) > 1 else ""


def _module(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root.parent).with_suffix("").parts)


def _imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) of every project import in ``path``."""
    package = list(path.relative_to(root.parent).parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [a.name for a in node.names]
            if module == "grape_instances":  # from grape_instances import x (x a module?)
                found += [(node.lineno, f"grape_instances.{n}", []) for n in names
                          if (root / n).is_dir() or (root / f"{n}.py").is_file()]
            elif module.startswith("grape_instances."):
                found.append((node.lineno, module, names))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names
                      if a.name.startswith("grape_instances.")]
    return found


def _files():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def upward_imports(path: Path, root: Path = PACKAGE) -> list[str]:
    """What in ``path`` imports upward or a private name of another package."""
    own = _layer(_module(path, root))
    if own == "":
        return [f"line {line}: the package root imports {module}"
                for line, module, _ in _imports(path, root)]
    problems = []
    for line, module, names in _imports(path, root):
        target = _layer(module)
        if target in ("", "core", own):
            continue
        if target not in ALLOWED[own]:
            problems.append(f"line {line}: {own} imports {module}")
        private = [n for n in names if n.startswith("_")]
        if private:
            problems.append(f"line {line}: private {private} from {module}")
    return problems


def test_every_package_has_a_layer():
    layers = {_layer(_module(p, PACKAGE)) for p in _files()} - {""}
    assert layers <= set(ALLOWED), sorted(layers - set(ALLOWED))


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    problems = upward_imports(path)
    assert not problems, "\n".join(problems)


def test_the_check_sees_upward_and_private_imports(tmp_path):
    """The checker itself: an upward import inside a function, a private name across packages."""
    root = tmp_path / "grape_instances"
    (root / "core").mkdir(parents=True)
    (root / "measure").mkdir()
    bad = root / "core" / "bad.py"
    bad.write_text("def f():\n    from ..data.build import build_config\n")
    assert upward_imports(bad, root) == ["line 2: core imports grape_instances.data.build"]
    private = root / "measure" / "weight.py"
    private.write_text("from ..convert.grapesnet import _strip_tokens\n")
    assert upward_imports(private, root) == [
        "line 1: private ['_strip_tokens'] from grape_instances.convert.grapesnet"]
    fine = root / "measure" / "ok.py"
    fine.write_text("from ..core.masks import rle_to_mask\nfrom .depth import _local\n")
    assert upward_imports(fine, root) == []
