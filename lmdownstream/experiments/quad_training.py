r"""Result D in practice: small transformers trained from scratch with cross-entropy and with Quad (chapter 8).

Each *variant* is a loss (``"xent"`` or ``"quad"``) and a choice of :math:`\Phi`: learned (tied to
the input embeddings) or fixed. All variants of a comparison share the architecture, the data, the
number of steps and the batch size (equal compute in tokens seen; Quad's output layer is cheaper).

* :func:`synthetic_study` -- on sentences of an :class:`~lmdownstream.synthetic.HMMLanguage`
  (exact :math:`p^*`): held-out cross-entropy, the exact :math:`\varepsilon`, the distance of the
  features to the Quad optimum :math:`(\Phi\Phi^\top)^{-1}\Phi p^*`, and linear-probe accuracy of
  :math:`f(s)` and :math:`\Phi p_f(s)` on the HMM's planted (natural) task, against the Bayes
  accuracy; one row per (variant, seed).
* :func:`text_study` -- on real text (tweets and BBC news, a byte-level BPE trained here):
  held-out cross-entropy and probe accuracy on tweet sentiment and BBC topics.
* :func:`summarise` -- mean and standard deviation over seeds, per variant; :func:`plot_probes`.

Fixed :math:`\Phi`: ``"gaussian"`` is a seeded :math:`N(0, 1/d)` matrix; ``"xent"`` is the
:math:`\Phi` learned by the cross-entropy model of the same seed (as the paper's code fixes
:math:`\Phi` to GPT-2's embeddings). Fixed-:math:`\Phi` variants get the extra :math:`d\times d`
affine layer of the official code.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import config, probes, synthetic, tasks, train

__all__ = ["VARIANTS", "TEXT_VARIANTS", "SIZES", "sizes", "text_setup", "synthetic_study", "text_study", "summarise",
           "plot_probes"]

#: Sizes of chapters 6 and 8 per profile (the same dict in both, so chapter 8 reuses chapter 6's checkpoints).
SIZES = dict(
    ci=dict(states=8, words=50, seeds=(0, 1), n_train=4_000, length=16, d=64, n_layers=2, steps=150, batch_size=64,
            text_seeds=(0, 1), text_steps=150, text_d=64, text_vocab=1_000, block=64, text_batch=32),
    full=dict(states=16, words=200, seeds=(0, 1, 2, 3, 4), n_train=20_000, length=32, d=128, n_layers=4, steps=3_000,
              batch_size=64, text_seeds=(0, 1, 2), text_steps=4_000, text_d=128, text_vocab=4_000, block=128,
              text_batch=32),
)


def sizes() -> dict:
    """The :data:`SIZES` entry of the current profile (:func:`lmdownstream.config.profile`)."""
    return dict(config.by_profile(ci=SIZES["ci"], full=SIZES["full"]))

VARIANTS = (
    dict(name="xent, learned Φ", loss="xent", Phi="tied"),
    dict(name="quad, learned Φ", loss="quad", Phi="tied"),
    dict(name="xent, fixed Φ", loss="xent", Phi="gaussian"),
    dict(name="quad, fixed Φ", loss="quad", Phi="gaussian"),
)
TEXT_VARIANTS = (
    dict(name="xent, learned Φ", loss="xent", Phi="tied"),
    dict(name="quad, learned Φ", loss="quad", Phi="tied"),
    dict(name="quad, Φ fixed to xent's", loss="quad", Phi="xent"),
)


def _int(x, name, low=1):
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or int(x) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {x!r}.")
    return int(x)


def _check_variants(variants):
    variants = list(variants)
    if not variants:
        raise ValueError("variants is empty; pass at least one dict(name=..., loss=..., Phi=...).")
    names = set()
    for v in variants:
        if not isinstance(v, dict) or not {"name", "loss", "Phi"} <= set(v):
            raise ValueError(f"each variant needs keys name, loss, Phi; got {v!r}.")
        if v["loss"] not in train.LOSSES:
            raise ValueError(f"variant {v['name']!r}: loss must be one of {train.LOSSES}, got {v['loss']!r}.")
        if not (isinstance(v["Phi"], str) and v["Phi"] in ("tied", "untied", "gaussian", "xent")):
            raise ValueError(f"variant {v['name']!r}: Phi must be 'tied', 'untied', 'gaussian' or 'xent', got {v['Phi']!r}.")
        if v["name"] in names:
            raise ValueError(f"two variants are named {v['name']!r}; names must be unique.")
        names.add(v["name"])
    if any(v["Phi"] == "xent" for v in variants):
        if not any(v["loss"] == "xent" and v["Phi"] in ("tied", "untied") for v in variants):
            raise ValueError("a variant with Phi='xent' needs a variant with loss='xent' and a learned Phi before it.")
    return variants


def _phi_for(variant, d, V, seed, learned):
    """The Phi argument of train_lm for a variant: 'tied'/'untied', or a fixed matrix."""
    kind = variant["Phi"]
    if kind in ("tied", "untied"):
        return kind
    if kind == "gaussian":
        return np.random.default_rng([int(seed), 7919]).standard_normal((d, V)) / np.sqrt(d)
    return learned.model.Phi.detach().cpu().numpy().copy()  # kind == "xent"


def _train_variants(corpus, variants, seed, train_kw, progress):
    """Train every variant for one seed; returns {name: TrainResult} (in order, so 'xent' Phi is available)."""
    out, learned = {}, None
    for v in variants:
        Phi = _phi_for(v, train_kw["d"], corpus.vocab_size, seed, learned)
        res = train.train_lm(corpus, loss=v["loss"], Phi=Phi, affine=not isinstance(Phi, str), seed=seed,
                             progress=progress, **train_kw)
        if v["loss"] == "xent" and isinstance(Phi, str) and learned is None:
            learned = res
        out[v["name"]] = res
    return out


def _probe(Ftr, ytr, Fte, yte, seed):
    """Test accuracy of a cross-validated logistic probe on standardised features.

    Features are standardised with the training rows' mean and standard deviation: a Quad
    model's :math:`\Phi p_f \approx \mu + \Phi\Phi^\top f / V` varies on a 1/V scale that no C of
    a fixed grid reaches otherwise (the paper's probe does not scale; its features are all
    on similar scales)."""
    mu, sd = Ftr.mean(0), Ftr.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    with warnings.catch_warnings():
        # at the largest C the L-BFGS probe may stop at max_iter short of tol; the fit is still a
        # valid candidate for cross-validation, and a warning per fit would bury the chapter's output
        warnings.filterwarnings("ignore", message=r"LogisticProbe\(C=", category=RuntimeWarning)
        p = probes.probe_cv((Ftr - mu) / sd, ytr, Cs=np.logspace(-2, 2, 5), folds=3, seed=seed, max_iter=100)
    return float(p.score((Fte - mu) / sd, yte))


def synthetic_study(hmm=None, seeds=(0, 1), variants=VARIANTS, n_train: int = 4000, n_val: int = 500,
                    length: int = 16, n_task: int = 1500, task_length: int = 8, d: int = 64, n_layers: int = 2,
                    n_heads: int = 4, steps: int = 300, batch_size: int = 64, lr: float = 3e-3,
                    progress: bool = True) -> list:
    r"""Train every variant for every seed on sentences of an HMM and measure it exactly.

    Parameters
    ----------
    hmm : an :class:`~lmdownstream.synthetic.HMMLanguage` with state labels (default:
        ``HMMLanguage.random(8, 50, seed=0)``, two labels).
    seeds : model seeds (the corpus is the same for all). variants : see :data:`VARIANTS`.
    n_train, n_val, length : training and validation sentences of ``length`` words.
    n_task, task_length : the planted task: ``n_task`` prefixes of ``task_length`` words for
        training the probe and as many for testing it.
    d, n_layers, n_heads, steps, batch_size, lr : passed to :func:`lmdownstream.train.train_lm`.

    Returns
    -------
    list of dict rows, one per (variant, seed): ``variant, seed, loss, xent`` (held-out, nats,
    through softmax), ``entropy`` (:math:`\ell^*`), ``eps`` (exact), ``quad_excess``, ``quad_rel``
    (distance to the Quad optimum for the model's own :math:`\Phi`), ``acc_f``, ``acc_Phi_p``
    (probe test accuracy), ``acc_bayes`` (accuracy of the Bayes-optimal predictor on the same test
    prefixes), ``seconds`` (training time in this call; 0 when loaded from the cache).
    """
    hmm = synthetic.HMMLanguage.random(8, 50, seed=0) if hmm is None else hmm
    if not isinstance(hmm, synthetic.HMMLanguage) or hmm.state_labels is None:
        raise ValueError("hmm must be an HMMLanguage with state_labels (e.g. HMMLanguage.random(...)).")
    variants = _check_variants(variants)
    seeds = [_int(s, "seed", low=0) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty; pass at least one seed.")
    corpus = train.hmm_corpus(hmm, _int(n_train, "n_train"), _int(length, "length"), seed=10_001)
    val = train.hmm_corpus(hmm, _int(n_val, "n_val"), length, seed=10_002)
    Xtr, ytr = hmm.natural_task(_int(n_task, "n_task", 10), _int(task_length, "task_length"), seed=10_003)
    Xte, yte = hmm.natural_task(n_task, task_length, seed=10_004)
    bos = lambda X: np.concatenate([np.full((X.shape[0], 1), hmm.vocab_size), X], axis=1)  # noqa: E731
    post = hmm.label_posterior(Xte)
    acc_bayes = float(np.mean(post.argmax(1) == yte))
    train_kw = dict(d=d, n_layers=n_layers, n_heads=n_heads, steps=steps, batch_size=batch_size, lr=lr)
    rows = []
    for seed in seeds:
        for name, res in _train_variants(corpus, variants, seed, train_kw, progress).items():
            m = res.model
            ev, ex = train.evaluate(m, val), train.exact_excess(m, val)
            ftr, fte = m.features(bos(Xtr), kinds=("f", "Phi_p")), m.features(bos(Xte), kinds=("f", "Phi_p"))
            rows.append(dict(variant=name, seed=seed, loss=res.settings["loss"], xent=ev["xent"],
                             entropy=ex["entropy"], eps=ex["eps"], quad_excess=ex["quad_excess"],
                             quad_rel=ex["quad_rel"], acc_f=_probe(ftr["f"], ytr, fte["f"], yte, seed),
                             acc_Phi_p=_probe(ftr["Phi_p"], ytr, fte["Phi_p"], yte, seed), acc_bayes=acc_bayes,
                             seconds=res.seconds))
    return rows


def _texts(name, split, n, max_words):
    ds = tasks.load_dataset(name, split, n=n)
    return tasks._truncate_words(ds["text"], max_words), np.asarray(ds["label"])


def text_setup(vocab_size: int = 2000, block: int = 64):
    """The real-text corpus of :func:`text_study`: (tokenizer, train Corpus, held-out Corpus).

    The training splits of tweet-sentiment and bbc-news (labels unused), a byte-level BPE with
    ``vocab_size`` tokens trained on them, blocks of ``block`` tokens, 2% of the blocks held out."""
    texts = list(tasks.load_dataset("tweet-sentiment", "train")["text"]) + list(tasks.load_dataset("bbc-news", "train")["text"])
    tok = train.train_tokenizer(texts, vocab_size=vocab_size)
    full = train.text_corpus(texts, tok, block=block, name=f"tweets+bbc/train bpe{vocab_size} block{block}")
    corpus, val = full.split(0.02, seed=0)
    return tok, corpus, val


def text_study(seeds=(0, 1), variants=TEXT_VARIANTS, vocab_size: int = 2000, block: int = 64, d: int = 64,
               n_layers: int = 2, n_heads: int = 4, steps: int = 300, batch_size: int = 32, lr: float = 3e-3,
               probe_sizes=None, bbc_words: int = 40, progress: bool = True) -> dict:
    r"""Train every variant for every seed on real text and probe its features on real tasks.

    The corpus is the *training* split of tweet-sentiment and of bbc-news (labels unused), cut
    into blocks of ``block`` tokens by a byte-level BPE with ``vocab_size`` tokens trained on the
    same texts; 2% of the blocks are held out for the validation cross-entropy. Probes are
    trained on ``probe_sizes[name][0]`` labelled training texts and tested on
    ``probe_sizes[name][1]`` test texts (BBC articles cut to their first ``bbc_words`` words).

    Returns
    -------
    dict with ``rows`` (one per (variant, seed): ``variant, seed, loss, xent, quad`` held out,
    ``tweet_f, tweet_Phi_p, bbc_f, bbc_Phi_p`` probe test accuracies, ``seconds``), ``corpus``
    (sizes: sequences, tokens, vocabulary) and ``tokenizer``.
    """
    variants = _check_variants(variants)
    seeds = [_int(s, "seed", low=0) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty; pass at least one seed.")
    probe_n = {"tweet-sentiment": (1000, 500), "bbc-news": (500, 300)} if probe_sizes is None else dict(probe_sizes)
    tok, corpus, val = text_setup(vocab_size, block)
    probe_data = {}
    for name, (n_tr, n_te) in probe_n.items():
        mw = bbc_words if name == "bbc-news" else None
        (a, ya), (b, yb) = _texts(name, "train", n_tr, mw), _texts(name, "test", n_te, mw)
        probe_data[name] = (tok(a, add_special_tokens=False)["input_ids"], ya,
                            tok(b, add_special_tokens=False)["input_ids"], yb)
    train_kw = dict(d=d, n_layers=n_layers, n_heads=n_heads, steps=steps, batch_size=batch_size, lr=lr)
    rows = []
    for seed in seeds:
        for vname, res in _train_variants(corpus, variants, seed, train_kw, progress).items():
            m = res.model
            ev = train.evaluate(m, val)
            row = dict(variant=vname, seed=seed, loss=res.settings["loss"], xent=ev["xent"], quad=ev["quad"],
                       seconds=res.seconds)
            for name, (a, ya, b, yb) in probe_data.items():
                short = name.split("-")[0]
                fa, fb = m.features(a, kinds=("f", "Phi_p")), m.features(b, kinds=("f", "Phi_p"))
                for k in ("f", "Phi_p"):
                    row[f"{short}_{k}"] = _probe(fa[k], ya, fb[k], yb, seed)
            rows.append(row)
    info = dict(n_sequences=len(corpus), n_tokens=corpus.n_tokens, n_val_tokens=val.n_tokens,
                vocab_size=len(tok), block=block)
    return dict(rows=rows, corpus=info, tokenizer=tok)


def summarise(rows, metrics, by: str = "variant") -> list:
    """Mean and standard deviation (ddof=1; 0 for one seed) of ``metrics`` over the rows of each
    value of ``by`` (in first-seen order): a list of dicts ``{by: value, "n": count, m: mean, m + "_sd": sd}``."""
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty; run a study first.")
    missing = [m for m in list(metrics) + [by] if m not in rows[0]]
    if missing:
        raise ValueError(f"rows have no column(s) {missing}; available: {sorted(rows[0])}.")
    out = []
    for key in dict.fromkeys(r[by] for r in rows):
        group = [r for r in rows if r[by] == key]
        entry = {by: key, "n": len(group)}
        for m in metrics:
            x = np.asarray([r[m] for r in group], dtype=float)
            entry[m] = float(x.mean())
            entry[m + "_sd"] = float(x.std(ddof=1)) if len(x) > 1 else 0.0
        out.append(entry)
    return out


def plot_probes(summary, metrics, labels=None, ax=None, reference=None):
    """Grouped bar chart of probe accuracies (mean ± sd over seeds) per variant; ``reference``:
    optional dict {label: value} drawn as horizontal lines (e.g. the Bayes accuracy)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    labels = list(metrics) if labels is None else list(labels)
    width = 0.8 / len(metrics)
    x = np.arange(len(summary))
    for j, (m, lab) in enumerate(zip(metrics, labels)):
        ax.bar(x + (j - (len(metrics) - 1) / 2) * width, [s[m] for s in summary], width,
               yerr=[s[m + "_sd"] for s in summary], capsize=3, label=lab)
    for lab, val in (reference or {}).items():
        ax.axhline(val, color="k", ls="--", lw=1)
        ax.text(len(summary) - 0.5, val, f" {lab}", va="bottom", ha="right", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels([s["variant"] for s in summary], fontsize=8)
    ax.set_ylabel("probe test accuracy")
    ax.legend(fontsize=8, loc="lower left")
    return ax
