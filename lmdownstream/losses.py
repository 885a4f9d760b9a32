r"""The two pretraining losses of a softmax language model: cross-entropy and Quad.

A softmax LM gives context :math:`s` a feature :math:`\theta = f(s) \in \mathbb{R}^d` and word
:math:`w` an embedding :math:`\phi_w`, the columns of :math:`\Phi \in \mathbb{R}^{d \times V}`;
its next-word distribution is :math:`p_\theta = \mathrm{softmax}(\Phi^\top \theta)`. For a
target next-word distribution :math:`p^*` (population form) or an observed next word :math:`w`
(sample form, :math:`p^* = e_w`):

.. math::

    \ell_{\mathrm{xent}}(\theta, \Phi) = -\theta^\top \Phi p^* + \log Z_\theta,
    \qquad Z_\theta = \sum_{w} \exp(\theta^\top \phi_w),

    \ell_{\mathrm{quad}}(\theta, \Phi) = -\theta^\top \Phi p^* + \tfrac12 \|\Phi^\top \theta\|_2^2 .

Both functions are torch (differentiable; they accept numpy too and return a 0-dim tensor on
``theta``'s device) and average over the ``n`` rows (or take a weighted mean).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["xent_loss", "quad_loss"]


def _tensor(x, name: str, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if device is None else x.to(device)
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array or tensor ({exc}).") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}.")
    return torch.as_tensor(arr, device=device)


def _prepare(theta, Phi, target, weights, bias=None):
    """Validate and convert; returns theta (n, d), Phi (d, V), target ids (n,) or dists (n, V), w, bias."""
    theta = _tensor(theta, "theta")
    if not torch.is_floating_point(theta):
        theta = theta.double()
    dev = theta.device
    Phi = _tensor(Phi, "Phi", dev)
    if Phi.ndim != 2:
        raise ValueError(f"Phi must have shape (d, V) but has shape {tuple(Phi.shape)}.")
    single = theta.ndim == 1
    if single:
        theta = theta[None, :]
    if theta.ndim != 2:
        raise ValueError(f"theta must have shape (n, d) (or (d,)) but has shape {tuple(theta.shape)}.")
    n, d = theta.shape
    if Phi.shape[0] != d:
        raise ValueError(
            f"theta has d={d} columns but Phi has {Phi.shape[0]} rows; Phi must be (d, V) "
            "(transpose it if you passed (V, d))."
        )
    if n == 0:
        raise ValueError("theta is empty; pass at least one row.")
    V = Phi.shape[1]
    dtype = torch.promote_types(theta.dtype, Phi.dtype) if torch.is_floating_point(Phi) else theta.dtype
    theta, Phi = theta.to(dtype), Phi.to(dtype)

    target = _tensor(target, "target", dev)
    if single and target.ndim == (0 if not torch.is_floating_point(target) else 1):
        target = target[None]
    if torch.is_floating_point(target):
        if target.shape != (n, V):
            raise ValueError(
                f"target distributions must have shape (n, V) = ({n}, {V}) but have shape "
                f"{tuple(target.shape)}; pass integer word ids of shape ({n},) for the sample form."
            )
        target = target.to(dtype)
        if not bool(torch.isfinite(target).all()):
            raise ValueError("target has NaN or inf entries; rows must be probability distributions.")
        tol = 1e-6 if dtype == torch.float64 else 1e-3
        if bool((target < -tol).any()) or bool(((target.sum(1) - 1).abs() > tol).any()):
            raise ValueError(
                "rows of target must be probability distributions (non-negative, summing to 1); "
                "normalise them or pass integer word ids."
            )
    else:
        if target.shape != (n,):
            raise ValueError(
                f"target word ids must have shape ({n},) but have shape {tuple(target.shape)}."
            )
        target = target.long()
        if bool((target < 0).any()) or bool((target >= V).any()):
            raise ValueError(f"target word ids must lie in 0..{V - 1} (V = {V}); found an id out of range.")
    if not bool(torch.isfinite(theta).all()) or not bool(torch.isfinite(Phi).all()):
        raise ValueError("theta or Phi has NaN or inf entries; remove them first.")

    if weights is not None:
        weights = _tensor(weights, "weights", dev).to(dtype).reshape(-1)
        if weights.shape[0] != n:
            raise ValueError(f"weights has length {weights.shape[0]} but theta has {n} rows.")
        if bool((weights < 0).any()) or float(weights.sum()) <= 0 or not bool(torch.isfinite(weights).all()):
            raise ValueError("weights must be finite, non-negative and not all zero.")
        weights = weights / weights.sum()
    if bias is not None:
        bias = _tensor(bias, "bias", dev).to(dtype)
        if bias.shape != (V,):
            raise ValueError(f"bias must have shape (V,) = ({V},) but has shape {tuple(bias.shape)}.")
    return theta, Phi, target, weights, bias


def _linear_term(theta, Phi, target, logits):
    """theta^T Phi p* per row (n,)."""
    if torch.is_floating_point(target):
        return (logits * target).sum(1)
    return logits.gather(1, target[:, None])[:, 0]


def _reduce(per_row, weights):
    return per_row.mean() if weights is None else (per_row * weights).sum()


def xent_loss(theta, Phi, target, weights=None, bias=None) -> torch.Tensor:
    r"""Cross-entropy of the softmax LM :math:`p_\theta = \mathrm{softmax}(\Phi^\top\theta + b)`.

    .. math::

        \ell_{\mathrm{xent}} = \frac1n \sum_{i=1}^n \Big[ -(\Phi^\top\theta_i + b)^\top p^*_i
        + \log \sum_{w=1}^V \exp(\theta_i^\top \phi_w + b_w) \Big]

    computed with a log-sum-exp (stable for large logits). With integer targets
    :math:`p^*_i = e_{w_i}` (sample form); with distributions, the expected loss (population form).

    Parameters
    ----------
    theta : (n, d) features f(s) (a (d,) vector is one row).
    Phi : (d, V) word embeddings, columns phi_w.
    target : (n,) int word ids, or (n, V) next-word distributions p*(.|s).
    weights : optional (n,) non-negative weights (normalised to sum to 1) instead of the mean.
    bias : optional (V,) output bias b (0 in the paper).

    Returns
    -------
    0-dim tensor, differentiable in theta and Phi. Its gradient in theta_i is
    :math:`(\Phi p_{\theta_i} - \Phi p^*_i)/n`.
    """
    theta, Phi, target, weights, bias = _prepare(theta, Phi, target, weights, bias)
    logits = theta @ Phi
    if bias is not None:
        logits = logits + bias
    per_row = torch.logsumexp(logits, dim=1) - _linear_term(theta, Phi, target, logits)
    return _reduce(per_row, weights)


def quad_loss(theta, Phi, target, weights=None) -> torch.Tensor:
    r"""The Quad objective: cross-entropy with :math:`\log Z_\theta` replaced by a quadratic.

    .. math::

        \ell_{\mathrm{quad}} = \frac1n \sum_{i=1}^n \Big[ -\theta_i^\top \Phi p^*_i
        + \tfrac12 \|\Phi^\top \theta_i\|_2^2 \Big]

    Sample form (integer targets): :math:`-\theta_i^\top\phi_{w_i} + \frac12\|\Phi^\top\theta_i\|^2`.
    Its minimiser is :math:`\theta^*_i = (\Phi\Phi^\top)^{-1}\Phi p^*_i` and the gradient in
    theta_i is :math:`(\Phi\Phi^\top\theta_i - \Phi p^*_i)/n`.

    Parameters
    ----------
    theta : (n, d) features (a (d,) vector is one row).
    Phi : (d, V) word embeddings.
    target : (n,) int word ids, or (n, V) next-word distributions.
    weights : optional (n,) non-negative weights (normalised to sum to 1) instead of the mean.

    Returns
    -------
    0-dim tensor, differentiable in theta and Phi.
    """
    theta, Phi, target, weights, _ = _prepare(theta, Phi, target, weights)
    logits = theta @ Phi
    per_row = 0.5 * (logits * logits).sum(1) - _linear_term(theta, Phi, target, logits)
    return _reduce(per_row, weights)
