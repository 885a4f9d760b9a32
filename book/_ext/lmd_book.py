"""Sphinx extension of the book build: the executed pages show results, not progress bars.

Loaded by ``_config.yml`` (``sphinx.local_extensions``) before myst-nb executes the chapters; the
kernels it starts inherit this process's environment, so one switch turns off every bar:
``LMDOWNSTREAM_PROGRESS=0`` for the library's own (:func:`lmdownstream.config.progress`),
``TQDM_DISABLE`` for tqdm bars of transformers, datasets and the hub, and transformers' logging
at ``error`` so that "Loading weights" reports do not print. A notebook run by hand keeps its bars.
"""
import os

QUIET = {
    "LMDOWNSTREAM_PROGRESS": "0",
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def setup(app):
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
