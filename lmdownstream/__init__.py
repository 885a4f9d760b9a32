"""lmdownstream: the companion library of the course *Why language models help solve downstream tasks*.

Modules in layers (a module imports only from its own layer or below; ``tests/test_layering.py``
checks it):

0. :mod:`config` (profile, device, cache, sizes, threads) and ``_checks`` (input validation);
1. the math, once: :mod:`losses`, :mod:`synthetic`, :mod:`theory`, :mod:`fits`, :mod:`probes`
   (scikit-learn estimators on torch), :mod:`stats` (paired tests);
2. models behind one protocol: :mod:`lm`, :mod:`hf` (transformers imported only here), :mod:`features`;
3. :mod:`tasks`, :mod:`train`;
4. :mod:`experiments` (one thin module per result), :mod:`plot`, :mod:`exercises`;
5. :mod:`cli`.

Import the module you need, e.g. ``from lmdownstream import synthetic``.
"""
import warnings as _warnings

__version__ = "0.1.0"

# transformers and datasets import tqdm.auto, which warns once in any notebook without ipywidgets;
# the bars then print as text, which is all the book needs, so the warning is only noise in its pages
_warnings.filterwarnings("ignore", message="IProgress not found")

__all__ = ["config", "losses", "synthetic", "theory", "fits", "probes", "stats", "lm", "hf", "features", "tasks", "train",
           "experiments", "plot", "exercises"]
