"""Result C: theory.fit_log_partition and lmdownstream.experiments.result_c (small sizes, fast)."""
import numpy as np
import pytest

from lmdownstream import features, theory
from lmdownstream.experiments import result_c


def _quadratic(d, seed=0):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(d, d))
    return M + M.T, rng.normal(size=d), float(rng.normal())


# --------------------------------------------------------------------------- fit_log_partition
def test_fit_log_partition_recovers_a_known_quadratic_exactly():
    d = 4
    A, b, c = _quadratic(d)
    theta = np.random.default_rng(1).normal(size=(40, d))
    y = 0.5 * np.einsum("ni,ij,nj->n", theta, A, theta) + theta @ b + c
    fit = theory.fit_log_partition(theta, y)
    assert np.allclose(fit.A, fit.A.T)
    assert np.allclose(fit.A, A, atol=1e-10) and np.allclose(fit.b, b, atol=1e-10) and abs(fit.c - c) < 1e-10
    test = np.random.default_rng(2).normal(size=(10, d))
    assert np.allclose(fit.predict(test), 0.5 * np.einsum("ni,ij,nj->n", test, A, test) + test @ b + c)
    assert np.allclose(fit.grad(test), test @ A + b)
    assert fit.r2(test, fit.predict(test)) == pytest.approx(1.0)
    # one point: (d,) in, scalar / (d,) out
    assert isinstance(fit.predict(test[0]), float) and fit.grad(test[0]).shape == (d,)


def test_fit_log_partition_grad_is_the_derivative_of_predict():
    rng = np.random.default_rng(3)
    theta = rng.normal(size=(60, 3))
    fit = theory.fit_log_partition(theta, np.log(np.exp(theta @ rng.normal(size=(3, 7))).sum(1)))
    x, h = rng.normal(size=3), 1e-6
    fd = np.array([(fit.predict(x + h * e) - fit.predict(x - h * e)) / (2 * h) for e in np.eye(3)])
    assert np.allclose(fit.grad(x), fd, atol=1e-6)


def test_r2_agrees_with_sklearn_on_held_out_points():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(4)
    Phi = rng.normal(size=(3, 30))
    theta = rng.normal(scale=0.8, size=(200, 3))
    logz = features.log_partition(theta, Phi)
    fit = theory.fit_log_partition(theta[:150], logz[:150])
    r2 = fit.r2(theta[150:], logz[150:])
    assert r2 == pytest.approx(r2_score(logz[150:], fit.predict(theta[150:])), abs=1e-12)
    assert 0.9 < r2 < 1.0  # log Z of a small Gaussian Phi is nearly, not exactly, quadratic


def test_fit_log_partition_weights_and_ridge():
    rng = np.random.default_rng(5)
    theta = rng.normal(size=(30, 2))
    y = np.sin(theta[:, 0]) + theta[:, 1] ** 3
    counts = rng.integers(1, 4, size=30)
    weighted = theory.fit_log_partition(theta, y, weights=counts)
    repeated = theory.fit_log_partition(np.repeat(theta, counts, axis=0), np.repeat(y, counts))
    assert np.allclose(weighted.A, repeated.A) and np.allclose(weighted.b, repeated.b)
    plain, shrunk = theory.fit_log_partition(theta, y), theory.fit_log_partition(theta, y, ridge=10.0)
    assert np.linalg.norm(shrunk.A) + np.linalg.norm(shrunk.b) < np.linalg.norm(plain.A) + np.linalg.norm(plain.b)
    assert np.allclose(theory.fit_log_partition(theta, y, ridge=1e-12).A, plain.A, atol=1e-6)


@pytest.mark.parametrize(
    "theta,log_Z,kw,match",
    [
        (np.zeros((5, 2)), np.zeros(4), {}, "one log Z per row"),
        (np.zeros(5), np.zeros(5), {}, "dimension"),
        (np.ones((5, 2)), np.array([0, 1, np.nan, 2, 3.0]), {}, "non-finite"),
        (np.ones((5, 2)), np.zeros(5), {"ridge": -1.0}, "ridge"),
        (np.ones((5, 2)), np.zeros(5), {"weights": -np.ones(5)}, "negative"),
    ],
)
def test_fit_log_partition_rejects_bad_input(theta, log_Z, kw, match):
    with pytest.raises(ValueError, match=match):
        theory.fit_log_partition(theta, log_Z, **kw)


def test_log_partition_fit_methods_reject_bad_input():
    fit = theory.fit_log_partition(np.random.default_rng(0).normal(size=(20, 2)), np.arange(20.0))
    with pytest.raises(ValueError, match="d=2"):
        fit.predict(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="one per row"):
        fit.r2(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="at least 2"):
        fit.r2(np.zeros((1, 2)), np.zeros(1))


# --------------------------------------------------------------------------- Gaussian motivation
def test_gaussian_prediction_is_exact_at_zero_and_degrades_with_the_radius():
    Phi, mu, Sigma = result_c.gaussian_embeddings(4, 2000, seed=0)
    assert np.allclose(Phi.mean(1), mu, atol=0.1) and np.allclose(np.cov(Phi), Sigma, atol=0.1)
    pred = result_c.gaussian_log_partition(np.zeros((1, 4)), mu, Sigma, 2000)
    assert np.allclose(pred, features.log_partition(np.zeros((1, 4)), Phi))
    rows = result_c.gaussian_check(d=4, vocab_sizes=(50, 5000), radii=[0.2, 5.0], n_directions=8)
    err = {(r["V"], r["radius"]): r["err_mean"] for r in rows}
    assert err[(50, 0.2)] < 0.05 < err[(50, 5.0)] and err[(5000, 0.2)] < err[(50, 0.2)]
    with pytest.raises(ValueError, match="spectrum"):
        result_c.gaussian_embeddings(3, 10, spectrum=(2.0, 1.0))
    with pytest.raises(ValueError, match="Sigma"):
        result_c.gaussian_log_partition(np.zeros((2, 3)), mu, Sigma, 10)


# --------------------------------------------------------------------------- natural classifiers
def test_natural_fit_with_identity_is_task_tau_and_respects_the_constraint():
    from lmdownstream import synthetic

    lang = synthetic.ContextLanguage.random(n_contexts=40, vocab_size=12, seed=0)
    P, y, w = lang.p_next, lang.labels, lang.p_context
    nat = result_c.natural_fit(P, y, np.eye(12), B=3.0, weights=w)
    assert nat.loss == pytest.approx(theory.task_tau(P, y, B=3.0, weights=w), abs=1e-6) and nat.gap < 1e-8
    Phi = np.random.default_rng(1).normal(size=(4, 12))
    nat = result_c.natural_fit(P @ Phi.T, y, Phi, B=3.0, weights=w)
    assert np.abs(Phi.T @ nat.lam).max() <= 3.0
    # no feasible classifier does better: a * lam with |a| <= 1 stays feasible when lam is on the boundary
    rng = np.random.default_rng(2)
    for _ in range(20):
        lam = rng.normal(size=4)
        lam *= 3.0 / np.abs(Phi.T @ lam).max()
        assert theory.task_loss((P @ Phi.T @ lam)[:, None], y, B=1.0, weights=w) >= nat.loss - 1e-7


def test_natural_fit_rejects_bad_input():
    X, y = np.random.default_rng(0).normal(size=(10, 3)), np.arange(10) % 2
    with pytest.raises(ValueError, match="shape"):
        result_c.natural_fit(X, y, np.ones((4, 6)), B=1.0)
    with pytest.raises(ValueError, match="two classes"):
        result_c.natural_fit(X, np.arange(10) % 3, np.ones((3, 6)), B=1.0)
    with pytest.raises(ValueError, match="B"):
        result_c.natural_fit(X, y, np.ones((3, 6)), B=0.0)


# --------------------------------------------------------------------------- the experiment
def test_run_small_bounds_hold_and_quadratic_fit_is_good():
    eps_grid = np.geomspace(0.05, 1e-3, 4)
    rows = result_c.run(n_contexts=80, vocab_size=24, d=3, eps_grid=eps_grid, B=3.0, pretrain_steps=50, seed=1)
    assert {r["phi"] for r in rows} == {"gaussian", "learned"} and len(rows) >= 6
    for r in rows:
        assert r["loss_phip"] <= r["bound"] + 1e-9  # result B
        assert r["loss_afb"] <= r["bound_fit"] + 1e-9  # result C with the fit's error
        assert r["loss_f"] <= r["loss_afb_free"] + 1e-6 <= r["loss_afb"] + 2e-6  # affine image, then constraint
        assert r["loss_f"] <= r["bound_fit"] + 1e-9
        if r["cond_A"] < 1e6:
            assert abs(r["loss_f"] - r["loss_afb_free"]) < 1e-5  # A invertible: same classifiers
        assert np.isfinite(r["r2"]) and 0 <= r["grad_err"] and 0 <= r["affine_err"]
        assert 0.5 <= r["probe_f"] <= 1 and 0.5 <= r["probe_phip"] <= 1
        assert r["log_Z_heldout"].shape == r["log_Z_fit_heldout"].shape == (20,)
    assert min(r["r2"] for r in rows if r["phi"] == "gaussian") > 0.95


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(d=24), "smaller than vocab_size"),
        (dict(eps_grid=[1e-3, 1e-2]), "decreasing"),
        (dict(phi_kinds=("random",)), "phi_kinds"),
        (dict(n_contexts=12), "quadratic"),
        (dict(heldout=1.5), "heldout"),
        (dict(B=-1.0), "B"),
    ],
)
def test_run_rejects_bad_input(kw, match):
    args = dict(n_contexts=80, vocab_size=24, d=3, probe=False)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        result_c.run(**args)
