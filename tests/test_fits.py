"""fits: R², log-log slopes, ridge with a validation split and the log Z quadratics, against
scikit-learn, numpy's polyfit / lstsq and planted (exactly representable) targets."""
import numpy as np
import pytest
from scipy.special import logsumexp

from lmdownstream import fits, theory


def _quadratic(d, seed=0):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(d, d))
    return M + M.T, rng.normal(size=d), float(rng.normal())


# --------------------------------------------------------------------------- r2
def test_r2_is_sklearn_r2_score_pooled_over_outputs():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 3)) * [1.0, 5.0, 0.2]
    p = y + rng.normal(size=(40, 3))
    assert fits.r2(y, p) == pytest.approx(r2_score(y, p, multioutput="variance_weighted"), abs=1e-12)
    assert fits.r2(y[:, 0], p[:, 0]) == pytest.approx(r2_score(y[:, 0], p[:, 0]), abs=1e-12)
    # pooled is not the mean of per-coordinate R² (hand-worked)
    y = np.array([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0]])
    p = y + np.array([[0.5, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert fits.r2(y, p) == pytest.approx(1 - 0.25 / 202.0, abs=1e-12)
    assert fits.r2(y, p) != pytest.approx(r2_score(y, p), abs=1e-3)
    # constant targets: 1 if hit, -inf if missed
    assert fits.r2(np.ones(3), np.ones(3)) == 1.0 and fits.r2(np.ones(3), np.zeros(3)) == -np.inf
    with pytest.raises(ValueError, match="shape"):
        fits.r2(y, p[:, :1])
    with pytest.raises(ValueError, match="at least 2"):
        fits.r2(np.zeros(1), np.zeros(1))


# --------------------------------------------------------------------------- loglog_slope
def test_loglog_slope_is_polyfit_on_logs_and_recovers_a_power_law():
    x = np.geomspace(1e-6, 1e-1, 9)
    assert fits.loglog_slope(x, 3.0 * x**0.5) == pytest.approx(0.5, abs=1e-12)
    rng = np.random.default_rng(1)
    y = x**0.7 * np.exp(0.1 * rng.normal(size=9))
    assert fits.loglog_slope(x, y) == pytest.approx(np.polyfit(np.log(x), np.log(y), 1)[0], abs=1e-12)
    small = x <= 1e-3
    assert fits.loglog_slope(x, y, where=small) == pytest.approx(
        np.polyfit(np.log(x[small]), np.log(y[small]), 1)[0], abs=1e-12)


def test_loglog_slope_non_positive_points_and_too_few_points():
    x = np.array([1e-4, 1e-3, 1e-2, 1e-1])
    y = np.array([-1.0, 1e-3, 1e-2, 1e-1])
    with pytest.raises(ValueError, match="drop_nonpositive=True"):
        fits.loglog_slope(x, y)
    assert fits.loglog_slope(x, y, drop_nonpositive=True) == pytest.approx(1.0, abs=1e-12)
    assert fits.loglog_slope(x, y, where=y > 0) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2 points"):
        fits.loglog_slope(x, np.array([-1.0, -1.0, -1.0, 1.0]), drop_nonpositive=True)
    with pytest.raises(ValueError, match="at least 2 points"):
        fits.loglog_slope(np.ones(3), np.ones(3))  # one distinct x
    with pytest.raises(ValueError, match="mask"):
        fits.loglog_slope(x, y, where=np.ones(3, dtype=bool))


# --------------------------------------------------------------------------- splits and ridge
def test_split_indices_sizes_and_groups():
    kept, held = fits.split_indices(100, 0.3, seed=0)
    assert len(held) == 30 and set(kept).isdisjoint(held) and len(kept) + len(held) == 100
    np.testing.assert_array_equal(held, fits.split_indices(100, 0.3, seed=0)[1])  # seeded
    groups = np.repeat(np.arange(20), 10)
    kept, held = fits.split_indices(200, 0.3, seed=1, groups=groups)
    assert set(groups[kept]).isdisjoint(groups[held]) and 0.2 < len(held) / 200 < 0.45
    with pytest.raises(ValueError, match="groups"):
        fits.split_indices(10, 0.3, groups=np.zeros(10))
    with pytest.raises(ValueError, match="fraction"):
        fits.split_indices(10, 1.0)


def test_ridge_fit_matches_scikit_learn():
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(11)
    X = rng.normal(size=(120, 6)) * rng.uniform(0.5, 3, size=6)
    Y = np.tanh(X @ rng.normal(size=(6, 4))) + 0.05 * rng.normal(size=(120, 4))
    tr, te = np.arange(90), np.arange(90, 120)
    ols = fits.ridge_fit(X[tr], Y[tr], ridge=0.0)
    np.testing.assert_allclose(ols.predict(X[te]), LinearRegression().fit(X[tr], Y[tr]).predict(X[te]), atol=1e-9)
    fit = fits.ridge_fit(X[tr], Y[tr], ridge=0.05)
    pipe = make_pipeline(StandardScaler(), Ridge(alpha=0.05 * len(tr))).fit(X[tr], Y[tr])
    np.testing.assert_allclose(fit.predict(X[te]), pipe.predict(X[te]), atol=1e-9)
    assert np.isnan(fit.val_r2) and fit.ridge == 0.05
    # one output: coef (p,), intercept a float
    one = fits.ridge_fit(X[tr], Y[tr, 0], ridge=0.05)
    assert one.coef.shape == (6,) and isinstance(one.intercept, float)
    np.testing.assert_allclose(one.predict(X[te]), pipe.predict(X[te])[:, 0], atol=1e-9)
    # fit_linear_map is the same fit as (W, w0, info)
    W, w0, info = fits.fit_linear_map(X[tr], Y[tr], ridge=0.05)
    np.testing.assert_allclose(X[te] @ W + w0, pipe.predict(X[te]), atol=1e-9)
    assert info["ridge"] == 0.05


def test_ridge_chosen_on_the_validation_split_is_the_best_of_the_grid():
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 30))
    y = X[:, 0] + 2.0 * rng.normal(size=80)  # noisy: a real ridge wins
    fit = fits.ridge_fit(X, y, val_fraction=0.25, seed=4)
    kept, held = fits.split_indices(80, 0.25, seed=4)
    errs = []
    for r in fits.RIDGE_GRID:
        pipe = make_pipeline(StandardScaler(), Ridge(alpha=r * len(kept))).fit(X[kept], y[kept])
        errs.append(np.sum((y[held] - pipe.predict(X[held])) ** 2))
    assert fit.ridge == fits.RIDGE_GRID[int(np.argmin(errs))] and fit.ridge > 1e-2
    assert fit.val_r2 == pytest.approx(1 - min(errs) / np.sum((y[held] - y[held].mean()) ** 2), abs=1e-8)
    # then refit on every row with that ridge
    np.testing.assert_allclose(fit.coef, fits.ridge_fit(X, y, ridge=fit.ridge).coef, atol=1e-12)
    with pytest.raises(ValueError, match="ridge"):
        fits.ridge_fit(X, y, ridge=-1.0)
    with pytest.raises(ValueError, match="too few"):
        fits.ridge_fit(X[:4], y[:4])


# --------------------------------------------------------------------------- fit_log_partition
def test_fit_log_partition_recovers_a_known_quadratic_exactly():
    d = 4
    A, b, c = _quadratic(d)
    theta = np.random.default_rng(1).normal(size=(40, d))
    y = 0.5 * np.einsum("ni,ij,nj->n", theta, A, theta) + theta @ b + c
    fit = fits.fit_log_partition(theta, y)
    assert np.allclose(fit.A, A, atol=1e-10) and np.allclose(fit.b, b, atol=1e-10) and abs(fit.c - c) < 1e-10
    test = np.random.default_rng(2).normal(size=(10, d))
    assert np.allclose(fit.predict(test), 0.5 * np.einsum("ni,ij,nj->n", test, A, test) + test @ b + c)
    assert np.allclose(fit.grad(test), test @ A + b)
    assert fit.r2(test, fit.predict(test)) == pytest.approx(1.0)
    assert isinstance(fit.predict(test[0]), float) and fit.grad(test[0]).shape == (d,)
    assert theory.fit_log_partition is fits.fit_log_partition and theory.LogPartitionFit is fits.LogPartitionFit


def test_fit_log_partition_grad_is_the_derivative_of_predict_and_r2_is_sklearn():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(4)
    Phi = rng.normal(size=(3, 30))
    theta = rng.normal(scale=0.8, size=(200, 3))
    logz = logsumexp(theta @ Phi, axis=1)
    fit = fits.fit_log_partition(theta[:150], logz[:150])
    x, h = np.random.default_rng(3).normal(size=3), 1e-6
    fd = np.array([(fit.predict(x + h * e) - fit.predict(x - h * e)) / (2 * h) for e in np.eye(3)])
    assert np.allclose(fit.grad(x), fd, atol=1e-6)
    r2 = fit.r2(theta[150:], logz[150:])
    assert r2 == pytest.approx(r2_score(logz[150:], fit.predict(theta[150:])), abs=1e-12)
    assert 0.9 < r2 < 1.0  # log Z of a small Gaussian Phi is nearly, not exactly, quadratic


def test_fit_log_partition_weights_and_ridge():
    rng = np.random.default_rng(5)
    theta = rng.normal(size=(30, 2))
    y = np.sin(theta[:, 0]) + theta[:, 1] ** 3
    counts = rng.integers(1, 4, size=30)
    weighted = fits.fit_log_partition(theta, y, weights=counts)
    repeated = fits.fit_log_partition(np.repeat(theta, counts, axis=0), np.repeat(y, counts))
    assert np.allclose(weighted.A, repeated.A) and np.allclose(weighted.b, repeated.b)
    plain, shrunk = fits.fit_log_partition(theta, y), fits.fit_log_partition(theta, y, ridge=10.0)
    assert np.linalg.norm(shrunk.A) + np.linalg.norm(shrunk.b) < np.linalg.norm(plain.A) + np.linalg.norm(plain.b)
    assert np.allclose(fits.fit_log_partition(theta, y, ridge=1e-12).A, plain.A, atol=1e-6)


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
        fits.fit_log_partition(theta, log_Z, **kw)


def test_log_partition_fit_methods_reject_bad_input():
    fit = fits.fit_log_partition(np.random.default_rng(0).normal(size=(20, 2)), np.arange(20.0))
    with pytest.raises(ValueError, match="d=2"):
        fit.predict(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="one per row"):
        fit.r2(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="at least 2"):
        fit.r2(np.zeros((1, 2)), np.zeros(1))


# --------------------------------------------------------------------------- fit_pc_quadratic
def test_full_pc_quadratic_is_fit_log_partition():
    rng = np.random.default_rng(8)
    theta = rng.normal(size=(200, 4))
    y = np.sin(theta[:, 0]) + theta[:, 1] * theta[:, 2] + 0.1 * rng.normal(size=200)
    mine, info = fits.fit_pc_quadratic(theta, y, k=4, ridge=0.0)
    ref = fits.fit_log_partition(theta, y)
    np.testing.assert_allclose(mine.A, ref.A, atol=1e-8)
    np.testing.assert_allclose(mine.b, ref.b, atol=1e-8)
    assert abs(mine.c - ref.c) < 1e-8 and info["n_params"] == 4 * 5 // 2 + 4 + 1
    # k = 0 is the least-squares linear fit
    lin, _ = fits.fit_pc_quadratic(theta, y, k=0, ridge=0.0)
    X1 = np.hstack([theta, np.ones((200, 1))])
    coef = np.linalg.lstsq(X1, y, rcond=None)[0]
    assert np.allclose(lin.A, 0) and np.allclose(lin.b, coef[:4], atol=1e-10) and abs(lin.c - coef[4]) < 1e-10
    with pytest.raises(ValueError, match="k=5"):
        fits.fit_pc_quadratic(theta, y, k=5)


def test_planted_quadratic_in_the_top_principal_directions_is_recovered():
    rng = np.random.default_rng(9)
    d, k, n = 12, 3, 400
    scales = np.r_[[5.0, 4.0, 3.0], np.full(d - k, 0.3)]
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    theta = (rng.normal(size=(n, d)) * scales) @ Q.T + rng.normal(size=d)
    tr, te = np.arange(300), np.arange(300, n)
    U = np.linalg.svd(theta[tr] - theta[tr].mean(0), full_matrices=False)[2][:k].T
    Ak = rng.normal(size=(k, k))
    A = U @ (Ak + Ak.T) @ U.T
    b, c = rng.normal(size=d), 1.7
    y = 0.5 * np.einsum("ni,ij,nj->n", theta, A, theta) + theta @ b + c
    fit, _ = fits.fit_pc_quadratic(theta[tr], y[tr], k=k, ridge=0.0)
    assert fit.r2(theta[te], y[te]) > 1 - 1e-8
    np.testing.assert_allclose(fit.A, A, atol=1e-6)
    np.testing.assert_allclose(fit.b, b, atol=1e-6)
    assert abs(fit.c - c) < 1e-6
    fit2, info = fits.fit_pc_quadratic(theta[tr], y[tr], k=k)
    assert fit2.r2(theta[te], y[te]) > 0.9999 and info["ridge"] in fits.RIDGE_GRID
    fit1, _ = fits.fit_pc_quadratic(theta[tr], y[tr], k=1, ridge=0.0)
    assert fit1.r2(theta[te], y[te]) < 0.99


# --------------------------------------------------------------------------- the Gaussian prediction
def test_gaussian_log_partition_formula_and_exactness_at_zero():
    rng = np.random.default_rng(6)
    d, V = 3, 50
    mu, M = rng.normal(size=d), rng.normal(size=(d, d))
    Sigma = M @ M.T
    theta = rng.normal(size=(5, d))
    want = [np.log(V) + t @ mu + 0.5 * t @ Sigma @ t for t in theta]
    np.testing.assert_allclose(fits.gaussian_log_partition(theta, mu, Sigma, V), want, atol=1e-12)
    assert fits.gaussian_log_partition(np.zeros((1, d)), mu, Sigma, V)[0] == pytest.approx(
        logsumexp(np.zeros(V)), abs=1e-12)  # log Z_0 = log V for any Phi
    assert theory.gaussian_log_partition is fits.gaussian_log_partition
    with pytest.raises(ValueError, match="Sigma"):
        fits.gaussian_log_partition(np.zeros((2, d)), mu, Sigma[:2], V)
    with pytest.raises(ValueError, match="vocab_size"):
        fits.gaussian_log_partition(theta, mu, Sigma, 0)
