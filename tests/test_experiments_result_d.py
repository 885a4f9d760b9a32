"""Result D experiments (lmdownstream.experiments.result_d): small sizes, the bound holds, bad input is rejected."""
import numpy as np
import pytest

from lmdownstream import lm, theory
from lmdownstream.experiments import result_d

SMALL = dict(n_contexts=120, vocab_size=30, d=4, label_strength=0.3, seed=0)


@pytest.fixture(scope="module")
def setup():
    return result_d.planted_setup(**SMALL)


def test_setup_is_natural_wrt_phi(setup):
    Phi, lam, v = setup["Phi"], setup["lam"], setup["v"]
    assert Phi.shape == (4, 30) and np.allclose(Phi.T @ lam, v)
    assert np.isclose(setup["v_norm2"], np.linalg.norm(v))
    # tau is the loss of v on p* (bias refitted) and the best loss on theta*
    tau_v = theory.task_loss((setup["p_star"] @ v)[:, None], setup["y"], weights=setup["weights"])
    assert abs(tau_v - setup["tau"]) < 1e-6
    assert np.allclose(setup["theta_star"], lm.quad_optimal_f(Phi, setup["p_star"]))
    assert 0 < setup["tau"] < np.log(2) and setup["gamma"] == 1.0


@pytest.mark.parametrize("path", result_d.PATHS)
def test_bound_holds(setup, path):
    eps_grid = np.logspace(-9, -6, 3)
    rows = result_d.quad_rows(eps_grid, path=path, setup=setup)
    assert len(rows) == 3
    for r in rows:
        assert set(r) >= {"eps", "loss", "tau", "bound", "v_norm2", "gamma", "feature", "path"}
        assert r["feature"] == "f" and r["path"] == path
        assert r["loss"] <= r["bound"]
        assert np.isclose(r["bound"], r["tau"] + r["v_norm2"] * np.sqrt(2 * r["eps"]))
    eps = np.array([r["eps"] for r in rows])
    if path == "adam":
        assert np.all(eps <= eps_grid) and np.all(eps >= 0.99 * eps_grid)
    else:
        assert np.allclose(eps, eps_grid, rtol=1e-6)
    if path == "segment":  # features t * theta*: a linear image, so the probe loses nothing
        assert max(abs(r["loss"] - r["tau"]) for r in rows) < 1e-6
    if path == "worst":  # the loss rises like sqrt(eps)
        gaps = np.array([r["loss"] - r["tau"] for r in rows])
        assert np.all(gaps > 0)
        assert abs(np.polyfit(np.log(eps), np.log(gaps), 1)[0] - 0.5) < 0.1


def test_learned_phi_reaches_top_eigenspace():
    lang = result_d.topic_language(n_contexts=100, vocab_size=20, n_topics=3, noise=0.05, seed=1)
    _, lam, U = result_d.omega(lang.p_next, lang.p_context)
    assert np.all(np.diff(lam) <= 1e-15) and np.allclose(U.T @ U, np.eye(20), atol=1e-10)
    res = result_d.learned_phi_angles(lang, d=3, steps=1500, als_iters=30, seed=0)
    assert res["gap"] > 0 and np.isclose(res["tail"], 0.5 * lam[3:].sum())
    assert np.degrees(res["als"]["angles"].max()) < 1e-6
    assert np.degrees(res["adam"]["angles"].max()) < 5
    assert np.degrees(res["random"]["angles"].max()) > 30
    for key in ("adam", "als", "random"):
        r = res[key]
        assert r["excess"] >= res["tail"] - 1e-12
        assert np.sum(np.sin(r["angles"]) ** 2) <= r["sin2_bound"] * (1 + 1e-6) + 1e-12


def test_rejects_bad_input(setup):
    with pytest.raises(ValueError, match="smaller than vocab_size"):
        result_d.planted_setup(n_contexts=50, vocab_size=10, d=10)
    with pytest.raises(ValueError, match="d must be an integer"):
        result_d.planted_setup(d=1.5)
    with pytest.raises(ValueError, match="positive"):
        result_d.quad_rows([1e-8, -1e-8], setup=setup)
    with pytest.raises(ValueError, match="positive"):
        result_d.quad_rows([], setup=setup)
    with pytest.raises(ValueError, match="path must be one of"):
        result_d.quad_rows([1e-8], path="sgd", setup=setup)
    with pytest.raises(ValueError, match="not both"):
        result_d.quad_rows([1e-8], setup=setup, d=3)
    with pytest.raises(ValueError, match="noise"):
        result_d.topic_language(noise=1.0)
    with pytest.raises(ValueError, match="smaller than vocab_size"):
        result_d.topic_language(vocab_size=5, n_topics=5)
    with pytest.raises(ValueError, match="smaller than the vocabulary"):
        result_d.learned_phi_angles(result_d.topic_language(n_contexts=20, vocab_size=8, n_topics=2), d=8)
    with pytest.raises(ValueError, match="lr must be"):
        result_d.adam_quad_joint(np.ones((3, 4)) / 4, np.ones(3), d=2, lr=0.0)
    with pytest.raises(ValueError, match="non-negative"):
        result_d.omega(np.ones((3, 4)) / 4, np.array([1.0, -1.0, 1.0]))
