"""Run-time settings: profile, device and cache directory.

Environment variables
---------------------
``LMDOWNSTREAM_PROFILE``
    ``ci`` (small sizes that run on a 2-core CPU in minutes) or ``full`` (paper scale).
    Default: ``full`` when a CUDA GPU is visible, ``ci`` otherwise.
``LMDOWNSTREAM_DEVICE``
    Force a torch device (``cpu``, ``cuda``, ``cuda:1``, ``mps``). Default: cuda, then mps, then cpu.
``LMDOWNSTREAM_CACHE``
    Directory for on-disk caches (converted weights, features, checkpoints).
    Default: ``$XDG_CACHE_HOME/lmdownstream`` or ``~/.cache/lmdownstream``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

PROFILES = ("ci", "full")


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch missing or broken
        return False


def profile() -> str:
    """The active profile, ``"ci"`` or ``"full"`` (see the module docstring)."""
    value = os.environ.get("LMDOWNSTREAM_PROFILE", "").strip().lower()
    if not value:
        return "full" if _cuda_available() else "ci"
    if value not in PROFILES:
        raise ValueError(
            f"LMDOWNSTREAM_PROFILE={value!r} is not a profile; set it to one of {PROFILES} "
            "(or unset it to choose automatically)."
        )
    return value


def by_profile(ci, full):
    """Return ``ci`` or ``full`` according to :func:`profile` (sizes that depend on the profile)."""
    return full if profile() == "full" else ci


def _logspace(lo: float, hi: float, n: int) -> tuple:
    return tuple(10.0 ** (lo + (hi - lo) * i / (n - 1)) for i in range(n))


#: The one sizes table: for each profile, the sizes of every chapter and experiment. Chapters read
#: their entry with :func:`sizes`; a ``full`` entry is what a GPU runtime (or
#: ``LMDOWNSTREAM_PROFILE=full``) runs. ``table`` holds the experiments table's training pool,
#: test set and words kept per text (``full``: whole splits, whole texts).
SIZES = {
    "ci": {
        "ch02": dict(n_contexts=300, vocab_size=60, n_samples=20_000),
        "ch03": dict(n_contexts=400, vocab_size=30, n_prefixes=1_000, n_B=12),
        "ch04": dict(n_contexts=400, vocab_size=30, eps=_logspace(-4, -1, 8), aligned_eps=_logspace(-7, -4, 8)),
        "ch05": dict(n_contexts=300, vocab_size=64, d=8, n_eps=8),
        "ch06": dict(n_contexts=400, vocab_size=100, d=8, n_eps=8, gauss_vocab=(100, 1_000, 10_000),
                     n_directions=64),
        "ch06_real": dict(n_contexts=1_000, n_texts={"tweets": 42, "BBC news": 18}, max_tokens=64),
        "ch08": dict(n_contexts=400, vocab_size=60, d=8, eps_min=1e-10, eps_max=1e-6, n_eps=8,
                     topic_contexts=400, topic_vocab=60, topic_d=6, phi_steps=4_000, n_samples=20_000),
        "quad_training": dict(states=8, words=50, seeds=(0, 1), n_train=4_000, length=16, d=64, n_layers=2,
                              steps=150, batch_size=64, text_seeds=(0, 1), text_steps=150, text_d=64,
                              text_vocab=1_000, block=64, text_batch=32),
        "table": {"tweet-sentiment": dict(n_train=200, n_test=200, max_words=None),
                  "bbc-news": dict(n_train=150, n_test=100, max_words=40),
                  "sst2": dict(n_train=250, n_test=250, max_words=None),
                  "sst5": dict(n_train=500, n_test=250, max_words=None),
                  "ag_news": dict(n_train=250, n_test=200, max_words=None)},
    },
    "full": {
        "ch02": dict(n_contexts=3_000, vocab_size=500, n_samples=200_000),
        "ch03": dict(n_contexts=3_000, vocab_size=200, n_prefixes=10_000, n_B=16),
        "ch04": dict(n_contexts=2_000, vocab_size=100, eps=_logspace(-5, -1, 13), aligned_eps=_logspace(-9, -6, 13)),
        "ch05": dict(n_contexts=1_000, vocab_size=200, d=16, n_eps=16),
        "ch06": dict(n_contexts=2_000, vocab_size=1_000, d=16, n_eps=12, gauss_vocab=(100, 1_000, 10_000, 100_000),
                     n_directions=256),
        "ch06_real": dict(n_contexts=6_000, n_texts={"tweets": 250, "BBC news": 120}, max_tokens=64),
        "ch08": dict(n_contexts=2_000, vocab_size=300, d=16, eps_min=1e-11, eps_max=1e-6, n_eps=16,
                     topic_contexts=2_000, topic_vocab=100, topic_d=8, phi_steps=8_000, n_samples=200_000),
        "quad_training": dict(states=16, words=200, seeds=(0, 1, 2, 3, 4), n_train=20_000, length=32, d=128,
                              n_layers=4, steps=3_000, batch_size=64, text_seeds=(0, 1, 2), text_steps=4_000,
                              text_d=128, text_vocab=4_000, block=128, text_batch=32),
        "table": {},
    },
}


def sizes(name: str, profile_name: str | None = None) -> dict:
    """A copy of the :data:`SIZES` entry ``name`` for the active profile (or ``profile_name``)."""
    prof = profile() if profile_name is None else profile_name
    if prof not in SIZES:
        raise ValueError(f"profile {prof!r} is not one of {PROFILES}.")
    if name not in SIZES[prof]:
        raise ValueError(f"no sizes named {name!r}; known: {sorted(SIZES[prof])}.")
    import copy

    return copy.deepcopy(SIZES[prof][name])


def device():
    """The default torch device: ``LMDOWNSTREAM_DEVICE`` if set, else cuda, then mps, then cpu."""
    import torch

    forced = os.environ.get("LMDOWNSTREAM_DEVICE", "").strip()
    if forced:
        dev = torch.device(forced)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"LMDOWNSTREAM_DEVICE={forced!r} but CUDA is not available here; "
                "unset it or set it to 'cpu'."
            )
        if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(
                f"LMDOWNSTREAM_DEVICE={forced!r} but MPS is not available here; unset it or set it to 'cpu'."
            )
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cache_dir(create: bool = True) -> Path:
    """Directory for on-disk caches (``LMDOWNSTREAM_CACHE``); created unless ``create=False``."""
    value = os.environ.get("LMDOWNSTREAM_CACHE", "").strip()
    if value:
        path = Path(value).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
        path = Path(base) / "lmdownstream"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def describe() -> str:
    """One line naming the profile and device, printed at the top of every chapter."""
    import torch

    return f"lmdownstream profile={profile()!r} device={device()} torch={torch.__version__}"


@contextmanager
def threads(n: int = 1, blas: bool = True, torch_threads: bool = True):
    """Run the enclosed code with ``n`` torch threads and ``n`` BLAS threads (restored afterwards).

    The one way the library limits threads. Its solvers do many small matrix products; on a small
    or busy machine multi-threaded BLAS makes them many times slower (30-50x was measured on 2
    shared cores), so small problems run under ``threads(1)``. ``blas=False`` or
    ``torch_threads=False`` leaves that pool alone.
    """
    from threadpoolctl import threadpool_limits

    from ._checks import check_int

    n = check_int(n, "n")
    if torch_threads:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        if blas:
            with threadpool_limits(limits=n, user_api="blas"):
                yield
        else:
            yield
    finally:
        if torch_threads:
            torch.set_num_threads(before)


_OFF = ("0", "false", "no", "off")


def progress(wanted: bool = True) -> bool:
    """Whether to show a progress bar: ``wanted`` unless ``LMDOWNSTREAM_PROGRESS`` is off.

    The one switch for every bar of the library: ``LMDOWNSTREAM_PROGRESS=0`` turns them all
    off. The book build sets it (``book/_ext/lmd_book.py``, with ``TQDM_DISABLE=1`` for the bars
    of transformers and the hub), so no rendered page shows a bar; in a notebook they stay on.
    """
    return bool(wanted) and os.environ.get("LMDOWNSTREAM_PROGRESS", "1").strip().lower() not in _OFF


def hub_offline(*extra_vars: str) -> bool:
    """True when the Hugging Face hub must not be reached (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``
    or one of ``extra_vars`` set) or cannot be reached (a 2-second connection test)."""
    import socket

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *extra_vars):
        if os.environ.get(key, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=2.0):
            return False
    except OSError:
        return True
