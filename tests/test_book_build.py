"""Build the whole Jupyter Book with warnings as errors, then check what a reader will see."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"


def _visible_text(page: str) -> str:
    """The page's text with tags removed and entities decoded (code is split into spans by highlighting)."""
    import html as html_lib

    return html_lib.unescape(re.sub(r"<[^>]+>", "", page))


@pytest.mark.book
def test_book_builds_with_warnings_as_errors(built_book):
    assert (built_book / "index.html").exists()


@pytest.mark.book
def test_mathjax_is_served_offline(built_book):
    page = (built_book / "book" / "ch02_language_modelling.html").read_text()
    srcs = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', page, flags=re.I)
    assert srcs, "no MathJax script on the page"
    assert all(not s.startswith(("http:", "https:", "//")) for s in srcs), f"MathJax loads from the network: {srcs}"
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").exists()


@pytest.mark.book
def test_chapter2_has_theorem_proof_figure_exercises(built_book):
    page = (built_book / "book" / "ch02_language_modelling.html").read_text()
    assert 'class="proof theorem' in page or "theorem admonition" in page, "no theorem box"
    assert "definition" in page
    assert page.count('class="exercise') >= 2 or page.count("exercise admonition") >= 2, "fewer than two exercises"
    imgs = re.findall(r'<img[^>]*src="([^"]+)"', page)
    figures = [s for s in imgs if s.endswith(".png") and "logo" not in s]
    assert figures, "chapter 2 shows no figure"
    for src in figures:
        assert (built_book / "book" / src).resolve().exists(), f"missing image {src}"
    assert "Traceback" not in page, "an output on the page shows a Python traceback"


@pytest.mark.book
def test_colab_launch_button_on_every_chapter(built_book):
    for nb in sorted((ROOT / "book").glob("ch*.ipynb")):
        page = (built_book / "book" / (nb.stem + ".html")).read_text()
        assert "colab.research.google.com/github/lmdownstream/lmdownstream/blob/main/book/" + nb.name in page, \
            f"no Colab launch button for {nb.name}"


@pytest.mark.book
def test_student_book_hides_solutions(built_book, tmp_path):
    """The student edition of the book renders no solution (reusing the main build's execution cache)."""
    import json

    import editions

    html = editions.build_book("student", tmp_path / "student")
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        solution_cells = ["".join(c["source"]) for c in nb["cells"] if "solution" in c.get("metadata", {}).get("tags", [])]
        page = (html / "book" / (path.stem + ".html")).read_text()
        text = _visible_text(page)
        assert "[Student edition]" in page
        assert 'class="solution' not in page and "solution admonition" not in page, f"{path.name}: a solution box is rendered"
        for src in solution_cells:
            body = [l for l in src.splitlines() if l.strip().startswith("return ")]
            for line in body:
                assert line.strip() not in text, f"{path.name}: solution code {line.strip()!r} is on the student page"
                full = _visible_text((built_book / "book" / (path.stem + ".html")).read_text())
                assert line.strip() in full, "the instructor book should show the solution code"
