"""Fingerprinting on a Dask cluster: the per-model pass fanned out, workers writing to a shared store.

The per-model pass (:mod:`mother_core.stats.fingerprint`) needs one model at a time, so it is a map
over models. :func:`dask_mapper` runs that map on a ``dask.distributed`` client (the optional extra
``pip install mother-explorer[distributed]``); every worker writes its fingerprints into the sketch
store of the cache folder (:mod:`mother_core.stats.sketch_store`), which must therefore be a folder
every worker reaches (a shared file system), and returns only the model's key. The candidate graph,
the exact candidate pairs and the tree are then built from the store on the client
(:func:`mother_core.fingerprinting.sparse_statistics`). See README, "Many models, several machines".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mother_core.errors import InputError
from mother_core.fingerprinting import FingerprintJob, JobResult, Mapper


def dask_mapper(client: Any) -> Mapper:
    """A :data:`~mother_core.fingerprinting.Mapper` that runs each job as a task on ``client``.

    Parameters
    ----------
    client : dask.distributed.Client
        Connected to a scheduler (a ``LocalCluster``, or ``dask scheduler`` / ``dask worker`` processes
        on several machines).
    """

    def run(fn: Callable[[FingerprintJob], JobResult], jobs: Sequence[FingerprintJob]) -> list[JobResult]:
        if not jobs:
            return []
        # pure=False: a job's answer depends on the files' state, not only on its arguments.
        futures = client.map(fn, list(jobs), pure=False)
        return list(client.gather(futures))

    return run


def connect(scheduler: str | None = None, local_workers: int | None = None) -> Any:
    """A ``dask.distributed.Client``: to ``scheduler`` (``tcp://host:8786``), or to a new local cluster of
    ``local_workers`` processes (one thread each: the pass is I/O and numpy, one model per task)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError("Distributed fingerprinting needs Dask: pip install 'mother-explorer[distributed]'.") from None
    if scheduler:
        return Client(scheduler)
    cluster = LocalCluster(n_workers=local_workers or 2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster)
