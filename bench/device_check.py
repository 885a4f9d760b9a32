"""One prepared check for a machine with an accelerator: what the GPU buys, in one short run.

    python bench/device_check.py            # on the GPU machine (about 5-8 minutes on one GPU)
    python bench/device_check.py --dry      # tiny sizes on the CPU (CI runs this so it never rots)

Prints, each with the obvious alternative in the same run:
1. the device: name, memory, torch and CUDA versions;
2. ``probe_cv`` on the device against scikit-learn's ``LogisticRegressionCV`` (lbfgs, its
   defaults) on the same 5,000 x 768 features, folds and C grid (``bench/probe_vs_sklearn.py``'s
   ``make_features``): the ratio of times, and both test accuracies (target: >= 50x on a GPU);
3. ``features.extract`` throughput on SmolLM2 (tweets, f and Phi p_f, with a prompt) in float32,
   bfloat16 and float16, and each as a fraction of this device's measured matmul rate in that
   dtype (model FLOPs = 2 x body parameters x tokens);
4. the wall time of chapters 4, 7 and 8 executed in the ``full`` profile (each under a time
   limit; a chapter that does not finish is reported as such, with the cell it reached).

``--dry``: 600 x 64 features, 16 texts, float32 only, and instead of the chapters a two-cell
notebook through the same timing code. Nothing is written outside a temporary folder; the
feature cache is a temporary ``LMDOWNSTREAM_CACHE``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LMDOWNSTREAM_PROGRESS", "0")

PROMPT = " The sentiment is"
CHAPTERS = ("ch04_result_a", "ch07_real_lms", "ch08_quad")


def device_info():
    import torch

    from lmdownstream import config

    dev = config.device()
    line = f"device {dev}; torch {torch.__version__}"
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        line += (f"; {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
                 f"{torch.cuda.device_count()} device(s)")
    else:
        line += f"; {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads"
    print(line)
    return dev


def _sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def probe_check(dev, dry):
    import warnings

    import numpy as np
    from sklearn.linear_model import LogisticRegressionCV

    from lmdownstream.probes import probe_cv
    from probe_vs_sklearn import make_features

    n, d = (600, 64) if dry else (5000, 768)
    X, y = make_features(n, d)
    perm = np.random.default_rng(1).permutation(n)
    test, train = perm[: n // 5], perm[n // 5:]
    Cs, folds = np.logspace(-4, 4, 10), 5
    probe_cv(X[train][:200], y[train][:200], Cs=2, cv=2, device=dev)  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    p = probe_cv(X[train], y[train], Cs=Cs, cv=folds, seed=0, device=dev)
    _sync(dev)
    t_probe = time.perf_counter() - t0
    cv = [(np.flatnonzero(p.folds_ != k), np.flatnonzero(p.folds_ == k)) for k in range(folds)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        sk = LogisticRegressionCV(Cs=Cs, cv=cv, scoring="accuracy").fit(X[train], y[train])
        t_sk = time.perf_counter() - t0
    print(f"probe_cv on {dev}: {t_probe:.2f} s; scikit-learn LogisticRegressionCV (lbfgs): {t_sk:.2f} s; "
          f"ratio {t_sk / t_probe:.1f}x (target >= 50x on a GPU); test accuracy "
          f"{p.score(X[test], y[test]):.4f} vs {sk.score(X[test], y[test]):.4f} ({len(train)} x {d}, "
          f"{len(Cs)} Cs x {folds} folds)")
    return dict(probe_s=t_probe, sklearn_s=t_sk, ratio=t_sk / t_probe)


def matmul_rate(dev, dtype, n=4096, reps=10):
    import torch

    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    a @ b
    _sync(dev)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(dev)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def extract_check(dev, dry):
    import torch

    from lmdownstream import features, hf, tasks

    n = 16 if dry else 2048
    texts = list(tasks.load_dataset("tweet-sentiment", "train", n=n, seed=0)["text"])
    dtypes = (torch.float32,) if dry else (torch.float32, torch.bfloat16, torch.float16)
    out = {}
    for dtype in dtypes:
        lm = hf.load_lm("smollm2", device=dev, dtype=dtype)
        emb = lm.model.get_input_embeddings().weight
        body = sum(p.numel() for p in lm.base.parameters() if p.data_ptr() != emb.data_ptr())
        ids, _ = lm.encode(texts, PROMPT)
        tokens = sum(len(s) for s in ids)
        features.extract(lm, texts[:8], kinds=("f", "Phi_p"), prompt=PROMPT, cache=False)  # warm-up
        _sync(dev)
        t0 = time.perf_counter()
        features.extract(lm, texts, kinds=("f", "Phi_p"), prompt=PROMPT, cache=False,
                         batch_size=64 if dev.type == "cuda" else 32)
        _sync(dev)
        dt = time.perf_counter() - t0
        peak = matmul_rate(dev, dtype, n=512 if dry else 4096, reps=3 if dry else 10)
        frac = 2 * body * tokens / dt / peak
        name = str(dtype).replace("torch.", "")
        print(f"extract {name:8s}: {n / dt:8.1f} texts/s, {tokens / dt:9.0f} tokens/s; "
              f"{frac:.0%} of the measured {name} matmul rate ({peak / 1e12:.1f} TFLOP/s)")
        out[name] = dict(texts_per_s=n / dt, fraction_of_peak=frac)
        del lm
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return out


def run_notebook(path: Path, profile: str, limit_s: float, cwd: Path):
    """Execute ``path`` with ``LMDOWNSTREAM_PROFILE=profile``; (seconds, cells run, total, error)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    os.environ["LMDOWNSTREAM_PROFILE"] = profile
    code = [c for c in nb.cells if c.cell_type == "code"]
    client = NotebookClient(nb, timeout=max(1, int(limit_s)), kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    t0, error = time.perf_counter(), None
    try:
        client.execute()
    except CellTimeoutError:
        error = f"did not finish within {limit_s:.0f} s"
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1][:200]
    dt = time.perf_counter() - t0
    done = sum(1 for c in code if c.get("execution_count"))
    return dt, done, len(code), error


def chapters_check(dry, limit_s):
    import nbformat

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if dry:
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                                 nbformat.v4.new_code_cell("assert x == 1")])
            path = Path(tmp) / "tiny.ipynb"
            nbformat.write(nb, path)
            targets = [(path, "ci")]
        else:
            targets = [(ROOT / "book" / f"{c}.ipynb", "full") for c in CHAPTERS]
        for path, profile in targets:
            dt, done, total, error = run_notebook(path, profile, limit_s, ROOT / "book")
            status = "ok" if error is None else error
            print(f"chapter {path.stem} ({profile} profile): {dt:.0f} s, {done}/{total} code cells; {status}")
            results[path.stem] = dict(seconds=dt, cells=done, total=total, error=error)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/device_check.py", description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="tiny sizes on any device (CI)")
    ap.add_argument("--chapter-limit", type=float, default=150.0, help="seconds per chapter (default 150)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["LMDOWNSTREAM_CACHE"] = cache
        t0 = time.perf_counter()
        dev = device_info()
        figures = dict(device=str(dev), probe=probe_check(dev, args.dry), extract=extract_check(dev, args.dry))
        figures["chapters"] = chapters_check(args.dry, args.chapter_limit)
    print(f"device check done in {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
