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
* :func:`summarise` -- mean and standard deviation over seeds, per variant (draw it with
  :func:`lmdownstream.plot.bars`; print it with :func:`summary_table`).

Both studies take their sizes from ``config.SIZES[profile]["quad_training"]`` (:data:`SIZES`,
the same entry as chapter 6's small models, so chapter 8 loads the checkpoints chapter 6 trained);
keyword overrides change any setting, and the DataFrame's ``attrs`` record them all.

Fixed :math:`\Phi`: ``"gaussian"`` is a seeded :math:`N(0, 1/d)` matrix; ``"xent"`` is the
:math:`\Phi` learned by the cross-entropy model of the same seed (as the paper's code fixes
:math:`\Phi` to GPT-2's embeddings). Fixed-:math:`\Phi` variants get the extra :math:`d\times d`
affine layer of the official code.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import config, probes, synthetic, tasks, train
from .._checks import check_choice, check_int

__all__ = ["VARIANTS", "TEXT_VARIANTS", "SIZES", "sizes", "text_setup", "synthetic_study", "text_study",
           "summarise", "summary_table"]

#: Sizes per profile: a view of the ``"quad_training"`` entries of :data:`lmdownstream.config.SIZES`.
SIZES = {name: config.SIZES[name]["quad_training"] for name in config.PROFILES}

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


def sizes() -> dict:
    """A copy of the :data:`SIZES` entry of the current profile (:func:`lmdownstream.config.sizes`)."""
    return config.sizes("quad_training")


def _settings(defaults, overrides, what):
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"{what} has no setting {unknown[0]!r}; the settings are {sorted(defaults)}.")
    out = {**defaults, **overrides}
    out["seeds"] = [check_int(s, "seed", low=0) for s in out["seeds"]]
    if not out["seeds"]:
        raise ValueError("seeds is empty; pass at least one seed.")
    return out


def _check_variants(variants):
    variants, names = list(variants), set()
    if not variants:
        raise ValueError("variants is empty; pass at least one dict(name=..., loss=..., Phi=...).")
    for v in variants:
        if not isinstance(v, dict) or not {"name", "loss", "Phi"} <= set(v):
            raise ValueError(f"each variant needs keys name, loss, Phi; got {v!r}.")
        check_choice(v["loss"], f"variant {v['name']!r}: loss", train.LOSSES)
        check_choice(v["Phi"], f"variant {v['name']!r}: Phi", ("tied", "untied", "gaussian", "xent"))
        if v["name"] in names:
            raise ValueError(f"two variants are named {v['name']!r}; names must be unique.")
        names.add(v["name"])
    learned = [i for i, v in enumerate(variants) if v["loss"] == "xent" and v["Phi"] in ("tied", "untied")]
    if any(v["Phi"] == "xent" for v in variants) and not learned:
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
    r"""Test accuracy of a cross-validated logistic probe on standardised features.

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


def _frame(rows, settings, **attrs):
    import pandas as pd

    df = pd.DataFrame(rows)
    df.attrs.update(settings=settings, **attrs)
    return df


_TRAIN_KEYS = ("d", "n_layers", "n_heads", "steps", "batch_size", "lr")


def synthetic_study(hmm=None, *, sizes=None, variants=VARIANTS, progress: bool = False, **overrides):
    r"""Train every variant for every seed on sentences of an HMM and measure it exactly.

    Parameters
    ----------
    hmm : an :class:`~lmdownstream.synthetic.HMMLanguage` with state labels (default:
        ``HMMLanguage.random(states, words, seed=0)`` of the sizes, two labels).
    sizes : dict of settings (default: :func:`sizes`, the profile's), updated by ``overrides``:
        ``seeds`` (model seeds; the corpus is the same for all), ``n_train``, ``n_val``,
        ``length`` (training and validation sentences of ``length`` words), ``n_task``,
        ``task_length`` (the planted task: that many prefixes for training the probe and as
        many for testing it), and ``d, n_layers, n_heads, steps, batch_size, lr`` for
        :func:`lmdownstream.train.train_lm`.
    variants : see :data:`VARIANTS`.

    Returns
    -------
    pandas DataFrame, one row per (variant, seed): ``variant, seed, loss, xent`` (held-out, nats,
    through softmax), ``entropy`` (:math:`\ell^*`), ``eps`` (exact), ``quad_excess``, ``quad_rel``
    (distance to the Quad optimum for the model's own :math:`\Phi`), ``acc_f``, ``acc_Phi_p``
    (probe test accuracy), ``acc_bayes`` (accuracy of the Bayes-optimal predictor on the same test
    prefixes), ``seconds`` (training time in this call; 0 when loaded from the cache).
    ``attrs``: ``settings``, ``entropy``, ``acc_bayes``, ``n_states``, ``vocab_size``.
    """
    z = config.sizes("quad_training") if sizes is None else sizes
    defaults = dict(states=8, words=50, seeds=(0, 1), n_train=4000, n_val=500, length=16, n_task=1500,
                    task_length=8, d=64, n_layers=2, n_heads=4, steps=300, batch_size=64, lr=3e-3)
    defaults.update({k: z[k] for k in defaults if k in z})
    s = _settings(defaults, overrides, "synthetic_study")
    hmm = synthetic.HMMLanguage.random(s["states"], s["words"], seed=0) if hmm is None else hmm
    if not isinstance(hmm, synthetic.HMMLanguage) or hmm.state_labels is None:
        raise ValueError("hmm must be an HMMLanguage with state_labels (e.g. HMMLanguage.random(...)).")
    variants = _check_variants(variants)
    length = check_int(s["length"], "length")
    corpus = train.hmm_corpus(hmm, check_int(s["n_train"], "n_train"), length, seed=10_001)
    val = train.hmm_corpus(hmm, check_int(s["n_val"], "n_val"), length, seed=10_002)
    n_task, task_length = check_int(s["n_task"], "n_task", 10), check_int(s["task_length"], "task_length")
    Xtr, ytr = hmm.natural_task(n_task, task_length, seed=10_003)
    Xte, yte = hmm.natural_task(n_task, task_length, seed=10_004)
    bos = lambda X: np.concatenate([np.full((X.shape[0], 1), hmm.vocab_size), X], axis=1)  # noqa: E731
    acc_bayes = float(np.mean(hmm.label_posterior(Xte).argmax(1) == yte))
    rows = []
    for seed in s["seeds"]:
        trained = _train_variants(corpus, variants, seed, {k: s[k] for k in _TRAIN_KEYS}, progress)
        for name, res in trained.items():
            m = res.model
            ev, ex = train.evaluate(m, val), train.exact_excess(m, val)
            ftr, fte = m.features(bos(Xtr), kinds=("f", "Phi_p")), m.features(bos(Xte), kinds=("f", "Phi_p"))
            rows.append(dict(variant=name, seed=seed, loss=res.settings["loss"], xent=ev["xent"],
                             entropy=ex["entropy"], eps=ex["eps"], quad_excess=ex["quad_excess"],
                             quad_rel=ex["quad_rel"], acc_f=_probe(ftr["f"], ytr, fte["f"], yte, seed),
                             acc_Phi_p=_probe(ftr["Phi_p"], ytr, fte["Phi_p"], yte, seed), acc_bayes=acc_bayes,
                             seconds=res.seconds))
    return _frame(rows, s, entropy=rows[0]["entropy"], acc_bayes=acc_bayes, n_states=hmm.n_states,
                  vocab_size=hmm.vocab_size)


def text_setup(vocab_size: int = 2000, block: int = 64):
    """The real-text corpus of :func:`text_study`: (tokenizer, train Corpus, held-out Corpus).

    The training splits of tweet-sentiment and bbc-news (labels unused), a byte-level BPE with
    ``vocab_size`` tokens trained on them, blocks of ``block`` tokens, 2% of the blocks held out."""
    texts = [t for name in ("tweet-sentiment", "bbc-news") for t in tasks.load_dataset(name, "train")["text"]]
    tok = train.train_tokenizer(texts, vocab_size=vocab_size)
    full = train.text_corpus(texts, tok, block=block, name=f"tweets+bbc/train bpe{vocab_size} block{block}")
    corpus, val = full.split(0.02, seed=0)
    return tok, corpus, val


def text_study(*, sizes=None, variants=TEXT_VARIANTS, progress: bool = False, **overrides):
    r"""Train every variant for every seed on real text and probe its features on real tasks.

    The corpus is :func:`text_setup`'s: the *training* split of tweet-sentiment and of bbc-news
    (labels unused), cut into blocks of ``block`` tokens by a byte-level BPE with ``vocab_size``
    tokens trained on the same texts; 2% of the blocks are held out for the validation
    cross-entropy. Probes are trained on ``probe_sizes[name][0]`` labelled training texts and
    tested on ``probe_sizes[name][1]`` test texts (BBC articles cut to their first ``bbc_words``
    words).

    Parameters
    ----------
    sizes : dict (default: :func:`sizes`; its ``text_*`` entries and ``n_layers``, ``block``),
        updated by ``overrides``: ``seeds, vocab_size, block, d, n_layers, n_heads, steps,
        batch_size, lr, probe_sizes, bbc_words``.
    variants : see :data:`TEXT_VARIANTS`.

    Returns
    -------
    pandas DataFrame, one row per (variant, seed): ``variant, seed, loss, xent, quad`` held out,
    ``tweet_f, tweet_Phi_p, bbc_f, bbc_Phi_p`` probe test accuracies, ``seconds``. ``attrs``:
    ``settings``, ``corpus`` (``n_sequences, n_tokens, n_val_tokens, vocab_size, block``) and
    ``chance`` (majority-class accuracy of each probe test set, by dataset name).
    """
    z = config.sizes("quad_training") if sizes is None else sizes
    rename = dict(text_seeds="seeds", text_steps="steps", text_d="d", text_vocab="vocab_size", text_batch="batch_size",
                  n_layers="n_layers", block="block")
    defaults = dict(seeds=(0, 1), vocab_size=2000, block=64, d=64, n_layers=2, n_heads=4, steps=300, batch_size=32,
                    lr=3e-3, probe_sizes={"tweet-sentiment": (1000, 500), "bbc-news": (500, 300)}, bbc_words=40)
    defaults.update({new: z[old] for old, new in rename.items() if old in z})
    s = _settings(defaults, overrides, "text_study")
    variants = _check_variants(variants)
    tok, corpus, val = text_setup(s["vocab_size"], s["block"])
    probe_data, chance = {}, {}
    for name, (n_tr, n_te) in dict(s["probe_sizes"]).items():
        split = [tasks.load_dataset(name, part, n=n) for part, n in (("train", n_tr), ("test", n_te))]
        words = s["bbc_words"] if name == "bbc-news" else None
        ids = [tok(tasks.truncate_words(ds["text"], words), add_special_tokens=False)["input_ids"] for ds in split]
        labels = [np.asarray(ds["label"]) for ds in split]
        probe_data[name] = (ids[0], labels[0], ids[1], labels[1])
        chance[name] = float(np.bincount(labels[1]).max() / len(labels[1]))
    rows = []
    for seed in s["seeds"]:
        trained = _train_variants(corpus, variants, seed, {k: s[k] for k in _TRAIN_KEYS}, progress)
        for vname, res in trained.items():
            ev = train.evaluate(res.model, val)
            row = dict(variant=vname, seed=seed, loss=res.settings["loss"], xent=ev["xent"], quad=ev["quad"],
                       seconds=res.seconds)
            for name, (a, ya, b, yb) in probe_data.items():
                fa, fb = (res.model.features(x, kinds=("f", "Phi_p")) for x in (a, b))
                for k in ("f", "Phi_p"):
                    row[f"{name.split('-')[0]}_{k}"] = _probe(fa[k], ya, fb[k], yb, seed)
            rows.append(row)
    info = dict(n_sequences=len(corpus), n_tokens=corpus.n_tokens, n_val_tokens=val.n_tokens,
                vocab_size=len(tok), block=s["block"])
    return _frame(rows, s, corpus=info, chance=chance)


def summarise(rows, metrics, by: str = "variant"):
    """Mean and standard deviation (ddof=1; 0 for one seed) of ``metrics`` over the rows of each
    value of ``by`` (in first-seen order): a DataFrame with columns ``by``, ``n``, and ``m`` and
    ``m + "_sd"`` for each metric (the ``attrs`` of ``rows`` are kept)."""
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty:
        raise ValueError("rows is empty; run a study first.")
    metrics = list(metrics)
    missing = [m for m in metrics + [by] if m not in df.columns]
    if missing:
        raise ValueError(f"rows have no column(s) {missing}; available: {sorted(df.columns)}.")
    g = df.groupby(by, sort=False)[metrics]
    out = g.mean().join(g.std(ddof=1).fillna(0.0).add_suffix("_sd"))
    out.insert(0, "n", g.size())
    out = out[["n"] + [c for m in metrics for c in (m, m + "_sd")]].reset_index()
    out.attrs.update(df.attrs)
    return out


def summary_table(summary, metrics, by: str = "variant", digits: int = 3):
    """The :func:`summarise` output as strings ``"mean ± sd"``, one column per metric and one
    row per value of ``by`` (a DataFrame to print)."""
    import pandas as pd

    return pd.DataFrame({m: [f"{a:.{digits}f} ± {s:.{digits}f}" for a, s in zip(summary[m], summary[m + "_sd"])]
                         for m in metrics}, index=pd.Index(summary[by], name=by))
