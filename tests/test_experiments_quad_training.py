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


def test_synthetic_study_rows(hmm):
    rows = qt.synthetic_study(hmm, seeds=(0, 1), **TOY)
    assert [r["variant"] for r in rows] == [v["name"] for v in qt.VARIANTS] * 2
    for r in rows:
        assert 0 <= r["acc_f"] <= 1 and 0 <= r["acc_Phi_p"] <= 1 and r["eps"] >= 0 and r["quad_rel"] >= 0
        assert r["xent"] > 0 and r["acc_bayes"] == rows[0]["acc_bayes"]
    # the Bayes accuracy is that of the label posterior on the study's own test prefixes
    Xte, yte = hmm.natural_task(TOY["n_task"], TOY["task_length"], seed=10_004)
    assert rows[0]["acc_bayes"] == pytest.approx(np.mean(hmm.label_posterior(Xte).argmax(1) == yte))
    # a second call loads every model from the cache and reproduces the rows
    again = qt.synthetic_study(hmm, seeds=(0, 1), **TOY)
    assert all(r["seconds"] == 0.0 for r in again)
    for a, b in zip(rows, again):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}


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
    rows = [dict(variant="a", m=1.0), dict(variant="b", m=5.0), dict(variant="a", m=2.0), dict(variant="a", m=6.0)]
    s = qt.summarise(rows, ["m"])
    assert [e["variant"] for e in s] == ["a", "b"] and s[0]["n"] == 3
    assert s[0]["m"] == pytest.approx(3.0) and s[0]["m_sd"] == pytest.approx(np.std([1, 2, 6], ddof=1))
    assert s[1]["m_sd"] == 0.0
    with pytest.raises(ValueError, match="no column"):
        qt.summarise(rows, ["acc"])
    with pytest.raises(ValueError, match="empty"):
        qt.summarise([], ["m"])


def test_bad_input(hmm):
    with pytest.raises(ValueError, match="state_labels"):
        qt.synthetic_study(synthetic.HMMLanguage([1.0, 0.0], np.eye(2), np.full((2, 3), 1 / 3)), **TOY)
    with pytest.raises(ValueError, match="Phi"):
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
    monkeypatch.setenv("LMDOWNSTREAM_PROFILE", "ci")
    assert qt.sizes() == qt.SIZES["ci"]
    monkeypatch.setenv("LMDOWNSTREAM_PROFILE", "full")
    assert qt.sizes() == qt.SIZES["full"]
    assert set(qt.SIZES["ci"]) == set(qt.SIZES["full"])
