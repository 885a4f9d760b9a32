"""lmdownstream.plot: each figure is one call; check the artists it draws (Agg backend)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402

from lmdownstream import plot  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


SUMMARY = [dict(variant="xent", acc_f=0.80, acc_f_sd=0.01, acc_Phi_p=0.70, acc_Phi_p_sd=0.02),
           dict(variant="quad", acc_f=0.90, acc_f_sd=0.03, acc_Phi_p=0.75, acc_Phi_p_sd=0.04),
           dict(variant="fixed", acc_f=0.85, acc_f_sd=0.02, acc_Phi_p=0.72, acc_Phi_p_sd=0.01)]


def _bars(ax):
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _errorbars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_bars_wide_form_groups_heights_errors_and_reference():
    ax = plot.bars(SUMMARY, "variant", ["acc_f", "acc_Phi_p"], err=["acc_f_sd", "acc_Phi_p_sd"],
                   labels=["on f", "on Φp"], reference={"Bayes": 0.95}, ylabel="accuracy")
    groups = _bars(ax)
    assert len(groups) == 2 and len(ax.patches) == 6 and len(_errorbars(ax)) == 2
    assert [p.get_height() for p in groups[0]] == pytest.approx([0.80, 0.90, 0.85])
    # the error bars span mean ± sd
    segs = _errorbars(ax)[1].lines[2][0].get_segments()
    assert [s[1, 1] - s[0, 1] for s in segs] == pytest.approx([0.04, 0.08, 0.02])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["xent", "quad", "fixed"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["on f", "on Φp"]
    assert ax.get_ylabel() == "accuracy" and ax.get_xlabel() == "variant"
    assert any(np.allclose(line.get_ydata(), 0.95) for line in ax.lines)  # the reference line
    # groups sit side by side, centred on the tick
    x0 = [p.get_x() + p.get_width() / 2 for p in groups[0]]
    x1 = [p.get_x() + p.get_width() / 2 for p in groups[1]]
    assert np.allclose((np.array(x0) + np.array(x1)) / 2, [0, 1, 2])


def test_bars_long_form_hue_horizontal_and_log():
    df = pd.DataFrame(dict(features=["f", "f", "Φp", "Φp"], prompt=["no", "yes", "no", "yes"],
                           mean=[0.6, 0.7, 0.65, 0.8], std=[0.01, 0.02, 0.03, 0.04]))
    ax = plot.bars(df, "features", "mean", err="std", hue="prompt", horizontal=True, log=True)
    assert len(_bars(ax)) == 2 and len(_errorbars(ax)) == 2 and len(ax.patches) == 4
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert [p.get_width() for p in _bars(ax)[1]] == pytest.approx([0.7, 0.8])
    assert ax.get_legend() is not None


def test_bars_single_group_no_errors_no_legend_and_bad_input():
    ax = plot.bars(SUMMARY, "variant", "acc_f", log=True, color="tab:gray")
    assert len(_bars(ax)) == 1 and not _errorbars(ax) and ax.get_legend() is None
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="no column 'accuracy'"):
        plot.bars(SUMMARY, "variant", "accuracy")
    with pytest.raises(ValueError, match="not both"):
        plot.bars(SUMMARY, "variant", ["acc_f", "acc_Phi_p"], hue="variant")
    with pytest.raises(ValueError, match="one err per y"):
        plot.bars(SUMMARY, "variant", ["acc_f", "acc_Phi_p"], err=["acc_f_sd"])


def test_predicted_vs_true_points_diagonal_and_r2():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.1, 1.9, 3.2, 3.9])
    ax = plot.predicted_vs_true(t, p, r2=0.9876, xlabel="true log Z", ylabel="fit", title="held out")
    points, diagonal = ax.lines
    assert np.allclose(points.get_xdata(), t) and np.allclose(points.get_ydata(), p)
    assert points.get_linestyle() == "None"
    assert np.allclose(diagonal.get_xdata(), diagonal.get_ydata())
    assert diagonal.get_xdata()[0] == pytest.approx(1.0) and diagonal.get_xdata()[1] == pytest.approx(4.0)
    assert "R² = 0.9876" in ax.get_legend().get_texts()[0].get_text()
    assert ax.get_xlabel() == "true log Z" and ax.get_title() == "held out"
    ax = plot.predicted_vs_true(t, t)
    assert "R²" not in ax.get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="equal-length"):
        plot.predicted_vs_true(t, p[:3])


def test_predicted_vs_true_computes_r2():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    t = rng.normal(size=50)
    p = t + 0.3 * rng.normal(size=50)
    ax = plot.predicted_vs_true(t, p, r2=True)
    assert f"R² = {r2_score(t, p):.4f}" in ax.get_legend().get_texts()[0].get_text()


def test_against_eps_lines_bound_and_log_scales():
    eps = np.logspace(-4, -1, 5)
    df = pd.concat([pd.DataFrame(dict(family=fam, eps=eps, tau=0.3, loss=0.3 + c * np.sqrt(eps),
                                      bound=0.3 + 2 * np.sqrt(2 * eps)))
                    for fam, c in (("noise", 0.5), ("aligned", 1.0))])
    ax = plot.against_eps(df, "loss", hue="family", minus="tau",
                          bound=lambda e: 2 * np.sqrt(2 * e), bound_label="B√(2ε)")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.lines) == 3
    assert np.allclose(ax.lines[1].get_ydata(), np.sqrt(eps))  # loss − τ of "aligned"
    assert ax.lines[2].get_linestyle() == "--" and len(ax.lines[2].get_xdata()) == 50
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["noise", "aligned", "B√(2ε)"]
    # a bound column: one dashed line per group; non-positive differences are left out
    df.loc[df.index[0], "loss"] = 0.1
    ax = plot.against_eps(df, ["loss"], hue="family", minus="tau", bound="bound")
    assert len(ax.lines) == 4 and len(ax.lines[0].get_xdata()) == 4
    with pytest.raises(ValueError, match="no column"):
        plot.against_eps(df, "l1", hue="family")


def test_importing_lmdownstream_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, lmdownstream.plot; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
