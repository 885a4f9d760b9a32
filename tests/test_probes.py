"""Tests of lmdownstream.probes: agreement with scikit-learn, the API, devices, bad input."""
import warnings

import numpy as np
import pytest
import torch

from lmdownstream import config
from lmdownstream.probes import LogisticProbe, probe_cv

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_breast_cancer, load_digits, make_classification  # noqa: E402
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """One BLAS/OpenMP thread for torch and scikit-learn: faster than two on small shared CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


def _problems():
    Xd, yd = load_digits(return_X_y=True)
    Xb, yb = load_breast_cancer(return_X_y=True)
    return {
        "binary n<d": make_classification(150, 400, n_informative=20, random_state=0),
        "binary n>d": make_classification(1000, 40, n_informative=10, random_state=1),
        "4 classes": make_classification(800, 30, n_informative=12, n_classes=4, random_state=2),
        "digits": (Xd / 16.0, yd),
        "breast cancer": (StandardScaler().fit_transform(Xb), yb),
    }


PROBLEMS = _problems()


def objective(coef, intercept, X, y, C, classes):
    """C * sum of per-sample log losses + 1/2 ||W||^2, in float64 numpy (independent of both)."""
    Z = X @ coef.T + intercept
    if coef.shape[0] == 1:
        t = (y == classes[1]).astype(float)
        losses = np.logaddexp(0.0, Z[:, 0]) - t * Z[:, 0]
    else:
        m = Z.max(axis=1)
        lse = m + np.log(np.exp(Z - m[:, None]).sum(axis=1))
        losses = lse - Z[np.arange(len(y)), np.searchsorted(classes, y)]
    return C * losses.sum() + 0.5 * (coef**2).sum()


def sklearn_cv(folds):
    return [(np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in range(folds.max() + 1)]


def make_lrcv(**kw):
    """LogisticRegressionCV, without the FutureWarnings of recent scikit-learn versions."""
    import inspect

    params = inspect.signature(LogisticRegressionCV).parameters
    if "use_legacy_attributes" in params:
        kw["use_legacy_attributes"] = False
    if params["l1_ratios"].default == "warn":
        kw["l1_ratios"] = (0.0,)
    return LogisticRegressionCV(scoring="accuracy", **kw)


def sk_cv_scores(sk, n_folds):
    """scikit-learn's held-out accuracies as (n_folds, n_Cs), across attribute layouts."""
    scores = sk.scores_
    if isinstance(scores, dict):
        scores = next(iter(scores.values()))
    return np.asarray(scores).reshape(n_folds, -1)


# --------------------------------------------------------------------------- agreement with scikit-learn
@pytest.mark.parametrize("name", list(PROBLEMS))
@pytest.mark.parametrize("C", [0.05, 1.0])
def test_accuracy_and_objective_match_sklearn(name, C):
    X, y = PROBLEMS[name]
    sk = LogisticRegression(C=C, max_iter=1000).fit(X, y)
    probe = LogisticProbe(C=C).fit(X, y)
    assert abs(probe.score(X, y) - sk.score(X, y)) <= 0.005
    assert probe.coef_.shape == sk.coef_.shape and probe.intercept_.shape == sk.intercept_.shape
    o_sk = objective(sk.coef_, sk.intercept_, X, y, C, sk.classes_)
    o_default = objective(probe.coef_, probe.intercept_, X, y, C, probe.classes_)
    assert o_default <= o_sk * (1 + 1e-4)
    tight = LogisticProbe(C=C, tol=1e-6, max_iter=1000).fit(X, y)  # still float32
    assert tight.converged_
    assert objective(tight.coef_, tight.intercept_, X, y, C, tight.classes_) <= o_sk * (1 + 1e-6)


def test_float64_and_no_intercept_match_sklearn():
    X, y = PROBLEMS["4 classes"]
    sk = LogisticRegression(C=0.3, fit_intercept=False, tol=1e-10, max_iter=5000).fit(X, y)
    probe = LogisticProbe(C=0.3, fit_intercept=False, dtype=torch.float64, tol=1e-9, max_iter=1000).fit(X, y)
    np.testing.assert_array_equal(probe.intercept_, np.zeros(4))
    np.testing.assert_allclose(probe.coef_, sk.coef_, atol=1e-5)
    np.testing.assert_allclose(probe.predict_proba(X), sk.predict_proba(X), atol=1e-6)


def test_binary_decision_function_matches_sklearn_sign_and_scale():
    X, y = PROBLEMS["breast cancer"]
    sk = LogisticRegression(C=0.1, tol=1e-10, max_iter=5000).fit(X, y)
    probe = LogisticProbe(C=0.1, tol=1e-6, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(probe.decision_function(X), sk.decision_function(X), atol=2e-3)
    np.testing.assert_allclose(probe.coef_, sk.coef_, atol=2e-4)


@pytest.mark.parametrize("name", ["binary n>d", "4 classes", "breast cancer", "digits"])
def test_probe_cv_matches_logistic_regression_cv(name):
    X, y = PROBLEMS[name]
    X, y = X[:600], y[:600]
    Cs = np.logspace(-4, 4, 10)
    probe = probe_cv(X, y, Cs=Cs, folds=5, seed=0)
    sk = make_lrcv(Cs=Cs, cv=sklearn_cv(probe.folds_)).fit(X, y)
    sk_scores = sk_cv_scores(sk, 5)  # (folds, Cs)
    best_sk = sk_scores.mean(axis=0).max()
    ours_at_our_C = probe.cv_scores_.mean(axis=1)[list(probe.Cs_).index(probe.C_)]
    assert abs(ours_at_our_C - best_sk) <= 0.01
    # same fold-by-fold accuracy curve up to solver tolerance
    assert np.abs(probe.cv_scores_.mean(axis=1) - sk_scores.mean(axis=0)).max() <= 0.02
    assert abs(probe.score(X, y) - sk.score(X, y)) <= 0.01


def test_probe_cv_folds_equal_separate_fits():
    """The batched solve gives each fold what a separate fit on its training rows gives."""
    X, y = PROBLEMS["4 classes"]
    X, y = X[:400], y[:400]
    Cs = [0.01, 1.0]
    probe = probe_cv(X, y, Cs=Cs, folds=3, tol=1e-7, max_iter=1000, dtype=torch.float64)
    for j, C in enumerate(Cs):
        for k in range(3):
            train, test = probe.folds_ != k, probe.folds_ == k
            single = LogisticProbe(C=C, tol=1e-7, max_iter=1000, dtype=torch.float64).fit(X[train], y[train])
            assert probe.cv_scores_[j, k] == pytest.approx(single.score(X[test], y[test]), abs=1e-12)


# --------------------------------------------------------------------------- API behaviour
def test_fitted_attributes_and_api_with_string_labels():
    X, y = PROBLEMS["4 classes"]
    labels = np.array(["dog", "cat", "emu", "ant"])[y]
    probe = LogisticProbe(C=0.5)
    assert not hasattr(probe, "coef_")  # no work in __init__
    assert probe.fit(X, labels) is probe
    np.testing.assert_array_equal(probe.classes_, ["ant", "cat", "dog", "emu"])
    assert probe.coef_.shape == (4, 30) and probe.intercept_.shape == (4,)
    assert abs(probe.intercept_.sum()) < 1e-5  # multinomial intercepts centred
    assert isinstance(probe.n_iter_, int) and 0 < probe.n_iter_ <= probe.max_iter
    assert probe.n_features_in_ == 30
    P = probe.predict_proba(X)
    assert isinstance(P, np.ndarray) and P.shape == (800, 4)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-6)
    pred = probe.predict(X)
    assert pred.dtype == labels.dtype and set(pred) <= set(probe.classes_)
    np.testing.assert_array_equal(pred, probe.classes_[P.argmax(axis=1)])
    assert probe.decision_function(X).shape == (800, 4)
    assert probe.score(X, labels) == pytest.approx(np.mean(pred == labels))
    # scikit-learn estimator protocol
    assert probe.get_params()["C"] == 0.5
    assert probe.set_params(C=2.0).C == 2.0
    assert "C=2.0" in repr(probe)
    with pytest.raises(ValueError, match="not a parameter"):
        probe.set_params(lr=1.0)


def test_binary_attributes_and_positive_class():
    X, y = PROBLEMS["binary n>d"]
    labels = np.where(y == 1, 7, -3)
    probe = LogisticProbe().fit(X, labels)
    np.testing.assert_array_equal(probe.classes_, [-3, 7])
    assert probe.coef_.shape == (1, 40) and probe.intercept_.shape == (1,)
    z = probe.decision_function(X)
    assert z.shape == (1000,)
    np.testing.assert_allclose(z, X @ probe.coef_[0] + probe.intercept_[0], atol=1e-4)
    np.testing.assert_array_equal(probe.predict(X), np.where(z > 0, 7, -3))
    np.testing.assert_allclose(probe.predict_proba(X)[:, 1], 1 / (1 + np.exp(-z)), atol=1e-6)


def test_probe_cv_attributes_grid_and_folds():
    X, y = PROBLEMS["binary n>d"]
    X, y = X[:300], y[:300]
    probe = probe_cv(X, y, Cs=[10.0, 0.01, 1.0], folds=4, seed=3)
    np.testing.assert_array_equal(probe.Cs_, [0.01, 1.0, 10.0])  # visited in ascending order
    assert probe.C_ in probe.Cs_ and probe.C == probe.C_
    assert probe.cv_scores_.shape == (3, 4) and probe.cv_n_iter_.shape == (3, 4)
    assert probe.C_ == probe.Cs_[np.argmax(probe.cv_scores_.mean(axis=1))]
    # stratified: every fold holds a quarter of each class (up to one row)
    for c in (0, 1):
        counts = np.bincount(probe.folds_[y == c], minlength=4)
        assert counts.max() - counts.min() <= 1
    # an explicit fold assignment reproduces the same run; an int Cs is a logspace(-4, 4) grid
    again = probe_cv(X, y, Cs=[10.0, 0.01, 1.0], folds=probe.folds_)
    np.testing.assert_array_equal(again.cv_scores_, probe.cv_scores_)
    np.testing.assert_allclose(probe_cv(X, y, Cs=3, folds=3).Cs_, [1e-4, 1.0, 1e4])


def test_probe_cv_ties_pick_the_smallest_C():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    X = rng.normal(size=(100, 5)) + 10.0 * y[:, None]  # separable: every C scores 100%
    probe = probe_cv(X, y, Cs=[0.1, 1.0, 10.0], folds=5)
    assert np.all(probe.cv_scores_ == 1.0)
    assert probe.C_ == 0.1


def test_progress_bar_runs():
    X, y = PROBLEMS["binary n>d"]
    probe_cv(X[:200], y[:200], Cs=2, folds=2, progress=True)


def test_convergence_warning_names_the_fix():
    X, y = PROBLEMS["digits"]
    with pytest.warns(RuntimeWarning, match="increase max_iter"):
        probe = LogisticProbe(C=100.0, max_iter=2).fit(X, y)
    assert probe.n_iter_ == 2 and not probe.converged_


# --------------------------------------------------------------------------- devices and types
def test_device_follows_input_and_outputs_follow_type():
    X, y = PROBLEMS["binary n>d"]
    Xt = torch.as_tensor(X, dtype=torch.float32)
    probe = LogisticProbe().fit(Xt, torch.as_tensor(y))
    assert probe.device_ == Xt.device
    P = probe.predict_proba(Xt)
    assert isinstance(P, torch.Tensor) and P.device == Xt.device
    assert isinstance(probe.decision_function(Xt), torch.Tensor)
    assert isinstance(probe.predict_proba(X), np.ndarray)
    assert isinstance(probe.predict(Xt), np.ndarray)
    assert probe.score(Xt, torch.as_tensor(y)) == pytest.approx(probe.score(X, y))
    # numpy input: the configured default device, or the device argument
    assert LogisticProbe().fit(X, y).device_.type == config.device().type
    assert LogisticProbe(device="cpu").fit(X, y).device_ == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_input_stays_on_cuda():
    X, y = PROBLEMS["4 classes"]
    Xc = torch.as_tensor(X, dtype=torch.float32, device="cuda")
    probe = probe_cv(Xc, y, Cs=3, folds=3)
    assert probe.device_.type == "cuda" and probe.predict_proba(Xc).device.type == "cuda"
    cpu = probe_cv(X, y, Cs=3, folds=3, device="cpu")
    assert abs(probe.score(X, y) - cpu.score(X, y)) <= 0.01


# --------------------------------------------------------------------------- bad input
X_OK, Y_OK = PROBLEMS["binary n>d"][0][:60], PROBLEMS["binary n>d"][1][:60]


def test_mismatched_shapes():
    with pytest.raises(ValueError, match="one label per row"):
        LogisticProbe().fit(X_OK, Y_OK[:-1])
    with pytest.raises(ValueError, match="reshape"):
        LogisticProbe().fit(X_OK[0], Y_OK[:1])


def test_nan_in_X():
    X = X_OK.copy()
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite.*impute"):
        LogisticProbe().fit(X, Y_OK)
    with pytest.raises(ValueError, match="non-finite"):
        probe_cv(torch.as_tensor(X), Y_OK)


def test_inf_in_X():
    X = X_OK.copy()
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        LogisticProbe().fit(torch.as_tensor(X), Y_OK)


def test_one_class():
    with pytest.raises(ValueError, match="only one class"):
        LogisticProbe().fit(X_OK, np.zeros(60))


def test_empty_X():
    with pytest.raises(ValueError, match="empty"):
        LogisticProbe().fit(np.zeros((0, 4)), np.zeros(0))


@pytest.mark.parametrize("C", [0.0, -1.0, float("nan")])
def test_C_not_positive(C):
    probe = LogisticProbe(C=C)  # accepted at construction, refused at fit
    with pytest.raises(ValueError, match="C must be a finite number > 0"):
        probe.fit(X_OK, Y_OK)
    with pytest.raises(ValueError, match="C"):
        probe_cv(X_OK, Y_OK, Cs=[1.0, C])


def test_folds_more_than_smallest_class():
    y = np.r_[np.zeros(57), np.ones(3)]
    with pytest.raises(ValueError, match="only 3 example.*folds <= 3"):
        probe_cv(X_OK, y, folds=5)


def test_predict_before_fit():
    with pytest.raises(ValueError, match="not fitted yet; call fit"):
        LogisticProbe().predict(X_OK)


def test_wrong_feature_count_at_predict():
    probe = LogisticProbe().fit(X_OK, Y_OK)
    with pytest.raises(ValueError, match="X has 39 features but the probe was fitted on 40"):
        probe.predict(X_OK[:, :39])
