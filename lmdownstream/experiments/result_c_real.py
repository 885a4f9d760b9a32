r"""Result C on real language models: is :math:`\log Z_\theta` quadratic at the features :math:`\theta = f(s)`?

Result C (chapter 6) assumes that the log-partition function
:math:`\log Z_\theta = \log\sum_w e^{\theta^\top\phi_w}` is quadratic,
:math:`\tfrac12\theta^\top A\theta + b^\top\theta + c`, over the :math:`\theta = f(s)` that matter; then
:math:`\Phi p_{f(s)} = \nabla\log Z_{f(s)} = A f(s) + b` is an affine image of :math:`f(s)`. The motivation
is Gaussian embeddings: for columns :math:`\phi_w \sim N(\mu, \Sigma)`,
:math:`\log Z_\theta \approx \log V + \theta^\top\mu + \tfrac12\theta^\top\Sigma\theta`. This module measures
both on a real model's features, with held-out :math:`R^2` everywhere:

* :func:`context_features` -- the final hidden states (after the final norm) of a Hugging Face
  causal LM at every token position of some texts: one forward pass gives one context per token;
* :func:`study` -- pure numerics on any features F (n, d) and embeddings :math:`\Phi` (d, V): the true
  :math:`\log Z` and :math:`\Phi p_f`; the unfitted Gaussian prediction; the Gaussian form with three
  fitted numbers; a fitted quadratic (in the top-k principal coordinates, plus linear in all d);
  the best affine map :math:`f \mapsto \Phi p_f`, and the affine maps implied by the Gaussian
  prediction and by the gradient of the fitted quadratic. Returns a :class:`LogZStudy`;
* :func:`run` -- :func:`context_features` then :func:`study`, for an :class:`~lmdownstream.hf.HFLM`;
* helpers :func:`fit_pc_quadratic`, :func:`fit_linear_map`, :func:`pooled_r2`, usable on their own.

``transformers`` is never imported here: :func:`context_features` only calls the model it is given.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import features
from ..config import single_blas_thread
from .._checks import check_nonnegative
from ..theory import LogPartitionFit

__all__ = [
    "DEFAULT_SKIP_FIRST",
    "RIDGE_GRID",
    "context_features",
    "pooled_r2",
    "fit_pc_quadratic",
    "fit_linear_map",
    "LogZStudy",
    "study",
    "run",
]

#: Positions skipped at the start of every text by default. Measured on SmolLM2-135M-Instruct
#: (which adds no BOS token, so position 0 is the text's first token): at layer 15 of 30 the
#: residual stream at position 0 has a median norm of about 25,800 against about 160 at positions
#: 1-15 (8 tweets; a ratio of about 150, and 8-150x from layer 5 on, also on BBC news): the
#: attention-sink token. The final RMSNorm brings its f(s) back to the norm of the others (ratio
#: 0.8), but it stays atypical: a quadratic fitted to log Z on positions >= 1 misses log Z at
#: position 0 with a mean squared error 25-30x its held-out error on positions >= 1 (tweets and
#: BBC news, 2,000 contexts). Positions 1, 2, ... look like the rest. So 1.
DEFAULT_SKIP_FIRST = 1

#: Candidate ridge penalties (relative: per standardised column and per training point) tried on
#: a validation split when ``ridge=None``.
RIDGE_GRID = tuple(10.0 ** e for e in range(-8, 3))

_METHODS_LOGZ = ("gaussian", "gaussian_scaled", "linear", "quadratic")
_LABELS = {
    "gaussian": "Gaussian prediction (no fit)",
    "gaussian_scaled": "Gaussian form, 3 fitted numbers",
    "linear": "linear fit",
    "quadratic": "quadratic fit",
    "map_gaussian": "Σθ + μ (Gaussian, no fit)",
    "map_gaussian_scaled": "αΣθ + βμ (scaled Gaussian)",
    "map_quadratic_grad": "Aθ + b (gradient of the quadratic fit)",
    "map_fitted": "W θ + w₀ (affine map fitted to Φp_f)",
}


# --------------------------------------------------------------------------- small helpers
def _check_int(x, name, low=1):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or x < low:
        raise ValueError(f"{name} must be an int >= {low}, got {x!r}.")
    return int(x)


def _finite_2d(x, name, dtype=np.float64):
    """x (numpy or torch) as a finite 2-D numpy array of dtype."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array; could not convert it ({exc}).") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D but has shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}).")
    if not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} has {bad} NaN or inf entries; remove those rows (or fix the model) first.")
    return arr


def pooled_r2(y_true, y_pred) -> float:
    r"""Coefficient of determination, pooled over all coordinates of a vector target.

    .. math::

        R^2 = 1 - \frac{\sum_{i,j} (y_{ij} - \hat y_{ij})^2}{\sum_{i,j} (y_{ij} - \bar y_j)^2}

    with :math:`\bar y_j` the mean of coordinate j over the rows given (so for a test set, the
    test mean). For a 1-D target this is the usual :math:`R^2`; for a 2-D one it equals
    ``sklearn.metrics.r2_score(..., multioutput="variance_weighted")``. 1 is perfect, 0 is no
    better than the per-coordinate mean, and it is negative (without bound) for worse predictions.

    Parameters
    ----------
    y_true, y_pred : (n,) or (n, m) arrays of the same shape, n >= 2.

    Returns
    -------
    float (-inf if the targets are constant and the prediction misses them; 1.0 if it hits them).
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"y_true has shape {y.shape} but y_pred has shape {p.shape}; they must match.")
    if y.ndim not in (1, 2) or y.shape[0] < 2:
        raise ValueError(f"R^2 needs (n,) or (n, m) arrays with n >= 2, got shape {y.shape}.")
    sse = float(np.sum((y - p) ** 2))
    sst = float(np.sum((y - y.mean(axis=0)) ** 2))
    if sst == 0.0:
        return 1.0 if sse == 0.0 else float("-inf")
    return 1.0 - sse / sst


# --------------------------------------------------------------------------- context features
def context_features(lm, texts, n_contexts=None, max_tokens: int = 64, skip_first: int = DEFAULT_SKIP_FIRST,
                     seed=0, batch_size: int = 16, progress: bool = False, return_info: bool = False):
    r"""Context features :math:`f(s)` of an :class:`~lmdownstream.hf.HFLM` at *every* token of some texts.

    Each text is tokenized (:func:`lmdownstream.hf.tokenize`, with the tokenizer's special prefix
    such as a BOS token, if it adds one, and without any special suffix) and **cut to its first
    ``max_tokens`` tokens**. Position t of a text is the context s = (its tokens 0..t), and
    :math:`f(s)` is the final hidden state there, after the final norm
    (``lm.base(...).last_hidden_state``), so one forward pass gives a context per token. The first
    ``skip_first`` positions of every text are dropped (see :data:`DEFAULT_SKIP_FIRST` for what
    was measured). With ``n_contexts``, that many of the remaining (text, position) pairs are
    sampled uniformly without replacement, and each text is run only up to its last sampled
    position (exact: a causal LM's state at t does not see later tokens). Texts are batched by
    length with right padding and an attention mask, in ``torch.inference_mode()``.

    Nothing is cut silently: with ``return_info=False`` a ``UserWarning`` says how many texts
    were longer than ``max_tokens``; with ``return_info=True`` the count is returned instead.

    Parameters
    ----------
    lm : :class:`~lmdownstream.hf.HFLM` (from :func:`lmdownstream.lm.load_lm`).
    texts : list of non-empty strings.
    n_contexts : None (all positions) or an int >= 1, the number of contexts to sample.
    max_tokens : int >= skip_first + 1 and <= the model's context window; tokens kept per text.
    skip_first : int >= 0, positions dropped at the start of each text.
    seed : seed of the sample (``np.random.default_rng``).
    batch_size : texts per forward pass at most.
    progress : show a tqdm progress bar (texts).
    return_info : also return a dict with ``text`` (n,) the index of each row's text, ``position``
        (n,) its token position, ``n_truncated`` (texts cut to ``max_tokens``), ``n_available``
        (contexts available before sampling) and ``n_texts``.

    Returns
    -------
    (n, d) float32 numpy array, rows ordered by (text, position); or ``(F, info)``.
    """
    from .. import hf

    if not isinstance(lm, hf.HFLM):
        raise ValueError(f"lm must be an HFLM (from lmdownstream.lm.load_lm), got {type(lm).__name__}.")
    texts = hf._check_texts(texts)
    skip_first = _check_int(skip_first, "skip_first", 0)
    max_tokens = _check_int(max_tokens, "max_tokens", skip_first + 1)
    if max_tokens > lm.max_length:
        raise ValueError(f"max_tokens={max_tokens} exceeds the context window of {lm.name} ({lm.max_length} tokens).")
    batch_size = _check_int(batch_size, "batch_size")
    if n_contexts is not None:
        n_contexts = _check_int(n_contexts, "n_contexts")

    # tokenize with no left truncation (a huge limit), then keep the first max_tokens tokens; the
    # tokenizer's "sequence longer than the model's maximum" warning is silenced (nothing that
    # long reaches the model)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        ids, _ = hf.tokenize(lm, texts, max_length=10**12)
    finally:
        hf_logging.set_verbosity(verbosity)
    _, post = hf._special_affixes(lm.tokenizer)
    if post:
        ids = [x[: len(x) - len(post)] if x[len(x) - len(post):] == post else x for x in ids]
    n_truncated = sum(len(x) > max_tokens for x in ids)
    ids = [x[:max_tokens] for x in ids]
    avail = np.array([max(len(x) - skip_first, 0) for x in ids])
    total = int(avail.sum())
    if total == 0:
        raise ValueError(f"no context is left: every text has at most skip_first={skip_first} tokens; "
                         "pass longer texts or lower skip_first.")
    starts = np.concatenate([[0], np.cumsum(avail)])
    if n_contexts is None:
        chosen = np.arange(total)
    else:
        if n_contexts > total:
            per_text = total / len(texts)
            need = math.ceil(n_contexts / per_text)
            raise ValueError(
                f"n_contexts={n_contexts} but only {total} contexts are available from {len(texts)} texts "
                f"({per_text:.1f} per text with max_tokens={max_tokens}, skip_first={skip_first}); pass about "
                f"{need} texts of this kind, raise max_tokens, or lower n_contexts."
            )
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=n_contexts, replace=False))
    text_of = np.searchsorted(starts, chosen, side="right") - 1
    pos_of = chosen - starts[text_of] + skip_first
    # run each used text up to its last chosen position only
    last = np.full(len(texts), -1)
    np.maximum.at(last, text_of, pos_of)
    used = np.flatnonzero(last >= 0)
    run_ids = [ids[i][: last[i] + 1] for i in used]
    where = {int(t): j for j, t in enumerate(used)}
    want = [[] for _ in used]  # per used text: (row in F, position)
    for row, (t, p) in enumerate(zip(text_of, pos_of)):
        want[where[int(t)]].append((row, int(p)))

    F = np.empty((len(chosen), lm.d), dtype=np.float32)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(run_ids), desc=f"contexts {lm.name}", unit="text", leave=False)
    try:
        with torch.inference_mode():
            for batch, hidden, _ in hf._hidden_batches(lm, run_ids, batch_size, 8192):
                hidden = hidden.float().cpu().numpy()  # right padding: real tokens keep positions 0..len-1
                for r, j in enumerate(batch):
                    rows = [a for a, _ in want[j]]
                    F[rows] = hidden[r, [p for _, p in want[j]]]
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    if not np.all(np.isfinite(F)):
        raise ValueError(f"{lm.name} produced NaN or inf hidden states; check the model's dtype (try float32).")
    info = dict(text=text_of.astype(np.int64), position=pos_of.astype(np.int64), n_truncated=int(n_truncated),
                n_available=total, n_texts=len(texts))
    if return_info:
        return F, info
    if n_truncated:
        warnings.warn(f"{n_truncated} of {len(texts)} texts were longer than max_tokens={max_tokens} tokens and "
                      f"were cut to their first {max_tokens} tokens.", UserWarning, stacklevel=2)
    return F


# --------------------------------------------------------------------------- ridge regression
def _check_ridge(ridge):
    """None (chosen on a validation split) or a finite number >= 0."""
    return None if ridge is None else check_nonnegative(ridge, "ridge (or None, to choose it on a validation split)")


def _split(n, fraction, seed, groups=None):
    """Seeded split of range(n) into (keep, held) with about ``fraction`` held out; by group if given."""
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        n_held = int(round(fraction * n))
        return np.sort(perm[n_held:]), np.sort(perm[:n_held])
    uniq = np.unique(groups)
    order = rng.permutation(uniq)
    counts = np.array([np.count_nonzero(groups == g) for g in order])
    target = fraction * n
    k = int(np.searchsorted(np.cumsum(counts), target) + 1)
    k = min(max(k, 1), len(uniq) - 1)
    held_groups = order[:k]
    held = np.isin(groups, held_groups)
    return np.flatnonzero(~held), np.flatnonzero(held)


class _Standardizer:
    """Column centring and scaling learned on a fit set (constant columns are left unscaled)."""

    def __init__(self, X):
        self.mean = X.mean(axis=0)
        sd = X.std(axis=0)
        self.sd = np.where(sd > 0, sd, 1.0)

    def __call__(self, X):
        return (X - self.mean) / self.sd


def _ridge_path(X, Y, Xv, lambdas):
    """Validation predictions of centred ridge regressions, one per lambda > 0, from one SVD of X."""
    U, S, Vt = np.linalg.svd(X, full_matrices=False)
    UtY = U.T @ Y
    XvV = Xv @ Vt.T
    for lam in lambdas:
        shrink = S / (S * S + lam)
        yield lam, XvV @ (shrink[:, None] * UtY if UtY.ndim == 2 else shrink * UtY)


def _ridge_fit(X, Y, ridge, val_fraction, seed, groups):
    """Ridge regression of Y on X (with intercept, standardised columns).

    ``ridge`` is relative: the penalty is ``ridge * n`` on the coefficients of the standardised
    columns (each has sum of squares n). ``ridge=None`` picks it from :data:`RIDGE_GRID` by the
    error on a validation split of (X, Y). Returns (coef (p,) or (p, m) for the raw columns,
    intercept, ridge used, validation R² of the chosen ridge or NaN).
    """
    n = X.shape[0]
    val_r2 = float("nan")
    if ridge is None:
        fit, val = _split(n, val_fraction, seed, groups)
        if len(fit) < 2 or len(val) < 2:
            raise ValueError(f"{n} training contexts are too few to choose the ridge on a validation split; "
                             "pass more contexts or a fixed ridge.")
        st = _Standardizer(X[fit])
        ym = Y[fit].mean(axis=0)
        best = (np.inf, None)
        for lam_rel, pred in _ridge_path(st(X[fit]), Y[fit] - ym, st(X[val]), [r * len(fit) for r in RIDGE_GRID]):
            err = float(np.sum((Y[val] - ym - pred) ** 2))
            if err < best[0]:
                best = (err, lam_rel / len(fit))
        ridge = best[1]
        sst = float(np.sum((Y[val] - Y[val].mean(axis=0)) ** 2))
        val_r2 = 1.0 - best[0] / sst if sst > 0 else float("nan")
    st = _Standardizer(X)
    ym = Y.mean(axis=0)
    Xs = st(X)
    if ridge == 0.0:
        coef_s = np.linalg.lstsq(Xs, Y - ym, rcond=None)[0]
    else:
        p = Xs.shape[1]
        lam = ridge * n
        if p <= n:
            coef_s = np.linalg.solve(Xs.T @ Xs + lam * np.eye(p), Xs.T @ (Y - ym))
        else:  # dual form: p x p would be larger than n x n
            coef_s = Xs.T @ np.linalg.solve(Xs @ Xs.T + lam * np.eye(n), Y - ym)
    coef = coef_s / (st.sd[:, None] if coef_s.ndim == 2 else st.sd)
    intercept = ym - st.mean @ coef
    return coef, intercept, float(ridge), val_r2


def _pcs(theta, k):
    """Train mean m (d,) and the top-k principal directions U (d, k) of theta (eigenvectors of the covariance)."""
    m = theta.mean(axis=0)
    if k == 0:
        return m, np.zeros((theta.shape[1], 0))
    tc = theta - m
    evals, evecs = np.linalg.eigh(tc.T @ tc)
    return m, evecs[:, ::-1][:, :k]


def _pc_design(theta, m, U):
    """Columns [½ z_i², z_i z_j (i < j), theta - m] with z = (theta - m) U (as theory.fit_log_partition orders A)."""
    tc = theta - m
    z = tc @ U
    iu, ju = np.triu_indices(U.shape[1])
    quad = z[:, iu] * z[:, ju] * np.where(iu == ju, 0.5, 1.0)
    return np.hstack([quad, tc]), (iu, ju)


def fit_pc_quadratic(theta, y, k: int = 16, ridge=None, val_fraction: float = 0.2, seed=0, groups=None):
    r"""Fit :math:`y \approx \tfrac12 z^\top A_k z + w^\top(\theta - m) + c_0` with :math:`z = U_k^\top(\theta - m)`.

    A general quadratic in d dimensions has :math:`(d+1)(d+2)/2` unknowns (166,753 at d = 576), far
    more than there are contexts. This keeps the quadratic part to the top-``k`` principal
    directions :math:`U_k` of ``theta`` (about its mean m; k(k+1)/2 unknowns) and the linear part
    in all d coordinates: :math:`k(k+1)/2 + d + 1` unknowns, fitted by ridge regression on
    standardised columns (the intercept is not penalised; ``ridge`` is per standardised column
    and per point, so the penalty is ``ridge * n``). ``k=0`` gives a linear fit; ``k=d`` with
    ``ridge=0`` is the full least-squares quadratic of :func:`lmdownstream.theory.fit_log_partition`.

    The result is returned as a :class:`lmdownstream.theory.LogPartitionFit` in :math:`\theta`
    coordinates: :math:`A = U_k A_k U_k^\top` (rank <= k), :math:`b = w - A m`,
    :math:`c = c_0 + \tfrac12 m^\top A m - w^\top m`, so ``fit.predict``, ``fit.grad``
    (:math:`A\theta + b`, result C's affine map) and ``fit.r2`` work on raw features.

    Parameters
    ----------
    theta : (n, d) points (training features); y : (n,) values (e.g. :math:`\log Z_\theta`).
    k : int, 0 <= k <= min(d, n - 1), principal directions in the quadratic part.
    ridge : None (chosen from :data:`RIDGE_GRID` by the squared error on a validation split of
        ``val_fraction`` of the points) or a number >= 0 (0: least squares, minimum norm).
    val_fraction : in (0, 1), used when ``ridge=None``.
    seed : seed of the validation split. groups : optional (n,) group labels (e.g. the text
        of each context): the validation split then keeps groups whole.

    Returns
    -------
    (fit, info): :class:`~lmdownstream.theory.LogPartitionFit` and a dict with ``ridge`` (used),
    ``val_r2`` (validation R² of the chosen ridge, NaN for a fixed ridge), ``k``, ``n_params``.
    """
    theta = _finite_2d(theta, "theta")
    n, d = theta.shape
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) (one value per row of theta) but has shape {y.shape}.")
    if not np.all(np.isfinite(y)):
        raise ValueError("y has NaN or inf entries; remove those rows first.")
    k = _check_int(k, "k", 0)
    if k > min(d, n - 1):
        raise ValueError(f"k={k} must be <= min(d, n - 1) = {min(d, n - 1)} (d={d}, n={n}).")
    ridge = _check_ridge(ridge)
    val_fraction = float(val_fraction)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}.")
    with single_blas_thread():  # many mid-sized BLAS calls: much faster on one thread on a busy machine
        m, U = _pcs(theta, k)
        X, (iu, ju) = _pc_design(theta, m, U)
        coef, c0, used, val_r2 = _ridge_fit(X, y, ridge, val_fraction, seed, groups)
    nq = iu.shape[0]
    Ak = np.zeros((k, k))
    Ak[iu, ju] = coef[:nq]
    Ak[ju, iu] = coef[:nq]
    w = coef[nq:]
    A = U @ Ak @ U.T
    A = 0.5 * (A + A.T)
    Am = A @ m
    fit = LogPartitionFit(A=A, b=w - Am, c=float(c0 + 0.5 * m @ Am - w @ m))
    return fit, dict(ridge=used, val_r2=val_r2, k=k, n_params=nq + d + 1)


def fit_linear_map(X, Y, ridge=None, val_fraction: float = 0.2, seed=0, groups=None):
    r"""Ridge regression :math:`Y \approx X W + w_0` (e.g. :math:`\Phi p_f \approx W f + w_0`, all outputs at once).

    Columns of X are standardised on the fitting points; the penalty is ``ridge * n`` on the
    standardised coefficients, the intercept is not penalised (``ridge=0`` is ordinary least
    squares). ``ridge=None`` picks it from :data:`RIDGE_GRID` by the pooled squared error on a
    validation split of ``val_fraction`` of the rows (kept by group if ``groups`` is given).

    Parameters
    ----------
    X : (n, d); Y : (n, m) or (n,); ridge, val_fraction, seed, groups : as in :func:`fit_pc_quadratic`.

    Returns
    -------
    (W (d, m) or (d,), w0 (m,) or float, info dict with ``ridge`` and ``val_r2``).
    """
    X = _finite_2d(X, "X")
    Y = np.asarray(Y.detach().cpu().numpy() if isinstance(Y, torch.Tensor) else Y, dtype=np.float64)
    if Y.ndim not in (1, 2) or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must have shape ({X.shape[0]},) or ({X.shape[0]}, m) but has shape {Y.shape}.")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y has NaN or inf entries; remove those rows first.")
    val_fraction = float(val_fraction)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}.")
    with single_blas_thread():
        W, w0, used, val_r2 = _ridge_fit(X, Y, _check_ridge(ridge), val_fraction, seed, groups)
    return W, (float(w0) if np.ndim(w0) == 0 else w0), dict(ridge=used, val_r2=val_r2)


# --------------------------------------------------------------------------- the study
@dataclass
class LogZStudy:
    r"""Result of :func:`study`: how quadratic is :math:`\log Z_\theta` at the features, and how affine is :math:`\Phi p_f`?

    Every R² is held out: fitted on ``train`` contexts, measured on ``test`` ones (pooled over
    coordinates for :math:`\Phi p_f`, see :func:`pooled_r2`).

    Attributes
    ----------
    r2 : dict method -> held-out R². :math:`\log Z`: ``"gaussian"`` (the unfitted prediction
        :math:`\log V + \theta^\top\mu + \tfrac12\theta^\top\Sigma\theta`), ``"gaussian_scaled"``
        (:math:`c + \beta\,\theta^\top\mu + \tfrac\alpha2\theta^\top\Sigma\theta`), ``"linear"``,
        ``"quadratic"`` (:func:`fit_pc_quadratic` with ``k=0`` and ``k``). :math:`\Phi p_f`:
        ``"map_gaussian"`` (:math:`\Sigma\theta + \mu`), ``"map_gaussian_scaled"``
        (:math:`\alpha\Sigma\theta + \beta\mu`), ``"map_quadratic_grad"`` (:math:`A\theta + b`, the gradient of
        the quadratic fit: result C's map), ``"map_fitted"`` (:math:`W\theta + w_0` fitted to
        :math:`\Phi p_f` directly).
    alpha, beta, c : the three numbers of the scaled Gaussian fit (1, 1, log V for the
        unfitted prediction without bias).
    quad : :class:`~lmdownstream.theory.LogPartitionFit` of the quadratic fit (in θ coordinates).
    ridge : dict method -> the ridge used (chosen on a validation split when ``ridge=None``).
    mu, Sigma : (d,), (d, d) mean and population covariance (/V) of Φ's columns.
    log_Z : (n,) true :math:`\log Z_{f(s)}`; Phi_p : (n, d) float32 true :math:`\Phi p_{f(s)}`.
    train, test : index arrays into the n contexts.
    log_Z_test : (n_test,) true values; pred_test : dict method -> (n_test,) predictions.
    logit_sd : (n,) :math:`\sqrt{\theta^\top\Sigma\theta}`, the spread of a context's logits over
        the vocabulary; the Gaussian calculation needs it well below :math:`\sqrt{2\log V}`.
    n, d, V, k, seed, test_fraction, grouped : sizes and settings.
    timings : dict stage -> seconds. meta : free-form information (set by :func:`run`).
    """

    n: int
    d: int
    V: int
    k: int
    seed: int
    test_fraction: float
    grouped: bool
    r2: dict
    alpha: float
    beta: float
    c: float
    quad: LogPartitionFit
    ridge: dict
    mu: np.ndarray
    Sigma: np.ndarray
    log_Z: np.ndarray
    Phi_p: np.ndarray
    train: np.ndarray
    test: np.ndarray
    log_Z_test: np.ndarray
    pred_test: dict
    logit_sd: np.ndarray
    W: np.ndarray
    w0: np.ndarray
    timings: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def rows(self) -> list:
        """One dict per method, for a table: ``method`` (key of ``r2``), ``target`` (``"log Z"`` or
        ``"Φp_f"``), ``what`` (a label), ``r2`` (held out), ``n_fitted`` (numbers fitted) and ``notes``."""
        d, k = self.d, self.k
        nq = k * (k + 1) // 2 + d + 1
        out = [
            dict(method="gaussian", target="log Z", what=_LABELS["gaussian"], r2=self.r2["gaussian"], n_fitted=0,
                 notes="μ, Σ: mean and covariance of Φ's columns"),
            dict(method="gaussian_scaled", target="log Z", what=_LABELS["gaussian_scaled"],
                 r2=self.r2["gaussian_scaled"], n_fitted=3,
                 notes=f"α = {self.alpha:.3g}, β = {self.beta:.3g}, c = {self.c:.3g}"),
            dict(method="linear", target="log Z", what=_LABELS["linear"], r2=self.r2["linear"], n_fitted=d + 1,
                 notes=f"ridge {self.ridge['linear']:.0e}"),
            dict(method="quadratic", target="log Z", what=_LABELS["quadratic"], r2=self.r2["quadratic"],
                 n_fitted=nq, notes=f"quadratic in top {k} PCs, linear in all {d}; ridge {self.ridge['quadratic']:.0e}"),
            dict(method="map_gaussian", target="Φp_f", what=_LABELS["map_gaussian"], r2=self.r2["map_gaussian"],
                 n_fitted=0, notes="gradient of the Gaussian prediction"),
            dict(method="map_gaussian_scaled", target="Φp_f", what=_LABELS["map_gaussian_scaled"],
                 r2=self.r2["map_gaussian_scaled"], n_fitted=3, notes="gradient of the scaled Gaussian fit"),
            dict(method="map_quadratic_grad", target="Φp_f", what=_LABELS["map_quadratic_grad"],
                 r2=self.r2["map_quadratic_grad"], n_fitted=nq, notes="fitted to log Z values only"),
            dict(method="map_fitted", target="Φp_f", what=_LABELS["map_fitted"], r2=self.r2["map_fitted"],
                 n_fitted=d * d + d, notes=f"ridge {self.ridge['map_fitted']:.0e}"),
        ]
        return out

    summary = rows

    def table(self) -> str:
        """The :meth:`rows` as an aligned plain-text table."""
        lines = [f"{'target':<6} {'method':<42} {'held-out R²':>12} {'fitted':>8}  notes"]
        for r in self.rows():
            lines.append(f"{r['target']:<6} {r['what']:<42} {r['r2']:12.4f} {r['n_fitted']:8d}  {r['notes']}")
        return "\n".join(lines)

    def plot(self, ax=None, methods=_METHODS_LOGZ):
        """Predicted against true :math:`\\log Z` on the test contexts, one marker per method, with y = x.

        The axes span the true values (plus a margin); a method whose predictions leave that
        range is clipped to its border and the legend gives how many points were clipped.
        Returns the matplotlib axes.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 4.5))
        y = self.log_Z_test
        lo, hi = float(y.min()), float(y.max())
        pad = 0.08 * (hi - lo if hi > lo else 1.0)
        lo, hi = lo - pad, hi + pad
        for mth in methods:
            if mth not in self.pred_test:
                raise ValueError(f"unknown method {mth!r}; choose from {tuple(self.pred_test)}.")
            p = self.pred_test[mth]
            off = int(np.count_nonzero((p < lo) | (p > hi)))
            label = f"{_LABELS[mth]}: R² = {self.r2[mth]:.3f}"
            if off:
                label += f" ({off} of {len(p)} off-scale, drawn at the border)"
            ax.plot(y, np.clip(p, lo, hi), ".", ms=3, alpha=0.6, label=label)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="y = x")
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="true log Z (held-out contexts)", ylabel="predicted log Z")
        ax.legend(fontsize=7, loc="upper left")
        return ax


def _gaussian_moments(Phi_t, bias_t, chunk_size):
    """Mean (D,) and population covariance (D, D) of the columns of [Phi; bias], float64, chunked over V."""
    d, V = Phi_t.shape
    D = d + (bias_t is not None)
    s1 = torch.zeros(D, dtype=torch.float64)
    s2 = torch.zeros(D, D, dtype=torch.float64)
    # shift by the first column's value for a stable one-pass covariance
    shift = None
    for a in range(0, V, chunk_size):
        P = Phi_t[:, a:a + chunk_size].detach().to("cpu", torch.float64)
        if bias_t is not None:
            P = torch.cat([P, bias_t[a:a + chunk_size].detach().to("cpu", torch.float64)[None]], 0)
        if shift is None:
            shift = P.mean(1)
        P = P - shift[:, None]
        s1 += P.sum(1)
        s2 += P @ P.T
    m = s1 / V
    cov = s2 / V - torch.outer(m, m)
    return (m + shift).numpy(), (0.5 * (cov + cov.T)).numpy()


def _true_values(F, Phi_t, bias_t, chunk_size, block=512):
    """log Z (n,) float64 and Phi p (n, d) float32, streamed over V (features.log_partition / conditional_mean)."""
    n = F.shape[0]
    dtype = Phi_t.dtype if Phi_t.dtype in (torch.float32, torch.float64) else torch.float32
    logz = np.empty(n)
    phip = np.empty((n, F.shape[1]), dtype=np.float32)
    with torch.inference_mode():
        for a in range(0, n, block):
            th = torch.as_tensor(F[a:a + block]).to(device=Phi_t.device, dtype=dtype)
            logz[a:a + block] = features.log_partition(th, Phi_t, bias_t, chunk_size=chunk_size).double().cpu().numpy()
            phip[a:a + block] = features.conditional_mean(th, Phi_t, bias_t, chunk_size=chunk_size).float().cpu().numpy()
    return logz, phip


def study(F, Phi, bias=None, test_fraction: float = 0.3, k: int = 16, ridge=None, seed=0, groups=None,
          val_fraction: float = 0.2, chunk_size: int = 4096) -> LogZStudy:
    r"""Is :math:`\log Z_\theta` quadratic, and :math:`\Phi p_\theta` affine, at the features :math:`\theta = f(s)`?

    With :math:`\theta_i` the rows of ``F`` and :math:`\phi_w` the columns of ``Phi``:

    1. the truth, :math:`\log Z_{\theta_i}` and :math:`\Phi p_{\theta_i}`, streamed over chunks of the
       vocabulary (:func:`lmdownstream.features.log_partition`, :func:`~lmdownstream.features.conditional_mean`);
    2. a seeded split of the contexts into train and test (``test_fraction`` held out; by
       ``groups`` if given, e.g. the text each context comes from, so no text is on both sides);
    3. the **Gaussian prediction** (nothing fitted): :math:`\mu`, :math:`\Sigma` = mean and population
       covariance (divided by V) of the columns; :math:`\log Z \approx \log V + \theta^\top\mu + \tfrac12\theta^\top\Sigma\theta`
       and :math:`\Phi p_\theta \approx \Sigma\theta + \mu`. With a ``bias`` b (V,), the logits are
       :math:`\theta^\top\phi_w + b_w = \theta'^\top\phi'_w` with :math:`\theta' = (\theta, 1)`, :math:`\phi'_w = (\phi_w, b_w)`,
       and the same formula is applied to the columns :math:`\phi'_w` (so the bias's mean, variance and
       covariance with :math:`\phi_w` enter exactly as a (d+1)-th coordinate); ``mu``, ``Sigma`` are then (d+1)-dimensional;
    4. the **scaled Gaussian fit**: :math:`\log Z \approx c + \beta\,\theta'^\top\mu + \tfrac\alpha2\theta'^\top\Sigma\theta'`,
       three numbers by least squares on train (its gradient :math:`\alpha\Sigma\theta + \beta\mu` is the map);
    5. a **linear** and a **quadratic fit** of :math:`\log Z` (:func:`fit_pc_quadratic`: quadratic in the
       top-``k`` principal coordinates of the train features, linear in all d, ridge), and the
       gradient :math:`A\theta + b` of the quadratic as a prediction of :math:`\Phi p_\theta`;
    6. the **best affine map** :math:`\Phi p_\theta \approx W\theta + w_0` (:func:`fit_linear_map`, ridge).

    Every R² is measured on the test contexts (pooled over coordinates for :math:`\Phi p`).

    Parameters
    ----------
    F : (n, d) context features (numpy or torch).
    Phi : (d, V) output embeddings (numpy or torch; a torch tensor is used where it is, e.g. on a GPU).
    bias : None or (V,) output bias (see 3.).
    test_fraction : in (0, 1), fraction of contexts held out.
    k : int >= 0, principal directions in the quadratic part (capped at d).
    ridge : None (each fit chooses its ridge from :data:`RIDGE_GRID` on a validation split of
        ``val_fraction`` of the training contexts) or a number >= 0 used by every fit.
    seed : seed of the splits. groups : optional (n,) group labels for the splits.
    val_fraction : in (0, 1). chunk_size : vocabulary columns per softmax chunk.

    Returns
    -------
    :class:`LogZStudy` (use ``.table()``, ``.rows()``, ``.plot()``).
    """
    timings = {}
    t0 = time.perf_counter()
    Fa = _finite_2d(F, "F", dtype=np.float64)
    n, d = Fa.shape
    if isinstance(Phi, torch.Tensor):
        Phi_t = Phi.detach()
        if not torch.is_floating_point(Phi_t):
            Phi_t = Phi_t.double()
    else:
        arr = np.asarray(Phi)
        Phi_t = torch.as_tensor(_finite_2d(arr, "Phi", dtype=arr.dtype if arr.dtype in (np.float32, np.float64)
                                           else np.float64))
    if Phi_t.ndim != 2 or Phi_t.shape[0] != d:
        raise ValueError(f"Phi must have shape (d, V) with d = {d} (F's columns) but has shape {tuple(Phi_t.shape)}; "
                         "transpose it if you passed (V, d).")
    V = int(Phi_t.shape[1])
    if V < 2:
        raise ValueError(f"Phi has V={V} column(s); a softmax needs at least 2 words.")
    if isinstance(Phi, torch.Tensor) and not bool(torch.isfinite(Phi_t).all()):
        raise ValueError("Phi has NaN or inf entries; fix the embeddings first.")
    bias_t = None
    if bias is not None:
        b = bias.detach() if isinstance(bias, torch.Tensor) else torch.as_tensor(np.asarray(bias, dtype=np.float64))
        if tuple(b.shape) != (V,):
            raise ValueError(f"bias must have shape (V,) = ({V},) but has shape {tuple(b.shape)}.")
        if not bool(torch.isfinite(b).all()):
            raise ValueError("bias has NaN or inf entries.")
        bias_t = b.to(Phi_t.device)
    test_fraction = float(test_fraction)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}.")
    val_fraction = float(val_fraction)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}.")
    k = min(_check_int(k, "k", 0), d)
    seed = _check_int(seed, "seed", 0)
    ridge = _check_ridge(ridge)
    chunk_size = _check_int(chunk_size, "chunk_size")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},) (one label per row of F) but has shape {groups.shape}.")
        if np.unique(groups).shape[0] < 4:
            raise ValueError("groups must have at least 4 distinct values (test, validation and fit sides each need one).")
    # sizes: >= 2 test points; >= 20 training points (5 validation points when the ridge is chosen)
    n_min_train = 20
    need = max(math.ceil(n_min_train / (1 - test_fraction)), math.ceil(2 / test_fraction))
    if n < need:
        raise ValueError(f"{n} contexts are too few: with test_fraction={test_fraction} the split needs at least "
                         f"{need} (20 to train, 2 to test); pass more contexts.")
    train, test = _split(n, test_fraction, seed, groups)
    if len(test) < 2 or len(train) < n_min_train:
        raise ValueError(f"the split left {len(train)} training and {len(test)} test contexts; pass more contexts "
                         f"(or more groups), at least {need}.")
    k = min(k, len(train) - 1)
    if ridge == 0.0 and len(train) < k * (k + 1) // 2 + d + 1:
        warnings.warn(f"ridge=0 with {len(train)} training contexts and {k * (k + 1) // 2 + d + 1} unknowns: the "
                      "quadratic fit is underdetermined (minimum-norm solution); pass ridge=None.",
                      UserWarning, stacklevel=2)
    g_train = groups[train] if groups is not None else None
    timings["validate"] = time.perf_counter() - t0

    # 1. the truth
    t0 = time.perf_counter()
    logz, phip = _true_values(Fa, Phi_t, bias_t, chunk_size)
    timings["log Z and Φp (softmax over V)"] = time.perf_counter() - t0

    # 3. the Gaussian prediction (in the augmented coordinates when there is a bias)
    t0 = time.perf_counter()
    mu, Sigma = _gaussian_moments(Phi_t, bias_t, chunk_size)
    Fp = Fa if bias_t is None else np.hstack([Fa, np.ones((n, 1))])
    lin_g = Fp @ mu
    SF = Fp @ Sigma
    quad_g = 0.5 * np.einsum("ij,ij->i", SF, Fp)
    logit_sd = np.sqrt(np.maximum(2 * quad_g, 0.0))
    pred = {"gaussian": np.log(V) + lin_g + quad_g}
    map_pred = {"map_gaussian": (SF + mu)[:, :d]}
    # 4. the scaled Gaussian fit: 3 numbers
    D3 = np.column_stack([np.ones(n), lin_g, quad_g])
    c3, beta, alpha = np.linalg.lstsq(D3[train], logz[train], rcond=None)[0]
    pred["gaussian_scaled"] = D3 @ np.array([c3, beta, alpha])
    map_pred["map_gaussian_scaled"] = (alpha * SF + beta * mu)[:, :d]
    timings["Gaussian prediction and 3-number fit"] = time.perf_counter() - t0

    # 5. linear and quadratic fits of log Z
    t0 = time.perf_counter()
    ridges = {}
    lin_fit, info = fit_pc_quadratic(Fa[train], logz[train], k=0, ridge=ridge, val_fraction=val_fraction,
                                     seed=seed + 1, groups=g_train)
    pred["linear"], ridges["linear"] = lin_fit.predict(Fa), info["ridge"]
    quad, info = fit_pc_quadratic(Fa[train], logz[train], k=k, ridge=ridge, val_fraction=val_fraction,
                                  seed=seed + 1, groups=g_train)
    pred["quadratic"], ridges["quadratic"] = quad.predict(Fa), info["ridge"]
    map_pred["map_quadratic_grad"] = quad.grad(Fa)
    timings["linear and quadratic fits"] = time.perf_counter() - t0

    # 6. the affine map f -> Phi p_f
    t0 = time.perf_counter()
    W, w0, info = fit_linear_map(Fa[train], phip[train].astype(np.float64), ridge=ridge, val_fraction=val_fraction,
                                 seed=seed + 1, groups=g_train)
    map_pred["map_fitted"], ridges["map_fitted"] = Fa @ W + w0, info["ridge"]
    timings["affine map f → Φp"] = time.perf_counter() - t0

    r2 = {m: pooled_r2(logz[test], p[test]) for m, p in pred.items()}
    r2.update({m: pooled_r2(phip[test], p[test]) for m, p in map_pred.items()})
    return LogZStudy(
        n=n, d=d, V=V, k=k, seed=seed, test_fraction=test_fraction,
        grouped=groups is not None, r2=r2, alpha=float(alpha), beta=float(beta), c=float(c3), quad=quad,
        ridge=ridges, mu=mu, Sigma=Sigma, log_Z=logz, Phi_p=phip, train=train, test=test,
        log_Z_test=logz[test], pred_test={m: p[test] for m, p in pred.items()}, logit_sd=logit_sd,
        W=W, w0=np.asarray(w0), timings=timings,
    )


def run(lm, texts, n_contexts=2000, max_tokens: int = 64, skip_first: int = DEFAULT_SKIP_FIRST, seed=0,
        batch_size: int = 16, split_by_text: bool = True, progress: bool = False, **study_kwargs) -> LogZStudy:
    r""":func:`context_features` of ``lm`` on ``texts``, then :func:`study` with its output embeddings.

    Parameters
    ----------
    lm : :class:`~lmdownstream.hf.HFLM`, e.g. ``load_lm("smollm2")`` or ``load_lm("gpt2")``.
    texts : list of strings.
    n_contexts, max_tokens, skip_first, batch_size, progress : see :func:`context_features`
        (``seed`` seeds both the sample and the splits).
    split_by_text : split train/test (and validation) by text, so that no text has contexts on
        both sides (contexts of one text share a prefix); False splits contexts independently.
    **study_kwargs : passed to :func:`study` (``test_fraction``, ``k``, ``ridge``, ...).

    Returns
    -------
    :class:`LogZStudy` whose ``meta`` records the model's name, d, V, the number of texts and of
    texts cut to ``max_tokens``, the settings, and ``timings`` the seconds of every stage
    (``"forward passes"`` included).
    """
    t0 = time.perf_counter()
    F, info = context_features(lm, texts, n_contexts=n_contexts, max_tokens=max_tokens, skip_first=skip_first,
                               seed=seed, batch_size=batch_size, progress=progress, return_info=True)
    t_fwd = time.perf_counter() - t0
    res = study(F, lm.Phi, bias=lm.bias, seed=seed, groups=info["text"] if split_by_text else None, **study_kwargs)
    res.timings = {"forward passes": t_fwd, **res.timings}
    res.meta.update(model=lm.name, d=lm.d, V=lm.V, n_texts=info["n_texts"],
                    n_texts_used=int(np.unique(info["text"]).shape[0]), n_truncated=info["n_truncated"],
                    n_available=info["n_available"], max_tokens=max_tokens, skip_first=skip_first,
                    split_by_text=bool(split_by_text))
    return res
