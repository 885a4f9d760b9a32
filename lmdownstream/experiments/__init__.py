"""Experiments behind the book's theorem checks: one module per result, one call per experiment.

Each function builds a synthetic language and language models at many values of ε, computes the
real task loss and the bound for each, and returns the rows (a list of dicts) that the chapter
tabulates and plots; the appendix summary calls them all again. Import the submodule you need,
e.g. ``from lmdownstream.experiments import result_a``.
"""
