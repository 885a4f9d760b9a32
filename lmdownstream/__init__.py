"""lmdownstream: the companion library of the course *Why language models help solve downstream tasks*.

Modules (bottom layer first): :mod:`config`; :mod:`losses`, :mod:`synthetic`, :mod:`theory`,
:mod:`probes` (numpy and torch only); :mod:`lm`, :mod:`features`. Import the module you need,
e.g. ``from lmdownstream import synthetic``.
"""
import warnings as _warnings

__version__ = "0.1.0"

# transformers and datasets import tqdm.auto, which warns once in any notebook without ipywidgets;
# the bars then print as text, which is all the book needs, so the warning is only noise in its pages
_warnings.filterwarnings("ignore", message="IProgress not found")

__all__ = ["config", "losses", "synthetic", "theory", "probes", "lm", "features", "experiments"]
