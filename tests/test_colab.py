"""Colab: every chapter's first cell installs the library in Colab (and only there) and picks the device.

The install path is exercised for real: a fresh virtual environment (with torch preinstalled, as on
Colab) runs the first cell of chapter 2 with a stand-in ``google.colab`` module and the repository
URL pointed at this checkout, then imports the package.
"""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("ch*.ipynb"))  # every chapter notebook
REPO_SPEC = "lmdownstream @ git+https://github.com/lmdownstream/lmdownstream"


def _first_code_cell(path: Path) -> str:
    nb = json.loads(path.read_text())
    return next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_first_cell_installs_only_in_colab_and_reports_device(path):
    cell = _first_code_cell(path)
    assert 'if "google.colab" in sys.modules' in cell, f"{path.name}: first cell lacks the Colab guard"
    assert re.search(r"lmdownstream(\[[a-z,]+\])? @ git\+https://github\.com/lmdownstream/lmdownstream", cell), \
        f"{path.name}: first cell should pip install {REPO_SPEC!r} (extras allowed)"
    assert "config.describe()" in cell, f"{path.name}: first cell should print the profile and device"
    guarded = cell.split('if "google.colab" in sys.modules', 1)[1]
    install_line = next(l for l in cell.splitlines() if "pip" in l and "install" in l)
    assert install_line.startswith((" ", "\t")), "the pip install must be inside the Colab guard"
    assert guarded


@pytest.mark.slow
def test_colab_install_path_in_fresh_venv(tmp_path):
    venv = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # Colab ships torch; install the same CPU build this project pins (from local disk here).
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cell = _first_code_cell(next(p for p in CHAPTERS if p.name.startswith("ch02")))
    setup = cell.split("import numpy", 1)[0]  # the install part of the cell
    setup = setup.replace(REPO_SPEC, f"lmdownstream @ {ROOT.as_uri()}")
    script = textwrap.dedent(
        """
        import sys, types
        sys.modules["google.colab"] = types.ModuleType("google.colab")  # pretend to be Colab
        """
    ) + setup + textwrap.dedent(
        """
        from lmdownstream import config, synthetic
        lang = synthetic.ContextLanguage.random(n_contexts=5, vocab_size=7, seed=0)
        print(config.describe(), lang.p_next.shape)
        """
    )
    proc = subprocess.run([str(py), "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "device=cpu" in proc.stdout and "(5, 7)" in proc.stdout
    where = subprocess.run([str(py), "-c", "import lmdownstream; print(lmdownstream.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    assert str(venv) in where, f"lmdownstream should be installed into the fresh venv, found at {where}"
