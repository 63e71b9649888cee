"""What one set's statistics may hold: models of too many tensors are left out before anything is read.

The statistics are dense over (tensor slot, model, model): distances and counts of equal entries for every
pair of models on every (name, shape) slot any model holds (:class:`~mother_core.stats.result.WeightStatistics`).
Real models share most of their slots, so the slots number about one model's tensors: hundreds for a
dense transformer, tens of thousands for a mixture of experts. A model whose tensors no other model in the
set holds adds its slots for every pair, and reading a slot has a fixed cost whatever its size. One file
of a million tiny tensors (safetensors allows that in a 100 MB header) would take minutes to read and,
in a set of fifty, hundreds of GB of statistics: the whole run would stop. These checks leave such a
model out with a message instead, and the rest of the run goes on (docs/ARCHITECTURE.md, "Hostile and
broken inputs").
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping

from mother_core.io.base import ModelReader, Problem, TensorInfo
from mother_core.io.safetensors_header import MAX_TENSORS

#: Float tensors one model may hold, over all its files: as many as one safetensors file may declare
#: (the largest real checkpoints hold ~150,000); each costs ~0.2 ms to read however small it is.
MAX_MODEL_TENSORS = MAX_TENSORS

#: (T, N, N) float64 arrays alive at once while a set's statistics are assembled and used: the cache's
#: known distances and equal counts, the pass's, the result's, and recovery's views and copies.
DENSE_COPIES = 6


def physical_memory() -> int:
    """Bytes of this machine's memory (16 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows) or no such name
        return 16 << 30


def statistics_budget() -> int:
    """Bytes the dense statistics of one set may take: a quarter of the machine's memory."""
    return physical_memory() // 4


def _slots(listing: Mapping[str, TensorInfo]) -> set[tuple[str, tuple[int, ...]]]:
    return {(t.name, tuple(t.shape)) for t in listing.values() if t.is_float and t.numel > 0}


def drop_oversized_models(readers: list[ModelReader], listings: list[Mapping[str, TensorInfo]],
                          problems: list[Problem], budget: int | None = None) -> None:
    """Leave out (as ``problems``, in place) the models a set's statistics cannot hold.

    First every model of more than :data:`MAX_MODEL_TENSORS` float tensors. Then, while the dense
    statistics (about ``DENSE_COPIES x T x N^2`` float64 values for N models over T distinct slots) would
    exceed ``budget`` bytes (default :func:`statistics_budget`), the model holding the most slots that no
    other model holds. A set whose models share their slots is never cut: those slots are the comparison.
    """
    for i in reversed(range(len(readers))):
        count = sum(1 for t in listings[i].values() if t.is_float and t.numel > 0)
        if count > MAX_MODEL_TENSORS:
            problems.append(Problem(readers[i].ref.path, (
                f"{readers[i].ref.path} holds {count:,} float tensors, more than any real checkpoint "
                f"(the limit is {MAX_MODEL_TENSORS:,}); it was skipped. If it is a real model, merge its "
                "small tensors into larger ones, or compare it in a set of its own.")))
            del readers[i], listings[i]
    budget = statistics_budget() if budget is None else budget
    while len(readers) > 2:
        slots = [_slots(listing) for listing in listings]
        holders = Counter(key for own in slots for key in own)
        n = len(readers)
        need = DENSE_COPIES * 8 * len(holders) * n * n
        if need <= budget:
            return
        private = [sum(1 for key in own if holders[key] == 1) for own in slots]
        worst = max(range(n), key=private.__getitem__)
        if private[worst] == 0:
            return
        problems.append(Problem(readers[worst].ref.path, (
            f"{readers[worst].ref.path} holds {private[worst]:,} tensors that no other model in the set has: "
            f"comparing {n} models over {len(holders):,} distinct tensors would take {need / 2**30:.1f} GB "
            f"of statistics, over the {budget / 2**30:.1f} GB a set may take (a quarter of this machine's "
            "memory); it was skipped so that the others are compared. Compare it with models of its own architecture, "
            "or in a smaller set.")))
        del readers[worst], listings[worst]
