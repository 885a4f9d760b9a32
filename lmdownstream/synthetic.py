r"""Synthetic languages whose true next-word distribution :math:`p^*` is known exactly.

Two languages, both numpy (float64 throughout; entropies from :func:`lmdownstream.losses.entropy`):

:class:`ContextLanguage`
    A finite table: contexts :math:`s \in \{0, \dots, n-1\}` with weights :math:`p_L(s)` and a next-word
    distribution :math:`p^*(\cdot|s)` per context. The optimal cross-entropy is an entropy,
    :math:`\ell^*_{xent} = \sum_s p_L(s)\, H(p^*(\cdot|s))`.
:class:`HMMLanguage`
    A hidden Markov model over a vocabulary; :math:`p^*(\cdot|w_{1:L})` comes from the forward
    algorithm, vectorised over prefixes.

Both ``random`` constructors plant a label (a class per context, a label group per hidden
state) that a few *indicative words* reveal, so that natural tasks exist: the classifier
:math:`v = B(\mathbf 1_{\text{words of class 1}} - \mathbf 1_{\text{words of class 0}})` applied to
:math:`p^*(\cdot|s)` already separates the classes, as in the paper's ":)" vs ":(" example.

Generators for the later chapters: :func:`topic_language` (result D's :math:`\Omega`),
:func:`gaussian_embeddings` (result C) and :func:`planted_phi` with
:meth:`ContextLanguage.word_direction` (a fixed :math:`\Phi` whose row span holds a planted task).

Word ids, context ids and states are ints starting at 0. Every function draws randomness from
``np.random.default_rng(seed)``: the same seed gives identical output.
"""
from __future__ import annotations

import numpy as np

from ._checks import as_array, check_distributions, check_fraction, check_int, check_nonnegative, check_positive
from .losses import entropy

__all__ = ["ContextLanguage", "HMMLanguage", "topic_language", "gaussian_embeddings", "planted_phi"]

_BLOCK = 2048  # prefixes per forward-pass block in HMMLanguage (keeps (block, S) arrays in cache)


# ----------------------------------------------------------------------------- helpers
def _check_ids(x, name: str, high: int, what: str, ndim=1, allow_empty_rows: bool = False) -> np.ndarray:
    """Integer ids in ``0..high-1`` as int64; ``what`` names the id (e.g. 'word' or 'context')."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in allowed:
        want = " or ".join(str(a) for a in allowed)
        raise ValueError(f"{name} must have {want} dimension(s) but has shape {arr.shape}; "
                         "pass one row per prefix, e.g. x[None, :] for a single prefix.")
    if arr.shape[0] == 0 or (arr.size == 0 and not allow_empty_rows):
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one {what} id.")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind not in "fb" or not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer {what} ids, got dtype {arr.dtype}; "
                             "pass ids, not probabilities or strings.")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= high):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise ValueError(f"{name} has {what} id {bad}, outside 0..{high - 1} (unknown {what}); "
                         f"map unknown {what}s to a valid id before calling.")
    return arr


def _labels(labels, name: str, n: int, per: str, kind: str):
    """(int64 labels (n,), number of labels K = max + 1) with at least two distinct values."""
    y = _check_ids(labels, name, high=np.iinfo(np.int64).max, what="label")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} entries but there are {n} {per}s; pass one label per {per}.")
    if np.unique(y).shape[0] < 2:
        raise ValueError(f"{name} has only one {kind}; a task needs at least two.")
    return y, int(y.max()) + 1


def _rows(P, name: str) -> np.ndarray:
    P = check_distributions(P, name)
    return P / P.sum(axis=-1, keepdims=True)


def _draw(cdf: np.ndarray, rows: np.ndarray, rng) -> np.ndarray:
    """One draw from each categorical ``cdf[rows[i]]``, vectorised.

    ``cdf`` is the row-wise cumulative sum (K, V) with last column 1. Row k's cdf plus k lies in
    (k, k+1], so one ``searchsorted`` on the flattened (cdf + k) serves every row at once.
    """
    K, V = cdf.shape
    flat = (cdf + np.arange(K)[:, None]).ravel()
    u = rng.random(rows.shape)
    idx = np.searchsorted(flat, rows + u, side="right") - rows * V
    return np.clip(idx, 0, V - 1)


def _cdf(P: np.ndarray) -> np.ndarray:
    c = np.cumsum(P, axis=-1)
    c[..., -1] = 1.0
    return c


def _planted_rows(rng, labels, vocab_size, label_strength, words_per_class, alpha):
    r"""Rows :math:`(1-\lambda_i) q_i + \lambda_i r_i` (smoothed) and the indicative words (K, k).

    :math:`q_i \sim \mathrm{Dir}(\alpha V u)` with :math:`u` a Zipf unigram over permuted words (background
    text); :math:`r_i \sim \mathrm{Dir}(\mathbf 1_k)` on the :math:`k` indicative words of row i's class;
    :math:`\lambda_i \sim \mathrm{Beta}(4m, 4(1-m))` with mean :math:`m` = ``label_strength`` (exactly m at 0, 1).
    """
    K = int(labels.max()) + 1
    V = vocab_size
    k = words_per_class if words_per_class is not None else max(1, V // (4 * K))
    k = check_int(k, "words_per_class")
    if K * k > V:
        raise ValueError(f"{K} classes x {k} words_per_class = {K * k} indicative words but vocab_size "
                         f"is {V}; lower words_per_class or raise vocab_size.")
    perm = rng.permutation(V)
    indicative = np.sort(perm[: K * k].reshape(K, k), axis=1)
    u = np.empty(V)
    u[rng.permutation(V)] = 1.0 / np.arange(1, V + 1)
    u /= u.sum()
    n = labels.shape[0]
    q = rng.dirichlet(alpha * V * u, size=n)
    r = np.zeros((n, V))
    np.put_along_axis(r, indicative[labels], rng.dirichlet(np.ones(k), size=n), axis=1)
    m = label_strength
    lam = np.full(n, m) if m in (0.0, 1.0) else rng.beta(4 * m, 4 * (1 - m), size=n)
    P = (1 - lam)[:, None] * q + lam[:, None] * r
    P = (1 - 1e-3) * P + 1e-3 / V  # every word has probability >= 1e-3 / V: log p* is finite
    return P / P.sum(axis=1, keepdims=True), indicative


def _planted_sizes(n, n_name: str, vocab_size, K, k_name: str):
    """(n, V, K) checked: ints, K >= 2 and n >= K (each of the K classes needs a row)."""
    n, V, K = check_int(n, n_name), check_int(vocab_size, "vocab_size"), check_int(K, k_name, low=2)
    if n < K:
        raise ValueError(f"{n_name}={n} is smaller than {k_name}={K}; pass {n_name} >= {k_name}.")
    return n, V, K


def _balanced_labels(rng, n: int, K: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % K).astype(np.int64)


# ----------------------------------------------------------------------------- context table
class ContextLanguage:
    r"""A finite language: contexts :math:`s` with weights :math:`p_L(s)` and next-word rows :math:`p^*(\cdot|s)`.

    Attributes: ``n_contexts``, ``vocab_size``, ``p_context``, ``p_next``, ``labels``,
    ``n_classes`` (0 without labels), ``indicative_words`` ((K, k) from :meth:`random`, else None).

    Parameters
    ----------
    p_context : (n,) distribution :math:`p_L` over the n contexts.
    p_next : (n, V) rows :math:`p^*(\cdot|s)`, each a distribution over the V words.
    labels : (n,) ints in 0..K-1 with at least two classes, or None. The class of each context
        (the downstream task "y = class of s").
    """

    def __init__(self, p_context, p_next, labels=None):
        self.p_context = _rows(as_array(p_context, "p_context", ndim=1), "p_context")
        self.p_next = _rows(as_array(p_next, "p_next", ndim=2), "p_next")
        n, V = self.p_next.shape
        if self.p_context.shape[0] != n:
            raise ValueError(f"p_context has {self.p_context.shape[0]} entries but p_next has {n} rows; "
                             "pass one weight per context (row of p_next).")
        self.n_contexts, self.vocab_size = n, V
        self.labels, self.n_classes, self.indicative_words = None, 0, None
        if labels is not None:
            self.labels, self.n_classes = _labels(labels, "labels", n, "context", "class")

    @classmethod
    def random(cls, n_contexts: int, vocab_size: int, seed=0, n_classes: int = 2,
               label_strength: float = 0.5, words_per_class=None, alpha: float = 0.5) -> "ContextLanguage":
        r"""A random language with planted classes.

        Contexts get balanced classes :math:`y_s`. Class c owns ``words_per_class`` indicative words
        (default :math:`\max(1, \lfloor V / 4K \rfloor)`), disjoint across classes. Each row is
        :math:`p^*(\cdot|s) = (1-\lambda_s)\, q_s + \lambda_s\, r_s`, smoothed by :math:`10^{-3}` uniform mass:
        :math:`q_s \sim \mathrm{Dir}(\alpha V u)` is background text around a Zipf unigram :math:`u` (small
        ``alpha``: peaked, low-entropy rows), :math:`r_s \sim \mathrm{Dir}(\mathbf 1)` spreads over the
        indicative words of class :math:`y_s`, and the label signal
        :math:`\lambda_s \sim \mathrm{Beta}(4m, 4(1-m))` has mean :math:`m` = ``label_strength`` in [0, 1]
        (the knob: 0 = words carry no label information, 1 = only indicative words).
        Contexts with small :math:`\lambda_s` are genuinely ambiguous, so the task is not trivial.
        :math:`p_L \sim \mathrm{Dir}(5 \cdot \mathbf 1)`, mildly non-uniform.

        Measured :math:`\tau` (logistic loss, :math:`p_L`-weighted, best :math:`\|v\|_\infty \le B` with a bias; K = 2,
        n = 200-1000 contexts, V = 50-1000 words; the indicative-word classifier
        :math:`v = B(\mathbf 1_{W_1} - \mathbf 1_{W_0})` comes within 0.03 of it):

        ==============  =========  =========  =============
        label_strength  tau, B=1   tau, B=5   accuracy of v
        ==============  =========  =========  =============
        0.2             0.58-0.60  0.31-0.40  0.77-0.91
        0.5 (default)   0.46-0.48  0.10-0.12  0.96-1.00
        0.8             0.37       0.02-0.03  1.00
        ==============  =========  =========  =============
        """
        n, V, K = _planted_sizes(n_contexts, "n_contexts", vocab_size, n_classes, "n_classes")
        m = check_fraction(label_strength, "label_strength")
        rng = np.random.default_rng(seed)
        y = _balanced_labels(rng, n, K)
        P, indicative = _planted_rows(rng, y, V, m, words_per_class, check_positive(alpha, "alpha"))
        lang = cls(rng.dirichlet(np.full(n, 5.0)), P, y)
        lang.indicative_words = indicative
        return lang

    def sample_contexts(self, n: int, seed=None) -> np.ndarray:
        """n context ids drawn i.i.d. from :math:`p_L`; int64 (n,)."""
        n = check_int(n, "n")
        rng = np.random.default_rng(seed)
        return _draw(_cdf(self.p_context[None]), np.zeros(n, dtype=np.int64), rng)

    def sample(self, n: int, length: int = 2, seed=None) -> np.ndarray:
        r"""n rows of int64 (n, length): column 0 is a context id :math:`s \sim p_L`, columns 1..length-1
        are i.i.d. next words :math:`w \sim p^*(\cdot|s)` (each a fresh draw given the same s, *not* a
        continuation of a text). ``length=2`` gives the (s, w) pairs of the cross-entropy."""
        n = check_int(n, "n")
        length = check_int(length, "length")
        rng = np.random.default_rng(seed)
        out = np.empty((n, length), dtype=np.int64)
        out[:, 0] = _draw(_cdf(self.p_context[None]), np.zeros(n, dtype=np.int64), rng)
        if length > 1:
            rows = np.repeat(out[:, :1], length - 1, axis=1)
            out[:, 1:] = _draw(_cdf(self.p_next), rows, rng)
        return out

    def _contexts(self, prefixes) -> np.ndarray:
        x = prefixes.detach().cpu().numpy() if hasattr(prefixes, "detach") else np.asarray(prefixes)
        if x.ndim == 2 and x.shape[1] > 0:
            x = x[:, 0]  # column 0 holds the context id; the words after it are not needed
        return _check_ids(x, "prefixes", self.n_contexts, "context", ndim=1)

    def next_word_dist(self, prefixes) -> np.ndarray:
        """:math:`p^*(\\cdot|s)` (n, V) for context ids (n,), or rows (n, L) whose column 0 is the id
        (as returned by :meth:`sample`; the other columns are ignored)."""
        return self.p_next[self._contexts(prefixes)]

    def optimal_xent(self, contexts=None, weights=None) -> float:
        r"""Exact :math:`\ell^*_{xent} = \sum_s w_s H(p^*(\cdot|s))` in nats.

        contexts : (m,) ids, or None for all contexts. weights : (m,) non-negative, normalised here;
        default :math:`p_L` when ``contexts`` is None, else uniform over the given (e.g. sampled) contexts.
        """
        if contexts is None:
            s = np.arange(self.n_contexts)
            w = self.p_context if weights is None else weights
        else:
            s = self._contexts(contexts)
            w = np.ones(s.shape[0]) if weights is None else weights
        w = as_array(w, "weights", ndim=1)
        if w.shape[0] != s.shape[0]:
            raise ValueError(f"weights has {w.shape[0]} entries but there are {s.shape[0]} contexts; "
                             "pass one weight per context.")
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError("weights must be non-negative with a positive sum.")
        return float(np.dot(w / w.sum(), entropy(self.p_next[s])))

    def word_direction(self, plus, minus=()) -> np.ndarray:
        r"""The word-space classifier :math:`u = \mathbf 1_{W_{\text{plus}}} - \mathbf 1_{W_{\text{minus}}}` (V,).

        ``plus``, ``minus`` : sequences of classes (of :meth:`random`); :math:`W_c` are the indicative
        words of class c. E.g. ``word_direction([1], [0])`` reads off a planted binary label, and
        ``word_direction([1, 3], [0, 2])`` the label "odd class" of four classes.
        """
        if self.indicative_words is None:
            raise ValueError("this language has no indicative words; build it with ContextLanguage.random.")
        K = self.indicative_words.shape[0]
        plus = [check_int(c, "a class in plus", low=0, high=K - 1) for c in np.atleast_1d(plus)]
        minus = [check_int(c, "a class in minus", low=0, high=K - 1) for c in np.atleast_1d(minus)]
        if set(plus) & set(minus):
            raise ValueError(f"classes {sorted(set(plus) & set(minus))} are in both plus and minus; pass disjoint classes.")
        u = np.zeros(self.vocab_size)
        u[self.indicative_words[plus].ravel()] = 1.0
        if minus:
            u[self.indicative_words[minus].ravel()] = -1.0
        return u

    def natural_task(self):
        """The planted task: (contexts (n_contexts,) = 0..n-1, y (n_contexts,) = labels, weights :math:`p_L`)."""
        if self.labels is None:
            raise ValueError("this language has no labels; pass labels=... or use ContextLanguage.random.")
        return np.arange(self.n_contexts), self.labels.copy(), self.p_context.copy()


# ----------------------------------------------------------------------------- HMM
class HMMLanguage:
    r"""A hidden Markov model over words: :math:`z_1 \sim \pi_0`, :math:`z_{t+1} \sim A[z_t]`, :math:`w_t \sim E[z_t]`.

    Prefixes are int arrays (n, L) of word ids, all of the same length L >= 0; a prefix of length 0
    (shape (n, 0)) conditions on nothing, so :math:`p^*(\cdot) = \pi_0 E`. Group prefixes by length.

    Attributes: ``n_states``, ``vocab_size``, ``initial``, ``transition``, ``emission``,
    ``state_labels``, ``n_labels`` (0 without labels), ``indicative_words`` ((K, k) or None).

    Parameters
    ----------
    initial : (S,) distribution :math:`\pi_0` of the first hidden state.
    transition : (S, S) row-stochastic :math:`A[i, j] = P(z_{t+1} = j | z_t = i)`.
    emission : (S, V) row-stochastic :math:`E[z, w] = P(w_t = w | z_t = z)`.
    state_labels : (S,) ints in 0..K-1 (at least two labels), or None: the latent label of each
        state (e.g. the sentiment component of the hidden state).
    """

    def __init__(self, initial, transition, emission, state_labels=None):
        self.initial = _rows(as_array(initial, "initial", ndim=1), "initial")
        self.transition = _rows(as_array(transition, "transition", ndim=2), "transition")
        self.emission = _rows(as_array(emission, "emission", ndim=2), "emission")
        S = self.initial.shape[0]
        if self.transition.shape != (S, S):
            raise ValueError(f"transition has shape {self.transition.shape} but initial has {S} states; "
                             f"pass a square ({S}, {S}) matrix.")
        if self.emission.shape[0] != S:
            raise ValueError(f"emission has {self.emission.shape[0]} rows but initial has {S} states; "
                             "pass one emission row per state.")
        self.n_states, self.vocab_size = S, self.emission.shape[1]
        self._ET = np.ascontiguousarray(self.emission.T)  # (V, S): row w is E[:, w]
        self.state_labels, self.n_labels, self.indicative_words = None, 0, None
        if state_labels is not None:
            self.state_labels, self.n_labels = _labels(state_labels, "state_labels", S, "state", "label")

    @classmethod
    def random(cls, n_states: int, vocab_size: int, seed=0, n_labels: int = 2, stickiness: float = 0.95,
               label_strength: float = 0.5, words_per_label=None, alpha: float = 0.5) -> "HMMLanguage":
        r"""A random HMM with a planted, sticky latent label.

        States are split into ``n_labels`` balanced groups (``state_labels``). Transitions keep the
        label with probability ``stickiness``: row i of A puts mass ``stickiness`` on the states of
        its own group and ``1 - stickiness`` on the others, each part spread by a
        :math:`\mathrm{Dir}(\mathbf 1)` draw, so the label switches about every :math:`1/(1-\text{stickiness})`
        words. Emission rows are planted exactly as in :meth:`ContextLanguage.random` (background
        text :math:`q_z` plus, with weight :math:`\lambda_z` of mean ``label_strength``, the indicative words of
        the state's label), so the words reveal the label. :math:`\pi_0 \sim \mathrm{Dir}(\mathbf 1)`.
        """
        S, V, K = _planted_sizes(n_states, "n_states", vocab_size, n_labels, "n_labels")
        stick = check_fraction(stickiness, "stickiness")
        m = check_fraction(label_strength, "label_strength")
        rng = np.random.default_rng(seed)
        g = _balanced_labels(rng, S, K)
        same = g[:, None] == g[None, :]
        D = rng.dirichlet(np.ones(S), size=S)
        A = np.where(same, stick * D / (D * same).sum(1, keepdims=True),
                     (1 - stick) * D / (D * ~same).sum(1, keepdims=True))
        E, indicative = _planted_rows(rng, g, V, m, words_per_label, check_positive(alpha, "alpha"))
        hmm = cls(rng.dirichlet(np.ones(S)), A, E, g)
        hmm.indicative_words = indicative
        return hmm

    def sample(self, n: int, length: int, seed=None, return_states: bool = False):
        """n texts of ``length`` words, int64 (n, length); with ``return_states`` also the hidden
        states (n, length) that emitted them. Vectorised over n, a loop over time."""
        n = check_int(n, "n")
        length = check_int(length, "length")
        rng = np.random.default_rng(seed)
        A_cdf, E_cdf = _cdf(self.transition), _cdf(self.emission)
        z = np.empty((n, length), dtype=np.int64)
        z[:, 0] = _draw(_cdf(self.initial[None]), np.zeros(n, dtype=np.int64), rng)
        for t in range(1, length):
            z[:, t] = _draw(A_cdf, z[:, t - 1], rng)
        w = _draw(E_cdf, z, rng)
        return (w, z) if return_states else w

    def _forward(self, w: np.ndarray, offset: int = 0) -> np.ndarray:
        """Scaled forward pass over validated word ids w (m, L) -> P(z_{L+1} | w) (m, S)."""
        pi = np.repeat(self.initial[None], w.shape[0], axis=0)
        for t in range(w.shape[1]):
            pi *= self._ET[w[:, t]]
            c = pi.sum(axis=1, keepdims=True)
            if np.any(c <= 0):
                bad = int(np.flatnonzero(c[:, 0] <= 0)[0])
                raise ValueError(f"prefix {offset + bad} has probability 0 under this HMM (word "
                                 f"{int(w[bad, t])} at position {t} cannot be emitted); drop it or "
                                 "smooth the emission matrix.")
            pi /= c
            pi = pi @ self.transition
        return pi

    def _blocks(self, prefixes, width: int, last=None) -> np.ndarray:
        """Run the forward pass on blocks of _BLOCK prefixes (cache-sized), filling an (n, width) array
        with ``pi`` or, when ``last`` is given, with ``pi @ last``."""
        w = _check_ids(prefixes, "prefixes", self.vocab_size, "word", ndim=2, allow_empty_rows=True)
        out = np.empty((w.shape[0], width))
        for i in range(0, w.shape[0], _BLOCK):
            pi = self._forward(w[i:i + _BLOCK], offset=i)
            if last is None:
                out[i:i + _BLOCK] = pi
            else:
                np.matmul(pi, last, out=out[i:i + _BLOCK])
        return out

    def next_state_posterior(self, prefixes) -> np.ndarray:
        r""":math:`P(z_{L+1} = \cdot \,|\, w_{1:L})` (n, S): the state that will emit the next word.

        Scaled forward algorithm: :math:`\pi_0` given; for :math:`t = 1..L`,
        :math:`\pi_t \propto (\pi_{t-1} \odot E[:, w_t])\, A`, normalised at every step so that long
        prefixes never underflow (the normaliser is :math:`p^*(w_t | w_{<t})`). Vectorised over the
        prefixes, in blocks of a few thousand rows so that each step (a gather and an
        (m, S) x (S, S) product) stays in cache.
        """
        return self._blocks(prefixes, self.n_states)

    def next_word_dist(self, prefixes) -> np.ndarray:
        r"""Exact :math:`p^*(\cdot|w_{1:L}) = P(z_{L+1}|w_{1:L})\, E`, shape (n, V); prefixes (n, L)."""
        return self._blocks(prefixes, self.vocab_size, last=self.emission)

    def label_posterior(self, prefixes) -> np.ndarray:
        r""":math:`P(\text{label}(z_{L+1}) = y \,|\, w_{1:L})` (n, n_labels): the Bayes-optimal predictor
        of the :meth:`natural_task` label."""
        if self.state_labels is None:
            raise ValueError("this HMM has no state_labels; pass state_labels=... or use HMMLanguage.random.")
        G = np.eye(self.n_labels)[self.state_labels]  # (S, K) one-hot
        return self._blocks(prefixes, self.n_labels, last=G)

    def optimal_xent(self, prefixes) -> float:
        r"""Exact :math:`\ell^*_{xent}` on the given prefixes: :math:`\frac1n \sum_i H(p^*(\cdot|\text{prefix}_i))` in nats."""
        return float(np.mean(entropy(self.next_word_dist(prefixes))))

    def natural_task(self, n: int, length: int, seed=None):
        """The planted task: (prefixes (n, length), y (n,)) where y is the label of the hidden state
        that emits the next word (position length + 1), sampled jointly with the prefix."""
        if self.state_labels is None:
            raise ValueError("this HMM has no state_labels; pass state_labels=... or use HMMLanguage.random.")
        length = check_int(length, "length", low=0)
        w, z = self.sample(n, length + 1, seed=seed, return_states=True)
        return w[:, :length], self.state_labels[z[:, length]]


# ----------------------------------------------------------------------------- more generators
def topic_language(n_contexts: int = 400, vocab_size: int = 60, n_topics: int = 6, noise: float = 0.1,
                   seed=0) -> ContextLanguage:
    r"""A language of topic mixtures: :math:`p^*(\cdot|s) = (1-\rho)\sum_k \pi_{sk} T_k + \rho\, q_s`.

    Topics :math:`T_k \sim \mathrm{Dir}(0.5\cdot\mathbf 1_V)`, mixing weights
    :math:`\pi_s \sim \mathrm{Dir}(0.3\cdot\mathbf 1_K)`, full-rank noise rows
    :math:`q_s \sim \mathrm{Dir}(\mathbf 1_V)` with weight :math:`\rho` = ``noise``,
    :math:`p_L \sim \mathrm{Dir}(5\cdot\mathbf 1)`. Result D's :math:`\Omega = \mathbb{E}_s p^* p^{*\top}`
    is then close to rank K: a large gap after its K-th eigenvalue when ``noise`` is small.

    Parameters
    ----------
    n_contexts, vocab_size : n, V; n_topics : K, 1 <= K < V; noise : rho in [0, 1); seed.

    Returns
    -------
    :class:`ContextLanguage` without labels.
    """
    n, V = check_int(n_contexts, "n_contexts"), check_int(vocab_size, "vocab_size", low=2)
    K = check_int(n_topics, "n_topics", high=V - 1)
    noise = check_fraction(noise, "noise", open_high=True)
    rng = np.random.default_rng(seed)
    T = rng.dirichlet(np.full(V, 0.5), size=K)
    pi = rng.dirichlet(np.full(K, 0.3), size=n)
    Q = rng.dirichlet(np.ones(V), size=n)
    P = (1 - noise) * pi @ T + noise * Q
    return ContextLanguage(rng.dirichlet(np.full(n, 5.0)), P / P.sum(1, keepdims=True))


def gaussian_embeddings(d: int, vocab_size: int, seed=0, mean_norm: float = 1.0, spectrum=(0.25, 1.0)):
    r"""Word embeddings with i.i.d. Gaussian columns :math:`\phi_w \sim N(\mu, \Sigma)` (result C).

    :math:`\mu` is a random direction scaled to norm ``mean_norm``; :math:`\Sigma = Q\,\mathrm{diag}(\sigma^2)\,Q^\top`
    with a random rotation Q and eigenvalues :math:`\sigma^2` evenly spaced over ``spectrum``.

    Parameters
    ----------
    d : int >= 1, embedding dimension; vocab_size : int >= 1, V.
    seed : seed of ``np.random.default_rng``.
    mean_norm : >= 0, :math:`\|\mu\|`.
    spectrum : (low, high), 0 < low <= high, the range of the eigenvalues of :math:`\Sigma`.

    Returns
    -------
    (Phi (d, V), mu (d,), Sigma (d, d)).
    """
    d, V = check_int(d, "d"), check_int(vocab_size, "vocab_size")
    mean_norm = check_nonnegative(mean_norm, "mean_norm")
    lo, hi = (check_positive(s, "spectrum entries") for s in spectrum)
    if lo > hi:
        raise ValueError(f"spectrum must be (low, high) with low <= high, got {spectrum!r}.")
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    mu = mean_norm * u / np.linalg.norm(u)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    ev = np.linspace(lo, hi, d)
    Sigma = (Q * ev) @ Q.T
    Phi = mu[:, None] + (Q * np.sqrt(ev)) @ rng.normal(size=(d, V))
    return Phi, mu, Sigma


def planted_phi(u, d: int, seed=0, zero_on=None) -> np.ndarray:
    r"""Embeddings :math:`\Phi` (d, V) whose row span holds the word-space classifier ``u``.

    Row 0 is ``u``; rows 1..d-1 have i.i.d. N(0, 1) entries (drawn as a full (d, V) Gaussian
    matrix from ``np.random.default_rng(seed)``, then overwritten), set to 0 on the words
    ``zero_on`` if given. So :math:`B u = \Phi^\top (B e_1)`: a task read off by u is natural
    w.r.t. :math:`\Phi`; with ``zero_on`` = the indicative words, :math:`\Phi` sees those words only
    through u (chapter 5's contrast task is then natural in :math:`\mathbb{R}^V` only).

    Parameters
    ----------
    u : (V,) e.g. :meth:`ContextLanguage.word_direction`; d : int >= 2; seed : anything
        ``np.random.default_rng`` takes (e.g. ``[seed, 5]``); zero_on : optional word ids.

    Returns
    -------
    (d, V) float64.
    """
    u = as_array(u, "u", ndim=1)
    d = check_int(d, "d", low=2)
    Phi = np.random.default_rng(seed).normal(size=(d, u.shape[0]))
    Phi[0] = u
    if zero_on is not None:
        Phi[1:, _check_ids(np.ravel(zero_on), "zero_on", u.shape[0], "word")] = 0.0
    return Phi
