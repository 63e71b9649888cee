"""GGUF 4- to 6-bit blocks decoded inside the statistics kernel (``mother_core/stats/fused_codes.py``).

The coded path must give, bit for bit, what the bfloat16 path gives (the blocks decoded into a bfloat16 piece,
then reduced by the fused kernel): on random blocks of every type it decodes, and in the pass over real GGUF
files written by the ``gguf`` package (Q4_K, Q6_K, and a ``Q4_K_M``-like mix of both), statistics and
skeletons alike.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from format_factory import llama_state, perturbed, quantize, write_gguf

from mother_core.io.discovery import discover

pytest.importorskip("numba")

_FIELDS = ("n", "mean", "m2", "m3", "m4")


def _blocks(qtype: str, data: np.ndarray) -> np.ndarray:
    """``data`` (rows, cols) as stored ``qtype`` blocks (uint8 rows): a real quantization where a quantizer
    exists; Q5_K (none in the package) as random codes under realistic scales."""
    if qtype != "Q5_K":
        return np.ascontiguousarray(quantize(data, qtype)).view(np.uint8)
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, (data.shape[0], data.shape[1] // 256 * 176), dtype=np.uint8)
    blocks = raw.reshape(-1, 176)
    blocks[:, 0:4] = np.array([0.002, 0.001], dtype=np.float16).view(np.uint8)  # d, dmin
    return raw


@pytest.mark.parametrize("qtype", ["Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_coded_reduction_is_the_bfloat16_reduction_bit_for_bit(qtype, monkeypatch):
    """Five rows of ``qtype`` blocks (a 4 x 4 tile and a row past it; row 3 shares half its values with row 0:
    equal entries to count), fed in pieces whose width is not a multiple of the kernel's block and decoded a
    few kernel blocks at a time: moments, squared distances and equal counts equal the fused kernel's on the
    same blocks decoded to bfloat16, bit for bit."""
    from mother_core.io import gguf_fast
    from mother_core.stats import fused, fused_codes

    monkeypatch.setattr(fused_codes, "SCRATCH_BYTES", 5 * 2 * 2048)  # one kernel block a step: two per piece
    rng = np.random.default_rng(3)
    cols = 256 * 37
    data = (rng.standard_normal((5, cols)) * 0.02).astype(np.float32)
    raw = _blocks(qtype, data)
    nbytes, nvalues = gguf_fast.block_layout(qtype)
    shared = raw.shape[1] // nbytes // 2  # blocks
    raw[3, : shared * nbytes] = raw[0, : shared * nbytes]  # the same blocks: the same values
    bits = np.stack([gguf_fast.dequantize(row.copy(), qtype, np.empty(cols, np.uint16)) for row in raw])
    half = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)
    plain = fused.StreamReduction(5, True, cols)
    coded = fused_codes.CodedReduction(qtype, 5, True, cols)
    for c0 in range(0, cols, 256 * 11):  # pieces of 2816 values: blocks of 2048 and 768
        c1 = min(cols, c0 + 256 * 11)
        plain.add(half[:, c0:c1].contiguous())
        coded.add(np.ascontiguousarray(raw[:, c0 // nvalues * nbytes : c1 // nvalues * nbytes]), c1 - c0)
    want, got = plain.finish(), coded.finish()
    for field in _FIELDS:
        np.testing.assert_array_equal(getattr(got[0], field), getattr(want[0], field), err_msg=field)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
    assert got[2][0, 3] >= shared * nvalues and got[1][0, 1] > 0  # the shared blocks counted; distances there


@pytest.mark.parametrize("kind", ["Q4_K", "Q6_K", "Q4_K_M"])
def test_pass_decodes_gguf_blocks_inside_the_kernel_with_the_same_statistics(tmp_path, monkeypatch, kind):
    """Two GGUF models written by the ``gguf`` package (every 2-D tensor Q4_K, or Q6_K, or Q4_K with the
    MLP's down projections and the embeddings in Q6_K as a ``Q4_K_M`` file holds them): the pass decodes their
    slots' blocks inside the kernel, in several pieces per chunk, and every statistic and skeleton equals, bit
    for bit, the same pass reading bfloat16 pieces (the coded kernels not ready)."""
    from mother_core.stats import execute, fused, fused_codes
    from mother_core.stats.compute import compute_statistics

    qtype = "Q4_K" if kind == "Q4_K_M" else kind
    force = ({k: "Q6_K" for k in llama_state(0, hidden=256, inter=512) if "down_proj" in k or "embed" in k}
             if kind == "Q4_K_M" else None)
    root = llama_state(90, hidden=256, inter=512)
    write_gguf(root, tmp_path / "a.gguf", qtype=qtype, force_types=force)
    write_gguf(perturbed(root, 91), tmp_path / "b.gguf", qtype=qtype, force_types=force)
    fused.warm_up()
    fused_codes.warm_up(["Q4_K", "Q6_K"])
    monkeypatch.setattr(execute, "PIECE_BYTES", 1 << 16)  # several pieces per chunk
    monkeypatch.setattr(fused_codes, "SCRATCH_BYTES", 1 << 14)  # several kernel steps per piece
    used: list[str] = []
    add = fused_codes.CodedReduction.add

    def spy(self, raw, width):  # noqa: ANN001, ANN202
        used.append(self.qtype)
        return add(self, raw, width)

    monkeypatch.setattr(fused_codes.CodedReduction, "add", spy)

    def run():  # noqa: ANN202
        used.clear()
        stats = compute_statistics(discover([tmp_path]), device="cpu", cache_dir=None, chunk_elements=40000)
        assert len(stats.models) == 2 and not stats.problems
        return stats

    coded = run()
    assert set(used) == ({"Q4_K", "Q6_K"} if kind == "Q4_K_M" else {qtype})
    with monkeypatch.context() as m:
        m.setattr(fused_codes, "ready", lambda qtype: False)  # the bfloat16 pieces, as before
        half = run()
        assert not used
    for field in ("present", "mean", "var", "kurtosis", "norm", "sq_dist"):
        np.testing.assert_array_equal(getattr(coded, field), getattr(half, field), err_msg=field)
    assert coded.skeletons
    for slot, values in half.skeletons.items():
        np.testing.assert_array_equal(coded.skeletons[slot], values)
