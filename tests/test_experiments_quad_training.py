"""Chapter 8's training experiments (lmdownstream.experiments.quad_training), at toy sizes."""
import numpy as np
import pytest

pytest.importorskip("transformers")
from lmdownstream import synthetic, train  # noqa: E402
from lmdownstream.experiments import quad_training as qt  # noqa: E402

TOY = dict(n_train=200, n_val=40, length=6, n_task=60, task_length=4, d=16, n_layers=1, n_heads=2, steps=20,
           batch_size=16, progress=False)


pytestmark = pytest.mark.usefixtures("small_training")  # empty cache, one torch thread (conftest)


@pytest.fixture(scope="module")
def hmm():
    return synthetic.HMMLanguage.random(4, 12, seed=1)


@pytest.mark.slow
def test_synthetic_study_rows(hmm):
    df = qt.synthetic_study(hmm, seeds=(0, 1), **TOY)
    assert list(df["variant"]) == [v["name"] for v in qt.VARIANTS] * 2 and list(df["seed"]) == [0] * 4 + [1] * 4
    assert df["acc_f"].between(0, 1).all() and df["acc_Phi_p"].between(0, 1).all()
    assert (df["eps"] >= 0).all() and (df["quad_rel"] >= 0).all() and (df["xent"] > 0).all()
    # the setup is recorded: every setting, overrides included
    assert df.attrs["settings"]["steps"] == TOY["steps"] and df.attrs["settings"]["seeds"] == [0, 1]
    assert df.attrs["settings"]["lr"] == 3e-3 and df.attrs["n_states"] == 4
    # the Bayes accuracy is that of the label posterior on the study's own test prefixes
    Xte, yte = hmm.natural_task(TOY["n_task"], TOY["task_length"], seed=10_004)
    bayes = np.mean(hmm.label_posterior(Xte).argmax(1) == yte)
    assert (df["acc_bayes"] == df.attrs["acc_bayes"]).all() and df.attrs["acc_bayes"] == pytest.approx(bayes)
    # the entropy is the HMM's, the same for every model
    assert df["entropy"].nunique() == 1 and df.attrs["entropy"] == df["entropy"].iloc[0]
    # a second call loads every model from the cache and reproduces the rows
    again = qt.synthetic_study(hmm, seeds=(0, 1), **TOY)
    assert (again["seconds"] == 0.0).all()
    assert again.drop(columns="seconds").equals(df.drop(columns="seconds"))


def test_settings_come_from_the_sizes_table(monkeypatch):
    monkeypatch.setenv("LMDOWNSTREAM_PROFILE", "ci")
    with pytest.raises(ValueError, match="no setting 'step'"):
        qt.synthetic_study(step=3)
    with pytest.raises(ValueError, match="no setting 'probe'"):
        qt.text_study(probe=3)


def test_fixed_phi_variants(hmm):
    corpus = train.hmm_corpus(hmm, 50, 5, seed=0)
    kw = dict(d=16, n_layers=1, n_heads=2, steps=5, batch_size=8, lr=3e-3)
    variants = [dict(name="x", loss="xent", Phi="tied"), dict(name="g", loss="quad", Phi="gaussian"),
                dict(name="from x", loss="quad", Phi="xent")]
    out = qt._train_variants(corpus, variants, 3, kw, False)
    np.testing.assert_array_equal(out["from x"].model.Phi.numpy(), out["x"].model.Phi.detach().numpy())
    g = out["g"].model.Phi.numpy()
    np.testing.assert_allclose(g.std(), 1 / np.sqrt(16), rtol=0.1)
    np.testing.assert_allclose(g, qt._phi_for(variants[1], 16, corpus.vocab_size, 3, None), rtol=1e-6)  # float32
    assert out["g"].model.affine is not None and out["x"].model.affine is None


def test_summarise_matches_numpy():
    import pandas as pd

    rows = [dict(variant="b", m=5.0, k=1), dict(variant="a", m=1.0, k=2), dict(variant="a", m=2.0, k=3),
            dict(variant="a", m=6.0, k=4)]
    df = pd.DataFrame(rows)
    df.attrs["settings"] = {"steps": 3}
    s = qt.summarise(df, ["m", "k"])
    assert list(s["variant"]) == ["b", "a"] and list(s["n"]) == [1, 3]  # first-seen order
    assert list(s.columns) == ["variant", "n", "m", "m_sd", "k", "k_sd"]
    a = s.set_index("variant").loc["a"]
    assert a["m"] == pytest.approx(3.0) and a["m_sd"] == pytest.approx(np.std([1, 2, 6], ddof=1))
    assert a["k_sd"] == pytest.approx(1.0) and s.set_index("variant").loc["b", "m_sd"] == 0.0
    assert s.attrs["settings"] == {"steps": 3}
    assert qt.summarise(rows, ["m"]).equals(qt.summarise(df, ["m"]))  # a list of dicts works too
    with pytest.raises(ValueError, match="no column"):
        qt.summarise(rows, ["acc"])
    with pytest.raises(ValueError, match="empty"):
        qt.summarise([], ["m"])


def test_bad_input(hmm):
    with pytest.raises(ValueError, match="state_labels"):
        qt.synthetic_study(synthetic.HMMLanguage([1.0, 0.0], np.eye(2), np.full((2, 3), 1 / 3)), **TOY)
    with pytest.raises(ValueError, match="Phi must be one of"):
        qt.synthetic_study(hmm, variants=[dict(name="a", loss="xent", Phi="random")], **TOY)
    with pytest.raises(ValueError, match="loss"):
        qt.synthetic_study(hmm, variants=[dict(name="a", loss="mse", Phi="tied")], **TOY)
    with pytest.raises(ValueError, match="unique"):
        qt.synthetic_study(hmm, variants=[dict(name="a", loss="xent", Phi="tied")] * 2, **TOY)
    with pytest.raises(ValueError, match="learned Phi before"):
        qt.synthetic_study(hmm, variants=[dict(name="a", loss="quad", Phi="xent")], **TOY)
    with pytest.raises(ValueError, match="seeds"):
        qt.synthetic_study(hmm, seeds=(), **TOY)


def test_sizes_per_profile(monkeypatch):
    from lmdownstream import config

    monkeypatch.setenv("LMDOWNSTREAM_PROFILE", "ci")
    assert qt.sizes() == qt.SIZES["ci"] == config.sizes("quad_training")
    monkeypatch.setenv("LMDOWNSTREAM_PROFILE", "full")
    assert qt.sizes() == qt.SIZES["full"]
    assert set(qt.SIZES["ci"]) == set(qt.SIZES["full"])
    assert qt.SIZES["ci"] is config.SIZES["ci"]["quad_training"]  # a view of the one table, not a copy
