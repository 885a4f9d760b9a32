"""Datasets, prompts, zero-shot and the experiments table (lmdownstream.tasks)."""
import re
import time

import numpy as np
import pytest

pytest.importorskip("datasets")
pytest.importorskip("transformers")
from lmdownstream import config, hf, tasks  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_gpt2_folder):
    return hf.load_lm(tiny_gpt2_folder, device="cpu")


@pytest.mark.parametrize("name, n_classes", [("tweet-sentiment", 2), ("bbc-news", 5)])
def test_offline_datasets(name, n_classes):
    train, test = tasks.load_dataset(name, "train"), tasks.load_dataset(name, "test")
    for ds in (train, test):
        assert ds.column_names == ["text", "label"]
        assert ds.features["label"].names == ds.label_names and len(ds.label_names) == n_classes
        assert set(ds["label"]) == set(range(n_classes))
        assert all(isinstance(t, str) and t.strip() for t in ds["text"])
    assert not set(train["text"]) & set(test["text"])  # disjoint, no duplicates across splits
    assert len(set(train["text"])) == len(train)  # no duplicates within
    assert abs(len(test) / (len(train) + len(test)) - 0.2) < 0.01
    info = tasks.dataset_info(name)
    assert info["train"] == len(train) and info["test"] == len(test)
    assert tasks.load_dataset(name, "test")["text"] == test["text"]  # fixed split


def test_tweets_are_cleaned_and_balanced():
    ds = tasks.load_dataset("tweet-sentiment", "all")
    counts = np.bincount(ds["label"])
    assert counts[0] == counts[1] > 4000
    assert not any(re.search(r"[\x80-\xff]", t) for t in ds["text"])  # no mis-decoded runs left
    assert not any("&amp;" in t for t in ds["text"])
    assert tasks._clean_tweet("I don\x8a\x97Èt know äóìyesäó\x9d") == "I don't know \"yes\""


def test_bbc_sizes_and_decoding():
    ds = tasks.load_dataset("bbc-news", "all")
    assert 2100 <= len(ds) <= 2225
    assert not any("Â£" in t for t in ds["text"][:300])


def test_subsample_is_stratified_and_seeded():
    a = tasks.load_dataset("bbc-news", "train", n=50, seed=1)
    b = tasks.load_dataset("bbc-news", "train", n=50, seed=1)
    c = tasks.load_dataset("bbc-news", "train", n=50, seed=2)
    assert len(a) == 50 and a["text"] == b["text"] and a["text"] != c["text"]
    assert np.bincount(a["label"]).min() >= 8


def test_bad_dataset_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        tasks.load_dataset("imdb")
    with pytest.raises(ValueError, match="split"):
        tasks.load_dataset("bbc-news", "validation")
    with pytest.raises(ValueError, match="n .or None. must be an int >= 1"):
        tasks.load_dataset("bbc-news", n=0)
    with pytest.raises(ValueError, match="float"):
        tasks.load_dataset("bbc-news", n=10.0)


def test_dataset_names_and_truncation():
    assert tasks.check_dataset_name(" AG-News ") == "ag_news" and tasks.check_dataset_name("bbc_news") == "bbc-news"
    with pytest.raises(ValueError, match="unknown dataset"):
        tasks.check_dataset_name(3)
    assert tasks.truncate_words(["a b  c d", "e"], 2) == ["a b", "e"]
    assert tasks.truncate_words(("x y",), None) == ["x y"]
    with pytest.raises(ValueError, match="max_words"):
        tasks.truncate_words(["a"], 0)


@pytest.mark.parametrize("profile", ["ci", "full"])
def test_table_sizes_come_from_the_config_table(monkeypatch, profile):
    monkeypatch.setenv("LMDOWNSTREAM_PROFILE", profile)
    for name in tasks.DATASETS:
        want = config.SIZES[profile]["table"].get(name, dict(n_train=None, n_test=None, max_words=None))
        assert tasks.table_sizes(name) == want
    tasks.table_sizes("bbc-news")["n_train"] = -1  # a copy: the table itself is unchanged
    assert tasks.table_sizes("bbc-news") == config.SIZES[profile]["table"].get("bbc-news", want)


@pytest.mark.parametrize("name, alternative", [("sst2", "tweet-sentiment"), ("sst5", "tweet-sentiment"),
                                               ("ag_news", "bbc-news")])
def test_online_dataset_offline_fails_fast(monkeypatch, name, alternative):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(ValueError, match=alternative):
        tasks.load_dataset(name)
    assert time.time() - t < 5


def test_prompts_and_words_cover_the_datasets():
    for name in tasks.DATASETS:
        assert tasks.PROMPTS[name].startswith(" ") and not tasks.PROMPTS[name].endswith(" ")
        assert len(tasks.VERBALIZERS[name]) == len(tasks._LABELS[name])
    assert len(tasks.WORDS["sentiment"]) == len(tasks.WORDS["topic"]) == 14


def test_zero_shot_matches_brute_force(tiny):
    texts = ["the movie was great", "a terrible boring film", "i loved it :)", "sad ending"]
    verb = [["sad", "boring"], ["great"]]
    pred, scores = tasks.zero_shot(tiny, texts, verb, prompt=" This movie is", return_scores=True, cache=False)
    out = hf.extract(tiny, texts, kinds=("p_f",), prompt=" This movie is", cache=False, progress=False)
    ids = [hf.resolve_words(tiny, w).ids for w in verb]
    mass = np.stack([out["p_f"][:, i].sum(1) for i in ids], axis=1)
    assert np.array_equal(pred, mass.argmax(1))
    assert np.allclose(np.exp(scores - scores.max(1, keepdims=True)), mass / mass.max(1, keepdims=True), atol=1e-4)
    cal = tasks.zero_shot(tiny, texts, verb, prompt=" This movie is", calibrate=True, cache=False)
    assert cal.shape == (4,)
    with pytest.raises(ValueError, match="at least two classes"):
        tasks.zero_shot(tiny, texts, [["great"]], cache=False)
    with pytest.raises(ValueError, match="class 1"):
        tasks.zero_shot(tiny, texts, [["great"], ["xqzvbnmwk"]], cache=False)


def test_bag_of_words():
    tr, te = tasks.bag_of_words(["good good film", "bad film", "good day"], ["good bad", "nothing known"],
                                min_df=1)
    assert tr.shape == (3, 4) and te.shape == (2, 4)
    assert np.allclose(np.linalg.norm(tr, axis=1), 1) and np.allclose(te[1], 0)


@pytest.mark.slow
def test_experiment_table_rows(tiny, tmp_cache):
    import torch

    threads = torch.get_num_threads()
    rows = tasks.experiment_table(tiny, "tweet-sentiment", n_train=40, n_test=20, seeds=2, Cs=[0.1, 10.0],
                                  progress=False)
    feats = [(r["features"], r["prompt"]) for r in rows]
    assert ("f(s)", False) in feats and ("f(s)", True) in feats and ("Φp_f(s)", True) in feats
    assert ("bag of words", False) in feats and ("zero-shot", True) in feats
    assert any(f.startswith("subset logits") for f, _ in feats) and any(f.startswith("class-word") for f, _ in feats)
    for r in rows:
        assert 0 <= r["mean"] <= 1 and r["n_test"] == 20 and r["chance"] == 0.5
    assert len(rows[0]["accs"]) == 2
    assert torch.get_num_threads() == threads  # the probes' one thread is restored
    assert len({r["label"] for r in rows}) == len(rows)  # one name per row, for plots
    # accuracies agree with the per-seed list, and zero-shot with tasks.zero_shot on the same texts
    for r in rows:
        assert r["mean"] == pytest.approx(np.mean(r["accs"])) and r["std"] == pytest.approx(np.std(r["accs"]))
    test = tasks.load_dataset("tweet-sentiment", "test", n=20, seed=0)
    pred = tasks.zero_shot(tiny, test["text"], tasks.VERBALIZERS["tweet-sentiment"],
                           tasks.PROMPTS["tweet-sentiment"], cache=False)
    assert tasks.table_row(rows, "zero-shot", True)["mean"] == pytest.approx(np.mean(pred == np.array(test["label"])))
    assert tasks.table_row(rows, "subset", False)["features"].startswith("subset logits (")
    with pytest.raises(ValueError, match="no row"):
        tasks.table_row(rows, "bag of words", True)
    md = tasks.table_markdown(rows)
    assert md.count("\n") == len(rows) + 1
