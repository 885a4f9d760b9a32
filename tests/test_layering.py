"""The library's layers hold: a module imports only from its own layer or below, never in a cycle,
and never another module's private names. Function-local imports count.

The layers (README's module table and DESIGN.md describe the same):

====  ==========================================================================
0     ``config``, ``_checks``
1     ``losses``, ``synthetic``, ``theory``, ``fits``, ``probes``, ``stats``
2     ``lm``, ``hf``, ``features``
3     ``tasks``, ``train``
4     ``experiments.*``, ``plot``, ``exercises.*``
5     ``cli``, ``__main__``
====  ==========================================================================
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "lmdownstream"

LAYERS = {
    "config": 0, "_checks": 0,
    "losses": 1, "synthetic": 1, "theory": 1, "fits": 1, "probes": 1, "stats": 1,
    "lm": 2, "hf": 2, "features": 2,
    "tasks": 3, "train": 3,
    "experiments": 4, "plot": 4, "exercises": 4,
    "cli": 5, "__main__": 5,
}


def module_name(path: Path, root: Path) -> str:
    """``experiments/result_a.py`` -> ``experiments.result_a``; a package's ``__init__`` -> its name."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    """The layer of a module of the package (``""`` is the package itself: no layer)."""
    if not module:
        return None
    top = module.split(".")[0]
    return LAYERS.get(top)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute in-package name that ``from <level dots><target> import ...`` refers to."""
    base = module.split(".") if module else []
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + (target.split(".") if target else []))


def _is_module(root: Path, dotted: str) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_of(source: str, module: str, is_package: bool, root: Path = PKG, pkg: str = "lmdownstream"):
    """Every in-package import of one module: a list of (target module, imported name or None, line).

    ``from .x import y`` gives ("x", "y"), or ("x.y", None) when ``x.y`` is itself a module of the
    package; ``import lmdownstream.x as m`` gives ("x", None). Attribute uses ``m._name`` on an
    imported package module are returned as (target, "_name").
    """
    tree = ast.parse(source)
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = _resolve(module, is_package, node.level, node.module)
            elif node.module and (node.module == pkg or node.module.startswith(pkg + ".")):
                target = node.module[len(pkg) + 1:]
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                if _is_module(root, sub):
                    found.append((sub, None, node.lineno))
                    aliases[alias.asname or alias.name] = sub
                else:
                    found.append((target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(pkg + "."):
                    sub = alias.name[len(pkg) + 1:]
                    found.append((sub, None, node.lineno))
                    if alias.asname:
                        aliases[alias.asname] = sub
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append((aliases[node.value.id], node.attr, node.lineno))
    return found


def graph(root: Path = PKG):
    """{module: [(target, name, line), ...]} for every module of the package under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        out[name] = imports_of(path.read_text(), name, path.name == "__init__.py", root)
    return out


def violations(g: dict) -> list[str]:
    """What breaks the layering: unknown modules, upward imports, private names, cycles."""
    bad = []
    for mod, edges in g.items():
        if mod and layer_of(mod) is None:
            bad.append(f"{mod}: not in the LAYERS table; give it a layer (tests/test_layering.py, README)")
            continue
        for target, name, line in edges:
            lt, lm = layer_of(target), layer_of(mod)
            if target and lt is None:
                bad.append(f"{mod}:{line} imports {target}, which has no layer")
            elif lm is not None and lt is not None and lt > lm:
                bad.append(f"{mod}:{line} (layer {lm}) imports {target} (layer {lt}) from a higher layer")
            same_package = target.split(".")[0] == mod.split(".")[0] and "." in mod
            if name and name.startswith("_") and not name.startswith("__") and not same_package:
                bad.append(f"{mod}:{line} uses the private name {target}.{name}; make it public in {target}")
    # cycles between modules (depth-first search with colours)
    edges = {m: sorted({t for t, _, _ in e if t in g and t != m}) for m, e in g.items()}
    colour, stack = {}, []

    def visit(m):
        colour[m] = "grey"
        stack.append(m)
        for t in edges.get(m, []):
            if colour.get(t) == "grey":
                bad.append("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            elif t not in colour:
                visit(t)
        stack.pop()
        colour[m] = "black"

    for m in sorted(edges):
        if m not in colour:
            visit(m)
    return bad


def test_library_layers_hold():
    g = graph()
    assert len(g) > 10, f"found only {sorted(g)}: is PKG right?"
    bad = violations(g)
    assert not bad, "the library's layering is broken:\n" + "\n".join(bad)


def test_nothing_in_the_library_imports_the_book_or_tools():
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for n in names:
                assert n.split(".")[0] not in ("editions", "tools", "book", "tests"), f"{path}: imports {n}"


@pytest.mark.parametrize("files,expected", [
    ({"lm.py": "from . import tasks\n", "tasks.py": ""}, "from a higher layer"),
    ({"theory.py": "def f():\n    from .probes import _lbfgs\n", "probes.py": ""}, "private name probes._lbfgs"),
    ({"theory.py": "from . import losses as L\nx = L._prepare\n", "losses.py": ""}, "private name losses._prepare"),
    ({"lm.py": "from . import features\n", "features.py": "def g():\n    from . import lm\n"}, "import cycle"),
    ({"mystery.py": ""}, "not in the LAYERS table"),
])
def test_the_checker_catches_what_it_should(tmp_path, files, expected):
    """The layering check itself fails on an upward import, a private name, a cycle, a new module."""
    root = tmp_path / "lmdownstream"
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).write_text(text)
    bad = violations(graph(root))
    assert any(expected in b for b in bad), bad


def test_a_clean_tree_passes(tmp_path):
    root = tmp_path / "lmdownstream"
    (root / "experiments").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "experiments" / "__init__.py").write_text("")
    (root / "losses.py").write_text("from ._checks import as_array\n")
    (root / "_checks.py").write_text("")
    (root / "experiments" / "result_a.py").write_text("from .. import losses\nfrom . import plot_helpers\n")
    (root / "experiments" / "plot_helpers.py").write_text("import lmdownstream.config as cfg\nx = cfg.PROFILES\n")
    (root / "config.py").write_text("PROFILES = ()\n")
    assert violations(graph(root)) == []
