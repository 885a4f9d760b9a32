"""lmdownstream: the companion library of the course *Why language models help solve downstream tasks*.

Modules (bottom layer first): :mod:`config`; :mod:`losses`, :mod:`synthetic`, :mod:`theory`,
:mod:`probes` (numpy and torch only); :mod:`lm`, :mod:`features`. Import the module you need,
e.g. ``from lmdownstream import synthetic``.
"""
__version__ = "0.1.0"

__all__ = ["config", "losses", "synthetic", "theory", "probes", "lm", "features", "experiments"]
