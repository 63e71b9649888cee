"""Models still at their initialisation: never the child of a trained model.

A model made by a ``transformers`` config and saved without training (the hub's "tiny-random" checkpoints;
a root another team initialises and fine-tunes from, issue 11) holds its initialiser's values: every
normalisation weight a constant (LayerNorm / RMSNorm ones, Gemma's stored zeros) and every bias zero.
Training moves each of them (every norm weight and bias receives a gradient at every step), so a trained
model has none constant, and nothing a fine-tune, merge or adapter does sets them back. Such a model is
therefore never the child of one that was trained: it is a root, or the child of another untrained model
(a copy, a cast, a quantization of it).

The direction cues cannot see this: an initialiser draws its matrices Gaussian (excess kurtosis ~0) and
training grows heavy tails, so under the specialization reading (kurtosis falls from parent to child) the
random root reads as the child of its own fine-tune (benchmarks/elsewhere_set.py: a StableLM root read as the
child of its partial fine-tune).
"""

from __future__ import annotations

import numpy as np

from mother_core.stats.result import WeightStatistics

#: Tensor kinds an initialiser sets to a constant (:mod:`mother_core.layout`): norm weights (and LayerNorm
#: biases, kind ``norm`` too) and the biases of projections.
_CONSTANT_AT_INIT = ("norm", "bias")


def at_initialisation(stats: WeightStatistics) -> np.ndarray:
    """Whether each model is still at its initialisation: it holds at least one normalisation tensor and
    every norm and bias tensor it holds is constant (zero variance over its entries).

    Returns
    -------
    ndarray of bool, shape (N,)
        False where a model holds no normalisation tensor (the reading needs one: an architecture without
        norm weights says nothing this way).
    """
    slots = np.array([i for i, t in enumerate(stats.tensors) if t.kind in _CONSTANT_AT_INIT], dtype=int)
    norms = np.array([stats.tensors[i].kind == "norm" for i in slots], dtype=bool)
    out = np.zeros(stats.n_models, dtype=bool)
    if slots.size == 0:
        return out
    for m in range(stats.n_models):
        held = stats.present[m, slots].astype(bool)
        if not (held & norms).any():
            continue
        var = stats.var[m, slots[held]]
        out[m] = bool(np.all(var == 0.0))
    return out


def trained_to_untrained(stats: WeightStatistics) -> list[tuple[int, int]]:
    """(trained, untrained) model pairs: ``trained`` is never ``untrained``'s parent (module docstring)."""
    init = at_initialisation(stats)
    if not init.any() or init.all():
        return []
    return [(int(a), int(b)) for b in np.flatnonzero(init) for a in np.flatnonzero(~init)]
