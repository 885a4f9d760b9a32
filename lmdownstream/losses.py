r"""The two pretraining losses of a softmax language model, their optima, KL and entropy.

A softmax LM gives context :math:`s` a feature :math:`\theta = f(s) \in \mathbb{R}^d` and word
:math:`w` an embedding :math:`\phi_w`, the columns of :math:`\Phi \in \mathbb{R}^{d \times V}`;
its next-word distribution is :math:`p_\theta = \mathrm{softmax}(\Phi^\top \theta)`. For a
target next-word distribution :math:`p^*` (population form) or an observed next word :math:`w`
(sample form, :math:`p^* = e_w`):

.. math::

    \ell_{\mathrm{xent}}(\theta, \Phi) = -\theta^\top \Phi p^* + \log Z_\theta,
    \qquad Z_\theta = \sum_{w} \exp(\theta^\top \phi_w),

    \ell_{\mathrm{quad}}(\theta, \Phi) = -\theta^\top \Phi p^* + \tfrac12 \|\Phi^\top \theta\|_2^2
    = -\theta^\top \Phi p^* + \tfrac12 \theta^\top (\Phi\Phi^\top) \theta .

* :func:`xent_loss`, :func:`quad_loss` -- the kernels every trainer calls (torch,
  differentiable; numpy in is fine). ``theta`` is (n, d) or has leading batch dimensions
  (B, T, d); sample-form targets may hold ``-1`` = padding, ignored as by
  ``F.cross_entropy(..., ignore_index=-1)``. ``reduction`` is ``"mean"``, ``"sum"`` or ``"none"``.
  :func:`quad_loss` never forms the (n, V) logits: it uses the Gram matrix
  :math:`G = \Phi\Phi^\top` (pass ``gram=G`` to reuse it).
* :func:`xent_optimum`, :func:`quad_optimum` -- the best features for a fixed :math:`\Phi`.
* :func:`kl`, :func:`entropy` -- per row, numpy in -> numpy out, torch in -> torch out.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from . import config
from ._checks import as_array, as_tensor, check_choice, check_distributions, check_positive

__all__ = ["xent_loss", "quad_loss", "xent_optimum", "quad_optimum", "kl", "entropy", "PAD"]

#: Sample-form target id that marks padding: such rows are ignored by the losses.
PAD = -1

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------- validation
def _row_tol(dtype) -> float:
    return 1e-6 if dtype == torch.float64 else 1e-3


def _check_rows(P: torch.Tensor, name: str) -> None:
    """Raise unless the last axis of the float tensor P holds probability distributions."""
    tol = _row_tol(P.dtype)
    if bool((P < -tol).any()) or bool(((P.sum(-1) - 1).abs() > tol).any()):
        raise ValueError(
            f"rows of {name} must be probability distributions (non-negative, summing to 1); "
            f"normalise them ({name} / {name}.sum(-1, keepdims=True)) or pass integer word ids."
        )


def _prepare(theta, Phi, target, weights, bias, reduction):
    """Validate and flatten: theta (N, d), Phi (d, V), target (N,) ids or (N, V), w (N,) or None.

    Returns also ``shape``, the leading shape of theta (for ``reduction="none"``)."""
    check_choice(reduction, "reduction", _REDUCTIONS)
    theta = as_tensor(theta, "theta", allow_empty=True)
    dev = theta.device
    Phi = as_tensor(Phi, "Phi", ndim=2, device=dev)
    if theta.ndim == 0:
        raise ValueError("theta must have shape (n, d) (or (d,), or (..., d)); got a scalar.")
    shape, d = tuple(theta.shape[:-1]), theta.shape[-1]
    if Phi.shape[0] != d:
        raise ValueError(
            f"theta has d={d} columns but Phi has {Phi.shape[0]} rows; Phi must be (d, V) "
            "(transpose it if you passed (V, d))."
        )
    N = int(np.prod(shape, dtype=np.int64))
    if N == 0:
        raise ValueError("theta is empty; pass at least one row.")
    V = Phi.shape[1]
    dtype = torch.promote_types(theta.dtype, Phi.dtype)
    theta, Phi = theta.reshape(N, d).to(dtype), Phi.to(dtype)

    if isinstance(target, torch.Tensor):
        target = target.to(dev)
    else:
        arr = np.asarray(target)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"target must hold word ids or distributions, got dtype {arr.dtype}.")
        target = torch.as_tensor(arr, device=dev)
    if torch.is_floating_point(target):
        if tuple(target.shape) != shape + (V,):
            raise ValueError(
                f"target distributions must have shape {shape + (V,)} (theta's rows by V) but have "
                f"shape {tuple(target.shape)}; pass integer word ids of shape {shape} for the sample form."
            )
        target = target.reshape(N, V).to(dtype)
        if not bool(torch.isfinite(target).all()):
            raise ValueError("target has NaN or inf entries; rows must be probability distributions.")
        _check_rows(target, "target")
    else:
        if tuple(target.shape) != shape:
            raise ValueError(f"target word ids must have shape {shape} but have shape {tuple(target.shape)}.")
        target = target.reshape(N).long()
        if bool((target < PAD).any()) or bool((target >= V).any()):
            raise ValueError(
                f"target word ids must lie in 0..{V - 1} (V = {V}), or be {PAD} for padding; "
                "found an id out of range."
            )

    if weights is not None:
        if reduction == "none":
            raise ValueError("weights have no effect with reduction='none'; multiply the rows by them yourself.")
        weights = as_tensor(weights, "weights", device=dev).to(dtype)
        if tuple(weights.shape) != shape:
            raise ValueError(f"weights must have shape {shape} (one per row of theta) but have {tuple(weights.shape)}.")
        weights = weights.reshape(N)
        if bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be non-negative and not all zero.")
    if bias is not None:
        bias = as_tensor(bias, "bias", ndim=1, device=dev).to(dtype)
        if bias.shape[0] != V:
            raise ValueError(f"bias must have shape (V,) = ({V},) but has shape {tuple(bias.shape)}.")
    return theta, Phi, target, weights, bias, shape


def _reduce(per_row, target, weights, reduction, shape):
    """Per-row losses (N,) -> the requested reduction; padded rows count 0 and are not averaged."""
    keep = None if torch.is_floating_point(target) else target != PAD
    if keep is not None:
        per_row = torch.where(keep, per_row, torch.zeros_like(per_row))
    if reduction == "none":
        return per_row.reshape(shape)
    if weights is None:
        weights = torch.ones_like(per_row) if keep is None else keep.to(per_row.dtype)
    elif keep is not None:
        weights = weights * keep
    total = (per_row * weights).sum()
    return total if reduction == "sum" else total / weights.sum()


def _linear_term(theta, Phi, target):
    r""":math:`\theta_i^\top \Phi p^*_i` per row (N,), without the (N, V) logits for ids."""
    if torch.is_floating_point(target):
        return (theta * (target @ Phi.T)).sum(1)
    return (theta * Phi.T[target.clamp_min(0)]).sum(1)


# --------------------------------------------------------------------------- the losses
def xent_loss(theta, Phi, target, weights=None, bias=None, reduction: str = "mean") -> torch.Tensor:
    r"""Cross-entropy of the softmax LM :math:`p_\theta = \mathrm{softmax}(\Phi^\top\theta + b)`.

    .. math::

        \ell_{\mathrm{xent}} = \frac1n \sum_{i=1}^n \Big[ -(\Phi^\top\theta_i + b)^\top p^*_i
        + \log \sum_{w=1}^V \exp(\theta_i^\top \phi_w + b_w) \Big]

    computed with a log-sum-exp (stable for large logits). With integer targets
    :math:`p^*_i = e_{w_i}` (sample form, ``F.cross_entropy``); with distributions, the expected
    loss (population form).

    Parameters
    ----------
    theta : (n, d) features f(s); a (d,) vector is one row; (..., d) (e.g. (B, T, d)) is flattened.
    Phi : (d, V) word embeddings, columns phi_w.
    target : (n,) (or theta's leading shape) int word ids, ``-1`` = padding (ignored), or
        (n, V) next-word distributions p*(.|s).
    weights : optional (n,) non-negative row weights: ``"mean"`` is then the weighted mean
        :math:`\sum_i w_i \ell_i / \sum_i w_i`, ``"sum"`` is :math:`\sum_i w_i \ell_i`.
    bias : optional (V,) output bias b (0 in the paper).
    reduction : ``"mean"`` (over non-padded rows; NaN if every row is padding), ``"sum"``, or
        ``"none"``: the per-row losses, shaped like theta's leading dimensions, 0 at padding.

    Returns
    -------
    tensor on theta's device, differentiable in theta, Phi and bias. The gradient of the mean in
    theta_i is :math:`(\Phi p_{\theta_i} - \Phi p^*_i)/n`.
    """
    theta, Phi, target, weights, bias, shape = _prepare(theta, Phi, target, weights, bias, reduction)
    logits = theta @ Phi
    if bias is not None:
        logits = logits + bias
    if torch.is_floating_point(target):
        per_row = torch.logsumexp(logits, dim=1) - (logits * target).sum(1)
    else:
        per_row = F.cross_entropy(logits, target, ignore_index=PAD, reduction="none")
    return _reduce(per_row, target, weights, reduction, shape)


def quad_loss(theta, Phi, target, weights=None, reduction: str = "mean", gram=None) -> torch.Tensor:
    r"""The Quad objective: cross-entropy with :math:`\log Z_\theta` replaced by a quadratic.

    .. math::

        \ell_{\mathrm{quad}} = \frac1n \sum_{i=1}^n \Big[ \tfrac12 \theta_i^\top G\, \theta_i
        - \theta_i^\top \Phi p^*_i \Big], \qquad G = \Phi\Phi^\top \ (= \textstyle\sum_w \phi_w\phi_w^\top),

    which equals :math:`-\theta_i^\top\Phi p^*_i + \frac12\|\Phi^\top\theta_i\|^2`. Computed from the
    (d, d) Gram matrix, never from the (n, V) logits: sample form
    :math:`\frac12\theta_i^\top G\theta_i - \theta_i^\top\phi_{w_i}`. Its minimiser is
    :func:`quad_optimum` and the gradient of the mean in theta_i is :math:`(G\theta_i - \Phi p^*_i)/n`.

    Parameters
    ----------
    theta, Phi, target, weights, reduction : as in :func:`xent_loss` (``-1`` targets are padding).
    gram : optional (d, d) :math:`\Phi\Phi^\top`, computed once by the caller for a fixed Phi
        (default: computed here, differentiably). A given ``gram`` carries the quadratic term's
        gradient in Phi only if it was computed from Phi with autograd on.

    Returns
    -------
    tensor on theta's device, differentiable in theta and Phi.
    """
    theta, Phi, target, weights, _, shape = _prepare(theta, Phi, target, weights, None, reduction)
    d = theta.shape[1]
    if gram is None:
        G = Phi @ Phi.T
    else:
        G = as_tensor(gram, "gram", ndim=2, device=theta.device).to(theta.dtype)
        if tuple(G.shape) != (d, d):
            raise ValueError(f"gram must be Phi @ Phi.T, of shape ({d}, {d}), but has shape {tuple(G.shape)}.")
    per_row = 0.5 * ((theta @ G) * theta).sum(1) - _linear_term(theta, Phi, target)
    return _reduce(per_row, target, weights, reduction, shape)


# --------------------------------------------------------------------------- optima
def _phi_p(Phi, p_star):
    """Phi (d, V) float64 tensor and p_star (n, V) rows, validated; numpy or torch in, torch out."""
    torch_in = isinstance(Phi, torch.Tensor) or isinstance(p_star, torch.Tensor)
    Phi = as_array(Phi, "Phi", ndim=2)
    P = np.atleast_2d(check_distributions(p_star, "p_star"))
    if P.shape[1] != Phi.shape[1]:
        raise ValueError(f"p_star has V={P.shape[1]} columns but Phi has {Phi.shape[1]}; Phi must be (d, V).")
    return torch.as_tensor(Phi), torch.as_tensor(P), torch_in


def _out(x: torch.Tensor, torch_in: bool, Phi, p_star):
    if not torch_in:
        return x.numpy()
    ref = Phi if isinstance(Phi, torch.Tensor) else p_star
    return x.to(device=ref.device)


def quad_optimum(Phi, p_star):
    r"""Minimiser of the Quad loss for a fixed :math:`\Phi`: :math:`\theta^*_s = (\Phi\Phi^\top)^{-1}\Phi p^*(\cdot|s)`.

    Computed in float64 as the least-squares solution of :math:`\Phi^\top\theta \approx p^*(\cdot|s)`
    (the same normal equations, better conditioned). When :math:`\Phi\Phi^\top` is singular
    (rank-deficient Phi) every minimiser gives the same logits :math:`\Phi^\top\theta^*`, and this
    returns the minimum-norm one (LAPACK ``gelsd``, as ``numpy.linalg.lstsq``).

    Parameters
    ----------
    Phi : (d, V); p_star : (n, V) distributions (a (V,) row is one context).

    Returns
    -------
    (n, d) float64: numpy for numpy input, a tensor (on Phi's device) if either input is a tensor.
    """
    Phi_t, P, torch_in = _phi_p(Phi, p_star)
    theta = torch.linalg.lstsq(Phi_t.T, P.T, driver="gelsd").solution.T.contiguous()
    return _out(theta, torch_in, Phi, p_star)


def _xent_rows(theta, Phi, P):
    L = theta @ Phi
    return torch.logsumexp(L, dim=1) - (L * P).sum(1)


def _newton_xent(Phi, P, tol, max_iter):
    """Damped Newton per context, batched; returns (theta (n, d), converged (n,) bool)."""
    n, d = P.shape[0], Phi.shape[0]
    theta = torch.zeros(n, d, dtype=Phi.dtype)
    target = P @ Phi.T  # Phi p*, (n, d)
    eye = torch.eye(d, dtype=Phi.dtype)
    done = torch.zeros(n, dtype=torch.bool)
    f0 = _xent_rows(theta, Phi, P)
    for _ in range(max_iter):
        p = torch.softmax(theta @ Phi, dim=1)
        mu = p @ Phi.T
        g = mu - target
        H = (Phi[None] * p[:, None, :]) @ Phi.T - mu[:, :, None] * mu[:, None, :]
        ridge = 1e-12 * H.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-300)
        step = -torch.linalg.solve(H + ridge[:, None, None] * eye, g[:, :, None])[:, :, 0]
        dec = -(g * step).sum(1)  # squared Newton decrement
        small = (0.5 * dec <= tol) & ~done  # in the quadratic regime: one last full step
        a = torch.where(done, torch.zeros_like(dec), torch.ones_like(dec))
        if not bool((done | small).all()):
            slack = 8 * torch.finfo(Phi.dtype).eps * f0.abs()
            for _ in range(60):  # backtracking (Armijo), per context
                f1 = _xent_rows(theta + a[:, None] * step, Phi, P)
                bad = (f1 > f0 - 0.25 * a * dec + slack) & (a > 0) & ~small
                if not bool(bad.any()):
                    break
                a = torch.where(bad, a * 0.5, a)
        theta = theta + a[:, None] * step
        done = done | small
        if bool(done.all()):
            break
        f0 = _xent_rows(theta, Phi, P)
    return theta, done


def xent_optimum(Phi, p_star, tol: float = 1e-12, max_iter: int = 100):
    r"""Best features for a fixed :math:`\Phi` under cross-entropy, one context per row.

    .. math::

        \theta^*_s = \arg\min_\theta\ \log Z_\theta - \theta^\top \Phi p^*(\cdot|s),
        \quad\text{i.e.}\quad \Phi p_{\theta^*_s} = \Phi p^*(\cdot|s).

    The minimiser exists when :math:`\Phi p^*(\cdot|s)` lies in the interior of the convex hull
    of the columns of :math:`\Phi` (e.g. :math:`p^*` with full support and columns that affinely
    span :math:`\mathbb{R}^d`, generic when V > d). Otherwise the infimum is approached as
    :math:`\|\theta\| \to \infty` and a RuntimeWarning is raised.

    Damped Newton per context (float64 on the CPU, batched over contexts, started at 0) until half
    the squared Newton decrement, an estimate of the loss gap in nats, is <= ``tol``; one last full
    step follows (quadratic convergence), so :math:`\Phi p_{\theta^*}` matches :math:`\Phi p^*` to
    about machine precision. Cost O(n d^2 V) per iteration: for synthetic languages, not 50k words.

    Parameters
    ----------
    Phi : (d, V) word embeddings; p_star : (n, V) next-word distributions.
    tol : > 0, per-context suboptimality target (nats); max_iter : Newton iteration cap.

    Returns
    -------
    (n, d) float64 theta*: numpy for numpy input, a tensor (on Phi's device) for tensor input.
    """
    Phi_t, P, torch_in = _phi_p(Phi, p_star)
    tol = check_positive(tol, "tol")
    (n, V), d = P.shape, Phi_t.shape[0]
    # small problems: one thread (measured on 2 cores: 500 x 100 x 16 took 0.25 s on one, 1.4-14 s on two)
    with config.threads(1) if n * V * d <= 3e7 else contextlib.nullcontext():
        theta, done = _newton_xent(Phi_t, P, tol, int(max_iter))
    if not bool(done.all()):
        warnings.warn(
            f"xent_optimum did not converge for {int((~done).sum())} of {len(done)} contexts in "
            f"{max_iter} Newton steps: Phi p* is probably on the boundary of the convex hull of Phi's "
            "columns (p* with tiny support), where no finite minimiser exists.",
            RuntimeWarning,
            stacklevel=2,
        )
    return _out(theta, torch_in, Phi, p_star)


# --------------------------------------------------------------------------- KL and entropy
def _dists(P, name):
    """(array or tensor, is_torch): rows checked to be distributions."""
    if isinstance(P, torch.Tensor):
        P = as_tensor(P, name, ndim=(1, 2))
        _check_rows(P, name)
        return P, True
    return check_distributions(P, name), False


def entropy(p):
    r"""Row entropies :math:`H(p) = -\sum_w p_w \log p_w` in nats, with :math:`0 \log 0 = 0`.

    Parameters
    ----------
    p : (n, V) distributions (or one (V,) row).

    Returns
    -------
    (n,) (or a 0-dim value for one row): numpy for numpy input, torch (same device) for a tensor.
    """
    P, is_torch = _dists(p, "p")
    if is_torch:
        return -torch.special.xlogy(P, P).sum(-1)
    from scipy.special import entr

    return entr(P).sum(-1)


def kl(p, q):
    r"""Row-wise :math:`\mathrm{KL}(p\,\|\,q) = \sum_w p_w \log(p_w / q_w)` in nats.

    :math:`0 \log(0/q) = 0`; ``inf`` where q puts zero mass on a word p can emit.

    Parameters
    ----------
    p, q : (n, V) distributions of the same shape (or one (V,) row each), e.g. ``kl(p_star, p_f)``.

    Returns
    -------
    (n,) >= 0 (or a 0-dim value): numpy for numpy input, torch (p's device) if either is a tensor.
    """
    P, pt = _dists(p, "p")
    Q, qt = _dists(q, "q")
    if tuple(P.shape) != tuple(Q.shape):
        raise ValueError(
            f"p has shape {tuple(P.shape)} but q has shape {tuple(Q.shape)}; pass the distributions "
            "of the same contexts over the same vocabulary."
        )
    if pt or qt:
        P = P if pt else torch.as_tensor(P)
        Q = (Q if qt else torch.as_tensor(Q)).to(device=P.device, dtype=P.dtype)
        out = torch.special.xlogy(P, P) - torch.special.xlogy(P, Q)
        out = torch.where(P > 0, out, torch.zeros_like(out))
        return out.sum(-1).clamp_min(0.0)
    from scipy.special import rel_entr

    return np.maximum(rel_entr(P, Q).sum(-1), 0.0)
