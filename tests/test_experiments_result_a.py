"""experiments.result_a: model families hit their target eps, the proof's chain of bounds holds
for every model, the aligned family attains the sqrt(eps) rate, and bad input is rejected."""

import numpy as np
import pytest

from lmdownstream import synthetic, theory
from lmdownstream.experiments import result_a

TOL = 1e-6  # optimizer tolerance of task_fit on these small problems


@pytest.fixture(scope="module")
def small():
    lang = synthetic.ContextLanguage.random(n_contexts=80, vocab_size=16, seed=3, label_strength=0.3)
    fit = theory.task_fit(lang.p_next, lang.labels, B=2.0, weights=lang.p_context)
    return lang, fit


def _chain_holds(rows):
    for r in rows:
        assert r["loss"] <= r["loss_v"] + TOL
        assert r["loss_v"] <= r["bound_l1"] + TOL
        assert r["bound_l1"] <= r["bound_kl"] + 1e-12
        assert r["bound_kl"] <= r["bound"] + 1e-12
        assert r["loss"] <= r["bound"]


@pytest.mark.parametrize("name", ["noise", "temperature", "aligned", "trained"])
def test_families_hit_eps_and_bound_holds(small, name):
    lang, fit = small
    P, w, y = lang.p_next, lang.p_context, lang.labels
    eps = np.array([1e-3, 1e-2]) if name != "aligned" else np.array([1e-6, 1e-5])
    models = result_a.family(name, P, eps, w, y=y, coef=fit.coef, seed=0, max_steps=3000)
    assert len(models) == len(eps)
    got = np.array([theory.excess_xent(P, p, w) for p in models])
    rel = 1e-3 if name == "trained" else 1e-8  # fit lands in [0.999 eps, eps]
    assert np.all(np.abs(got - eps) <= rel * eps), (got, eps)
    rows = result_a.evaluate(P, y, models, 2.0, p_lm=w, tau_fit=fit, family_name=name)
    _chain_holds(rows)
    assert all(r["family"] == name and r["gamma"] == 1.0 for r in rows)
    assert rows[0]["tau"] == pytest.approx(theory.task_tau(P, y, B=2.0, weights=w), abs=TOL)


def test_aligned_family_attains_sqrt_eps(small):
    lang, fit = small
    P, w, y = lang.p_next, lang.p_context, lang.labels
    eps = np.logspace(-8, -6, 4)
    models = result_a.aligned_family(P, y, fit.coef, eps, w)
    rows = result_a.evaluate(P, y, models, 2.0, p_lm=w, tau_fit=fit, family_name="aligned")
    s, used, skipped = result_a.slope(rows, "loss_v")
    assert used == 4 and skipped == 0
    assert 0.45 <= s <= 0.55
    l1 = np.array([r["l1"] for r in rows])
    assert np.polyfit(np.log(eps), np.log(l1), 1)[0] == pytest.approx(0.5, abs=0.02)


def test_run_and_slope():
    rows, info = result_a.run([1e-3, 3e-3, 1e-2], B=2.0, n_contexts=60, vocab_size=12,
                              families=("noise", "temperature"), unconstrained=("noise",))
    assert len(rows) == 6 and {r["family"] for r in rows} == {"noise", "temperature"}
    _chain_holds(rows)
    assert all(np.isfinite(r["loss_free"]) == (r["family"] == "noise") for r in rows)
    for r in rows:
        assert r["eps"] == pytest.approx(r["eps_target"], rel=1e-8)
        assert r["loss_free"] <= r["loss"] + TOL or not np.isfinite(r["loss_free"])
    s, used, _ = result_a.slope(rows, "bound", "noise")
    assert used == 3 and s == pytest.approx(0.5, abs=1e-9)  # the bound's own slope
    assert 0 < info["tau_free"] <= info["tau"] + TOL


def test_shift_bounds_and_gamma(small):
    lang, fit = small
    P, w, y = lang.p_next, lang.p_context, lang.labels
    (p,) = result_a.family("noise", P, [1e-2], w)
    kl = (P * np.log(P / p)).sum(1)
    T = result_a.tilt(w, kl, [0.0, 1.0, 2.0, 4.0])
    assert T.shape == (4, len(w)) and np.allclose(T.sum(1), 1) and np.allclose(T[0], w)
    rows = result_a.shift(P, y, p, w, 2.0, T)
    _chain_holds(rows)
    g = [r["gamma"] for r in rows]
    assert g[0] == 1.0 and all(a > b for a, b in zip(g, g[1:]))
    assert [r["gamma"] for r in rows] == pytest.approx([theory.gamma(t, w) for t in T], abs=1e-12)
    assert rows[0]["tau_T"] == pytest.approx(fit.loss, abs=TOL)
    assert rows[-1]["kl_task"] > rows[0]["kl_task"]  # the task moved to the model's worst contexts
    for r in rows:
        assert r["eps"] == pytest.approx(1e-2, rel=1e-8)  # eps is always measured under p_L
        assert r["kl_task"] <= r["eps"] / r["gamma"] + 1e-12  # the change of measure


def test_fixed_loss_matches_definition():
    X = np.array([[0.2, 0.8], [0.7, 0.3], [0.5, 0.5]])
    y = np.array([1, 0, 1])
    v, b = np.array([1.0, -2.0]), 0.3
    s = np.array([1, -1, 1])
    expect = np.mean(np.log1p(np.exp(-s * (X @ v + b))))
    assert result_a.fixed_loss(X, y, v, b) == pytest.approx(expect, abs=1e-15)


def test_bad_inputs(small):
    lang, fit = small
    P, w, y = lang.p_next, lang.p_context, lang.labels
    with pytest.raises(ValueError, match="family must be one of"):
        result_a.family("gpt", P, [1e-2], w)
    with pytest.raises(ValueError, match="> 0"):
        result_a.family("noise", P, [0.0, 1e-2], w)
    with pytest.raises(ValueError, match="largest this family reaches"):
        result_a.family("temperature", P, [1e3], w)
    with pytest.raises(ValueError, match="needs y and coef"):
        result_a.family("aligned", P, [1e-5], w)
    with pytest.raises(ValueError, match="two-class"):
        result_a.evaluate(P, np.arange(P.shape[0]) % 3, [P], 2.0, p_lm=w)
    with pytest.raises(ValueError, match="shape"):
        result_a.evaluate(P, y, [P[:, :-1] / P[:, :-1].sum(1, keepdims=True)], 2.0, p_lm=w)
    with pytest.raises(ValueError, match="B must be"):
        result_a.evaluate(P, y, [P], -1.0, p_lm=w)
    with pytest.raises(ValueError, match="coef has"):
        result_a.aligned_family(P, y, fit.coef[:-1], [1e-5], w)
    with pytest.raises(ValueError, match="columns"):
        result_a.shift(P, y, P, w, 2.0, np.ones((2, len(w) + 1)))
    with pytest.raises(ValueError, match="beta"):
        result_a.tilt(w, np.ones(len(w)), [-1.0])
    with pytest.raises(ValueError, match="score"):
        result_a.tilt(w, np.zeros(len(w)), [1.0])
    with pytest.raises(ValueError, match="at least 3"):
        result_a.slope([dict(family="x", eps=1e-3, tau=0.5, loss=0.4)] * 5)
    with pytest.raises(ValueError, match="family must be one of"):
        result_a.run([1e-2], families=("noise", "bogus"))
