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
def single_blas_thread():
    """Run the enclosed numpy/scipy code with one BLAS thread (restored afterwards).

    The library's solvers do many small matrix products; on a small or busy machine,
    multi-threaded BLAS makes them many times slower (30-50x was measured on 2 shared cores).
    Uses threadpoolctl when it is installed and does nothing otherwise.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@contextmanager
def single_threaded():
    """Run the enclosed code with one torch thread and one BLAS thread (both restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with single_blas_thread():
            yield
    finally:
        torch.set_num_threads(before)


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
