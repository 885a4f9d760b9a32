"""Build the whole Jupyter Book with warnings as errors, then check what a reader will see."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"


@pytest.fixture(scope="module")
def built_book():
    jb = Path(sys.executable).with_name("jupyter-book")
    env = dict(os.environ, HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "--builder", "html", "-W", "--keep-going"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, "jupyter-book build -W failed:\n" + log[-6000:]
    return HTML


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
def test_colab_launch_button(built_book):
    page = (built_book / "book" / "ch02_language_modelling.html").read_text()
    assert "colab.research.google.com" in page, "no Colab launch button on chapter 2"
