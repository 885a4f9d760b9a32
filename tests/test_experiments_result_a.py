"""experiments.result_a: model families hit their target eps, the proof's chain of bounds holds
for every model, the aligned family attains the sqrt(eps) rate, and bad input is rejected."""

import numpy as np
import pandas as pd
import pytest

from lmdownstream import synthetic, theory
from lmdownstream.experiments import result_a

TOL = 1e-6  # optimizer tolerance of task_fit on these small problems


@pytest.fixture(scope="module")
def small():
    lang = synthetic.ContextLanguage.random(n_contexts=80, vocab_size=16, seed=3, label_strength=0.3)
    fit = theory.task_fit(lang.p_next, lang.labels, B=2.0, weights=lang.p_context)
    return lang, fit


def _chain_holds(df):
    """The proof's chain, recomputed from its definitions where it can be."""
    assert (df.loss <= df.loss_v + TOL).all()
    assert (df.loss_v <= df.tau + df.score_shift + TOL).all()  # Lipschitz
    assert (df.score_shift <= df.B * df.l1 + 1e-12).all()  # Hölder
    assert np.allclose(df.bound_l1, df.tau + df.B * df.l1)
    assert np.allclose(df.bound_kl, df.tau + df.B * np.sqrt(2 * df.kl_task))
    assert np.allclose(df.bound, df.tau + np.sqrt(2 * df.B**2 * df.eps / df.gamma))
    assert (df.bound_l1 <= df.bound_kl + 1e-12).all()  # Pinsker + Jensen
    assert (df.bound_kl <= df.bound + 1e-12).all()  # change of measure
    assert (df.loss <= df.bound).all()


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
    rows = result_a.evaluate(P, y, models, 2.0, p_lm=w, tau_fit=fit)
    _chain_holds(rows)
    assert len(rows) == len(eps) and (rows.gamma == 1.0).all()
    assert rows.eps.to_numpy() == pytest.approx(got, rel=1e-12)
    assert rows.tau[0] == pytest.approx(theory.task_tau(P, y, B=2.0, weights=w), abs=TOL)
    # the losses are the best box classifier on each model (an independent solve)
    for p, loss in zip(models, rows.loss):
        assert loss == pytest.approx(theory.task_loss(p, y, B=2.0, weights=w), abs=TOL)


def test_aligned_family_attains_sqrt_eps(small):
    lang, fit = small
    P, w, y = lang.p_next, lang.p_context, lang.labels
    eps = np.logspace(-8, -6, 4)
    models = result_a.aligned_family(P, y, fit.coef, eps, w)
    rows = result_a.evaluate(P, y, models, 2.0, p_lm=w, tau_fit=fit)
    s, used, skipped = result_a.slope(rows, "loss_v")
    assert used == 4 and skipped == 0
    assert 0.45 <= s <= 0.55
    gap = rows.loss_v - rows.tau
    assert np.polyfit(np.log(rows.eps), np.log(gap), 1)[0] == pytest.approx(s, abs=1e-12)
    assert np.polyfit(np.log(eps), np.log(rows.l1), 1)[0] == pytest.approx(0.5, abs=0.02)


def test_run_and_slope():
    sizes = dict(n_contexts=60, vocab_size=12, eps=[1e-3, 3e-3, 1e-2], aligned_eps=[1e-6])
    df = result_a.run(sizes=sizes, B=2.0, families=("noise", "temperature"),
                      unconstrained=("noise",))
    assert len(df) == 6 and set(df.family) == {"noise", "temperature"}
    _chain_holds(df)
    assert (df.loss_free.notna() == (df.family == "noise")).all()
    assert df.eps.to_numpy() == pytest.approx(df.eps_target.to_numpy(), rel=1e-8)
    noise = df[df.family == "noise"]
    assert (noise.loss_free <= noise.loss + TOL).all()
    s, used, _ = result_a.slope(df, "bound", "noise")
    assert used == 3 and s == pytest.approx(0.5, abs=1e-9)  # the bound's own slope
    attrs = df.attrs
    assert attrs["n_contexts"] == 60 and attrs["B"] == 2.0 and attrs["seed"] == 0
    assert 0 < attrs["tau_free"] <= attrs["tau"] + TOL
    lang = result_a.language(**attrs)  # the same language, rebuilt from the setup
    assert attrs["tau"] == pytest.approx(
        theory.task_tau(lang.p_next, lang.labels, B=2.0, weights=lang.p_context), abs=TOL)
    assert result_a.fixed_loss(lang.p_next, lang.labels, attrs["coef"], attrs["intercept"],
                               lang.p_context) == pytest.approx(attrs["tau"], abs=1e-9)


@pytest.mark.slow
def test_run_default_sizes_are_the_chapter_sizes():
    from lmdownstream import config

    df = result_a.run(families=("aligned",))
    sizes = config.sizes("ch04")
    assert len(df) == len(sizes["aligned_eps"]) and df.attrs["n_contexts"] == sizes["n_contexts"]
    s, used, skipped = result_a.slope(df, "loss", "aligned")
    assert 0.4 <= s <= 0.6 and skipped == 0  # the sqrt(eps) rate is attained


def test_shift_bounds_and_gamma(small):
    lang, fit = small
    P, w, y = lang.p_next, lang.p_context, lang.labels
    (p,) = result_a.family("noise", P, [1e-2], w)
    kl = (P * np.log(P / p)).sum(1)  # by hand, not losses.kl
    T = result_a.tilt(w, kl, [0.0, 1.0, 2.0, 4.0])
    assert T.shape == (4, len(w)) and np.allclose(T.sum(1), 1) and np.allclose(T[0], w)
    rows = result_a.shift(P, y, p, w, 2.0, T)
    _chain_holds(rows)
    g = rows.gamma.to_numpy()
    assert g[0] == 1.0 and np.all(np.diff(g) < 0)
    assert g == pytest.approx([theory.gamma(t, w) for t in T], abs=1e-12)
    assert rows.tau_T[0] == pytest.approx(fit.loss, abs=TOL)
    assert rows.kl_task.iloc[-1] > rows.kl_task[0]  # the task moved to the model's worst contexts
    assert np.allclose(rows.kl_task, [t @ kl for t in T])
    assert rows.eps.to_numpy() == pytest.approx(1e-2, rel=1e-8)  # eps is measured under p_L
    assert (rows.kl_task <= rows.eps / rows.gamma + 1e-12).all()  # the change of measure


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
    with pytest.raises(ValueError, match="outside"):
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
        result_a.slope(pd.DataFrame([dict(family="x", eps=1e-3, tau=0.5, loss=0.4)] * 5))
    with pytest.raises(ValueError, match="family must be one of"):
        result_a.run(families=("noise", "bogus"))
