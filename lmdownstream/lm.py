r"""Language models in their softmax view, :math:`p_{f(s)} = \mathrm{softmax}(\Phi^\top f(s) + b)`,
with context features :math:`f(s) \in \mathbb{R}^d` and word embeddings :math:`\Phi \in \mathbb{R}^{d\times V}`.

* :class:`SoftmaxLM` -- the one model interface: ``Phi`` (d, V), ``bias``, ``d``, ``V``,
  ``encode(inputs)`` and ``hidden_states(ids, positions)``. :class:`TableLM` (here),
  :class:`lmdownstream.train.TinyLM` and :class:`lmdownstream.hf.HFLM` all follow it, so
  :func:`lmdownstream.features.extract` and :func:`lmdownstream.features.contexts` work on each.
* :class:`TableLM` -- a free feature vector per context of a finite language (a table), with
  :math:`\Phi` fixed or learned; trained on the population loss until its excess
  cross-entropy reaches a chosen :math:`\varepsilon` (:meth:`TableLM.fit`), or placed exactly at
  a chosen :math:`\varepsilon` on the segment to the optimum (:meth:`TableLM.at_eps`).
* :func:`optimal_f`, :func:`quad_optimal_f` -- the best features for a fixed :math:`\Phi` under
  cross-entropy and Quad (:func:`lmdownstream.losses.xent_optimum`, :func:`~lmdownstream.losses.quad_optimum`).
* :func:`load_lm` -- a Hugging Face causal LM as a :class:`SoftmaxLM` (``transformers`` is
  imported only when it is called).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from . import config, losses, theory
from .features import pad_batch, state_fingerprint
from ._checks import as_array, as_tensor, check_choice, check_distributions, check_int, check_positive, check_weights

__all__ = ["SoftmaxLM", "TableLM", "optimal_f", "quad_optimal_f", "load_lm"]

_LOSSES = ("xent", "quad")
_RELATIVE = ("p_star", "Phi")


# --------------------------------------------------------------------------- the protocol
@runtime_checkable
class SoftmaxLM(Protocol):
    r"""What every model of the library exposes: :math:`p_{f(s)} = \mathrm{softmax}(\Phi^\top f(s) + b)`.

    Attributes
    ----------
    name : str, a label (progress bars, reprs).
    Phi : (d, V) float tensor, the output word embeddings (columns :math:`\phi_w`).
    bias : (V,) tensor or None.
    d, V : feature dimension and vocabulary size.
    max_length : context window in tokens (1 for a :class:`TableLM`).
    device : torch device of the model.

    Methods
    -------
    encode(inputs, prompt=None, max_length=None) -> (ids, n_truncated)
        Raw inputs (texts, token-id sequences, context ids) as a list of n token-id lists,
        truncated from the left to ``max_length`` (default the window; ``math.inf``: never).
    hidden_states(ids, positions="last") -> tensor
        One batch: ``ids`` a list of B token-id lists or a (B, T) long tensor right-padded
        with -1. ``"last"``: (B, d) f(s) at each row's last real token; ``"all"``: (B, T, d)
        (padding positions unspecified). Differentiable; wrap in ``torch.inference_mode()``.
    fingerprint() -> str
        A cache key of the weights.

    Example
    -------
    >>> ids, _ = model.encode(inputs)                        # doctest: +SKIP
    >>> with torch.inference_mode():                         # doctest: +SKIP
    ...     f = model.hidden_states(ids, positions="last")   # (n, d)
    >>> logits = f @ model.Phi                               # doctest: +SKIP
    """

    name: str
    Phi: torch.Tensor
    bias: torch.Tensor | None
    d: int
    V: int
    max_length: int

    def encode(self, inputs, prompt=None, max_length=None) -> tuple: ...

    def hidden_states(self, ids, positions: str = "last") -> torch.Tensor: ...

    def fingerprint(self) -> str: ...


# --------------------------------------------------------------------------- helpers
def _few_threads(n, V, d, device="cpu"):
    """``config.threads(1)`` for small CPU problems (n * V * d <= 3e7), else nothing.

    Measured on a 2-core machine: at these sizes torch's thread pool costs more than it saves
    (500 x 100 x 16: 0.25 s on one thread vs 1.4-14 s on two when the cores are busy)."""
    small = torch.device(device).type == "cpu" and n * V * d <= 3e7
    return config.threads(1) if small else contextlib.nullcontext()


def _per_context(theta, Phi, P, loss):
    """Per-row loss (n,) in population form: :func:`lmdownstream.losses.xent_loss` or ``quad_loss``."""
    return (losses.xent_loss if loss == "xent" else losses.quad_loss)(theta, Phi, P, reduction="none")


# --------------------------------------------------------------------------- optimal features
#: The book's names for the best features of a fixed Phi (one implementation, in :mod:`lmdownstream.losses`).
optimal_f = losses.xent_optimum
quad_optimal_f = losses.quad_optimum


# --------------------------------------------------------------------------- the table LM
class TableLM(nn.Module):
    r"""A softmax LM over a finite set of contexts: a free feature row :math:`f(s)` per context.

    :math:`p_{f(s)} = \mathrm{softmax}(\Phi^\top f(s))`, with ``f`` a parameter of shape
    (n_contexts, d) initialised at 0 (the uniform distribution) and ``Phi`` (d, V) either given
    (a fixed buffer, or the initial value when ``learn_Phi=True``) or drawn with i.i.d.
    N(0, 1) entries from ``seed``. A :class:`SoftmaxLM` whose inputs are context ids: the
    "sequence" of context c is ``[c]`` and its hidden state is ``f[c]``.

    Fitted attributes (after :meth:`fit` or :meth:`at_eps`): ``eps_`` (achieved excess),
    ``n_steps_`` (optimizer steps), ``history_`` (excess before each step, numpy array).

    Parameters
    ----------
    n_contexts : number of contexts (rows of p_star).
    Phi : optional (d, V) embeddings; otherwise pass ``d`` and ``V``.
    d, V : sizes when ``Phi`` is None (``vocab_size`` is the old name of ``V``).
    learn_Phi : train Phi together with f.
    seed : seed of the random Phi.
    dtype : torch dtype (default float64; float32 on MPS, which has no float64).
    device : torch device (default :func:`lmdownstream.config.device`).
    """

    name = "TableLM"
    bias = None
    max_length = 1

    def __init__(self, n_contexts, Phi=None, d=None, vocab_size=None, learn_Phi=False, seed=0,
                 dtype=None, device=None, V=None):
        super().__init__()
        device = torch.device(device) if device is not None else config.device()
        if dtype is None:
            dtype = torch.float32 if device.type == "mps" else torch.float64
        n_contexts = check_int(n_contexts, "n_contexts")
        V = vocab_size if V is None else V
        if Phi is not None:
            Phi = as_tensor(as_array(Phi, "Phi", ndim=2), "Phi", dtype=dtype, device=device)
            if d is not None and int(d) != Phi.shape[0] or V is not None and int(V) != Phi.shape[1]:
                raise ValueError(f"Phi has shape {tuple(Phi.shape)} but d={d}, V={V} were given.")
        else:
            if d is None or V is None:
                raise ValueError("pass Phi (d, V), or both d and V for a random Phi.")
            d, V = check_int(d, "d"), check_int(V, "V")
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
    def V(self) -> int:
        return self.Phi.shape[1]

    vocab_size = V  # the old name

    @property
    def device(self) -> torch.device:
        return self.f.device

    # ----------------------------------------------------------------- the protocol
    def encode(self, inputs=None, prompt=None, max_length=None):
        """Context ids as one-token sequences: ``([[c] for c in inputs], 0)``; None: every context."""
        if prompt is not None:
            raise ValueError("a TableLM has no text, so no prompt; pass prompt=None.")
        c = np.arange(self.n_contexts) if inputs is None else np.asarray(list(inputs) if not
                                                                             np.ndim(inputs) else inputs)
        if c.ndim != 1 or c.size == 0 or c.dtype.kind not in "iu" or c.min() < 0 or c.max() >= self.n_contexts:
            raise ValueError(f"inputs must be a non-empty list of context ids in 0..{self.n_contexts - 1}.")
        return [[int(i)] for i in c], 0

    def hidden_states(self, ids, positions="last") -> torch.Tensor:
        """f of a batch of context-id sequences: (B, d) for ``"last"``, (B, T, d) for ``"all"``."""
        check_choice(positions, "positions", ("last", "all"))
        x, _, lengths = pad_batch(ids, self.f.device)
        return self.f[x] if positions == "all" else self.f[x[torch.arange(len(x)), lengths - 1]]

    def fingerprint(self) -> str:
        """Hash of f and Phi (the cache key of :func:`lmdownstream.features.extract`)."""
        return state_fingerprint(self)

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

    def _threads(self):
        return _few_threads(self.n_contexts, self.V, self.d, self.f.device)

    # ----------------------------------------------------------------- excess losses
    def _data(self, p_star, weights):
        P = check_distributions(p_star, "p_star")
        if P.ndim != 2 or P.shape != (self.n_contexts, self.V):
            raise ValueError(
                f"p_star must have shape (n_contexts, V) = ({self.n_contexts}, {self.V}) "
                f"but has shape {P.shape}."
            )
        w = check_weights(weights, self.n_contexts)
        dt, dev = self.f.dtype, self.f.device
        return torch.as_tensor(P, dtype=dt, device=dev), torch.as_tensor(w, dtype=dt, device=dev)

    def _optimum(self, P, loss):
        """theta* (n, d) for the current Phi, float64 on the CPU (:mod:`lmdownstream.losses`)."""
        P64, Phi64 = P.detach().cpu().double(), self.Phi.detach().cpu().double()
        return (losses.xent_optimum if loss == "xent" else losses.quad_optimum)(Phi64, P64)

    def _baseline(self, P, loss, relative_to):
        """Per-context minimum (n,) that the excess is measured against."""
        if relative_to == "p_star":
            return losses.entropy(P) if loss == "xent" else -0.5 * (P * P).sum(1)
        theta = self._optimum(P, loss)
        base = _per_context(theta, self.Phi.detach().cpu().double(), P.detach().cpu().double(), loss)
        return base.to(dtype=P.dtype, device=P.device)

    def _excess(self, p_star, weights, loss, relative_to):
        check_choice(loss, "loss", _LOSSES)
        check_choice(relative_to, "relative_to", _RELATIVE)
        with self._threads(), torch.no_grad():
            P, w = self._data(p_star, weights)
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
    def fit(self, p_star, weights=None, loss="xent", target_eps=None, relative_to="p_star",
            max_steps: int = 20_000, lr: float = 0.05, progress: bool = False):
        r"""Train on the population loss :math:`\sum_s w_s \ell_s(f(s), \Phi)` until the excess
        is <= ``target_eps``.

        Full-batch Adam (``torch.optim.Adam``) on f (and Phi if learned); the learning rate is
        halved whenever the excess has not improved by 0.1% for 20 steps. The excess is measured
        before every step (cross-entropy excess for ``loss="xent"``, Quad excess for
        ``loss="quad"``, see :meth:`excess_xent` / :meth:`excess_quad`). When it first drops to
        ``target_eps`` or below, the last step is shortened by bisection on the segment between
        the last two iterates so that ``eps_`` lands in ``[0.999 * target_eps, target_eps]``.

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
        check_choice(loss, "loss", _LOSSES)
        check_choice(relative_to, "relative_to", _RELATIVE)
        if relative_to == "Phi" and self.learn_Phi:
            raise ValueError(
                "relative_to='Phi' needs a fixed Phi (the optimum moves with Phi); fit with "
                "relative_to='p_star', then call excess_xent(p_star, relative_to='Phi')."
            )
        if target_eps is not None:
            target_eps = check_positive(target_eps, "target_eps")
        lr = check_positive(lr, "lr")
        max_steps = check_int(max_steps, "max_steps", low=0)
        with self._threads():
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
        opt = torch.optim.Adam(params, lr=lr)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=max_steps, desc="TableLM.fit", leave=False)
        history, best, since, prev, reached = [], np.inf, 0, None, False
        step = 0
        for step in range(max_steps + 1):
            opt.zero_grad(set_to_none=True)
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
                    since = 0
                    for g in opt.param_groups:
                        g["lr"] *= 0.5
                    if opt.param_groups[0]["lr"] < lr * 1e-6:
                        break
            (w * per).sum().backward()
            prev = [p.detach().clone() for p in params]
            opt.step()
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

        return excess_at(theory.bisect(excess_at, target_eps, rtol=1e-3, max_iter=60, below=True, f_hi=eps_hi))

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
        check_choice(loss, "loss", _LOSSES)
        check_choice(relative_to, "relative_to", _RELATIVE)
        eps = check_positive(eps, "eps")
        with self._threads():
            P, w = self._data(p_star, weights)
            Phi = self.Phi.detach()
            if start is None:
                f0 = self.f.detach().clone()
            else:
                f0 = as_tensor(start, "start", ndim=2, dtype=self.f.dtype, device=self.f.device)
                if f0.shape != self.f.shape:
                    raise ValueError(f"start must have shape {tuple(self.f.shape)} but has {tuple(f0.shape)}.")
            theta_star = self._optimum(P, loss)
            if relative_to == "Phi":
                base = _per_context(theta_star, Phi.cpu().double(), P.cpu().double(), loss)
                base = base.to(dtype=P.dtype, device=P.device)
            else:
                base = self._baseline(P, loss, "p_star")
            theta_star = theta_star.to(dtype=Phi.dtype, device=Phi.device)

            def excess_at(t):
                return float((w * (_per_context(f0 + t * (theta_star - f0), Phi, P, loss) - base)).sum())

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
            t = theory.bisect(excess_at, eps, rtol=1e-9, max_iter=200, below=True, f_lo=e0, f_hi=e1)
            e_hi = excess_at(t)
            self.f.copy_(f0 + t * (theta_star - f0))
        self.eps_, self.t_, self.n_steps_ = max(e_hi, 0.0), t, 0
        self.history_ = np.asarray([e0, e_hi])
        return self


def load_lm(name_or_path, device=None, dtype=None):
    """Load a Hugging Face causal LM as a :class:`SoftmaxLM`; see :func:`lmdownstream.hf.load_lm`.

    Imported lazily so that this module never pulls in transformers.
    """
    from .hf import load_lm as _load_lm

    return _load_lm(name_or_path, device=device, dtype=dtype)
