"""Student and instructor editions of the book, generated from one source (never edited by hand).

``python tools/editions.py student --out DIR`` writes student notebooks: every code cell
tagged ``solution`` keeps its function signatures and docstrings but their bodies become
``raise NotImplementedError``, and every ``{solution}`` block in the text is removed.
``python tools/editions.py instructor --out DIR`` writes the notebooks with solutions.
``--book`` also builds the matching HTML book (the student book hides every solution).
``python tools/editions.py clean`` clears the outputs of every chapter notebook in place
(notebooks are committed without outputs).
``python tools/editions.py pdf`` prints the built HTML book, page by page in the order of
``_toc.yml``, to one PDF with headless Chromium (MathJax typeset, figures included).

The chapters in ``book/`` are the single source: a coding exercise is a ``{exercise}`` block
followed by a code cell tagged ``solution`` that defines the reader's function(s) and calls the
checker from :mod:`lmdownstream.exercises`.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_TAG = "solution"
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|:{3,})\{solution\}")


def strip_solution_blocks(markdown: str) -> str:
    """Remove every ``{solution}`` directive (backtick or colon fenced) from MyST markdown text."""
    lines = markdown.splitlines(keepends=True)
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        fence = m.group("fence")
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            j += 1
        if j == len(lines):
            raise ValueError(f"unclosed {{solution}} block starting at line {i + 1}: close it with {fence}")
        i = j + 1
        while out and not out[-1].strip() and i < len(lines) and not lines[i].strip():
            i += 1  # collapse the blank lines around the removed block
    return "".join(out)


def stub_solution_code(source: str) -> str:
    """Replace the body of each top-level function in ``source`` by its docstring and a ``NotImplementedError``.

    Statements outside functions (e.g. the call to the checker) are kept.
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    funcs = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not funcs:
        raise ValueError("a cell tagged 'solution' must define at least one function for the reader to write")
    for node in reversed(funcs):
        body = node.body
        doc = ast.get_docstring(node, clean=False)
        first = body[1] if doc is not None and len(body) > 1 else (None if doc is not None else body[0])
        start = (first.lineno - 1) if first is not None else None
        end = node.end_lineno
        indent = " " * (body[0].col_offset)
        stub = f'{indent}raise NotImplementedError("Exercise: write {node.name}, then run this cell to check it.")\n'
        if start is None:  # docstring only
            lines.insert(end, stub)
        else:
            lines[start:end] = [f"{indent}# YOUR CODE HERE\n", stub]
    return "".join(lines)


def _cell_source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def make_edition(nb: dict, edition: str) -> dict:
    """Return the ``edition`` ("student" or "instructor") of notebook ``nb``, outputs cleared."""
    if edition not in ("student", "instructor"):
        raise ValueError(f"edition must be 'student' or 'instructor', not {edition!r}")
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        tags = cell.get("metadata", {}).get("tags", [])
        if edition == "student":
            if cell["cell_type"] == "markdown":
                cell["source"] = strip_solution_blocks(_cell_source(cell))
            elif SOLUTION_TAG in tags:
                cell["source"] = stub_solution_code(_cell_source(cell))
                cell["metadata"]["tags"] = [t for t in tags if t not in ("hide-input", "hide-cell")]
    nb.setdefault("metadata", {})["lmdownstream_edition"] = edition
    return nb


def write_notebooks(edition: str, out: Path, book_dir: Path = ROOT / "book") -> list[Path]:
    """Write the ``edition`` of every chapter notebook in ``book_dir`` into ``out``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(book_dir.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        target = out / path.name
        target.write_text(json.dumps(make_edition(nb, edition), indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    return written


def build_book(edition: str, out: Path) -> Path:
    """Build the HTML book of ``edition`` into ``out`` and return the folder with index.html.

    The student book is the same book with every solution hidden: ``{solution}`` blocks are not
    rendered (sphinx-exercise's ``hide_solutions``) and solution cells are removed from the page.
    Execution reuses the main build's cache, so nothing is executed twice.
    """
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in ("_toc.yml", "_config.yml"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "book", src / "book")
    config = (src / "_config.yml").read_text()
    config = config.replace('  cache: ""', f'  cache: "{ROOT / "_build" / ".jupyter_cache"}"')
    if edition == "student":
        for path in (src / "book").glob("*.ipynb"):
            nb = json.loads(path.read_text())
            for cell in nb["cells"]:
                tags = cell.get("metadata", {}).get("tags", [])
                if SOLUTION_TAG in tags:
                    cell["metadata"]["tags"] = [t for t in tags if t not in ("hide-input", "hide-cell")] + ["remove-input"]
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        config = config.replace("  config:\n", "  config:\n    hide_solutions: true\n", 1)
        config = config.replace('title: "', 'title: "[Student edition] ', 1)
    (src / "_config.yml").write_text(config)
    jb = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jb), "build", str(src), "--builder", "html", "--path-output", str(out), "-W", "--keep-going"],
                   check=True)
    return out / "_build" / "html"


def _toc_pages(root: Path = ROOT) -> list[str]:
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    return [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]


def build_pdf(html: Path, out: Path, chromium: str | None = None) -> Path:
    """Print every page of the built HTML book ``html`` (in TOC order) with headless Chromium into one PDF."""
    from pypdf import PdfWriter

    chromium = chromium or shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium:
        raise FileNotFoundError("the PDF is printed by Chromium: install it (e.g. apt-get install chromium) and retry.")
    if not (html / "index.html").exists():
        raise FileNotFoundError(f"no built book in {html}: run `make book` first.")
    out.parent.mkdir(parents=True, exist_ok=True)
    parts_dir = out.parent / "pdf-pages"
    parts_dir.mkdir(exist_ok=True)
    writer = PdfWriter()
    for docname in _toc_pages():
        page = html / (docname + ".html")
        part = parts_dir / (docname.replace("/", "__") + ".pdf")
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--no-pdf-header-footer",
                        f"--user-data-dir={parts_dir / 'profile'}", "--virtual-time-budget=10000",
                        "--run-all-compositor-stages-before-draw", f"--print-to-pdf={part}", page.as_uri()],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
        writer.append(str(part))
    with open(out, "wb") as fh:
        writer.write(fh)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/editions.py", description=__doc__.splitlines()[0])
    parser.add_argument("edition", choices=["student", "instructor", "pdf", "clean"])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default _build/<edition>)")
    parser.add_argument("--book", action="store_true", help="also build the HTML book of this edition")
    args = parser.parse_args(argv)
    if args.edition == "clean":
        for path in sorted((ROOT / "book").glob("*.ipynb")):
            nb = json.loads(path.read_text())
            for cell in nb["cells"]:
                if cell["cell_type"] == "code":
                    cell["outputs"], cell["execution_count"] = [], None
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        print("cleared the outputs of every notebook in book/")
        return 0
    if args.edition == "pdf":
        pdf = build_pdf(ROOT / "_build" / "html", (args.out or ROOT / "_build") / "lmdownstream.pdf")
        print(f"PDF of the book: {pdf}")
        return 0
    out = args.out or ROOT / "_build" / args.edition
    paths = write_notebooks(args.edition, out / "notebooks")
    print(f"{args.edition} notebooks: {len(paths)} written to {out / 'notebooks'}")
    if args.book:
        html = build_book(args.edition, out)
        print(f"{args.edition} book: open {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
