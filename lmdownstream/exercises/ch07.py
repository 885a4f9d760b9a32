"""Checkers for chapter 7 (experiments with real language models)."""
from __future__ import annotations

import numpy as np

from ._core import ExerciseFailed, as_float_array, call, exercise, passed


def _reference_calibrated(scores):
    scores = np.asarray(scores, dtype=float)
    return (scores - scores.mean(axis=0, keepdims=True)).argmax(axis=1)


@exercise("ex-ch07-calibration", reference=_reference_calibrated, wrong=[
    lambda s: np.asarray(s).argmax(axis=1),
    lambda s: (np.asarray(s) - np.asarray(s).mean(axis=1, keepdims=True)).argmax(axis=1),
    lambda s: (np.asarray(s) - np.asarray(s).mean(axis=0, keepdims=True)).argmin(axis=1),
])
def check_calibrated_predictions(calibrated_predictions, n_cases: int = 6, seed: int = 0) -> None:
    """Check ``calibrated_predictions(scores) -> (n,) ints``: argmax over classes of the scores minus each class's mean over texts."""
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        n, K = int(rng.integers(5, 60)), int(rng.integers(2, 6))
        prior = rng.normal(scale=3.0, size=K)  # a strong preference for some classes, as in a real LM
        scores = rng.normal(size=(n, K)) + prior
        want = _reference_calibrated(scores)
        got = as_float_array(call(calibrated_predictions, scores.copy(), what="calibrated_predictions"),
                             "calibrated_predictions(scores)")
        if got.shape != want.shape:
            raise ExerciseFailed(f"calibrated_predictions(scores) should return one class per text, shape {want.shape}, "
                                 f"but returned shape {got.shape}.")
        if np.array_equal(got, want):
            continue
        if np.array_equal(got, scores.argmax(axis=1)):
            raise ExerciseFailed("these are the raw predictions: subtract each class's mean score over the texts "
                                 "(scores.mean(axis=0)) before the argmax.")
        if np.array_equal(got, (scores - scores.mean(axis=1, keepdims=True)).argmax(axis=1)):
            raise ExerciseFailed("subtracting each text's mean over classes (axis=1) does not change the argmax; "
                                 "calibration subtracts each class's mean over the texts (axis=0).")
        if np.array_equal(got, (scores - scores.mean(axis=0, keepdims=True)).argmin(axis=1)):
            raise ExerciseFailed("you took the argmin; the predicted class is the one with the largest calibrated score.")
        wrong = int(np.sum(got != want))
        raise ExerciseFailed(f"{wrong} of {n} predictions differ from argmax(scores - scores.mean(axis=0)).")
    return passed("ex-ch07-calibration", n_cases)
