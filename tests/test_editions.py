"""One source, two editions: the student edition holds no solution, the instructor edition runs."""
import ast
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import editions  # tools/editions.py (tests/conftest.py puts tools/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


def _solution_lines(source: str) -> list[str]:
    """Lines of the function bodies in a solution cell (what a student must not see)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    hidden = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            for stmt in body:
                hidden += [l.strip() for l in lines[stmt.lineno - 1: stmt.end_lineno] if l.strip()]
    return hidden


def test_every_chapter_with_exercises_has_solution_cells():
    for path in (p for p in CHAPTERS if p.name.startswith("ch")):
        nb = json.loads(path.read_text())
        text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        if "{exercise}" in text:
            tagged = [c for c in nb["cells"] if "solution" in c.get("metadata", {}).get("tags", [])]
            assert tagged, f"{path.name} has exercises but no code cell tagged 'solution'"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_student_edition_has_no_solution(path):
    nb = json.loads(path.read_text())
    student = editions.make_edition(nb, "student")
    student_code = "\n".join("".join(c["source"]) for c in student["cells"])
    for cell in nb["cells"]:
        if "solution" in cell.get("metadata", {}).get("tags", []):
            for line in _solution_lines("".join(cell["source"])):
                assert line not in student_code, f"{path.name}: solution line {line!r} leaked into the student edition"
    assert "{solution}" not in student_code
    for cell in student["cells"]:
        if cell["cell_type"] == "code":
            code = "".join(cell["source"])
            code = "\n".join("" if l.lstrip().startswith(("%", "!")) else l for l in code.splitlines())
            ast.parse(code)  # still valid Python (IPython magics aside)
            assert not cell["outputs"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_instructor_edition_is_the_source(path):
    nb = json.loads(path.read_text())
    instructor = editions.make_edition(nb, "instructor")
    assert [c["source"] for c in instructor["cells"]] == [c["source"] for c in nb["cells"]]


@pytest.mark.slow
def test_instructor_edition_executes_cleanly(tmp_path):
    # Every chapter's code is executed by nbval (test_instructor_edition_is_the_source shows the code is
    # identical); here one instructor notebook is written to disk and executed end to end.
    written = editions.write_notebooks("instructor", tmp_path)
    path = next(p for p in written if p.name.startswith("ch02"))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "book")}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "passed on" in outputs


def test_student_stub_raises_and_checker_hints(tmp_path):
    nb = json.loads(next(p for p in CHAPTERS if p.name.startswith("ch02")).read_text())
    student = editions.make_edition(nb, "student")
    cell = next(c for c in student["cells"] if "solution" in c["metadata"].get("tags", []))
    namespace = {}
    import numpy as np
    from lmdownstream import exercises

    namespace.update(np=np, exercises=exercises)
    with pytest.raises(exercises.ExerciseFailed, match="NotImplementedError"):
        exec("".join(cell["source"]), namespace)


def test_strip_solution_blocks_handles_fences():
    text = "a\n\n```{solution} ex-1\n:class: dropdown\n\nsecret\n```\n\nb\n:::{solution} ex-2\nsecret2\n:::\nc\n"
    out = editions.strip_solution_blocks(text)
    assert "secret" not in out and out.startswith("a") and "b" in out and out.rstrip().endswith("c")
    with pytest.raises(ValueError, match="unclosed"):
        editions.strip_solution_blocks("```{solution} x\nnever closed\n")
