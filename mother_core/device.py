"""Choosing the compute device: CUDA when there is a GPU, the CPU otherwise."""

from __future__ import annotations

import functools
import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from mother_core.errors import DeviceError
from mother_core.settings import DEVICES as DEVICE_CHOICES


def resolve_device(device: str = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a :class:`torch.device`.

    Raises
    ------
    DeviceError
        If CUDA is asked for but not available, or the name is unknown.
    """
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was requested but no GPU is visible to PyTorch (torch.cuda.is_available() is False). "
                "Use --device cpu (or auto), or install a CUDA build of torch."
            )
        return torch.device(name)
    raise DeviceError(f"Unknown device {device!r}: use one of {', '.join(DEVICE_CHOICES)}.")


def describe_device(device: str = "auto") -> str:
    """A short human description, e.g. ``"CPU (2 threads)"`` or ``"CUDA: NVIDIA H100"``."""
    try:
        dev = resolve_device(device)
    except DeviceError as e:
        return f"unavailable ({e})"
    if dev.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(dev)}"
    return f"CPU ({torch.get_num_threads()} threads)"


_SETTLED_IN_PROCESS: int | None = None
_SETTLE_LOCK = threading.Lock()


def _new_settle_lock() -> None:
    """A forked child's own lock: one copied while another thread of the parent held it stays held for ever
    in the child (whose copy of that thread is gone), and its first :func:`settle_torch_threads` never returned."""
    global _SETTLE_LOCK
    _SETTLE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_settle_lock)


def settle_torch_threads() -> None:
    """Make torch's CPU thread pool whole in this process before our own threads start using torch.

    After a ``fork`` the child inherits the parent's thread-pool object but not its threads; torch rebuilds
    it on the first call that asks for it (``set_num_threads``, which every new thread makes on its first
    parallel op once a thread count was set). That rebuild is not thread-safe: two threads making that first
    call at once, one can get no pool at all ("pool INTERNAL ASSERT FAILED ... Invalid thread pool!"), a run
    failing at random in a forked worker (seen once in about a thousand forked runs of the test suite).
    Rebuilding it here, from the one thread that is about to start the others, closes that window. Cheap,
    and once per process.
    """
    global _SETTLED_IN_PROCESS
    with _SETTLE_LOCK:
        if _SETTLED_IN_PROCESS != os.getpid():
            torch.set_num_threads(torch.get_num_threads())
            _SETTLED_IN_PROCESS = os.getpid()


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch's CPU ops in the block on one intra-op thread, then restore the setting.

    For many small ops (a 96 x 96 SVD, a 65k-element conversion): extra threads gain nothing on them, and
    on a busy machine their spin-waiting made such ops 10-60x slower (benchmarks/RESULTS.md, issue 15,
    "The one pass at disk speed").
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.cache
def _blas_threads() -> Any:
    """threadpoolctl's view of the BLAS libraries loaded (numpy's OpenBLAS), made once: finding them walks
    every loaded library (about 2 ms), a limit on a known controller costs 10 us."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run numpy's BLAS (OpenBLAS) calls in the block on one thread, then restore the setting.

    The numpy twin of :func:`one_torch_thread`, for loops of small products (a 96 x 96 skeleton projected
    off a few singular vectors): OpenBLAS splits such a product over its threads, and on a busy machine
    the call then waits for a second core. The low-rank profile's row-scale refits
    (:func:`mother_core.relations.lowrank.rescaled_rank`, about 9,000 such products on a profile D set)
    spent 33 of a 52 s solve there at load 5 on 2 cores, and 0.9 s on one thread. A product's entries are
    the same sums in the same order on one thread or several (OpenBLAS splits the output, not the inner
    dimension), so the figures do not change (benchmarks/RESULTS.md, "Solving profile D sets").
    """
    with _blas_threads().limit(limits=1, user_api="blas"):
        yield
