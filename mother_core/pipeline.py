"""One call from paths to a :class:`~mother_core.recovery.result.Recovery`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from mother_core.errors import InputError
from mother_core.io.discovery import discover
from mother_core.recovery.recover import recover
from mother_core.recovery.result import Constraints, Recovery, RecoverySettings
from mother_core.stats.compute import compute_statistics
from mother_core.stats.progress import ProgressCallback
from mother_core.timing import stage

#: Above this many models recovery runs on the sparse candidate graph (docs/SCALE.md): the dense
#: pass holds (tensors x N x N) distances, ~4 GB at 2,000 small models.
SPARSE_ABOVE = 1500


def recover_paths(
    paths: Sequence[str | os.PathLike[str]],
    settings: RecoverySettings = RecoverySettings(),
    *,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    component: str | None = None,
    constraints: Constraints = Constraints(),
    content_hash: bool = False,
    roots: Sequence[str | os.PathLike[str]] | None = None,
    candidates: int | None = None,
    decode_threads: int | None = None,
) -> Recovery:
    """Discover models under ``paths``, stream their statistics, and recover the Model Graph.

    Parameters
    ----------
    paths : sequence of path
        Models, or folders of models (see :func:`mother_core.io.discovery.discover`).
    settings : RecoverySettings
        Recovery knobs (regime, lambda, layer selection, number of trees).
    device : {"auto", "cpu", "cuda"}
    cache_dir : path, optional
        Statistics cache folder; re-runs then read nothing.
    progress : callable, optional
        Receives :class:`~mother_core.stats.progress.Progress` updates.
    component : str, optional
        Sub-folder of multi-component repositories to use (default: the denoiser, ``"unet"`` if present, else
        ``"transformer"``).
    constraints : Constraints
        Forced / forbidden edges and fixed roots, by model id.
    content_hash : bool
        Key the statistics cache on file content instead of path, size and mtime.
    roots : sequence of path, optional
        Read only files that resolve inside these folders (see :func:`~mother_core.io.discovery.discover`).
    candidates : int, optional
        Compare each model exactly with its ``candidates`` nearest models by sketch only, and recover on
        that sparse graph (:mod:`mother_core.fingerprinting`); the default does so above
        :data:`SPARSE_ABOVE` models and compares every pair below.
    decode_threads : int, optional
        The ``decode_threads`` run setting (threads that decode a chunk of a quantized file; 0: every
        core available). Process-wide, like the CLI's option; None leaves it as it is.

    Examples
    --------
    >>> from mother_core import recover_paths
    >>> result = recover_paths(["assets/demo/vit-tree"])  # doctest: +SKIP
    >>> result.roots  # doctest: +SKIP
    """
    start = time.perf_counter()
    if decode_threads is not None:  # process-wide, for the dense and the sparse path alike
        from mother_core.io.staged import set_decode_threads

        set_decode_threads(decode_threads)
    with stage("finding models (headers)"):
        found = discover(paths, component=component, roots=roots)
    if candidates is not None or len(found.models) > SPARSE_ABOVE:
        from mother_core.fingerprinting import sparse_statistics
        from mother_core.recovery.candidates import DEFAULT_K
        from mother_core.recovery.sparse import recover_sparse

        if constraints != Constraints():
            raise InputError("Constraints (forced / forbidden edges, roots) need the dense path: run without "
                             f"--candidates on at most {SPARSE_ABOVE} models, or apply them to a subset.")
        with stage("fingerprints + candidate pairs"):
            sparse = sparse_statistics(found, k=candidates or DEFAULT_K, cache_dir=cache_dir,
                                       content_hash=content_hash)
        with stage("tree step"):
            result = recover_sparse(sparse, settings)
        result.run_seconds = time.perf_counter() - start
        return result
    stats = compute_statistics(found, device=device, cache_dir=cache_dir, progress=progress,
                               content_hash=content_hash)
    with stage("tree step"):
        result = recover(stats, settings, constraints)
    result.run_seconds = time.perf_counter() - start
    return result
