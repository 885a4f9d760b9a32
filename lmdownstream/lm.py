r"""Language models in their softmax view: context features :math:`f(s) \in \mathbb{R}^d` and
word embeddings :math:`\Phi \in \mathbb{R}^{d\times V}`, with :math:`p_{f(s)} = \mathrm{softmax}(\Phi^\top f(s))`.

* :class:`TableLM` -- a free feature vector per context of a finite language (a table), with
  :math:`\Phi` fixed or learned; trained on the population loss until its excess
  cross-entropy reaches a chosen :math:`\varepsilon` (:meth:`TableLM.fit`), or placed exactly at
  a chosen :math:`\varepsilon` on the segment to the optimum (:meth:`TableLM.at_eps`).
* :func:`optimal_f` -- the best features for a fixed :math:`\Phi` under cross-entropy
  (:math:`\Phi p_{f^*(s)} = \Phi p^*(\cdot|s)`); :func:`quad_optimal_f` -- the same for Quad.

(Hugging Face models will be added here with a lazy ``import transformers``; this module must
not import it at import time.)
"""
from __future__ import annotations

import contextlib
import functools
import warnings

import numpy as np
import torch
from torch import nn

from . import config
from ._checks import as_array, check_distributions, check_positive, check_weights

__all__ = ["TableLM", "optimal_f", "quad_optimal_f"]

_LOSSES = ("xent", "quad")
_RELATIVE = ("p_star", "Phi")


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _one_thread_if_small(n, V, d, device="cpu"):
    """Run small CPU problems (n * V * d <= 3e7) on one thread, then restore the thread count.

    Measured on a 2-core machine: at these sizes torch's thread pool costs more than it saves
    (500 x 100 x 16: 0.25 s on one thread vs 1.4-14 s on two when the cores are busy)."""
    before = torch.get_num_threads()
    small = torch.device(device).type == "cpu" and n * V * d <= 3e7 and before > 1
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


def _small_threads(method):
    """Decorator for TableLM methods: :func:`_one_thread_if_small` around the call."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with _one_thread_if_small(self.n_contexts, self.vocab_size, self.d, self.f.device):
            return method(self, *args, **kwargs)

    return wrapper


def _per_context(theta, Phi, P, loss):
    """Per-row loss (n,) in population form (no validation; internal)."""
    L = theta @ Phi
    lin = (L * P).sum(1)
    if loss == "xent":
        return torch.logsumexp(L, dim=1) - lin
    return 0.5 * (L * L).sum(1) - lin


def _entropy(P):
    return -torch.special.xlogy(P, P).sum(1)


def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
    return value


def _newton_xent(Phi, P, tol=1e-12, max_iter=100):
    """Damped Newton per context for min_theta log Z_theta - theta^T Phi p*; torch, batched.

    Returns (theta (n, d), converged (n,) bool). ``tol`` bounds half the squared Newton
    decrement, an estimate of each context's suboptimality in nats.
    """
    n, V = P.shape
    d = Phi.shape[0]
    theta = torch.zeros(n, d, dtype=Phi.dtype, device=Phi.device)
    target = P @ Phi.T  # Phi p*, (n, d)
    eye = torch.eye(d, dtype=Phi.dtype, device=Phi.device)
    done = torch.zeros(n, dtype=torch.bool, device=Phi.device)
    f0 = _per_context(theta, Phi, P, "xent")
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
                f1 = _per_context(theta + a[:, None] * step, Phi, P, "xent")
                bad = (f1 > f0 - 0.25 * a * dec + slack) & (a > 0) & ~small
                if not bool(bad.any()):
                    break
                a = torch.where(bad, a * 0.5, a)
        theta = theta + a[:, None] * step
        done = done | small
        if bool(done.all()):
            break
        f0 = _per_context(theta, Phi, P, "xent")
    return theta, done


def _as_tensor(x, dtype, device):
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def _check_phi_p(Phi, p_star):
    Phi = as_array(Phi, "Phi", ndim=2)
    P = check_distributions(p_star, "p_star")
    P = np.atleast_2d(P)
    if P.shape[1] != Phi.shape[1]:
        raise ValueError(
            f"p_star has V={P.shape[1]} columns but Phi has {Phi.shape[1]}; Phi must be (d, V)."
        )
    return Phi, P


# --------------------------------------------------------------------------- optimal features
def optimal_f(Phi, p_star, tol: float = 1e-12, max_iter: int = 100) -> np.ndarray:
    r"""Best features for a fixed :math:`\Phi` under cross-entropy, one context per row.

    .. math::

        \theta^*_s = \arg\min_\theta\ \log Z_\theta - \theta^\top \Phi p^*(\cdot|s),
        \quad\text{i.e.}\quad \Phi p_{\theta^*_s} = \Phi p^*(\cdot|s).

    The minimiser exists when :math:`\Phi p^*(\cdot|s)` lies in the interior of the convex hull
    of the columns of :math:`\Phi` -- e.g. when :math:`p^*(\cdot|s)` has full support and the
    columns affinely span :math:`\mathbb{R}^d` (generic when :math:`V > d`). Otherwise the
    infimum is approached as :math:`\|\theta\| \to \infty` and a RuntimeWarning is raised.

    Solved per context by damped Newton (float64, batched over contexts, started at 0) until
    half the squared Newton decrement, an estimate of the loss gap in nats, is <= ``tol``; one
    last full Newton step follows (quadratic convergence), so the gap ends near ``tol**2`` and
    :math:`\Phi p_{\theta^*}` matches :math:`\Phi p^*` to about machine precision.
    Cost O(n d^2 V) per iteration: meant for synthetic languages, not 50k-word vocabularies.

    Parameters
    ----------
    Phi : (d, V) word embeddings.
    p_star : (n, V) next-word distributions.
    tol : > 0, per-context suboptimality target (nats).
    max_iter : Newton iteration cap.

    Returns
    -------
    (n, d) float64 array theta*.
    """
    Phi, P = _check_phi_p(Phi, p_star)
    tol = check_positive(tol, "tol")
    with _one_thread_if_small(P.shape[0], P.shape[1], Phi.shape[0]):
        theta, done = _newton_xent(torch.as_tensor(Phi), torch.as_tensor(P), tol=tol, max_iter=int(max_iter))
    if not bool(done.all()):
        warnings.warn(
            f"optimal_f did not converge for {int((~done).sum())} of {len(done)} contexts in {max_iter} "
            "Newton steps: Phi p* is probably on the boundary of the convex hull of Phi's columns "
            "(p* with tiny support), where no finite minimiser exists.",
            RuntimeWarning,
            stacklevel=2,
        )
    return theta.numpy()


def quad_optimal_f(Phi, p_star) -> np.ndarray:
    r"""Minimiser of the Quad loss for a fixed :math:`\Phi`: :math:`\theta^*_s = (\Phi\Phi^\top)^{-1}\Phi p^*(\cdot|s)`.

    Computed as the least-squares solution of :math:`\Phi^\top\theta \approx p^*(\cdot|s)`
    (same normal equations, better conditioned; the minimum-norm solution if
    :math:`\Phi\Phi^\top` is singular).

    Parameters
    ----------
    Phi : (d, V); p_star : (n, V) distributions.

    Returns
    -------
    (n, d) float64 array.
    """
    Phi, P = _check_phi_p(Phi, p_star)
    return np.linalg.lstsq(Phi.T, P.T, rcond=None)[0].T


# --------------------------------------------------------------------------- the table LM
class TableLM(nn.Module):
    r"""A softmax LM over a finite set of contexts: a free feature row :math:`f(s)` per context.

    :math:`p_{f(s)} = \mathrm{softmax}(\Phi^\top f(s))`, with ``f`` a parameter of shape
    (n_contexts, d) initialised at 0 (the uniform distribution) and ``Phi`` (d, V) either given
    (a fixed buffer, or the initial value when ``learn_Phi=True``) or drawn with i.i.d.
    N(0, 1) entries from ``seed``.

    Fitted attributes (after :meth:`fit` or :meth:`at_eps`): ``eps_`` (achieved excess),
    ``n_steps_`` (optimizer steps), ``history_`` (excess before each step, numpy array).

    Parameters
    ----------
    n_contexts : number of contexts (rows of p_star).
    Phi : optional (d, V) embeddings; otherwise pass ``d`` and ``vocab_size``.
    d, vocab_size : sizes when ``Phi`` is None.
    learn_Phi : train Phi together with f.
    seed : seed of the random Phi.
    dtype : torch dtype (default float64; float32 on MPS, which has no float64).
    device : torch device (default :func:`lmdownstream.config.device`).
    """

    def __init__(self, n_contexts, Phi=None, d=None, vocab_size=None, learn_Phi=False, seed=0,
                 dtype=None, device=None):
        super().__init__()
        device = torch.device(device) if device is not None else config.device()
        if dtype is None:
            dtype = torch.float32 if device.type == "mps" else torch.float64
        n_contexts = int(check_positive(n_contexts, "n_contexts"))
        if Phi is not None:
            Phi = torch.as_tensor(as_array(Phi, "Phi", ndim=2), dtype=dtype, device=device)
            if d is not None and int(d) != Phi.shape[0] or vocab_size is not None and int(vocab_size) != Phi.shape[1]:
                raise ValueError(f"Phi has shape {tuple(Phi.shape)} but d={d}, vocab_size={vocab_size} were given.")
        else:
            if d is None or vocab_size is None:
                raise ValueError("pass Phi (d, V), or both d and vocab_size for a random Phi.")
            d, V = int(check_positive(d, "d")), int(check_positive(vocab_size, "vocab_size"))
            gen = torch.Generator().manual_seed(int(seed))
            Phi = torch.randn(d, V, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
        self.learn_Phi = bool(learn_Phi)
        if self.learn_Phi:
            self.Phi = nn.Parameter(Phi.clone())
        else:
            self.register_buffer("Phi", Phi.clone())
        self.f = nn.Parameter(torch.zeros(n_contexts, Phi.shape[0], dtype=dtype, device=device))

    @property
    def n_contexts(self) -> int:
        return self.f.shape[0]

    @property
    def d(self) -> int:
        return self.f.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.Phi.shape[1]

    # ----------------------------------------------------------------- views
    def forward(self, contexts=None) -> torch.Tensor:
        """Logits :math:`\\Phi^\\top f(s)`: (n_contexts, V), or (len(contexts), V) for given context ids."""
        f = self.f if contexts is None else self.f[torch.as_tensor(contexts, device=self.f.device).long()]
        return f @ self.Phi

    def features(self) -> np.ndarray:
        """f(s) for every context, (n_contexts, d) numpy."""
        return self.f.detach().cpu().numpy().copy()

    def embeddings(self) -> np.ndarray:
        """Phi, (d, V) numpy."""
        return self.Phi.detach().cpu().numpy().copy()

    def probs(self) -> np.ndarray:
        """p_f(s) = softmax(Phi^T f(s)) for every context, (n_contexts, V) numpy."""
        with torch.no_grad():
            return torch.softmax(self.forward(), dim=1).cpu().numpy()

    # ----------------------------------------------------------------- excess losses
    def _data(self, p_star, weights):
        P = check_distributions(p_star, "p_star")
        if P.ndim != 2 or P.shape != (self.n_contexts, self.vocab_size):
            raise ValueError(
                f"p_star must have shape (n_contexts, V) = ({self.n_contexts}, {self.vocab_size}) "
                f"but has shape {P.shape}."
            )
        w = check_weights(weights, self.n_contexts)
        dt, dev = self.f.dtype, self.f.device
        return _as_tensor(P, dt, dev), _as_tensor(w, dt, dev)

    def _baseline(self, P, loss, relative_to):
        """Per-context minimum (n,) that the excess is measured against."""
        Phi = self.Phi.detach()
        if relative_to == "p_star":
            return _entropy(P) if loss == "xent" else -0.5 * (P * P).sum(1)
        if loss == "xent":
            P64, Phi64 = P.detach().cpu().double(), Phi.detach().cpu().double()
            theta, done = _newton_xent(Phi64, P64)
            if not bool(done.all()):
                warnings.warn(
                    "the best features for this Phi were not found to full precision for some "
                    "contexts (Phi p* near the boundary of the hull of Phi's columns); the excess "
                    "relative to Phi may be slightly overstated.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return _per_context(theta, Phi64, P64, "xent").to(dtype=P.dtype, device=P.device)
        P64, Phi64 = P.detach().cpu().double(), Phi.detach().cpu().double()
        theta = torch.linalg.lstsq(Phi64.T, P64.T).solution.T
        return _per_context(theta, Phi64, P64, "quad").to(dtype=P.dtype, device=P.device)

    @_small_threads
    def _excess(self, p_star, weights, loss, relative_to):
        _check_choice(loss, "loss", _LOSSES)
        _check_choice(relative_to, "relative_to", _RELATIVE)
        P, w = self._data(p_star, weights)
        with torch.no_grad():
            base = self._baseline(P, loss, relative_to)
            per = _per_context(self.f, self.Phi, P, loss)
            return max(float((w * (per - base)).sum()), 0.0)

    def excess_xent(self, p_star, weights=None, relative_to="p_star") -> float:
        r"""Excess cross-entropy :math:`\sum_s w_s [\ell_{\mathrm{xent},s}(f(s)) - \ell^\circ_s]`.

        ``relative_to="p_star"``: :math:`\ell^\circ_s = H(p^*_s)`, so the excess is
        :math:`\sum_s w_s \mathrm{KL}(p^*_s \| p_{f(s)})`. ``relative_to="Phi"``:
        :math:`\ell^\circ_s = \min_\theta \ell_{\mathrm{xent},s}(\theta, \Phi)` for the current
        Phi ("epsilon-optimal w.r.t. Phi"). ``p_star``: (n_contexts, V); ``weights``: (n_contexts,)
        p_L, normalised (None: uniform). Returns a float >= 0.
        """
        return self._excess(p_star, weights, "xent", relative_to)

    def excess_quad(self, p_star, weights=None, relative_to="Phi") -> float:
        r"""Excess Quad loss. ``relative_to="Phi"``: :math:`\frac12\|\Phi^\top(f(s) - \theta^*_s)\|^2`
        averaged with weights (result D's epsilon); ``"p_star"``: :math:`\frac12\|\Phi^\top f(s) - p^*_s\|^2`
        (the Quad loss minus its value at logits equal to p*)."""
        return self._excess(p_star, weights, "quad", relative_to)

    # ----------------------------------------------------------------- training
    @_small_threads
    def fit(self, p_star, weights=None, loss="xent", target_eps=None, relative_to="p_star",
            max_steps: int = 20_000, lr: float = 0.05, progress: bool = False):
        r"""Train on the population loss :math:`\sum_s w_s \ell_s(f(s), \Phi)` until the excess
        is <= ``target_eps``.

        Full-batch Adam on f (and Phi if learned); the learning rate is halved whenever the
        excess has not improved by 0.1% for 20 steps. The excess is measured before every step
        (cross-entropy excess for ``loss="xent"``, Quad excess for ``loss="quad"``, see
        :meth:`excess_xent` / :meth:`excess_quad`). When it first drops to ``target_eps`` or
        below, the last step is shortened by bisection on the segment between the last two
        iterates so that ``eps_`` lands in ``[0.999 * target_eps, target_eps]``.

        Parameters
        ----------
        p_star : (n_contexts, V) true next-word distributions.
        weights : (n_contexts,) context weights p_L (None: uniform).
        loss : ``"xent"`` or ``"quad"``.
        target_eps : stop at this excess; None trains for ``max_steps`` (or until the learning
            rate has decayed 1e6-fold).
        relative_to : ``"p_star"`` (excess over the true distribution) or ``"Phi"`` (over the
            best this fixed Phi allows; not available with ``learn_Phi=True``).
        max_steps : step cap; if the target is not reached a RuntimeWarning is raised.
        lr : Adam learning rate.
        progress : show a tqdm progress bar.

        Returns
        -------
        self, with ``eps_``, ``n_steps_``, ``history_``.

        Raises ValueError if ``target_eps`` is below what a fixed Phi can reach relative to p_star.
        """
        _check_choice(loss, "loss", _LOSSES)
        _check_choice(relative_to, "relative_to", _RELATIVE)
        if relative_to == "Phi" and self.learn_Phi:
            raise ValueError(
                "relative_to='Phi' needs a fixed Phi (the optimum moves with Phi); fit with "
                "relative_to='p_star', then call excess_xent(p_star, relative_to='Phi')."
            )
        if target_eps is not None:
            target_eps = check_positive(target_eps, "target_eps")
        lr = check_positive(lr, "lr")
        max_steps = int(max_steps)
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}.")
        P, w = self._data(p_star, weights)
        base = self._baseline(P, loss, relative_to)
        if target_eps is not None and not self.learn_Phi and relative_to == "p_star":
            floor = float((w * (self._baseline(P, loss, "Phi") - base)).sum())
            if target_eps < floor:
                raise ValueError(
                    f"target_eps={target_eps:g} is below {floor:.4g}, the smallest excess this fixed "
                    "Phi can reach relative to p_star; use relative_to='Phi', a larger d, or learn_Phi=True."
                )
        return self._train(P, w, base, loss, target_eps, max_steps, lr, progress)

    def _train(self, P, w, base, loss, target_eps, max_steps, lr, progress):
        params = [self.f] + ([self.Phi] if self.learn_Phi else [])
        # Adam written out (torch.optim's first use imports torch._dynamo, ~2 s)
        beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
        m1 = [torch.zeros_like(p) for p in params]
        m2 = [torch.zeros_like(p) for p in params]
        step_lr = lr
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=max_steps, desc="TableLM.fit", leave=False)
        history, best, since, prev, reached = [], np.inf, 0, None, False
        step = 0
        for step in range(max_steps + 1):
            for p in params:
                p.grad = None
            per = _per_context(self.f, self.Phi, P, loss)
            eps = float((w * (per - base)).sum().detach())
            history.append(eps)
            if bar is not None:
                bar.set_postfix(eps=f"{eps:.3g}", refresh=False)
                bar.update(1)
            if target_eps is not None and eps <= target_eps:
                reached = True
                if prev is not None:
                    eps = self._land(prev, P, w, base, loss, target_eps, eps)
                break
            if step == max_steps:
                break
            if eps < best * (1 - 1e-3):
                best, since = eps, 0
            else:
                since += 1
                if since >= 20:
                    since, step_lr = 0, 0.5 * step_lr
                    if step_lr < lr * 1e-6:
                        break
            (w * per).sum().backward()
            prev = [p.detach().clone() for p in params]
            with torch.no_grad():
                k = step + 1
                for p, a, b in zip(params, m1, m2):
                    a.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                    b.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    denom = (b / (1 - beta2**k)).sqrt_().add_(adam_eps)
                    p.addcdiv_(a, denom, value=-step_lr / (1 - beta1**k))
        if bar is not None:
            bar.close()
        if target_eps is not None and not reached:
            warnings.warn(
                f"TableLM.fit stopped after {step} steps at excess {eps:.4g} > target_eps={target_eps:g}; "
                "raise max_steps or lr (or d, or learn_Phi=True if the target is below what Phi allows).",
                RuntimeWarning,
                stacklevel=3,
            )
        self.eps_ = max(eps, 0.0)
        self.n_steps_ = step
        self.history_ = np.asarray(history)
        return self

    @torch.no_grad()
    def _land(self, prev, P, w, base, loss, target_eps, eps_hi):
        """Bisect on the segment prev -> current parameters for an excess in [0.999 t, t]."""
        params = [self.f] + ([self.Phi] if self.learn_Phi else [])
        cur = [p.detach().clone() for p in params]

        def excess_at(t):
            for p, a, b in zip(params, prev, cur):
                p.copy_(a + t * (b - a))
            return float((w * (_per_context(self.f, self.Phi, P, loss) - base)).sum())

        lo, hi = 0.0, 1.0
        for _ in range(60):
            if eps_hi >= 0.999 * target_eps:
                break
            mid = 0.5 * (lo + hi)
            e = excess_at(mid)
            if e <= target_eps:
                hi, eps_hi = mid, e
            else:
                lo = mid
        excess_at(hi)
        return eps_hi

    @_small_threads
    @torch.no_grad()
    def at_eps(self, eps, p_star, weights=None, loss="xent", relative_to="Phi", start=None):
        r"""Place f exactly at excess ``eps`` on the segment from ``start`` to the optimum.

        :math:`f_t = f_0 + t (\theta^* - f_0)` with :math:`\theta^*` = :func:`optimal_f` (or
        :func:`quad_optimal_f` for ``loss="quad"``) of the current Phi, which is kept fixed. The
        excess is convex in t with its minimum at t = 1, hence decreasing on [0, 1], and t is
        found by bisection so that ``eps_`` equals ``eps`` to a relative 1e-9. Deterministic
        and fast; a complement to :meth:`fit` (which follows an optimizer's path).

        Parameters
        ----------
        eps : > 0, the excess to reach (cross-entropy or Quad, as in :meth:`fit`).
        p_star : (n_contexts, V); weights : (n_contexts,) or None.
        loss : ``"xent"`` or ``"quad"``; relative_to : ``"Phi"`` or ``"p_star"``.
        start : (n_contexts, d) f_0 (default: the current f; 0 for a fresh model).

        Returns
        -------
        self, with ``eps_``, ``t_`` (the position on the segment), ``n_steps_ = 0``.
        """
        _check_choice(loss, "loss", _LOSSES)
        _check_choice(relative_to, "relative_to", _RELATIVE)
        eps = check_positive(eps, "eps")
        P, w = self._data(p_star, weights)
        Phi = self.Phi.detach()
        if start is None:
            f0 = self.f.detach().clone()
        else:
            f0 = _as_tensor(as_array(start, "start", ndim=2), self.f.dtype, self.f.device)
            if f0.shape != self.f.shape:
                raise ValueError(f"start must have shape {tuple(self.f.shape)} but has {tuple(f0.shape)}.")
        Phi64, P64 = Phi.cpu().double(), P.cpu().double()
        if loss == "xent":
            theta_star, done = _newton_xent(Phi64, P64)
            if not bool(done.all()):
                warnings.warn("optimal_f did not converge for some contexts; eps_ may be slightly off.",
                              RuntimeWarning, stacklevel=2)
        else:
            theta_star = torch.linalg.lstsq(Phi64.T, P64.T).solution.T
        if relative_to == "Phi":
            base = _per_context(theta_star, Phi64, P64, loss).to(dtype=P.dtype, device=P.device)
        else:
            base = self._baseline(P, loss, "p_star")
        theta_star = theta_star.to(dtype=Phi.dtype, device=Phi.device)

        def excess_at(t):
            theta = f0 + t * (theta_star - f0)
            return float((w * (_per_context(theta, Phi, P, loss) - base)).sum())

        e0, e1 = excess_at(0.0), excess_at(1.0)
        if eps < e1:
            raise ValueError(
                f"eps={eps:g} is below {e1:.4g}, the smallest excess reachable with this Phi "
                f"relative to {relative_to}; pass a larger eps or relative_to='Phi'."
            )
        if eps > e0:
            raise ValueError(
                f"the start point already has excess {e0:.4g} < eps={eps:g}; pass a start farther "
                "from the optimum (e.g. start=np.zeros((n_contexts, d)), the uniform LM)."
            )
        lo, hi, e_hi = 0.0, 1.0, e1
        for _ in range(200):
            if abs(e_hi - eps) <= 1e-9 * eps:
                break
            mid = 0.5 * (lo + hi)
            e = excess_at(mid)
            if e <= eps:
                hi, e_hi = mid, e
            else:
                lo = mid
            if hi - lo < 1e-16:
                break
        self.f.copy_(f0 + hi * (theta_star - f0))
        self.eps_, self.t_, self.n_steps_ = max(e_hi, 0.0), hi, 0
        self.history_ = np.asarray([e0, e_hi])
        return self


def load_lm(name_or_path, device=None, dtype=None):
    """Load a Hugging Face causal LM as a softmax-LM view (f, Φ); see :func:`lmdownstream.hf.load_lm`.

    Imported lazily so that this module never pulls in transformers.
    """
    from .hf import load_lm as _load_lm

    return _load_lm(name_or_path, device=device, dtype=dtype)
