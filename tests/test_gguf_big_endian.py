"""Big-endian GGUF files (written for s390x): their tensor data read right, or the file refused, never read wrong.

The header walk reads a big-endian header (``io/gguf_header.py``); the data was decoded as little-endian, so a
big-endian file gave wrong values, wrong statistics and a wrong lineage with nothing to show it. Asserted here on
real files: a model written by the ``gguf`` package in every type llama.cpp's ``gguf_convert_endian.py`` converts
(F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K), turned big-endian by that script, and a file of floats written by
``GGUFWriter(endianess=BIG)`` itself: every tensor reads value for value as its little-endian twin, on the plain
read, the buffer reads (float32 and half width) and the coded blocks the pass decodes in its kernel; the pass's
statistics equal the twin's bit for bit; a big-endian file of a type no tool defines a byte order for is refused
with its reason while the other models are read.
"""

from __future__ import annotations

import argparse
import builtins
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from format_factory import llama_state, perturbed, write_gguf

from mother_core.io.base import ModelRef
from mother_core.io.discovery import discover

gguf = pytest.importorskip("gguf")
convert_endian = pytest.importorskip("gguf.scripts.gguf_convert_endian")

#: transformers name -> stored type: every type the conversion script swaps, the 2-D rest Q4_K, norms F32.
_TYPES = {"model.layers.0.self_attn.q_proj.weight": "F16", "model.layers.0.self_attn.k_proj.weight": "BF16",
          "model.layers.0.self_attn.v_proj.weight": "Q8_0", "model.layers.0.self_attn.o_proj.weight": "Q4_0",
          "model.layers.0.mlp.down_proj.weight": "Q6_K", "model.layers.1.mlp.down_proj.weight": "Q6_K",
          "model.layers.0.mlp.gate_proj.weight": "F32", "model.embed_tokens.weight": "Q8_0"}


def _state(seed: int) -> dict[str, torch.Tensor]:
    root = llama_state(40, hidden=256, inter=512)
    return root if seed == 0 else perturbed(root, seed)


def _big_endian_copy(little: Path, big: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``little`` turned big-endian by llama.cpp's ``gguf_convert_endian.py`` (its own function, in place on a
    copy; the script asks to type YES)."""
    shutil.copyfile(little, big)
    reader = gguf.GGUFReader(str(big), "r+")
    with monkeypatch.context() as m:
        m.setattr(builtins, "input", lambda *a: "YES")
        convert_endian.convert_byteorder(reader, argparse.Namespace(order="big", dry_run=False))
    reader.data.flush()
    del reader
    return big


def _pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int = 0) -> tuple[Path, Path]:
    for sub in ("le", "be"):
        (tmp_path / sub).mkdir(exist_ok=True)
    little = write_gguf(_state(seed), tmp_path / "le" / f"m{seed}.gguf", qtype="Q4_K", force_types=_TYPES)
    return little, _big_endian_copy(little, tmp_path / "be" / f"m{seed}.gguf", monkeypatch)


def _reader(path: Path):  # noqa: ANN202
    from mother_core.io.gguf_reader import GGUFReader

    return GGUFReader(ModelRef(id=path.stem, path=str(path), format="gguf", files=(str(path),)))


def _floats_written_big_endian(path: Path, x: np.ndarray, endianess) -> Path:  # noqa: ANN001
    """F32, F16 and BF16 tensors written by ``GGUFWriter`` in ``endianess`` (BF16 handed over as 16-bit words, which
    the writer byteswaps; a uint8 array it would not)."""
    w = gguf.GGUFWriter(str(path), "llama", endianess=endianess)
    w.add_block_count(1)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    bf16 = gguf.quants.quantize(x, gguf.GGMLQuantizationType.BF16).view(np.uint16)
    w.add_tensor("blk.0.ffn_up.weight", x)
    w.add_tensor("blk.0.ffn_down.weight", x.astype(np.float16))
    w.add_tensor("blk.0.ffn_gate.weight", bf16, raw_shape=x.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_big_endian_tensors_read_as_their_little_endian_twin(tmp_path, monkeypatch):
    """Every tensor of the script's big-endian file (every type it converts) equals the little-endian file's,
    value for value, on every read: whole, by rows into a float32 buffer, at half width into bfloat16, and the
    coded blocks (swapped to the little-endian bytes the kernel decodes)."""
    little, big = _pair(tmp_path, monkeypatch)
    assert little.read_bytes() != big.read_bytes()
    with _reader(little) as le, _reader(big) as be:
        types = {t.qtype_name for t in be._tensors.values()}
        assert types == {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K"}
        assert be.tensor_infos() == le.tensor_infos()
        coded = 0
        for name, info in le.tensor_infos().items():
            want = le.read(name)
            assert torch.equal(be.read(name), want), name
            if len(info.shape) < 2:
                continue
            rows = (1, min(5, info.shape[0]))
            for dtype in (getattr(torch, info.dtype), torch.bfloat16):
                if dtype == torch.bfloat16 and not le.half_width(name):
                    continue
                a = torch.empty((rows[1] - rows[0], *info.shape[1:]), dtype=dtype)
                b = torch.empty_like(a)
                le.read_into(name, rows, a)
                be.read_into(name, rows, b)
                assert torch.equal(a, b), (name, dtype)
            if le.coded(name):
                assert be.coded(name) == le.coded(name)
                nbytes = (rows[1] - rows[0]) * le._tensors[name].row_bytes
                a8, b8 = np.empty(nbytes, np.uint8), np.empty(nbytes, np.uint8)
                le.read_codes(name, rows, a8)
                be.read_codes(name, rows, b8)
                np.testing.assert_array_equal(a8, b8, err_msg=name)
                coded += 1
        assert coded >= 2 or not hasattr(__import__("os"), "preadv")
        assert be.header.big_endian and not le.header.big_endian


def test_floats_written_big_endian_by_the_package_read_right(tmp_path):
    """F32, F16 and BF16 tensors written by ``GGUFWriter(endianess=BIG)`` read as the same writer's little-endian
    file, and as the values written."""
    x = (np.random.default_rng(5).standard_normal((8, 64)) * 0.02).astype(np.float32)
    paths = [_floats_written_big_endian(tmp_path / f"{e.name.lower()}.gguf", x, e)
             for e in (gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG)]
    with _reader(paths[0]) as le, _reader(paths[1]) as be:
        assert len(le.tensor_infos()) == 3
        for name in le.tensor_infos():
            assert torch.equal(be.read(name), le.read(name)), name
        up = next(n for n in be.tensor_infos() if "up_proj" in n)
        np.testing.assert_array_equal(be.read(up).numpy(), x)
        assert be.header.big_endian


def test_pass_statistics_of_a_big_endian_file_are_its_twins(tmp_path, monkeypatch):
    """The pass over a little-endian model and a big-endian one gives, bit for bit, the statistics of the pass over
    the two little-endian files (coded Q4_K / Q6_K blocks, half-width and float32 reads alike)."""
    from mother_core.stats.compute import compute_statistics

    _pair(tmp_path, monkeypatch, 0)
    _pair(tmp_path, monkeypatch, 1)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copyfile(tmp_path / "le" / "m0.gguf", mixed / "m0.gguf")
    shutil.copyfile(tmp_path / "be" / "m1.gguf", mixed / "m1.gguf")

    def run(folder: Path):  # noqa: ANN202
        stats = compute_statistics(discover([folder]), device="cpu", cache_dir=None, chunk_elements=40000)
        assert len(stats.models) == 2 and not stats.problems
        return stats

    want, got = run(tmp_path / "le"), run(mixed)
    for field in ("present", "mean", "var", "kurtosis", "norm", "sq_dist"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)


def test_a_big_endian_file_of_an_unknown_block_order_is_refused_and_the_run_goes_on(tmp_path):
    """A big-endian file with Q4_1 blocks (no tool defines their byte order; ``GGUFWriter`` leaves the bytes as
    quantized) is refused with what to do; the other models are read."""
    from mother_core.stats.compute import compute_statistics

    sd = _state(0)
    write_gguf(sd, tmp_path / "a.gguf", qtype="Q8_0")
    write_gguf(perturbed(sd, 2), tmp_path / "b.gguf", qtype="Q8_0")
    x = (np.random.default_rng(6).standard_normal((8, 256)) * 0.02).astype(np.float32)
    w = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_block_count(1)
    w.add_tensor("blk.0.ffn_up.weight", gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q4_1),
                 raw_dtype=gguf.GGMLQuantizationType.Q4_1)
    w.add_tensor("output_norm.weight", x[0])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    found = discover([tmp_path])  # said when the set is listed (`mother scan`), not only when it is read
    assert sorted(m.id for m in found.models) == ["a", "b"]
    assert any(p.path.endswith("odd.gguf") and "big-endian GGUF" in p.message for p in found.problems)
    stats = compute_statistics(found, device="cpu", cache_dir=None)
    assert sorted(m.id for m in stats.models) == ["a", "b"]
    (problem,) = [p for p in stats.problems if p.path.endswith("odd.gguf")]
    assert "big-endian GGUF" in problem.message and "Q4_1" in problem.message
    assert "gguf_convert_endian.py" in problem.message and "little-endian" in problem.message
