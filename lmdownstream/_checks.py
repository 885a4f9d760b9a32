"""Input validation shared by the library: every bad input gets a ValueError that names the fix.

Internal module (layer 0); the public functions of each module call these helpers first, once, at
the public boundary (as scikit-learn's ``check_array`` / ``check_scalar``). Every integer,
fraction and tensor argument of the library goes through ``check_int``, ``check_fraction`` and
``as_tensor``, so one kind of mistake always gets one message.
"""
from __future__ import annotations

import numpy as np


def as_array(x, name: str, ndim=None, dtype=np.float64, allow_empty: bool = False) -> np.ndarray:
    """``x`` as a finite numpy array of ``dtype`` with ``ndim`` dimensions (an int or a tuple)."""
    try:
        if hasattr(x, "detach"):  # torch tensor
            x = x.detach().cpu().numpy()
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array; could not convert it ({exc}).") from None
    _check_shape(tuple(arr.shape), name, ndim, allow_empty)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} has {bad} non-finite value(s) (NaN or inf); remove or impute them first."
        )
    return arr


def check_distributions(P, name: str, atol: float = 1e-6) -> np.ndarray:
    """``P`` of shape (n, V) (or (V,)) whose rows are probability distributions, as float64."""
    P = as_array(P, name, ndim=(1, 2))
    if np.any(P < -atol):
        raise ValueError(f"{name} has negative entries (min {P.min():.3g}); rows must be probability distributions.")
    sums = P.sum(axis=-1)
    worst = float(np.max(np.abs(sums - 1.0)))
    if worst > atol:
        raise ValueError(
            f"rows of {name} must sum to 1 but one sums to {float(np.atleast_1d(sums)[np.argmax(np.abs(np.atleast_1d(sums) - 1))]):.6g}; "
            "normalise them (P / P.sum(-1, keepdims=True)) or pass probabilities, not logits."
        )
    return np.clip(P, 0.0, None)


def check_weights(weights, n: int, name: str = "weights") -> np.ndarray:
    """Non-negative weights of shape (n,), normalised to sum to 1; ``None`` means uniform."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = as_array(weights, name, ndim=1)
    if w.shape[0] != n:
        raise ValueError(f"{name} has length {w.shape[0]} but there are {n} rows; pass one weight per row.")
    if np.any(w < 0):
        raise ValueError(f"{name} has negative entries; weights must be non-negative.")
    total = w.sum()
    if total <= 0:
        raise ValueError(f"{name} sum to 0; at least one weight must be positive.")
    return w / total


def check_labels(y, n: int, name: str = "y", n_classes=None) -> tuple[np.ndarray, np.ndarray]:
    """Integer labels of shape (n,) with at least two classes; returns (codes 0..K-1, classes)."""
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be one label per row, shape ({n},), but has shape {y.shape}.")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but X has {n} rows; pass one label per row.")
    if n == 0:
        raise ValueError(f"{name} is empty; pass at least one example of each of two classes.")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{name} has NaN or inf labels; remove those rows first.")
    classes, codes = np.unique(y, return_inverse=True)
    if classes.shape[0] < 2:
        raise ValueError(
            f"{name} has only one class ({classes[0]!r}); a classifier needs examples of at least two classes."
        )
    if n_classes is not None and classes.shape[0] != n_classes:
        raise ValueError(f"{name} has {classes.shape[0]} classes but {n_classes} were expected.")
    return codes.astype(np.int64), classes


def check_nonnegative(x, name: str) -> float:
    """A finite float >= 0."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {x!r}.") from None
    if not np.isfinite(x) or x < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}.")
    return x


def check_positive(x, name: str) -> float:
    """A finite, strictly positive float."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {x!r}.") from None
    if not np.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {x!r}.")
    return x


def _check_shape(shape: tuple, name: str, ndim, allow_empty: bool) -> None:
    """A ValueError unless ``len(shape)`` is ``ndim`` (an int or a tuple) and, unless allowed, non-empty."""
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(shape) not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(
                f"{name} must have {want} dimension(s) but has shape {shape}; reshape it "
                f"({_reshape_hint(len(shape), allowed)})."
            )
    if not allow_empty and int(np.prod(shape)) == 0:
        raise ValueError(f"{name} is empty (shape {shape}); pass at least one element.")


def _reshape_hint(ndim: int, allowed) -> str:
    if ndim == 1 and 2 in allowed:
        return "x.reshape(-1, 1) if it is one feature, x[None, :] if it is one sample"
    if ndim == 2 and 1 in allowed:
        return "x.reshape(-1) if one of its dimensions is 1, or pass one row x[i]"
    if ndim == 0:
        return "pass an array, not a scalar: np.atleast_1d(x)"
    return "see the docstring for the expected shape"


def check_int(x, name: str, low: int | None = 1, high: int | None = None) -> int:
    """``x`` as a Python int in ``[low, high]`` (either bound may be None); bools are refused."""
    lo = "" if low is None else f" >= {low}"
    hi = "" if high is None else f" <= {high}"
    both = f"{lo}{' and' if lo and hi else ''}{hi}"
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        if isinstance(x, (float, np.floating)) and float(x).is_integer():
            raise ValueError(f"{name} must be an int{both}, got the float {x!r}; pass int({name}).")
        raise ValueError(f"{name} must be an int{both}, got {x!r}.")
    if (low is not None and x < low) or (high is not None and x > high):
        raise ValueError(f"{name} must be an int{both}, got {int(x)}.")
    return int(x)


def check_fraction(x, name: str, open_low: bool = False, open_high: bool = False) -> float:
    """``x`` as a float in [0, 1]; ``open_low`` / ``open_high`` exclude 0 / 1."""
    interval = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
    try:
        x = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in {interval}, got {x!r}.") from None
    if not np.isfinite(x) or x < 0 or x > 1 or (open_low and x == 0) or (open_high and x == 1):
        raise ValueError(f"{name} must be a number in {interval}, got {x!r}.")
    return x


def check_choice(value, name: str, choices) -> str:
    """``value`` if it is one of ``choices``; otherwise a ValueError that lists them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
    return value


def as_tensor(x, name: str, ndim=None, dtype=None, device=None, allow_empty: bool = False):
    """``x`` (tensor, array or nested list) as a finite torch tensor with ``ndim`` dimensions.

    A tensor keeps its device unless ``device`` is given; ``dtype=None`` keeps floating tensors'
    dtype and turns anything else into float64 (integer input stays integer only if ``dtype``
    says so).
    """
    import torch

    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a numeric array or tensor; could not convert it ({exc}).") from None
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}.")
        t = torch.as_tensor(arr)
    if dtype is not None:
        t = t.to(dtype)
    elif not torch.is_floating_point(t):
        t = t.double()
    if device is not None:
        t = t.to(device)
    _check_shape(tuple(t.shape), name, ndim, allow_empty)
    if torch.is_floating_point(t) and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf); remove or impute them first.")
    return t
