r"""The book's repeated figures, one call each (like ``d2l.plot``).

* :func:`against_eps` -- quantities against the excess cross-entropy ε on log-log axes, with the
  bound dashed: the figure of results A-D.
* :func:`bars` -- bars with error bars (mean ± sd over seeds), side by side by group.
* :func:`predicted_vs_true` -- a fitted quantity against the true one, with the diagonal.

Every function takes the long-format DataFrames of :mod:`lmdownstream.experiments` (a list of
dicts works too), draws on ``ax`` (a new figure when None) and returns the axes. matplotlib is
imported inside the functions, so importing :mod:`lmdownstream` stays light.
"""
from __future__ import annotations

import numpy as np

__all__ = ["subplots", "against_eps", "bars", "predicted_vs_true", "COLUMN_WIDTH", "STYLE"]

#: Width (inches, at matplotlib's 100 dpi) of the book's text column (684 px): a figure this wide
#: is shown at its own size, so its 10-point text stays 10 points on the page.
COLUMN_WIDTH = 6.8

#: matplotlib settings of every figure made by :func:`subplots` (readable at the column width).
STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9,
         "ytick.labelsize": 9, "legend.fontsize": 9, "legend.title_fontsize": 9,
         "figure.dpi": 100, "savefig.dpi": 100}


def subplots(nrows: int = 1, ncols: int = 1, height: float | None = None, **kwargs):
    """``plt.subplots`` sized for the book's column: ``fig, axes = plot.subplots(1, 3)``.

    The figure is :data:`COLUMN_WIDTH` wide (so it is never scaled down on the page and its text
    stays at 9-10 pt); ``height`` defaults to 2.6 inches per row (3.4 for a single row of one or
    two panels). Other keyword arguments go to ``plt.subplots`` (``sharey=True``, ...); the
    figure uses constrained layout. Returns ``(fig, axes)`` as ``plt.subplots`` does.
    """
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    from ._checks import check_int, check_positive

    nrows, ncols = check_int(nrows, "nrows"), check_int(ncols, "ncols")
    if height is None:
        height = 3.4 if (nrows == 1 and ncols <= 2) else 2.6 * nrows + (0.4 if nrows == 1 else 0.0)
    height = float(check_positive(height, "height"))
    mpl.rcParams.update(STYLE)
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH, height), **kwargs)


def _axes(ax, figsize):
    if ax is not None:
        return ax
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    mpl.rcParams.update(STYLE)
    return plt.subplots(figsize=figsize, layout="constrained")[1]


def _frame(data):
    import pandas as pd

    return data if isinstance(data, pd.DataFrame) else pd.DataFrame(list(data))


def _columns(df, names, what):
    missing = [c for c in names if c is not None and c not in df.columns]
    if missing:
        raise ValueError(f"{what}: no column {missing[0]!r}; the data has columns {list(df.columns)}.")


_MARKERS = "os^Dv<>p*h"


def against_eps(data, y, *, hue=None, x="eps", minus=None, bound=None, bound_label=None,
                labels=None, ax=None, xlabel="excess cross-entropy ε (nats)", ylabel=None,
                title=None):
    r"""Quantities against ε on log-log axes, with the bound dashed: ``against_eps(df, "loss", hue="family")``.

    Parameters
    ----------
    data : DataFrame (or list of dicts), one row per model.
    y : column, or list of columns, drawn as one marked line per column and ``hue`` group.
    hue : column whose values get a line each (e.g. ``"family"``); None: one group.
    x : the ε column (sorted within each line).
    minus : column subtracted from every ``y`` and from a column ``bound``, e.g. ``"tau"`` to draw
        loss − τ; rows where the difference is not positive cannot be logged and are left out.
    bound : None, a column (one dashed line per group, in the group's colour), or a function of
        ε (one black dashed line over the range of ``x``, e.g. ``lambda e: B * np.sqrt(2 * e)``).
    bound_label : legend name of the bound (default ``"bound"``).
    labels : legend names of the ``y`` columns (default: the names, with ``− minus``).
    ax : axes to draw on (None: a new figure); xlabel, ylabel, title : as in matplotlib.

    Returns
    -------
    matplotlib Axes with log x and y: one line per (group, y) and the bound line(s); a legend.
    """
    df = _frame(data)
    ys = [y] if isinstance(y, str) else list(y)
    names = list(labels) if labels is not None else [c + (f" − {minus}" if minus else "") for c in ys]
    if len(names) != len(ys):
        raise ValueError(f"labels has {len(names)} names but y has {len(ys)} columns.")
    _columns(df, [x, hue, minus, *ys, bound if isinstance(bound, str) else None], "against_eps")
    ax = _axes(ax, (6, 4))
    groups = [(None, df)] if hue is None else [(k, df[df[hue] == k]) for k in dict.fromkeys(df[hue])]
    shift = (lambda g: g[minus].to_numpy(float)) if minus else (lambda g: 0.0)
    for i, (key, g) in enumerate(groups):
        g = g.sort_values(x)
        e = g[x].to_numpy(float)
        for j, (col, name) in enumerate(zip(ys, names)):
            val = g[col].to_numpy(float) - shift(g)
            ok = val > 0
            label = name if key is None else (f"{key}" if len(ys) == 1 else f"{key}: {name}")
            (line,) = ax.plot(e[ok], val[ok], _MARKERS[(i * len(ys) + j) % len(_MARKERS)] + "-", ms=4,
                              label=label)
        if isinstance(bound, str):  # dashed, in the colour of the group's (last) line
            ax.plot(e, g[bound].to_numpy(float) - shift(g), "--", color="k" if hue is None else line.get_color(),
                    label=(bound_label or "bound") + ("" if key is None else f" ({key})"))
    if callable(bound):
        e = df[x].to_numpy(float)
        grid = np.geomspace(e.min(), e.max(), 50)
        ax.plot(grid, bound(grid), "k--", label=bound_label or "bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel if ylabel is not None else ", ".join(names))
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def bars(data, x, y, *, err=None, hue=None, labels=None, ax=None, horizontal=False, log=False,
         reference=None, color=None, xlabel=None, ylabel=None, title=None):
    r"""Bars with error bars, one call: ``bars(summary, "variant", "acc_f", err="acc_f_sd")``.

    Parameters
    ----------
    data : DataFrame (or list of dicts), one row per bar.
    x : column of the bar labels (the categories, in order of first appearance).
    y : column of the bar heights, or a list of columns drawn side by side (wide form, e.g.
        ``["acc_f", "acc_Phi_p"]``).
    err : column (or list of columns, one per ``y``) of the error-bar half-widths, e.g. the
        standard deviation over seeds; None: no error bars.
    hue : column whose values are drawn side by side within each category (long form, one group
        per value; not with a list ``y``).
    labels : legend names of the groups (default: the ``y`` columns or the ``hue`` values).
    horizontal : bars along x (``barh``), the first category on top.
    log : logarithmic value axis.
    reference : dict {label: value} of horizontal (vertical when ``horizontal``) dashed lines,
        e.g. ``{"Bayes": 0.91}`` or ``{"chance": 0.5}``.
    color : one colour, or one per bar (single group only).
    xlabel, ylabel, title : axis labels (default: the ``x`` and ``y`` column names).

    Returns
    -------
    matplotlib Axes: one ``BarContainer`` per group in ``ax.containers`` (plus one
    ``ErrorbarContainer`` per group with ``err``); a legend when there are several groups.
    """
    df = _frame(data)
    ys = [y] if isinstance(y, str) else list(y)
    errs = [err] * len(ys) if (err is None or isinstance(err, str)) else list(err)
    if len(errs) != len(ys):
        raise ValueError(f"err has {len(errs)} columns but y has {len(ys)}; pass one err per y.")
    if hue is not None and len(ys) > 1:
        raise ValueError("pass either a list y (wide form) or hue (long form), not both.")
    _columns(df, [x, hue, *ys, *errs], "bars")
    cats = list(dict.fromkeys(df[x]))
    if hue is None:
        groups = [(df, yc, ec) for yc, ec in zip(ys, errs)]
        names = ys
    else:
        keys = list(dict.fromkeys(df[hue]))
        groups = [(df[df[hue] == k], ys[0], errs[0]) for k in keys]
        names = [str(k) for k in keys]
    names = names if labels is None else list(labels)
    ax = _axes(ax, (COLUMN_WIDTH, 0.35 * len(cats) + 1.2) if horizontal
               else (min(COLUMN_WIDTH, max(4.0, 0.9 * len(cats) + 2)), 3.4))
    width = 0.8 / len(groups)
    pos = np.arange(len(cats))[::-1] if horizontal else np.arange(len(cats))
    draw = ax.barh if horizontal else ax.bar
    for j, ((g, yc, ec), name) in enumerate(zip(groups, names)):
        at = {c: i for i, c in enumerate(g[x])}
        idx = [cats.index(c) for c in at]
        shift = (j - (len(groups) - 1) / 2) * width
        vals = g[yc].to_numpy(float)
        kw = {"xerr" if horizontal else "yerr": None if ec is None else g[ec].to_numpy(float)}
        draw(pos[idx] + shift, vals, width, capsize=3, label=name,
             color=color if len(groups) == 1 else None, **kw)
    for lab, val in (reference or {}).items():
        (ax.axvline if horizontal else ax.axhline)(val, color="k", ls="--", lw=1)
        if horizontal:
            ax.text(val, pos.max() + 0.5, f" {lab}", va="bottom", fontsize=8)
        else:
            ax.text(len(cats) - 0.5, val, f" {lab}", va="bottom", ha="right", fontsize=8)
    (ax.set_yticks if horizontal else ax.set_xticks)(pos)
    (ax.set_yticklabels if horizontal else ax.set_xticklabels)([str(c) for c in cats], fontsize=8)
    value_label = ylabel if ylabel is not None else ", ".join(ys)
    cat_label = xlabel if xlabel is not None else x
    if horizontal:
        ax.set(xlabel=value_label, ylabel=cat_label)
        if log:
            ax.set_xscale("log")
    else:
        ax.set(xlabel=cat_label, ylabel=value_label)
        if log:
            ax.set_yscale("log")
    if title is not None:
        ax.set_title(title)
    if len(groups) > 1:
        ax.legend(fontsize=8)
    return ax


def predicted_vs_true(true, pred, *, r2=None, ax=None, label=None, xlabel="true",
                      ylabel="predicted", title=None):
    r"""Predicted against true values with the diagonal y = x: ``predicted_vs_true(t, p, r2=True)``.

    Parameters
    ----------
    true : (n,) the true values (x axis).
    pred : (n,) the predictions (y axis).
    r2 : None (no score), a number to show, or True to compute the coefficient of determination
        of ``pred`` for ``true`` (:func:`lmdownstream.fits.r2`); shown in the legend.
    ax : axes to draw on (None: a new figure).
    label : legend name of the points (the R² is appended).
    xlabel, ylabel, title : axis labels and title.

    Returns
    -------
    matplotlib Axes with two lines: the points (marker only) and the dashed diagonal spanning
    the range of both.
    """
    t = np.asarray(true, dtype=float).ravel()
    p = np.asarray(pred, dtype=float).ravel()
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"true has {t.size} values and pred {p.size}; pass two equal-length, "
                         "non-empty arrays.")
    if r2 is True:
        from . import fits

        r2 = fits.r2(t, p)
    name = label or "points"
    if r2 is not None:
        name = f"{name}: R² = {float(r2):.4f}"
    ax = _axes(ax, (4.2, 3.8))
    ax.plot(t, p, ".", ms=4, label=name)
    lim = [min(t.min(), p.min()), max(t.max(), p.max())]
    ax.plot(lim, lim, "k--", lw=0.8, label="y = x")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax
