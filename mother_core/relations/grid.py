"""Whether a float model's difference from a quantized one is that quantizer's rounding (docs/RELATIONS.md,
"Quantized models").

A quantizer stores each chunk of a tensor's entries on a grid of its own (a block's scale, and a k-quant's
sub-block scale and offset): the dequantized values of a chunk are ``offset + k * step`` for integers ``k``.
Rounding to nearest moves each source value by at most half a step, and, a source's values falling anywhere
between two grid points, by about a quarter of a step on average (uniformly over the cell). A model *made from*
the dequantized values instead (a LoRA trained on them and merged: QLoRA, :func:`.copies._made_from`) holds
those grid points plus its update: untouched entries sit on the grid (within float rounding), touched ones are
moved by the update, which knows nothing of the cells (a small update keeps them near the grid points, a large
one carries them past the half step).

So the float model ``c`` is the quantized model ``q``'s source when, over chunks read from both, its values sit
within half a step of ``q``'s (up to :data:`EDGE`) and fill the cells (mean distance over :data:`FILLED` of a
step); else ``q``'s values are where ``c`` came from. The grid step is read from ``q``'s values alone: the
largest common divisor of the differences between a chunk's distinct values (any scheme with one step per
chunk of :data:`CHUNK`: the legacy blocks of 32, a k-quant's sub-blocks of 16 or 32).

A test by evidence where the rank test (:func:`.lowrank.reads_low_rank`) is blind: a 5-bit grid rounds a bf16
model by 8 of bf16's roundoffs, and the rounding's smaller singular values fall under the floor that bf16
needs, so a GGUF Q5_0's own source read as low rank (typed profile D seed 204, a fitting set).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mother_core.stats.result import WeightStatistics

#: Entries per chunk that share one grid (a k-quant's sub-block of 16; the other schemes' blocks hold whole chunks).
CHUNK = 16
#: Chunks read per matrix, evenly spaced; matrices read per pair (the model's first weight matrices of the shape).
CHUNKS = 1024
MATRICES = 8
#: Largest share of entries farther than half a step (plus :data:`EDGE_SLACK` of a step: the float rounding of the
#: source's storage and of the scale) from the quantized value for ``c`` to be the source. Constant of reasoning:
#: none for a rounding; a share of the entries an update moves past the half step otherwise.
EDGE = 0.01
EDGE_SLACK = 0.05
#: Least mean distance from the grid point, in steps, for the source: rounding gives 1/4 (uniform over the cell);
#: values made from the grid points sit at 0 where untouched. Constant of reasoning: halfway to the rounding's.
FILLED = 1 / 8
#: Least distinct values in a chunk for its step to be read.
MIN_POINTS = 4
#: Relative tolerance of a difference being a whole number of steps (the grid points are products of a float16
#: scale and an integer, exact or within float32 rounding).
WHOLE = 0.02


@dataclass(frozen=True)
class GridReading:
    """How a float model's values sit in a quantized model's grid cells.

    Attributes
    ----------
    entries : int
        Entries compared (in chunks whose step was read).
    mean_steps : float
        Mean distance of the float value from the quantized one, in grid steps.
    past_half : float
        Share of entries farther than half a step (and :data:`EDGE_SLACK`).
    """

    entries: int
    mean_steps: float
    past_half: float

    @property
    def rounding(self) -> bool:
        """Whether the float model's difference is the quantizer's rounding of it (it is the source)."""
        return self.entries > 0 and self.past_half <= EDGE and self.mean_steps >= FILLED


def grid_steps(chunks: np.ndarray) -> np.ndarray:
    """Per row of ``chunks`` (K, CHUNK) of dequantized values, the grid step (nan where fewer than two distinct
    values or no common step): the largest ``d / k`` (``d`` the least difference between distinct values,
    ``k`` = 1..4) of which every difference is a whole multiple."""
    s = np.sort(chunks.astype(np.float64), axis=1)
    diffs = np.diff(s, axis=1)
    scale = np.maximum(np.abs(s).max(axis=1, keepdims=True), 1e-300)
    diffs = np.where(diffs > 1e-6 * scale, diffs, np.nan)  # equal values (within float rounding) are one point
    least = np.nanmin(np.where(np.isnan(diffs).all(axis=1, keepdims=True), 1.0, diffs), axis=1)
    # A step is read only from chunks of at least MIN_POINTS distinct values: two or three points have a common
    # step whatever the grid (a non-uniform one, NF4's, included).
    least[(~np.isnan(diffs)).sum(axis=1) < MIN_POINTS - 1] = np.nan
    out = np.full(len(chunks), np.nan)
    for k in (4, 3, 2, 1):  # the largest step that divides every difference wins (k = 1 last)
        step = least / k
        with np.errstate(invalid="ignore"):
            ratio = diffs / step[:, None]
        off = np.where(np.isnan(ratio), 0.0, np.abs(ratio - np.round(ratio)))
        whole = off.max(axis=1) <= WHOLE
        out = np.where(whole, step, out)
    return out


def grid_reading(quantized: list[np.ndarray], source: list[np.ndarray]) -> GridReading:
    """:class:`GridReading` of the float matrices ``source`` in the grid of the dequantized ``quantized`` ones
    (same shapes, pairwise; each flattened row-major: a quantizer's blocks run along the rows)."""
    total, dist, past = 0, 0.0, 0
    for q, c in zip(quantized, source):
        q, c = q.reshape(-1), c.reshape(-1)
        k = q.size // CHUNK
        if k == 0 or q.shape != c.shape:
            continue
        rows = np.unique(np.linspace(0, k - 1, min(CHUNKS, k)).round().astype(np.int64))
        qc = q[: k * CHUNK].reshape(k, CHUNK)[rows].astype(np.float64)
        cc = c[: k * CHUNK].reshape(k, CHUNK)[rows].astype(np.float64)
        step = grid_steps(qc)
        ok = np.isfinite(step) & (step > 0)
        if not ok.any():
            continue
        t = np.abs(cc[ok] - qc[ok]) / step[ok, None]
        total += t.size
        dist += float(t.sum())
        past += int((t > 0.5 + EDGE_SLACK).sum())
    if total == 0:
        return GridReading(0, float("nan"), float("nan"))
    return GridReading(total, dist / total, past / total)


def read_grid(stats: WeightStatistics, q: int, c: int) -> GridReading:
    """:func:`grid_reading` of float model ``c`` in quantized model ``q``'s grid, on up to :data:`MATRICES` of the
    weight matrices they share (same name and shape), evenly spaced over the model; an empty reading where the
    weights are no longer readable (statistics loaded without their files)."""
    from mother_core.errors import MotherError
    from mother_core.io.readers import open_model

    both = stats.present[q] & stats.present[c]
    slots = [int(s) for s in np.flatnonzero(both) if len(stats.tensors[int(s)].shape) == 2]
    slots = [slots[int(i)] for i in np.unique(np.linspace(0, len(slots) - 1, min(MATRICES, len(slots))).round())] \
        if slots else []
    names = [stats.tensors[s].name for s in slots]
    try:
        with open_model(stats.models[q]) as rq, open_model(stats.models[c]) as rc:
            pairs = [(rq.read(n).float().numpy(), rc.read(n).float().numpy()) for n in names]
    except (MotherError, OSError, KeyError, ValueError):
        return GridReading(0, float("nan"), float("nan"))
    return grid_reading([a for a, _ in pairs], [b for _, b in pairs])
