"""Test-wide settings: never reach the network, draw no windows."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "book: builds the Jupyter Book (slow)")


@pytest.fixture(scope="session")
def built_book():
    """Build the whole book once per session (jupyter-book, warnings as errors); return the HTML folder."""
    jb = Path(sys.executable).with_name("jupyter-book")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # figures need the inline backend
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "--builder", "html", "-W", "--keep-going"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, "jupyter-book build -W failed:\n" + log[-6000:]
    return ROOT / "_build" / "html"


@pytest.fixture
def small_training(tmp_path, monkeypatch):
    """For tests that train models: an empty LMDOWNSTREAM_CACHE and one torch thread (restored afterwards)."""
    import torch

    monkeypatch.setenv("LMDOWNSTREAM_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "cache"
    torch.set_num_threads(before)
