"""Machinery shared by the exercise checkers: random cases, comparison with a reference, hints.

A checker takes the reader's answer (a function or a value), runs it on random cases against a
reference implementation, prints a one-line pass, or raises :class:`ExerciseFailed` whose message
is a specific hint. Register a checker with :func:`exercise` so the book's tests can find it.
"""
from __future__ import annotations

import numpy as np

#: label of the exercise in the book -> checker function
REGISTRY: dict = {}


class ExerciseFailed(AssertionError):
    """The answer is wrong; the message says how (and what to look at)."""


def exercise(label: str, reference, wrong=()):
    """Register the decorated checker under the book label ``label`` (e.g. ``"ex-ch02-sample-xent"``).

    ``reference`` is a correct answer and ``wrong`` a few typical wrong ones; the test suite checks
    that the checker accepts the first and rejects each of the others.
    """

    def wrap(fn):
        if label in REGISTRY:
            raise ValueError(f"exercise label {label!r} already has a checker ({REGISTRY[label].__name__}).")
        fn.label, fn.reference, fn.wrong_answers = label, reference, tuple(wrong)
        REGISTRY[label] = fn
        return fn

    return wrap


def call(answer, *args, what: str = "your function"):
    """Call the reader's function, turning any exception into a hint."""
    if not callable(answer):
        raise ExerciseFailed(f"expected a function, got {type(answer).__name__}; pass the function itself, not its result.")
    try:
        return answer(*args)
    except NotImplementedError:
        raise ExerciseFailed(f"{what} still raises NotImplementedError: replace the stub with your code.") from None
    except Exception as exc:  # the reader's bug, reported as a hint
        raise ExerciseFailed(f"{what} raised {type(exc).__name__}: {exc}") from exc


def as_float_array(value, what: str) -> np.ndarray:
    """The reader's output as a float array (torch tensors accepted)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ExerciseFailed(f"{what} should be a number or an array of numbers, got {type(value).__name__}.") from None


def compare(got, want, what: str, rtol: float = 1e-6, atol: float = 1e-9, hints=()) -> None:
    """Raise :class:`ExerciseFailed` unless ``got`` matches ``want``.

    ``hints`` is a sequence of ``(predicate(got, want) -> bool, message)``; the first predicate that
    holds gives the hint (a known wrong answer), otherwise the message reports the difference.
    """
    got = as_float_array(got, what)
    want = np.asarray(want, dtype=float)
    if got.shape != want.shape:
        raise ExerciseFailed(f"{what} has shape {got.shape} but should have shape {want.shape}.")
    if not np.all(np.isfinite(got)):
        raise ExerciseFailed(f"{what} contains NaN or inf; check logs of zero and divisions.")
    if np.allclose(got, want, rtol=rtol, atol=atol):
        return
    for predicate, message in hints:
        try:
            if predicate(got, want):
                raise ExerciseFailed(f"{what} is not right: {message}")
        except ExerciseFailed:
            raise
        except Exception:
            continue
    err = float(np.max(np.abs(got - want)))
    raise ExerciseFailed(f"{what} differs from the reference by up to {err:.3g} (tolerance {rtol:g} relative).")


def passed(label: str, n_cases: int) -> None:
    """Print the pass line (and return None, so a checker called last in a cell echoes nothing)."""
    print(f"✓ {label}: passed on {n_cases} random cases.")


def random_distributions(rng: np.random.Generator, n: int, V: int, concentration: float = 1.0) -> np.ndarray:
    """(n, V) rows drawn from a symmetric Dirichlet, floored away from 0."""
    P = rng.dirichlet(np.full(V, concentration), size=n) + 1e-6
    return P / P.sum(axis=1, keepdims=True)
