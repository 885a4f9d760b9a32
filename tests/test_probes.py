"""Tests of lmdownstream.probes: scikit-learn's estimator checks and tools, agreement with
LogisticRegression / LogisticRegressionCV at the same C, devices, and bad input."""
import inspect

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone, is_classifier
from sklearn.datasets import load_breast_cancer, load_digits, make_classification
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import GridSearchCV, PredefinedSplit, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from lmdownstream import config
from lmdownstream.probes import LogisticProbe, LogisticProbeCV, probe_cv


@pytest.fixture(autouse=True)
def one_thread():
    """One torch and BLAS thread for both libraries: faster than two on small shared CPUs."""
    with config.threads(1):
        yield


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


def relative_error(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def make_lrcv(**kw):
    """LogisticRegressionCV with the non-legacy attributes (scores_ (folds, 1, Cs)), no FutureWarnings."""
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


# --------------------------------------------------------------------------- scikit-learn's API
@pytest.mark.parametrize("est", [LogisticProbe(device="cpu"), LogisticProbeCV(device="cpu")], ids=repr)
def test_check_estimator_passes(est):
    check_estimator(est, on_skip=None)  # raises on the first failed check


def test_clone_is_classifier_and_params():
    cv = LogisticProbeCV(Cs=[0.1, 1.0], cv=3, dtype="float64", random_state=4)
    twin = clone(cv)
    assert twin is not cv and twin.get_params() == cv.get_params()
    assert is_classifier(LogisticProbe()) and is_classifier(cv)
    assert repr(LogisticProbe(C=2.0)) == "LogisticProbe(C=2.0)"
    with pytest.raises(ValueError, match="Invalid parameter 'lr'"):
        LogisticProbe().set_params(lr=1.0)
    X, y = PROBLEMS["binary n>d"]
    fitted = LogisticProbe().fit(X, y)
    assert not hasattr(clone(fitted), "coef_")  # clone drops the fit


def test_pipeline_matches_sklearn_pipeline():
    X, y = load_breast_cancer(return_X_y=True)  # unscaled: the pipeline's scaler matters
    ours = make_pipeline(StandardScaler(), LogisticProbe(C=0.1, tol=1e-6, max_iter=1000)).fit(X, y)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, tol=1e-8, max_iter=5000)).fit(X, y)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-4)
    assert relative_error(ours[-1].coef_, ref[-1].coef_) <= 1e-3


def test_grid_search_and_cross_val_score_match_sklearn():
    X, y = PROBLEMS["4 classes"]
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    grid = {"C": [0.001, 0.1, 10.0]}
    ours = GridSearchCV(LogisticProbe(), grid, cv=cv).fit(X, y)
    ref = GridSearchCV(LogisticRegression(max_iter=1000), grid, cv=cv).fit(X, y)
    assert ours.best_params_ == ref.best_params_
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], atol=0.01)
    assert isinstance(ours.best_estimator_, LogisticProbe)
    s_ours = cross_val_score(LogisticProbe(C=0.1), X, y, cv=cv)
    s_ref = cross_val_score(LogisticRegression(C=0.1, max_iter=1000), X, y, cv=cv)
    assert s_ours.shape == (3,)
    np.testing.assert_allclose(s_ours, s_ref, atol=0.01)


def test_dataframe_feature_names():
    X, y = PROBLEMS["binary n>d"]
    df = pd.DataFrame(X, columns=[f"h{i}" for i in range(X.shape[1])])
    probe = LogisticProbe().fit(df, y)
    np.testing.assert_array_equal(probe.feature_names_in_, df.columns)
    np.testing.assert_array_equal(probe.predict(df), LogisticProbe().fit(X, y).predict(X))
    assert not hasattr(LogisticProbe().fit(X, y), "feature_names_in_")


# --------------------------------------------------------------------------- agreement with scikit-learn
@pytest.mark.parametrize("name", list(PROBLEMS))
@pytest.mark.parametrize("C", [0.05, 1.0])
def test_coef_predictions_and_objective_match_sklearn(name, C):
    X, y = PROBLEMS[name]
    sk = LogisticRegression(C=C, max_iter=1000).fit(X, y)
    exact = LogisticRegression(C=C, tol=1e-8, max_iter=5000).fit(X, y)
    probe = LogisticProbe(C=C).fit(X, y)
    assert probe.coef_.shape == sk.coef_.shape and probe.intercept_.shape == sk.intercept_.shape
    assert np.mean(probe.predict(X) == exact.predict(X)) >= 0.995
    assert abs(probe.score(X, y) - sk.score(X, y)) <= 0.005
    assert relative_error(probe.coef_, exact.coef_) <= 0.03  # default tol, as scikit-learn's
    o_sk = objective(sk.coef_, sk.intercept_, X, y, C, sk.classes_)
    assert objective(probe.coef_, probe.intercept_, X, y, C, probe.classes_) <= o_sk * (1 + 1e-4)
    tight = LogisticProbe(C=C, tol=1e-6, max_iter=1000).fit(X, y)  # still float32
    assert tight.converged_
    assert relative_error(tight.coef_, exact.coef_) <= 1e-3
    b = exact.intercept_ - (exact.intercept_.mean() if len(exact.classes_) > 2 else 0)  # up to a shift
    np.testing.assert_allclose(tight.intercept_, b, atol=1e-3 * max(1, np.abs(b).max()))
    assert objective(tight.coef_, tight.intercept_, X, y, C, tight.classes_) <= o_sk * (1 + 1e-6)


def test_float64_and_no_intercept_match_sklearn():
    X, y = PROBLEMS["4 classes"]
    sk = LogisticRegression(C=0.3, fit_intercept=False, tol=1e-10, max_iter=5000).fit(X, y)
    probe = LogisticProbe(C=0.3, fit_intercept=False, dtype="float64", tol=1e-9, max_iter=1000).fit(X, y)
    np.testing.assert_array_equal(probe.intercept_, np.zeros(4))
    np.testing.assert_allclose(probe.coef_, sk.coef_, atol=1e-5)
    np.testing.assert_allclose(probe.predict_proba(X), sk.predict_proba(X), atol=1e-6)


def test_binary_decision_function_matches_sklearn_sign_and_scale():
    X, y = PROBLEMS["breast cancer"]
    sk = LogisticRegression(C=0.1, tol=1e-10, max_iter=5000).fit(X, y)
    probe = LogisticProbe(C=0.1, tol=1e-6, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(probe.decision_function(X), sk.decision_function(X), atol=2e-3)
    np.testing.assert_allclose(probe.coef_, sk.coef_, atol=2e-4)
    np.testing.assert_allclose(probe.intercept_, sk.intercept_, atol=2e-4)


@pytest.mark.parametrize("name", ["binary n>d", "4 classes", "breast cancer", "digits"])
def test_cv_matches_logistic_regression_cv(name):
    X, y = PROBLEMS[name]
    X, y = X[:600], y[:600]
    probe = LogisticProbeCV(Cs=10, cv=5).fit(X, y)
    sk = make_lrcv(Cs=10, cv=PredefinedSplit(probe.folds_), max_iter=1000).fit(X, y)
    np.testing.assert_allclose(probe.Cs_, sk.Cs_)
    sk_scores = sk_cv_scores(sk, 5)  # (folds, Cs)
    assert probe.scores_.shape == sk_scores.shape == (5, 10)
    # the same held-out accuracy curve, up to solver tolerance, and as good a chosen C
    assert np.abs(probe.scores_.mean(axis=0) - sk_scores.mean(axis=0)).max() <= 0.02
    assert abs(probe.scores_.mean(axis=0).max() - sk_scores.mean(axis=0).max()) <= 0.01
    # refit at scikit-learn's C: the same predictions, and (for a C that is not tiny) coefficients
    C = float(np.ravel(sk.C_)[0])
    ours = LogisticProbeCV(Cs=[C], cv=5).fit(X, y)
    assert np.mean(ours.predict(X) == sk.predict(X)) >= 0.99
    assert relative_error(ours.coef_, sk.coef_) <= 0.05
    assert abs(probe.score(X, y) - sk.score(X, y)) <= 0.01


def test_cv_folds_equal_separate_fits():
    """The batched solve gives each fold what a separate fit on its training rows gives."""
    X, y = PROBLEMS["4 classes"]
    X, y = X[:400], y[:400]
    Cs = [0.01, 1.0]
    probe = LogisticProbeCV(Cs=Cs, cv=3, tol=1e-7, max_iter=1000, dtype="float64").fit(X, y)
    for j, C in enumerate(Cs):
        for k in range(3):
            train, test = probe.folds_ != k, probe.folds_ == k
            single = LogisticProbe(C=C, tol=1e-7, max_iter=1000, dtype=torch.float64).fit(X[train], y[train])
            assert probe.scores_[k, j] == pytest.approx(single.score(X[test], y[test]), abs=1e-12)
    refit = LogisticProbe(C=probe.C_, tol=1e-7, max_iter=1000, dtype="float64").fit(X, y)
    np.testing.assert_allclose(probe.coef_, refit.coef_, atol=1e-5)


# --------------------------------------------------------------------------- API behaviour
def test_fitted_attributes_and_api_with_string_labels():
    X, y = PROBLEMS["4 classes"]
    labels = np.array(["dog", "cat", "emu", "ant"])[y]
    probe = LogisticProbe(C=0.5)
    assert not hasattr(probe, "coef_")  # no work in __init__
    assert probe.fit(X, labels) is probe
    np.testing.assert_array_equal(probe.classes_, ["ant", "cat", "dog", "emu"])
    assert probe.coef_.shape == (4, 30) and probe.intercept_.shape == (4,)
    assert abs(probe.intercept_.sum()) < 1e-6  # multinomial intercepts centred
    assert isinstance(probe.n_iter_, int) and 0 < probe.n_iter_ <= probe.max_iter
    assert probe.n_features_in_ == 30
    P = probe.predict_proba(X)
    assert isinstance(P, np.ndarray) and P.shape == (800, 4)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)
    Z = probe.decision_function(X)
    np.testing.assert_allclose(Z, X @ probe.coef_.T + probe.intercept_, atol=1e-12)
    np.testing.assert_allclose(P, np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True), atol=1e-12)
    pred = probe.predict(X)
    assert pred.dtype == labels.dtype
    np.testing.assert_array_equal(pred, probe.classes_[Z.argmax(axis=1)])
    assert probe.score(X, labels) == pytest.approx(np.mean(pred == labels))


def test_binary_attributes_and_positive_class():
    X, y = PROBLEMS["binary n>d"]
    labels = np.where(y == 1, 7, -3)
    probe = LogisticProbe().fit(X, labels)
    np.testing.assert_array_equal(probe.classes_, [-3, 7])
    assert probe.coef_.shape == (1, 40) and probe.intercept_.shape == (1,)
    z = probe.decision_function(X)
    assert z.shape == (1000,)
    np.testing.assert_allclose(z, X @ probe.coef_[0] + probe.intercept_[0], atol=1e-12)
    np.testing.assert_array_equal(probe.predict(X), np.where(z > 0, 7, -3))
    np.testing.assert_allclose(probe.predict_proba(X)[:, 1], 1 / (1 + np.exp(-z)), atol=1e-12)


def test_cv_attributes_grid_and_folds():
    X, y = PROBLEMS["binary n>d"]
    X, y = X[:300], y[:300]
    probe = LogisticProbeCV(Cs=[10.0, 0.01, 1.0], cv=4, random_state=3).fit(X, y)
    np.testing.assert_array_equal(probe.Cs_, [0.01, 1.0, 10.0])  # visited in ascending order
    assert probe.scores_.shape == (4, 3) and probe.n_iter_.shape == (4, 3)
    assert np.all(probe.n_iter_ >= 1)
    assert probe.C_ == probe.Cs_[np.argmax(probe.scores_.mean(axis=0))]
    np.testing.assert_array_equal(probe.cv_scores_, probe.scores_.T)  # probe_cv's first layout
    # stratified: every fold holds a quarter of each class (up to one row)
    for c in (0, 1):
        counts = np.bincount(probe.folds_[y == c], minlength=4)
        assert counts.max() - counts.min() <= 1
    # the same folds given as a splitter, or as (train, test) pairs, reproduce the run
    again = LogisticProbeCV(Cs=[10.0, 0.01, 1.0], cv=PredefinedSplit(probe.folds_)).fit(X, y)
    np.testing.assert_array_equal(again.scores_, probe.scores_)
    pairs = [(np.flatnonzero(probe.folds_ != k), np.flatnonzero(probe.folds_ == k)) for k in range(4)]
    np.testing.assert_array_equal(LogisticProbeCV(Cs=[10.0, 0.01, 1.0], cv=pairs).fit(X, y).scores_, probe.scores_)
    np.testing.assert_allclose(LogisticProbeCV(Cs=3, cv=3).fit(X, y).Cs_, [1e-4, 1.0, 1e4])


def test_probe_cv_is_the_estimator_and_folds_is_deprecated():
    X, y = PROBLEMS["binary n>d"]
    X, y = X[:300], y[:300]
    probe = probe_cv(X, y, Cs=[0.01, 1.0], cv=3, seed=2, max_iter=50)
    assert isinstance(probe, LogisticProbeCV) and isinstance(probe, LogisticProbe)
    assert probe.random_state == 2 and probe.max_iter == 50
    est = LogisticProbeCV(Cs=[0.01, 1.0], cv=3, random_state=2, max_iter=50).fit(X, y)
    np.testing.assert_array_equal(probe.scores_, est.scores_)
    with pytest.warns(DeprecationWarning, match="cv="):
        old = probe_cv(X, y, Cs=[0.01, 1.0], folds=3, seed=2, max_iter=50)
    np.testing.assert_array_equal(old.scores_, est.scores_)
    assert probe_cv(X, y).Cs_.shape == (10,)  # defaults: np.logspace(-4, 4, 10), 5 folds
    assert inspect.signature(probe_cv).parameters["Cs"].default == 10  # no mutable default


def test_cv_ties_pick_the_smallest_C():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    X = rng.normal(size=(100, 5)) + 10.0 * y[:, None]  # separable: every C scores 100%
    probe = LogisticProbeCV(Cs=[0.1, 1.0, 10.0]).fit(X, y)
    assert np.all(probe.scores_ == 1.0)
    assert probe.C_ == 0.1


def test_progress_bar_runs():
    X, y = PROBLEMS["binary n>d"]
    assert LogisticProbeCV(Cs=2, cv=2, progress=True).fit(X[:200], y[:200]).scores_.shape == (2, 2)


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
    assert isinstance(P, torch.Tensor) and P.device == Xt.device and P.dtype == torch.float32
    np.testing.assert_allclose(P.numpy(), probe.predict_proba(X), atol=1e-5)
    assert isinstance(probe.decision_function(Xt), torch.Tensor)
    assert isinstance(probe.predict_proba(X), np.ndarray)
    assert isinstance(probe.predict(Xt), np.ndarray)
    assert probe.score(Xt, torch.as_tensor(y)) == pytest.approx(probe.score(X, y))
    # numpy input: the configured default device, or the device argument
    assert LogisticProbe().fit(X, y).device_.type == config.device().type
    assert LogisticProbe(device="cpu").fit(X, y).device_ == torch.device("cpu")
    # torch dtypes and their names are the same setting
    a = LogisticProbe(dtype=torch.float64).fit(X, y)
    np.testing.assert_array_equal(a.coef_, LogisticProbe(dtype="float64").fit(X, y).coef_)
    with pytest.raises(ValueError, match="dtype must be one of"):
        LogisticProbe(dtype="float16").fit(X, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_input_stays_on_cuda():
    X, y = PROBLEMS["4 classes"]
    Xc = torch.as_tensor(X, dtype=torch.float32, device="cuda")
    probe = probe_cv(Xc, y, Cs=3, cv=3)
    assert probe.device_.type == "cuda" and probe.predict_proba(Xc).device.type == "cuda"
    cpu = probe_cv(X, y, Cs=3, cv=3, device="cpu")
    assert abs(probe.score(X, y) - cpu.score(X, y)) <= 0.01


# --------------------------------------------------------------------------- bad input
X_OK, Y_OK = PROBLEMS["binary n>d"][0][:60], PROBLEMS["binary n>d"][1][:60]


@pytest.mark.parametrize("to", [np.asarray, torch.as_tensor], ids=["numpy", "torch"])
def test_one_dimensional_X_gets_the_right_reshape_hint(to):
    hint = r"x\.reshape\(-1, 1\) if it is one feature, x\[None, :\] if it is one sample"
    with pytest.raises(ValueError, match=hint):
        LogisticProbe().fit(to(X_OK[:, 0]), Y_OK)
    probe = LogisticProbe().fit(X_OK, Y_OK)
    with pytest.raises(ValueError, match=hint):
        probe.predict(to(X_OK[0]))


def test_mismatched_shapes():
    with pytest.raises(ValueError, match="one label per row"):
        LogisticProbe().fit(X_OK, Y_OK[:-1])
    with pytest.raises(ValueError, match="one label per row"):
        LogisticProbe().fit(torch.as_tensor(X_OK), Y_OK[:-1])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_X(bad):
    X = X_OK.copy()
    X[3, 2] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        LogisticProbe().fit(X, Y_OK)
    with pytest.raises(ValueError, match="non-finite.*impute"):
        LogisticProbeCV().fit(torch.as_tensor(X), Y_OK)


def test_one_class_and_continuous_labels():
    with pytest.raises(ValueError, match="only one class"):
        LogisticProbe().fit(X_OK, np.zeros(60))
    with pytest.raises(ValueError, match="Unknown label type"):
        LogisticProbe().fit(X_OK, np.linspace(0, 1, 60))


def test_empty_X():
    with pytest.raises(ValueError, match="0 sample"):
        LogisticProbe().fit(np.zeros((0, 4)), np.zeros(0))
    with pytest.raises(ValueError, match="empty"):
        LogisticProbe().fit(torch.zeros(0, 4), np.zeros(0))


@pytest.mark.parametrize("C", [0.0, -1.0, float("nan")])
def test_C_not_positive(C):
    probe = LogisticProbe(C=C)  # accepted at construction, refused at fit
    with pytest.raises(ValueError, match="C must be a finite number > 0"):
        probe.fit(X_OK, Y_OK)
    with pytest.raises(ValueError, match="Cs"):
        LogisticProbeCV(Cs=[1.0, C]).fit(X_OK, Y_OK)


def test_bad_cv():
    y = np.r_[np.zeros(57), np.ones(3)]
    with pytest.warns(UserWarning, match="only 3 example.*cv <= 3"):
        LogisticProbeCV(Cs=2, cv=5).fit(X_OK, y)
    with pytest.raises(ValueError, match="cv must be an int >= 2"):
        LogisticProbeCV(cv=1).fit(X_OK, Y_OK)


def test_predict_before_fit():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        LogisticProbe().predict(X_OK)


@pytest.mark.parametrize("to", [np.asarray, torch.as_tensor], ids=["numpy", "torch"])
def test_wrong_feature_count_at_predict(to):
    probe = LogisticProbe().fit(X_OK, Y_OK)
    with pytest.raises(ValueError, match="X has 39 features, but LogisticProbe is expecting 40"):
        probe.predict(to(X_OK[:, :39]))
