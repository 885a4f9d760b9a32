"""Result D experiments (lmdownstream.experiments.result_d): small sizes, the bound holds, bad input is rejected."""
import numpy as np
import pytest
import scipy.linalg

from lmdownstream import synthetic, theory
from lmdownstream.experiments import result_d

SMALL = dict(n_contexts=120, vocab_size=30, d=4, label_strength=0.3, seed=0)
EPS = np.logspace(-9, -6, 3)


@pytest.fixture(scope="module")
def setup():
    return result_d.planted_setup(**SMALL)


@pytest.fixture(scope="module")
def df(setup):
    return result_d.run(eps=EPS, setup=setup)


def test_setup_is_natural_wrt_phi(setup):
    Phi, lam, v = setup["Phi"], setup["lam"], setup["v"]
    assert Phi.shape == (4, 30) and np.allclose(Phi.T @ lam, v)
    assert np.isclose(setup["v_norm2"], np.linalg.norm(v))
    # tau is the loss of v on p* (bias refitted) and the best loss on theta*
    tau_v = theory.task_loss((setup["p_star"] @ v)[:, None], setup["y"], weights=setup["weights"])
    assert abs(tau_v - setup["tau"]) < 1e-6
    theta = np.linalg.solve(Phi @ Phi.T, Phi @ setup["p_star"].T).T  # (Phi Phi^T)^-1 Phi p*
    assert np.allclose(setup["theta_star"], theta)
    assert 0 < setup["tau"] < np.log(2) and setup["gamma"] == 1.0
    W = setup["lang"].indicative_words  # row 0 of Phi is the indicative-word classifier
    assert np.all(Phi[0, W[1]] == 1) and np.all(Phi[0, W[0]] == -1)


@pytest.mark.parametrize("path", result_d.PATHS)
def test_bound_holds(df, path):
    rows = df[df.path == path]
    assert len(rows) == 3 and (rows.loss <= rows.bound).all()
    assert np.allclose(rows.bound, rows.tau + df.attrs["v_norm2"] * np.sqrt(2 * rows.eps))
    eps = rows.eps.to_numpy()
    if path == "adam":
        assert np.all(eps <= EPS) and np.all(eps >= 0.99 * EPS) and (rows.n_steps > 0).all()
    else:
        assert np.allclose(eps, EPS, rtol=1e-6)
    if path == "segment":  # features t * theta*: a linear image, so the probe loses nothing
        assert (abs(rows.loss - rows.tau) < 1e-6).all()
    if path == "worst":  # the loss rises like sqrt(eps)
        gaps = (rows.loss - rows.tau).to_numpy()
        assert np.all(gaps > 0)
        assert abs(np.polyfit(np.log(eps), np.log(gaps), 1)[0] - 0.5) < 0.1


def test_run_attrs_and_paths(df, setup):
    assert set(df.path) == set(result_d.PATHS) and np.allclose(df.attrs["eps"], EPS)
    assert df.attrs["tau"] == setup["tau"] and df.attrs["gamma"] == 1.0
    one = result_d.run(eps=EPS[:1], paths=("worst",), setup=setup)
    assert list(one.path) == ["worst"] and one.loss[0] == pytest.approx(df[df.path == "worst"].loss.iloc[0])


def test_learned_phi_reaches_top_eigenspace():
    lang = synthetic.topic_language(n_contexts=100, vocab_size=20, n_topics=3, noise=0.05, seed=1)
    P, w = lang.p_next, lang.p_context
    lam = np.linalg.eigvalsh((P * (w / w.sum())[:, None]).T @ P)[::-1]  # Omega by hand
    res = result_d.learned_phi_angles(lang, d=3, steps=1500, als_iters=30, seed=0)
    assert np.allclose(res["eigenvalues"], lam, atol=1e-12)
    assert res["gap"] > 0 and np.isclose(res["tail"], 0.5 * lam[3:].sum())
    assert np.degrees(res["als"]["angles"].max()) < 1e-6
    assert np.degrees(res["adam"]["angles"].max()) < 5
    assert np.degrees(res["random"]["angles"].max()) > 30
    for key in ("adam", "als", "random"):
        r = res[key]
        assert r["excess"] >= res["tail"] - 1e-12
        assert np.sum(np.sin(r["angles"]) ** 2) <= r["sin2_bound"] * (1 + 1e-6) + 1e-12
        top = np.linalg.eigh((P * (w / w.sum())[:, None]).T @ P)[1][:, ::-1][:, :3]
        assert np.allclose(np.sort(r["angles"]), np.sort(scipy.linalg.subspace_angles(r["Phi"].T, top)))


def test_adam_quad_joint_lowers_the_quad_loss():
    lang = synthetic.topic_language(n_contexts=40, vocab_size=12, n_topics=2, seed=0)
    P, w = lang.p_next, lang.p_context
    f, Phi = result_d.adam_quad_joint(P, w, d=2, steps=300, seed=0)
    L = f @ Phi
    loss = w @ (0.5 * (L * L).sum(1) - (L * P).sum(1)) / w.sum()
    assert loss < -0.5 * (w @ (P * P).sum(1)) / w.sum() * 0.5  # well below the loss 0 at f = 0


def test_rejects_bad_input(setup):
    with pytest.raises(ValueError, match="smaller than vocab_size"):
        result_d.planted_setup(n_contexts=50, vocab_size=10, d=10)
    with pytest.raises(ValueError, match="d"):
        result_d.planted_setup(d=1.5)
    with pytest.raises(ValueError, match="positive"):
        result_d.run(eps=[1e-8, -1e-8], setup=setup)
    with pytest.raises(ValueError, match="path"):
        result_d.run(eps=[1e-8], paths=("sgd",), setup=setup)
    with pytest.raises(ValueError, match="not both"):
        result_d.run(eps=[1e-8], setup=setup, d=3)
    with pytest.raises(ValueError, match="smaller than the vocabulary"):
        result_d.learned_phi_angles(synthetic.topic_language(n_contexts=20, vocab_size=8, n_topics=2), d=8)
    with pytest.raises(ValueError, match="lr"):
        result_d.adam_quad_joint(np.ones((3, 4)) / 4, np.ones(3), d=2, lr=0.0)
