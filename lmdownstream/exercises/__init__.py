"""Exercise checkers: ``check_<name>(answer)`` grades a reader's function or value on random cases.

Each checker prints a one-line pass, or raises :class:`ExerciseFailed` (an ``AssertionError``) whose
message is a specific hint. ``REGISTRY`` maps each exercise label in the book to its checker.

Adding a graded exercise to a chapter takes a few lines: in ``lmdownstream/exercises/chNN.py``
write a reference, decorate a checker with ``@exercise("ex-chNN-name")`` that calls the reader's
answer through :func:`call` and compares with :func:`compare` (optionally with hints for known wrong
answers), import it here, and call it from the chapter's solution cell.
"""
from ._core import REGISTRY, ExerciseFailed, exercise
from .ch02 import check_blur_excess, check_sample_xent
from .ch03 import check_is_convex_decreasing, check_prior_entropy
from .ch04 import check_half_range, check_result_a_bound
from .ch05 import check_conditional_mean_features
from .ch06 import check_fit_quadratic_log_z, check_gaussian_log_z
from .ch07 import check_calibrated_predictions
from .ch08 import check_gd_quad_features, check_quad_loss_gram, check_quad_minimiser

__all__ = [
    "REGISTRY", "ExerciseFailed", "exercise",
    "check_sample_xent", "check_blur_excess",                       # chapter 2
    "check_prior_entropy", "check_is_convex_decreasing",            # chapter 3
    "check_result_a_bound", "check_half_range",                     # chapter 4
    "check_conditional_mean_features",                              # chapter 5
    "check_gaussian_log_z", "check_fit_quadratic_log_z",            # chapter 6
    "check_calibrated_predictions",                                 # chapter 7
    "check_quad_minimiser", "check_gd_quad_features",               # chapter 8
]
